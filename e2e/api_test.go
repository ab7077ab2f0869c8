package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// postBody is the JSON server definition of gobetween 0.8's REST scripts
// (REFERENCE §2), with test addresses.
func postBody(bind string, backends ...string) string {
	list, _ := json.Marshal(backends)
	return fmt.Sprintf(`{"bind":%q,"protocol":"tcp","balance":"leastconn","client_idle_timeout":"10m",`+
		`"discovery":{"kind":"static","static_list":%s},`+
		`"healthcheck":{"kind":"ping","interval":"2s","timeout":"1s","fails":3}}`, bind, list)
}

// apiError is the JSON error body of every failed API call. A detail is an
// object ({"path":..., "msg":...}); tests match on its text.
type apiError struct {
	Error   string            `json:"error"`
	Details []json.RawMessage `json:"details"`
}

func decodeAPIError(t *testing.T, body string) apiError {
	t.Helper()
	var e apiError
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body is not {\"error\":...,\"details\":[...]}: %v: %s", err, body)
	}
	if e.Error == "" {
		t.Fatalf("error body without \"error\": %s", body)
	}
	return e
}

// The flow of gobetween 0.8's REST scripts: POST a server, send traffic through
// it, list it, read its stats, DELETE it, then 404.
func TestAPIServerLifecycle(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	apiAddr := freeAddr(t)
	n := startNode(t, header(apiAddr))
	api := newAPI(apiAddr)
	api.wait(t, n)

	if code, body := api.mustDo(t, "GET", "/ping", ""); code != 200 || strings.TrimSpace(body) != "OK" {
		t.Fatalf("GET /ping: %d %q", code, body)
	}
	code, body := api.mustDo(t, "GET", "/", "")
	var info struct {
		Pid     int    `json:"pid"`
		Version string `json:"version"`
		Uptime  string `json:"uptime"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &info) != nil || info.Pid != n.pid() {
		t.Fatalf("GET /: %d %s (want pid %d)", code, body, n.pid())
	}

	addr := freeAddr(t)
	if code, body := api.mustDo(t, "POST", "/servers/rest1", postBody(addr, bs[0].line("weight=2"), bs[1].line())); code/100 != 2 {
		t.Fatalf("POST /servers/rest1: %d %s", code, body)
	}
	n.waitServing(addr)
	counts := countWho(t, addr, 20)
	if counts["b1"]+counts["b2"] != 20 {
		t.Fatalf("traffic through the POSTed server: %v", counts)
	}

	code, body = api.mustDo(t, "GET", "/servers", "")
	var list map[string]map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil {
		t.Fatalf("GET /servers: %d %s", code, body)
	}
	if list["rest1"] == nil || list["rest1"]["bind"] != addr || list["rest1"]["balance"] != "leastconn" {
		t.Fatalf("GET /servers lacks rest1 as posted: %s", body)
	}
	code, body = api.mustDo(t, "GET", "/servers/rest1", "")
	var one map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &one) != nil || one["bind"] != addr {
		t.Fatalf("GET /servers/rest1: %d %s", code, body)
	}

	eventually(t, 10*time.Second, "stats with counters", func() error {
		s, err := api.stats("rest1")
		if err != nil {
			return err
		}
		if s.TotalConnections < 20 || s.RxTotal == 0 || s.TxTotal == 0 || len(s.Backends) != 2 {
			return fmt.Errorf("stats %+v", s)
		}
		var total int64
		for _, b := range s.Backends {
			total += b.Stats.TotalConnections
			if b.Stats.Rx == 0 || b.Stats.Tx == 0 || !b.Stats.Discovered {
				return fmt.Errorf("backend %s:%s stats %+v", b.Host, b.Port, b.Stats)
			}
		}
		if total < 20 {
			return fmt.Errorf("backends' total_connections sum %d < 20", total)
		}
		b1, err := s.backendOf(bs[0])
		if err != nil {
			return err
		}
		if b1.Weight != 2 {
			return fmt.Errorf("b1 weight %d, want 2", b1.Weight)
		}
		return nil
	})

	// DELETE stops accepting at once and drains open connections for
	// drain_timeout ([defaults] drain_timeout = "1s" in header).
	long := mustDial(t, addr)
	if err := long.echo("before delete"); err != nil {
		t.Fatal(err)
	}
	if code, body := api.mustDo(t, "DELETE", "/servers/rest1", ""); code/100 != 2 {
		t.Fatalf("DELETE /servers/rest1: %d %s", code, body)
	}
	deleted := time.Now()
	if err := long.echo("draining"); err != nil && time.Since(deleted) < 800*time.Millisecond {
		t.Errorf("open connection cut by DELETE before drain_timeout: %v", err)
	}
	waitClosed(t, long, 6*time.Second)
	for _, p := range []string{"/servers/rest1", "/servers/rest1/stats"} {
		if code, body := api.mustDo(t, "GET", p, ""); code != 404 {
			t.Errorf("GET %s after DELETE: %d %s, want 404", p, code, body)
		}
	}
	if code, body := api.mustDo(t, "DELETE", "/servers/rest1", ""); code != 404 {
		t.Errorf("second DELETE: %d %s, want 404", code, body)
	}
	eventually(t, 10*time.Second, "the deleted server's port closed", func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		return fmt.Errorf("%s still accepts", addr)
	})
	code, body = api.mustDo(t, "GET", "/servers", "")
	if code != 200 || strings.Contains(body, `"rest1"`) {
		t.Errorf("GET /servers after DELETE: %d %s", code, body)
	}
	// The name is free again.
	if code, body := api.mustDo(t, "POST", "/servers/rest1", postBody(freeAddr(t), bs[0].line())); code/100 != 2 {
		t.Errorf("POST of a deleted name: %d %s", code, body)
	}
}

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	apiAddr, fileAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "fromfile", bind: fileAddr, lines: lines(b)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(fileAddr)

	taken, err := net.Listen("tcp", "127.0.0.1:0") // a port some other program holds
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	okAddr := freeAddr(t)
	if code, body := api.mustDo(t, "POST", "/servers/one", postBody(okAddr, b.line())); code/100 != 2 {
		t.Fatalf("POST /servers/one: %d %s", code, body)
	}

	cases := []struct {
		name, method, path, body string
		code                     int
		details                  []string // substrings, each in some detail
	}{
		{"duplicate name", "POST", "/servers/one", postBody(freeAddr(t), b.line()), 409, nil},
		{"name from the file", "POST", "/servers/fromfile", postBody(freeAddr(t), b.line()), 409, nil},
		{"port of another server", "POST", "/servers/two", postBody(okAddr, b.line()), 409, nil},
		{"port held by another program", "POST", "/servers/three", postBody(taken.Addr().String(), b.line()), 409, nil},
		{"bad json", "POST", "/servers/four", `{"bind": "127.0.0.1:1",`, 400, nil},
		{"invalid definition", "POST", "/servers/five",
			`{"bind":"` + freeAddr(t) + `","balance":"fastest",` +
				`"healthcheck":{"kind":"ping","interval":"5","timeout":"1s"},` +
				`"discovery":{"kind":"static","static_list":["127.0.0.1:notaport"]}}`,
			422, []string{"balance", "interval", "static_list"}},
		{"unknown server", "GET", "/servers/nope", "", 404, nil},
		{"unknown server stats", "GET", "/servers/nope/stats", "", 404, nil},
		{"delete unknown server", "DELETE", "/servers/nope", "", 404, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := api.mustDo(t, c.method, c.path, c.body)
			if code != c.code {
				t.Fatalf("%s %s: status %d, want %d: %s", c.method, c.path, code, c.code, body)
			}
			e := decodeAPIError(t, body)
			for _, want := range c.details {
				found := false
				for _, d := range e.Details {
					found = found || strings.Contains(string(d), want)
				}
				if !found {
					t.Errorf("no detail about %q in %s", want, body)
				}
			}
			if len(c.details) > 0 && len(e.Details) < len(c.details) {
				t.Errorf("want every problem listed, got %s", body)
			}
		})
	}
	// The refused POSTs left nothing behind and did not disturb the others.
	for _, name := range []string{"two", "three", "four", "five"} {
		if code, _ := api.mustDo(t, "GET", "/servers/"+name, ""); code != 404 {
			t.Errorf("refused server %s exists: GET %d", name, code)
		}
	}
	if _, err := who(okAddr); err != nil {
		t.Errorf("server one after the refused POSTs: %v", err)
	}
	if _, err := who(fileAddr); err != nil {
		t.Errorf("server fromfile after the refused POSTs: %v", err)
	}
}

// Basic auth guards every route but /ping; /dump never shows the password.
func TestAPIBasicAuthAndDumpRedaction(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	apiAddr, addr := freeAddr(t), freeAddr(t)
	const password = "s3cret-pa55word"
	apiSection := fmt.Sprintf("bind = %q\n", apiAddr)
	cfg := strings.Replace(header(apiAddr), apiSection,
		apiSection+"  [api.basic_auth]\n  login = \"admin\"\n  password = \""+password+"\"\n", 1) +
		server{name: "web", bind: addr, lines: lines(b)}.toml()
	n := startNode(t, cfg)
	anon := newAPI(apiAddr)
	anon.wait(t, n) // /ping needs no auth
	n.waitServing(addr)
	admin := anon
	admin.user, admin.pass = "admin", password
	wrong := anon
	wrong.user, wrong.pass = "admin", "guess"

	for _, p := range []string{"/", "/servers", "/servers/web", "/servers/web/stats", "/dump"} {
		if code, _ := anon.mustDo(t, "GET", p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d, want 401", p, code)
		}
		if code, _ := wrong.mustDo(t, "GET", p, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong password: %d, want 401", p, code)
		}
		if code, body := admin.mustDo(t, "GET", p, ""); code != 200 {
			t.Errorf("GET %s with credentials: %d %s", p, code, body)
		}
	}
	if code, _ := anon.mustDo(t, "POST", "/servers/x", postBody(freeAddr(t), b.line())); code != http.StatusUnauthorized {
		t.Errorf("POST without credentials: %d, want 401", code)
	}
	if code, _ := anon.mustDo(t, "DELETE", "/servers/web", ""); code != http.StatusUnauthorized {
		t.Errorf("DELETE without credentials: %d, want 401", code)
	}
	if _, err := who(addr); err != nil {
		t.Errorf("server web after an unauthorised DELETE: %v", err)
	}

	for _, format := range []string{"", "?format=toml", "?format=json"} {
		code, body := admin.mustDo(t, "GET", "/dump"+format, "")
		if code != 200 {
			t.Fatalf("GET /dump%s: %d %s", format, code, body)
		}
		if strings.Contains(body, password) {
			t.Errorf("GET /dump%s shows the basic-auth password:\n%s", format, body)
		}
		if !strings.Contains(body, addr) {
			t.Errorf("GET /dump%s lacks server web (%s):\n%s", format, addr, body)
		}
		if format == "?format=json" {
			var doc map[string]any
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Errorf("GET /dump?format=json is not JSON: %v", err)
			}
		}
	}
	for _, p := range []string{"/servers", "/servers/web"} {
		if _, body := admin.mustDo(t, "GET", p, ""); strings.Contains(body, password) {
			t.Errorf("GET %s shows the password", p)
		}
	}
}
