package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

func TestPing(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, request{path: "/ping"})
	if rec.Code != http.StatusOK || rec.Body.String() != "OK" {
		t.Fatalf("GET /ping = %d %q, want 200 OK", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want text/plain", ct)
	}
}

func TestRoot(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, request{path: "/"})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET / = %d", rec.Code)
	}
	var got map[string]any
	decodeJSON(t, rec, &got)
	want := map[string]any{
		"pid":           float64(4242),
		"time":          "2026-01-02T04:04:05.5Z",
		"startTime":     "2026-01-02T03:04:05Z",
		"uptime":        "1h0m0.5s",
		"version":       "1.0.0-test",
		"configuration": map[string]any{"kind": "file", "path": "/etc/gobetween/gobetween.toml"},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("GET / =\n%s\nwant\n%s", gotJSON, wantJSON)
	}
	// gobetween 0.8 indented its JSON; clients that diff output expect it.
	if !strings.Contains(rec.Body.String(), "\n    \"pid\": 4242") {
		t.Fatalf("body is not indented like 0.8:\n%s", rec.Body)
	}
}

func TestDump(t *testing.T) {
	secrets := []string{apiPassword, consulToken, consulPassword}
	tests := []struct {
		name   string
		path   string
		ctype  string
		decode func([]byte) (*config.Config, error)
	}{
		{"default is toml", "/dump", "application/toml", decodeTOMLConfig},
		{"toml", "/dump?format=toml", "application/toml", decodeTOMLConfig},
		{"json", "/dump?format=json", "application/json", decodeJSONConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			rec := f.do(t, request{path: tt.path})
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d %s", tt.path, rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
				t.Fatalf("Content-Type %q, want %s", ct, tt.ctype)
			}
			body := rec.Body.String()
			for _, s := range secrets {
				if strings.Contains(body, s) {
					t.Fatalf("dump leaks secret %q:\n%s", s, body)
				}
			}
			c, err := tt.decode(rec.Body.Bytes())
			if err != nil {
				t.Fatalf("dump does not decode: %v\n%s", err, body)
			}
			if c.Api.Bind != ":8888" || c.Servers["web"].Bind != "127.0.0.1:3000" || c.Servers["consul"].Discovery == nil {
				t.Fatalf("dump lost content:\n%s", body)
			}
			if c.Servers["consul"].Discovery.ConsulServiceName != "web" {
				t.Fatalf("dump lost a non-secret consul key:\n%s", body)
			}
			// Redaction works on a copy: the live config keeps its secrets.
			if f.dumped.Api.BasicAuth.Password != apiPassword ||
				f.dumped.Servers["consul"].Discovery.ConsulAclToken != consulToken {
				t.Fatal("dump redacted the live configuration in place")
			}
		})
	}

	t.Run("unknown format is 400", func(t *testing.T) {
		f := newFixture(t)
		e := errorBody(t, f.do(t, request{path: "/dump?format=yaml"}), http.StatusBadRequest)
		if !strings.Contains(e.Error, "yaml") {
			t.Fatalf("error %q does not name the format", e.Error)
		}
	})
}

func decodeTOMLConfig(b []byte) (*config.Config, error) {
	c, _, err := config.Decode(b, "toml")
	return c, err
}

func decodeJSONConfig(b []byte) (*config.Config, error) {
	c, _, err := config.Decode(b, "json")
	return c, err
}

func TestListAndGetServers(t *testing.T) {
	f := newFixture(t)

	rec := f.do(t, request{path: "/servers"})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /servers = %d", rec.Code)
	}
	var all map[string]config.Server
	decodeJSON(t, rec, &all)
	if len(all) != 2 || all["web"].Bind != "127.0.0.1:3000" || all["consul"].Bind != "127.0.0.1:3001" {
		t.Fatalf("GET /servers = %s", rec.Body)
	}
	if strings.Contains(rec.Body.String(), consulToken) || strings.Contains(rec.Body.String(), consulPassword) {
		t.Fatalf("GET /servers leaks secrets:\n%s", rec.Body)
	}

	tests := []struct {
		path   string
		status int
		bind   string
	}{
		{"/servers/web", http.StatusOK, "127.0.0.1:3000"},
		{"/servers/consul", http.StatusOK, "127.0.0.1:3001"},
		{"/servers/nope", http.StatusNotFound, ""},
		{"/servers/we%62", http.StatusOK, "127.0.0.1:3000"}, // escaped name
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := f.do(t, request{path: tt.path})
			if tt.status != http.StatusOK {
				errorBody(t, rec, tt.status)
				return
			}
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d", rec.Code, tt.status)
			}
			var s config.Server
			decodeJSON(t, rec, &s)
			if s.Bind != tt.bind {
				t.Fatalf("bind %q, want %q", s.Bind, tt.bind)
			}
			for _, secret := range []string{consulToken, consulPassword} {
				if strings.Contains(rec.Body.String(), secret) {
					t.Fatalf("leaks %q:\n%s", secret, rec.Body)
				}
			}
		})
	}
}

