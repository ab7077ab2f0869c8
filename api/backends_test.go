package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
)

func TestBackendActions(t *testing.T) {
	tests := []struct {
		name     string
		path     string
		method   string
		failWith error
		status   int
		backend  string // the host:port the store must receive
		state    string
	}{
		{name: "drain", path: "/servers/web/backends/127.0.0.1:8001/drain", status: http.StatusOK, backend: "127.0.0.1:8001", state: BackendDrain},
		{name: "disable", path: "/servers/web/backends/127.0.0.1:8001/disable", status: http.StatusOK, backend: "127.0.0.1:8001", state: BackendDisable},
		{name: "escaped colon", path: "/servers/web/backends/127.0.0.1%3A8001/drain", status: http.StatusOK, backend: "127.0.0.1:8001", state: BackendDrain},
		{name: "ipv6", path: "/servers/web/backends/[::1]:8002/drain", status: http.StatusOK, backend: "[::1]:8002", state: BackendDrain},
		{name: "ipv6 escaped", path: "/servers/web/backends/%5B%3A%3A1%5D%3A8002/disable", status: http.StatusOK, backend: "[::1]:8002", state: BackendDisable},
		{name: "ipv6 escaped colons only", path: "/servers/web/backends/[%3A%3A1]%3A8002/drain", status: http.StatusOK, backend: "[::1]:8002", state: BackendDrain},
		{name: "ipv6 zone", path: "/servers/web/backends/[fe80::1%25eth0]:80/drain", status: http.StatusOK, backend: "[fe80::1%eth0]:80", state: BackendDrain},
		{name: "port with leading zero", path: "/servers/web/backends/127.0.0.1:08001/drain", status: http.StatusOK, backend: "127.0.0.1:8001", state: BackendDrain},
		{name: "hostname", path: "/servers/web/backends/app-1.internal:80/drain", status: http.StatusOK, backend: "app-1.internal:80", state: BackendDrain},
		{name: "escaped server name", path: "/servers/we%62/backends/127.0.0.1:8001/drain", status: http.StatusOK, backend: "127.0.0.1:8001", state: BackendDrain},
		{name: "unknown server", path: "/servers/nope/backends/127.0.0.1:8001/drain", status: http.StatusNotFound},
		{name: "ipv6 without brackets", path: "/servers/web/backends/::1:8002/drain", status: http.StatusBadRequest},
		{name: "no port", path: "/servers/web/backends/127.0.0.1/drain", status: http.StatusBadRequest},
		{name: "port zero", path: "/servers/web/backends/127.0.0.1:0/drain", status: http.StatusBadRequest},
		{name: "named port", path: "/servers/web/backends/127.0.0.1:http/drain", status: http.StatusBadRequest},
		{name: "port too large", path: "/servers/web/backends/127.0.0.1:65536/drain", status: http.StatusBadRequest},
		{name: "no host", path: "/servers/web/backends/:80/drain", status: http.StatusBadRequest},
		{name: "space in host", path: "/servers/web/backends/a%20b:80/drain", status: http.StatusBadRequest},
		{name: "unknown action", path: "/servers/web/backends/127.0.0.1:8001/pause", status: http.StatusNotFound},
		{name: "GET is not allowed", method: http.MethodGet, path: "/servers/web/backends/127.0.0.1:8001/drain", status: http.StatusMethodNotAllowed},
		{name: "no leader", path: "/servers/web/backends/127.0.0.1:8001/drain", failWith: fmt.Errorf("%w: no leader", ErrUnavailable), status: http.StatusServiceUnavailable},
		{name: "store failure", path: "/servers/web/backends/127.0.0.1:8001/drain", failWith: errors.New("disk on fire"), status: http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.store.failWith = tt.failWith
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := f.do(t, request{method: method, path: tt.path})
			if tt.status != http.StatusOK {
				errorBody(t, rec, tt.status)
				if len(f.store.BackendStates("web")) != 0 {
					t.Fatalf("a refused action reached the store: %v", f.store.BackendStates("web"))
				}
				return
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var got backendAction
			decodeJSON(t, rec, &got)
			want := backendAction{Server: "web", Backend: tt.backend, State: tt.state, Revision: 3}
			if got != want {
				t.Fatalf("answer %+v, want %+v", got, want)
			}
			if st := f.store.BackendStates("web"); len(st) != 1 || st[tt.backend] != tt.state {
				t.Fatalf("store states %v", st)
			}
		})
	}

	t.Run("literal percent in the name", func(t *testing.T) {
		// "%25" alone leaves RawPath empty: chi routes on the decoded path and a
		// second unescape would fail on the bare "%".
		f := newFixture(t)
		f.store.put("50%off", f.store.servers["web"].Server, OriginAPI)
		rec := f.do(t, request{method: http.MethodPost, path: "/servers/50%25off/backends/127.0.0.1:8001/drain"})
		if rec.Code != http.StatusOK || f.store.BackendStates("50%off")["127.0.0.1:8001"] != BackendDrain {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})

	t.Run("enable clears the override", func(t *testing.T) {
		f := newFixture(t)
		for _, action := range []string{BackendDrain, BackendEnable} {
			rec := f.do(t, request{method: http.MethodPost, path: "/servers/web/backends/[::1]:8002/" + action})
			if rec.Code != http.StatusOK {
				t.Fatalf("%s = %d %s", action, rec.Code, rec.Body)
			}
		}
		if st := f.store.BackendStates("web"); len(st) != 0 {
			t.Fatalf("states after enable: %v", st)
		}
	})
}

func TestServerStatsWithStates(t *testing.T) {
	f := newFixture(t)
	plain := f.do(t, request{path: "/servers/web/stats"})
	for _, a := range []struct{ backend, action string }{{"127.0.0.1:8001", BackendDrain}, {"10.0.0.9:80", BackendDisable}} {
		if _, err := f.store.SetBackendState(t.Context(), "web", a.backend, a.action); err != nil {
			t.Fatal(err)
		}
	}
	rec := f.do(t, request{path: "/servers/web/stats"})
	if rec.Code != http.StatusOK {
		t.Fatalf("stats = %d %s", rec.Code, rec.Body)
	}
	var got, before map[string]any
	decodeJSON(t, rec, &got)
	decodeJSON(t, plain, &before)
	backends := got["backends"].([]any)
	if len(backends) != 2 {
		t.Fatalf("backends %v", backends)
	}
	first, second := backends[0].(map[string]any), backends[1].(map[string]any)
	if first["state"] != BackendDrain || first["host"] != "127.0.0.1" || first["stats"] == nil {
		t.Fatalf("first backend %v", first)
	}
	if _, ok := second["state"]; ok {
		t.Fatalf("an enabled backend carries state: %v", second)
	}
	// Apart from the state, the shape is 0.8's: the same document as without overrides.
	delete(first, "state")
	gotJSON, _ := json.Marshal(got)
	beforeJSON, _ := json.Marshal(before)
	if string(gotJSON) != string(beforeJSON) {
		t.Fatalf("stats changed beyond state:\n%s\nwas\n%s", gotJSON, beforeJSON)
	}

	t.Run("defined but not running", func(t *testing.T) {
		if _, err := f.store.SetBackendState(t.Context(), "consul", "127.0.0.1:8500", BackendDrain); err != nil {
			t.Fatal(err)
		}
		rec := f.do(t, request{path: "/servers/consul/stats"})
		var got map[string]any
		decodeJSON(t, rec, &got)
		if b, ok := got["backends"].([]any); rec.Code != http.StatusOK || !ok || len(b) != 0 {
			t.Fatalf("stats = %d %s", rec.Code, rec.Body)
		}
	})
}

// A browser's cross-origin write is refused before it reaches the store (a page
// elsewhere must not drain a backend with the dashboard user's credentials);
// same-origin writes, non-browser clients and reads pass; with cors = true the
// API serves other origins as configured.
func TestCrossOriginWrites(t *testing.T) {
	const drain = "/servers/web/backends/127.0.0.1:8001/drain"
	tests := []struct {
		name   string
		cors   bool
		method string
		header map[string]string
		status int
	}{
		{"cross-site form post", false, http.MethodPost, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"same-site other origin", false, http.MethodPost, map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "https://other.example.com"}, http.StatusForbidden},
		{"old browser, other Origin", false, http.MethodPost, map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"the dashboard itself", false, http.MethodPost, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"}, http.StatusOK},
		{"old browser, same Origin", false, http.MethodPost, map[string]string{"Origin": "http://example.com"}, http.StatusOK},
		{"typed in the address bar", false, http.MethodPost, map[string]string{"Sec-Fetch-Site": "none"}, http.StatusOK},
		{"curl or the client", false, http.MethodPost, nil, http.StatusOK},
		{"cross-site read", false, http.MethodGet, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusMethodNotAllowed},
		{"cors allows other origins", true, http.MethodPost, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://dash.example"}, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f *fixture
			if tt.cors {
				f = newFixture(t, withCors)
			} else {
				f = newFixture(t)
			}
			rec := f.do(t, request{method: tt.method, path: drain, header: tt.header})
			if tt.status != http.StatusOK {
				errorBody(t, rec, tt.status)
				if len(f.store.BackendStates("web")) != 0 {
					t.Fatalf("a refused request reached the store: %v", f.store.BackendStates("web"))
				}
				return
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if st := f.store.BackendStates("web"); st["127.0.0.1:8001"] != BackendDrain {
				t.Fatalf("store states %v", st)
			}
		})
	}
}
