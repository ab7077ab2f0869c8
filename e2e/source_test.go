package e2e

import (
	"maps"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A config read from a URL or a Consul key is applied at start and again on
// SIGHUP or, with --watch, when it changes; a broken or unreachable config
// keeps the running one and the log names the problem.
func TestConfigSources(t *testing.T) {
	tests := []struct {
		name   string
		consul bool
		watch  bool
	}{
		{"url sighup", false, false},
		{"url watch", false, true},
		{"consul sighup", true, false},
		{"consul watch", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bs := startBackends(t, 2)
			apiAddr, a, b := freeAddr(t), freeAddr(t), freeAddr(t)
			srvA := server{name: "a", bind: a, lines: lines(bs[0])}
			srvB := server{name: "b", bind: b, lines: lines(bs[1])}
			cs := &configServer{}
			if tt.consul {
				cs.consulKey = "lb/gobetween"
			}
			ts := httptest.NewServer(cs)
			t.Cleanup(ts.Close)
			cs.set(200, config(apiAddr, srvA))

			var args []string
			var missing string
			var source map[string]string
			if tt.consul {
				args = []string{"from-consul", strings.TrimPrefix(ts.URL, "http://"), "--key", cs.consulKey}
				missing = "no such key"
				source = map[string]string{"kind": "consul", "host": strings.TrimPrefix(ts.URL, "http://"), "key": cs.consulKey}
			} else {
				args = []string{"from-url", ts.URL + "/gobetween.toml"}
				missing = "status 404 Not Found"
				source = map[string]string{"kind": "url", "url": ts.URL + "/gobetween.toml"}
			}
			if tt.watch {
				args = append(args, "--watch", "200ms")
			}
			n := startNodeArgs(t, args...)
			api := newAPI(apiAddr)
			api.wait(t, n)
			n.waitServing(a)
			api.waitServers(t, n, "a")
			var root struct {
				Configuration map[string]string `json:"configuration"`
			}
			if err := api.getJSON("/", &root); err != nil {
				t.Fatal(err)
			}
			if got := root.Configuration; !maps.Equal(got, source) {
				t.Fatalf("GET / configuration = %v, want %v", got, source)
			}
			// The log records which source defined the server.
			var meta struct {
				Origin string `json:"origin"`
			}
			if err := api.getJSON("/servers/a/meta", &meta); err != nil {
				t.Fatal(err)
			}
			if meta.Origin != source["kind"] {
				t.Fatalf("server a origin %q, want %q", meta.Origin, source["kind"])
			}
			change := func(status int, body string) {
				cs.set(status, body)
				if !tt.watch {
					n.signal(syscall.SIGHUP)
				}
			}

			change(200, config(apiAddr, srvA, srvB))
			api.waitServers(t, n, "a", "b")
			n.waitServing(b)
			if got := mustWho(t, b); got != "b2" {
				t.Fatalf("new server b answered %s", got)
			}

			// A config with a problem is refused as a whole: the new server c
			// does not appear and a, b keep serving.
			broken := config(apiAddr, srvB) + "[servers.c]\nbind = \"nowhere\"\nprotocol = \"tcp\"\n  [servers.c.discovery]\n  kind = \"static\"\n  static_list = [\"127.0.0.1:2\"]\n"
			change(200, broken)
			n.waitOutput("reload refused", `servers.c.bind: \"nowhere\" is not host:port`)
			api.waitServers(t, n, "a", "b")
			if got := mustWho(t, a); got != "b1" {
				t.Fatalf("server a answered %s after a refused reload", got)
			}

			// A source that fails keeps the running config too.
			change(404, "")
			n.waitOutput(missing, "the running config is kept")
			api.waitServers(t, n, "a", "b")

			// Back to a good config: a is pruned (it left the config).
			change(200, config(apiAddr, srvB))
			api.waitServers(t, n, "b")
			eventually(t, 15*time.Second, "a stops accepting", func() error { return refused(a) })
			if got := mustWho(t, b); got != "b2" {
				t.Fatalf("server b answered %s", got)
			}
			n.requireRunning()
		})
	}
}

// A source that cannot be read at start is fatal, naming the source and why.
func TestConfigSourceUnreadableAtStart(t *testing.T) {
	t.Parallel()
	cs := &configServer{}
	ts := httptest.NewServer(cs)
	t.Cleanup(ts.Close)
	cs.set(404, "")
	_, stderr, code := runGobetween(t, 15*time.Second, nil, "from-url", ts.URL+"/missing.toml")
	if code != 1 || !strings.Contains(stderr, ts.URL+"/missing.toml") || !strings.Contains(stderr, "status 404") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming the URL and the status", code, stderr)
	}
	cs.set(200, "[servers.x]\nbind = \"nowhere\"\n")
	_, stderr, code = runGobetween(t, 15*time.Second, nil, "from-url", ts.URL+"/bad.toml")
	if code != 1 || !strings.Contains(stderr, "servers.x.bind") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming servers.x.bind", code, stderr)
	}
}