func TestCreateServer(t *testing.T) {
	const valid = `{"bind":"127.0.0.1:4000","balance":"leastconn",
		"discovery":{"kind":"static","static_list":["127.0.0.1:8001 weight=2"]},
		"healthcheck":{"kind":"ping","interval":"2s","timeout":"1s","fails":3}}`
	tests := []struct {
		name      string
		server    string
		body      string
		busy      string // a bind the store reports in use
		failWith  error
		status    int
		wantPaths []string // every problem path a 422 must list
	}{
		{name: "valid", server: "new", body: valid, status: http.StatusOK},
		{name: "bad json", server: "new", body: `{"bind":`, status: http.StatusBadRequest},
		{name: "not an object", server: "new", body: `[1,2]`, status: http.StatusBadRequest},
		{name: "empty body", server: "new", body: ``, status: http.StatusBadRequest},
		{
			name: "unknown keys", server: "new", status: http.StatusUnprocessableEntity,
			body: `{"bind":"127.0.0.1:4000","sni_enabled":true,
				"discovery":{"kind":"static","static_list":["127.0.0.1:8001"],"ping_timeout_duration":"1s"}}`,
			wantPaths: []string{"servers.new.sni_enabled", "servers.new.discovery.ping_timeout_duration"},
		},
		{
			name: "invalid definition lists every problem", server: "new", status: http.StatusUnprocessableEntity,
			body: `{"bind":"127.0.0.1:4000","balance":"fastest",
				"discovery":{"kind":"static","static_list":["127.0.0.1:8001"]},
				"healthcheck":{"kind":"ping","interval":"5","timeout":"1s"}}`,
			wantPaths: []string{"servers.new.balance", "servers.new.healthcheck.interval"},
		},
		{
			name: "unknown keys and invalid values together", server: "new", status: http.StatusUnprocessableEntity,
			body: `{"bind":"127.0.0.1:4000","balance":"fastest","transparent":true,
				"discovery":{"kind":"static","static_list":["127.0.0.1:8001"]}}`,
			wantPaths: []string{"servers.new.transparent", "servers.new.balance"},
		},
		{name: "name taken", server: "web", body: valid, status: http.StatusConflict},
		{name: "port in use", server: "new", body: valid, busy: "127.0.0.1:4000", status: http.StatusConflict},
		{name: "store failure", server: "new", body: valid, failWith: errors.New("disk on fire"), status: http.StatusInternalServerError},
		{name: "no leader", server: "new", body: valid, failWith: fmt.Errorf("%w: no leader", ErrUnavailable), status: http.StatusServiceUnavailable},
		{name: "unsupported here", server: "new", body: valid, failWith: fmt.Errorf("%w: protocol udp", ErrUnsupported), status: http.StatusUnprocessableEntity},
		{name: "body too large", server: "new", body: `{"bind":"` + strings.Repeat("x", maxBodyBytes) + `"}`, status: http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.busy != "" {
				f.store.busyBinds[tt.busy] = true
			}
			f.store.failWith = tt.failWith
			before := f.store.Servers()
			rec := f.do(t, request{method: http.MethodPost, path: "/servers/" + tt.server, body: tt.body,
				header: map[string]string{"Content-Type": "application/json"}})

			if tt.status != http.StatusOK {
				e := errorBody(t, rec, tt.status)
				var paths []string
				for _, d := range e.Details {
					paths = append(paths, d.Path)
					if d.Msg == "" {
						t.Errorf("detail %q has no message", d.Path)
					}
				}
				for _, p := range tt.wantPaths {
					if !slices.Contains(paths, p) {
						t.Errorf("422 details %v lack %q", paths, p)
					}
				}
				if len(f.store.Servers()) != len(before) {
					t.Fatal("a rejected server reached the store")
				}
				return
			}

			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, want 200; body %s", rec.Code, rec.Body)
			}
			var got config.Server
			decodeJSON(t, rec, &got)
			stored, ok := f.store.Server(tt.server)
			if !ok {
				t.Fatal("server not stored")
			}
			// The answer is the normalised definition, defaults included:
			// [defaults] max_connections = 7 and 0.8's protocol default.
			if got.Bind != "127.0.0.1:4000" || got.Balance != "leastconn" || got.Protocol != "tcp" ||
				got.MaxConnections == nil || *got.MaxConnections != 7 {
				t.Fatalf("answer is not the normalised server:\n%s", rec.Body)
			}
			if stored.MaxConnections == nil || *stored.MaxConnections != 7 || stored.Healthcheck.Fails != 3 {
				t.Fatalf("stored server not normalised: %+v", stored)
			}
			if rec := f.do(t, request{path: "/servers/" + tt.server}); rec.Code != http.StatusOK {
				t.Fatalf("GET after POST = %d", rec.Code)
			}
		})
	}
}

