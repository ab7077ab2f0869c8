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
)

// The fixture's store loads "consul" at revision 1 and "web" at revision 2.
const webRevision = 2

func TestParseIfMatch(t *testing.T) {
	tests := []struct {
		values  []string
		want    uint64
		wantErr bool
	}{
		{values: nil, want: 0},
		{values: []string{`"12"`}, want: 12},
		{values: []string{`12`}, want: 12},
		{values: []string{`W/"12"`}, want: 12},
		{values: []string{` "12" `}, want: 12},
		{values: []string{`*`}, want: 0},
		{values: []string{``}, wantErr: true},
		{values: []string{`"12`}, wantErr: true},
		{values: []string{`12"`}, wantErr: true},
		{values: []string{`"`}, wantErr: true},
		{values: []string{`W/12`}, wantErr: true},
		{values: []string{`"abc"`}, wantErr: true},
		{values: []string{`"0"`}, wantErr: true},
		{values: []string{`"-1"`}, wantErr: true},
		{values: []string{`"+1"`}, wantErr: true},
		{values: []string{`"1", "2"`}, wantErr: true},
		{values: []string{`"1"`, `"2"`}, wantErr: true},
		{values: []string{`"99999999999999999999999"`}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.values, "|"), func(t *testing.T) {
			got, err := parseIfMatch(tt.values)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseIfMatch(%q) = %d, %v; want %d, error %v", tt.values, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestGetServerRevisionHeaders(t *testing.T) {
	f := newFixture(t)
	rec := f.do(t, request{path: "/servers/web"})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET = %d %s", rec.Code, rec.Body)
	}
	h := rec.Header()
	if h.Get("ETag") != `"2"` || h.Get(headerRevision) != "2" || h.Get(headerOrigin) != OriginConfig {
		t.Fatalf("headers ETag=%q revision=%q origin=%q", h.Get("ETag"), h.Get(headerRevision), h.Get(headerOrigin))
	}
	if h.Get("Last-Modified") != "Wed, 04 Mar 2026 05:06:09 GMT" {
		t.Fatalf("Last-Modified = %q", h.Get("Last-Modified"))
	}
	// The body is the 0.8 object and nothing else: it goes back through PUT
	// (which rejects unknown keys) with the ETag it came with.
	var keys map[string]json.RawMessage
	decodeJSON(t, rec, &keys)
	for _, k := range []string{"origin", "revision", "_meta", "updated"} {
		if _, ok := keys[k]; ok {
			t.Fatalf("server object carries %q:\n%s", k, rec.Body)
		}
	}
	put := f.do(t, request{method: http.MethodPut, path: "/servers/web", body: rec.Body.String(),
		header: map[string]string{"If-Match": h.Get("ETag")}})
	if put.Code != http.StatusOK {
		t.Fatalf("PUT of the GET body = %d %s", put.Code, put.Body)
	}
	if put.Header().Get("ETag") != `"3"` {
		t.Fatalf("PUT ETag = %q, want \"3\"", put.Header().Get("ETag"))
	}
	if rec := f.do(t, request{path: "/servers/web"}); rec.Header().Get("ETag") != `"3"` || rec.Header().Get(headerOrigin) != OriginAPI {
		t.Fatalf("GET after PUT: ETag %q origin %q", rec.Header().Get("ETag"), rec.Header().Get(headerOrigin))
	}
}

func TestUpdateServer(t *testing.T) {
	const valid = `{"bind":"127.0.0.1:4000","balance":"leastconn",
		"discovery":{"kind":"static","static_list":["127.0.0.1:8001 weight=2"]}}`
	tests := []struct {
		name      string
		server    string
		body      string
		ifMatch   []string
		busy      string
		failWith  error
		status    int
		wantRev   uint64
		wantPaths []string
	}{
		{name: "no If-Match", server: "web", body: valid, status: http.StatusOK, wantRev: 3},
		{name: "matching strong tag", server: "web", body: valid, ifMatch: []string{`"2"`}, status: http.StatusOK, wantRev: 3},
		{name: "matching bare number", server: "web", body: valid, ifMatch: []string{`2`}, status: http.StatusOK, wantRev: 3},
		{name: "matching weak tag", server: "web", body: valid, ifMatch: []string{`W/"2"`}, status: http.StatusOK, wantRev: 3},
		{name: "any version", server: "web", body: valid, ifMatch: []string{`*`}, status: http.StatusOK, wantRev: 3},
		{name: "escaped name", server: "we%62", body: valid, status: http.StatusOK, wantRev: 3},
		{name: "stale", server: "web", body: valid, ifMatch: []string{`"1"`}, status: http.StatusConflict},
		{name: "malformed tag", server: "web", body: valid, ifMatch: []string{`"two"`}, status: http.StatusBadRequest},
		{name: "unterminated tag", server: "web", body: valid, ifMatch: []string{`"2`}, status: http.StatusBadRequest},
		{name: "revision zero", server: "web", body: valid, ifMatch: []string{`"0"`}, status: http.StatusBadRequest},
		{name: "two tags", server: "web", body: valid, ifMatch: []string{`"2", "3"`}, status: http.StatusBadRequest},
		{name: "empty If-Match", server: "web", body: valid, ifMatch: []string{``}, status: http.StatusBadRequest},
		{name: "unknown server", server: "nope", body: valid, status: http.StatusNotFound},
		{name: "bad json", server: "web", body: `{"bind":`, status: http.StatusBadRequest},
		{
			name: "invalid lists every problem", server: "web", status: http.StatusUnprocessableEntity,
			body: `{"bind":"127.0.0.1:4000","balance":"fastest","transparent":true,
				"discovery":{"kind":"static","static_list":["127.0.0.1:8001"]}}`,
			wantPaths: []string{"servers.web.transparent", "servers.web.balance"},
		},
		{name: "port in use", server: "web", body: valid, busy: "127.0.0.1:4000", status: http.StatusConflict},
		{name: "no leader", server: "web", body: valid, failWith: fmt.Errorf("%w: no leader", ErrUnavailable), status: http.StatusServiceUnavailable},
		{name: "store failure", server: "web", body: valid, failWith: errors.New("disk on fire"), status: http.StatusInternalServerError},
		{name: "body too large", server: "web", body: `{"bind":"` + strings.Repeat("x", maxBodyBytes) + `"}`, status: http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.busy != "" {
				f.store.busyBinds[tt.busy] = true
			}
			f.store.failWith = tt.failWith
			rec := f.do(t, request{method: http.MethodPut, path: "/servers/" + tt.server, body: tt.body,
				values: map[string][]string{"If-Match": tt.ifMatch}})

			if tt.status != http.StatusOK {
				e := errorBody(t, rec, tt.status)
				var paths []string
				for _, d := range e.Details {
					paths = append(paths, d.Path)
				}
				for _, p := range tt.wantPaths {
					if !slices.Contains(paths, p) {
						t.Errorf("422 details %v lack %q", paths, p)
					}
				}
				if info, _ := f.store.ServerInfo("web"); info.Revision != webRevision {
					t.Fatalf("a refused PUT changed the store: revision %d", info.Revision)
				}
				if rec.Header().Get("ETag") != "" {
					t.Fatalf("error carries ETag %q", rec.Header().Get("ETag"))
				}
				return
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			wantTag := fmt.Sprintf(`"%d"`, tt.wantRev)
			if rec.Header().Get("ETag") != wantTag || rec.Header().Get(headerRevision) != fmt.Sprint(tt.wantRev) {
				t.Fatalf("ETag %q revision %q, want %s", rec.Header().Get("ETag"), rec.Header().Get(headerRevision), wantTag)
			}
			var got config.Server
			decodeJSON(t, rec, &got)
			if got.Bind != "127.0.0.1:4000" || got.Protocol != "tcp" || got.MaxConnections == nil || *got.MaxConnections != 7 {
				t.Fatalf("answer is not the normalised server:\n%s", rec.Body)
			}
			info, _ := f.store.ServerInfo("web")
			if info.Server.Bind != "127.0.0.1:4000" || info.Revision != tt.wantRev || info.Origin != OriginAPI {
				t.Fatalf("store has %+v", info)
			}
		})
	}
}

func TestUpdateServerKeepsRedactedSecrets(t *testing.T) {
	f := newFixture(t)
	get := f.do(t, request{path: "/servers/consul"})
	if !strings.Contains(get.Body.String(), config.RedactedValue) {
		t.Fatalf("GET does not redact:\n%s", get.Body)
	}
	edited := strings.Replace(get.Body.String(), "127.0.0.1:3001", "127.0.0.1:3009", 1)
	rec := f.do(t, request{method: http.MethodPut, path: "/servers/consul", body: edited})
	if rec.Code != http.StatusOK {
		t.Fatalf("PUT = %d %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), consulToken) {
		t.Fatalf("PUT answer leaks a secret:\n%s", rec.Body)
	}
	s, _ := f.store.Server("consul")
	if s.Bind != "127.0.0.1:3009" || s.Discovery.ConsulAclToken != consulToken || s.Discovery.ConsulAuthPassword != consulPassword {
		t.Fatalf("secrets not kept: bind %s token %q password %q", s.Bind, s.Discovery.ConsulAclToken, s.Discovery.ConsulAuthPassword)
	}

	t.Run("stale If-Match still refused", func(t *testing.T) {
		f := newFixture(t)
		get := f.do(t, request{path: "/servers/consul"})
		// Someone changes the server after this client's GET: keeping secrets
		// must not bypass the client's condition.
		f.do(t, request{method: http.MethodPut, path: "/servers/consul", body: consulJSON})
		rec := f.do(t, request{method: http.MethodPut, path: "/servers/consul", body: get.Body.String(),
			header: map[string]string{"If-Match": get.Header().Get("ETag")}})
		errorBody(t, rec, http.StatusConflict)
	})

	t.Run("POST cannot store the marker", func(t *testing.T) {
		f := newFixture(t)
		body := strings.Replace(get.Body.String(), "127.0.0.1:3001", "127.0.0.1:3010", 1)
		e := errorBody(t, f.do(t, request{method: http.MethodPost, path: "/servers/copy", body: body}), http.StatusUnprocessableEntity)
		if len(e.Details) != 2 || !strings.HasPrefix(e.Details[0].Path, "servers.copy.discovery.consul_") {
			t.Fatalf("details %+v", e.Details)
		}
		if _, ok := f.store.Server("copy"); ok {
			t.Fatal("stored a server with redacted secrets")
		}
	})
}

func TestCreateServerRevisionHeaders(t *testing.T) {
	body := `{"bind":"127.0.0.1:4000","discovery":{"kind":"static","static_list":["127.0.0.1:8001"]}}`
	t.Run("created", func(t *testing.T) {
		f := newFixture(t)
		rec := f.do(t, request{method: http.MethodPost, path: "/servers/new", body: body})
		if rec.Code != http.StatusOK || rec.Header().Get("ETag") != `"3"` ||
			rec.Header().Get(headerRevision) != "3" || rec.Header().Get(headerOrigin) != OriginAPI {
			t.Fatalf("POST = %d ETag %q headers %v", rec.Code, rec.Header().Get("ETag"), rec.Header())
		}
	})
	t.Run("changed before the read-back", func(t *testing.T) {
		f := newFixture(t)
		f.store.afterCreate = func(name string) {
			s := f.store.servers[name].Server.Clone()
			s.Bind = "127.0.0.1:4001"
			f.store.put(name, s, OriginAPI)
		}
		rec := f.do(t, request{method: http.MethodPost, path: "/servers/new", body: body})
		if rec.Code != http.StatusOK {
			t.Fatalf("POST = %d %s", rec.Code, rec.Body)
		}
		if tag := rec.Header().Get("ETag"); tag != "" {
			t.Fatalf("ETag %s vouches for a definition the client has not seen", tag)
		}
	})
}

func TestServerMeta(t *testing.T) {
	f := newFixture(t)
	if _, err := f.store.SetBackendState(t.Context(), "web", "10.9.9.9:80", BackendDrain); err != nil {
		t.Fatal(err)
	}
	rec := f.do(t, request{path: "/servers/web/meta"})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET meta = %d %s", rec.Code, rec.Body)
	}
	var got map[string]any
	decodeJSON(t, rec, &got)
	gotJSON, _ := json.Marshal(got)
	want := `{"backend_states":{"10.9.9.9:80":"drain"},"name":"web","origin":"config","revision":2,"updated":"2026-03-04T05:06:09Z"}`
	if string(gotJSON) != want {
		t.Fatalf("meta = %s\nwant %s", gotJSON, want)
	}
	if rec.Header().Get("ETag") != `"2"` {
		t.Fatalf("meta ETag %q", rec.Header().Get("ETag"))
	}
	if rec := f.do(t, request{path: "/servers/consul/meta"}); !strings.Contains(rec.Body.String(), `"backend_states": {}`) {
		t.Fatalf("no overrides must be {}:\n%s", rec.Body)
	}
	errorBody(t, f.do(t, request{path: "/servers/nope/meta"}), http.StatusNotFound)
}