func TestCreateServerRedactsAnswer(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, request{method: http.MethodPost, path: "/servers/c2",
		body: strings.Replace(consulJSON, "127.0.0.1:3001", "127.0.0.1:3002", 1)})
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), consulToken) || strings.Contains(rec.Body.String(), consulPassword) {
		t.Fatalf("POST answer leaks secrets:\n%s", rec.Body)
	}
	stored, _ := f.store.Server("c2")
	if stored.Discovery.ConsulAclToken != consulToken {
		t.Fatal("the stored server lost its secret: redaction must only touch the answer")
	}
}

func TestDeleteServer(t *testing.T) {
	tests := []struct {
		name     string
		server   string
		failWith error
		status   int
	}{
		{"existing", "web", nil, http.StatusOK},
		{"unknown", "nope", nil, http.StatusNotFound},
		{"store failure", "web", errors.New("no quorum"), http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.store.failWith = tt.failWith
			rec := f.do(t, request{method: http.MethodDelete, path: "/servers/" + tt.server})
			if tt.status != http.StatusOK {
				errorBody(t, rec, tt.status)
				return
			}
			if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "null" {
				t.Fatalf("DELETE = %d %q, want 200 null", rec.Code, rec.Body)
			}
			errorBody(t, f.do(t, request{path: "/servers/" + tt.server}), http.StatusNotFound)
		})
	}
}

func TestServerStats(t *testing.T) {
	f := newFixture(t)

	t.Run("running server", func(t *testing.T) {
		rec := f.do(t, request{path: "/servers/web/stats"})
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		var got proxy.ServerStats
		decodeJSON(t, rec, &got)
		want := webStats()
		gotJSON, _ := json.Marshal(got)
		wantJSON, _ := json.Marshal(want)
		if string(gotJSON) != string(wantJSON) {
			t.Fatalf("stats\n%s\nwant\n%s", gotJSON, wantJSON)
		}
		// 0.8's field names, as scripts read them.
		var raw map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &raw)
		for _, k := range []string{"active_connections", "rx_total", "tx_total", "rx_second", "tx_second", "backends"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("stats lack %q", k)
			}
		}
		b := raw["backends"].([]any)[0].(map[string]any)
		for _, k := range []string{"host", "port", "priority", "weight", "stats"} {
			if _, ok := b[k]; !ok {
				t.Errorf("backend lacks %q", k)
			}
		}
	})

	t.Run("defined but not running", func(t *testing.T) {
		rec := f.do(t, request{path: "/servers/consul/stats"})
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if !strings.Contains(rec.Body.String(), `"backends": []`) {
			t.Fatalf("want zero stats with an empty backend list:\n%s", rec.Body)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		errorBody(t, f.do(t, request{path: "/servers/nope/stats"}), http.StatusNotFound)
	})
}

func TestUnknownRoutesAreJSON(t *testing.T) {
	f := newFixture(t)
	errorBody(t, f.do(t, request{path: "/nothing/here"}), http.StatusNotFound)
	errorBody(t, f.do(t, request{method: http.MethodPatch, path: "/servers/web"}), http.StatusMethodNotAllowed)
}

func TestPanicIsAnswered500(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Store = panicStore{o.Store.(*memStore)} })
	e := errorBody(t, f.do(t, request{path: "/servers"}), http.StatusInternalServerError)
	if strings.Contains(e.Error, "exploded") {
		t.Fatalf("500 leaks the panic value: %q", e.Error)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "panic in api handler") || !strings.Contains(logs, "store exploded") ||
		!strings.Contains(logs, "component=api") {
		t.Fatalf("panic not logged with slog:\n%s", logs)
	}
	// The handler is still usable.
	if rec := f.do(t, request{path: "/servers/web"}); rec.Code != http.StatusOK {
		t.Fatalf("request after a panic = %d", rec.Code)
	}
	if rec := f.do(t, request{path: "/ping"}); rec.Code != http.StatusOK {
		t.Fatalf("ping after a panic = %d", rec.Code)
	}
}

func TestBasicAuth(t *testing.T) {
	f := newFixture(t, withAuth)
	creds := func(login, password string) map[string]string {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.SetBasicAuth(login, password)
		return map[string]string{"Authorization": r.Header.Get("Authorization")}
	}
	routes := []request{
		{path: "/"},
		{path: "/dump"},
		{path: "/servers"},
		{path: "/servers/web"},
		{path: "/servers/web/stats"},
		{method: http.MethodPost, path: "/servers/x", body: `{}`},
		{method: http.MethodDelete, path: "/servers/web"},
	}
	for _, r := range routes {
		for _, c := range []struct {
			name   string
			header map[string]string
		}{
			{"no credentials", nil},
			{"wrong password", creds("admin", "guess")},
			{"wrong login", creds("root", apiPassword)},
			{"password prefix", creds("admin", apiPassword[:5])},
			{"not basic", map[string]string{"Authorization": "Bearer " + apiPassword}},
		} {
			t.Run(r.method+" "+r.path+" "+c.name, func(t *testing.T) {
				r.header = c.header
				rec := f.do(t, r)
				errorBody(t, rec, http.StatusUnauthorized)
				if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="Authorization Required"`) {
					t.Fatalf("WWW-Authenticate = %q", got)
				}
			})
		}
	}
	if _, ok := f.store.Server("web"); !ok {
		t.Fatal("an unauthenticated DELETE reached the store")
	}

	t.Run("ping is open", func(t *testing.T) {
		if rec := f.do(t, request{path: "/ping"}); rec.Code != http.StatusOK {
			t.Fatalf("GET /ping = %d", rec.Code)
		}
	})
	t.Run("correct credentials", func(t *testing.T) {
		for _, p := range []string{"/", "/dump", "/servers", "/servers/web", "/servers/web/stats"} {
			if rec := f.do(t, request{path: p, header: creds("admin", apiPassword)}); rec.Code != http.StatusOK {
				t.Fatalf("GET %s with credentials = %d %s", p, rec.Code, rec.Body)
			}
		}
		rec := f.do(t, request{method: http.MethodDelete, path: "/servers/web", header: creds("admin", apiPassword)})
		if rec.Code != http.StatusOK {
			t.Fatalf("DELETE with credentials = %d", rec.Code)
		}
	})
}

func TestCors(t *testing.T) {
	preflight := request{method: http.MethodOptions, path: "/servers/web", header: map[string]string{
		"Origin":                         "https://dash.example",
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization, content-type",
	}}

	t.Run("preflight", func(t *testing.T) {
		// Preflights carry no credentials: they must pass even with basic auth on.
		f := newFixture(t, withCors, withAuth)
		rec := f.do(t, preflight)
		if rec.Code != http.StatusNoContent {
			t.Fatalf("preflight = %d, want 204", rec.Code)
		}
		h := rec.Header()
		if got := h.Get("Access-Control-Allow-Origin"); got != "https://dash.example" {
			t.Fatalf("Allow-Origin = %q, want the request's origin", got)
		}
		if !slices.Contains(h.Values("Vary"), "Origin") {
			t.Fatalf("Vary = %q, want Origin", h.Values("Vary"))
		}
		if h.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatal("Allow-Credentials must not be sent with an echoed origin")
		}
		methods := h.Get("Access-Control-Allow-Methods")
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "OPTIONS"} {
			if !strings.Contains(methods, m) {
				t.Errorf("Allow-Methods %q lacks %s", methods, m)
			}
		}
		headers := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
		for _, hd := range []string{"origin", "authorization", "content-type"} {
			if !strings.Contains(headers, hd) {
				t.Errorf("Allow-Headers %q lacks %s", headers, hd)
			}
		}
	})

	t.Run("simple request", func(t *testing.T) {
		f := newFixture(t, withCors)
		rec := f.do(t, request{path: "/servers", header: map[string]string{"Origin": "http://localhost:5173"}})
		if rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
		if got := rec.Header().Get("Access-Control-Allow-Origin"); got != "http://localhost:5173" {
			t.Fatalf("Allow-Origin = %q", got)
		}
		if !slices.Contains(rec.Header().Values("Vary"), "Origin") {
			t.Fatal("no Vary: Origin")
		}
	})

	t.Run("errors carry cors headers", func(t *testing.T) {
		f := newFixture(t, withCors, withAuth)
		rec := f.do(t, request{path: "/servers", header: map[string]string{"Origin": "http://a.example"}})
		errorBody(t, rec, http.StatusUnauthorized)
		if rec.Header().Get("Access-Control-Allow-Origin") != "http://a.example" {
			t.Fatal("a 401 without CORS headers is unreadable to the browser")
		}
	})

	t.Run("no origin, no headers", func(t *testing.T) {
		f := newFixture(t, withCors)
		rec := f.do(t, request{path: "/servers"})
		if rec.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Fatal("CORS headers without an Origin")
		}
	})

	t.Run("disabled", func(t *testing.T) {
		f := newFixture(t)
		rec := f.do(t, preflight)
		if rec.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Fatal("CORS headers with cors = false")
		}
		errorBody(t, rec, http.StatusMethodNotAllowed)
	})
}
