package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// header is the global part of a test config: debug logs on stdout, a short
// drain so that stopping a node never waits long, and the API when apiAddr is set.
func header(apiAddr string) string {
	var b strings.Builder
	b.WriteString("[logging]\nlevel = \"debug\"\noutput = \"stdout\"\n\n")
	b.WriteString("[defaults]\ndrain_timeout = \"1s\"\n\n")
	if apiAddr != "" {
		fmt.Fprintf(&b, "[api]\nenabled = true\nbind = %q\n\n", apiAddr)
	}
	return b.String()
}

// server is one [servers.<name>] section of a test config.
type server struct {
	name    string
	bind    string
	balance string   // "" = the default (weight)
	lines   []string // static_list entries
	options []string // raw `key = value` lines of [servers.<name>]
	hc      []string // raw lines of [servers.<name>.healthcheck]; nil = no section
	access  []string // raw lines of [servers.<name>.access]; nil = no section
}

func (s server) toml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[servers.%s]\nbind = %q\nprotocol = \"tcp\"\n", s.name, s.bind)
	if s.balance != "" {
		fmt.Fprintf(&b, "balance = %q\n", s.balance)
	}
	for _, o := range s.options {
		b.WriteString(o + "\n")
	}
	fmt.Fprintf(&b, "  [servers.%s.discovery]\n  kind = \"static\"\n  static_list = %s\n", s.name, tomlList(s.lines...))
	if s.hc != nil {
		fmt.Fprintf(&b, "  [servers.%s.healthcheck]\n", s.name)
		for _, l := range s.hc {
			b.WriteString("  " + l + "\n")
		}
	}
	if s.access != nil {
		fmt.Fprintf(&b, "  [servers.%s.access]\n", s.name)
		for _, l := range s.access {
			b.WriteString("  " + l + "\n")
		}
	}
	b.WriteString("\n")
	return b.String()
}

// config is a whole TOML config.
func config(apiAddr string, servers ...server) string {
	s := header(apiAddr)
	for _, srv := range servers {
		s += srv.toml()
	}
	return s
}

// pingHC is a fast ping health check: a dead backend is out after one failed
// check (100 ms), a restarted one back after one good check.
var pingHC = []string{`kind = "ping"`, `interval = "100ms"`, `timeout = "300ms"`, `fails = 1`, `passes = 1`}

// lines returns the static_list lines of backends.
func lines(bs ...*backend) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.line()
	}
	return out
}

// testdata reads e2e/testdata/name and replaces each key of vars by its value.
func testdata(t testing.TB, name string, vars map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for k, v := range vars {
		s = strings.ReplaceAll(s, k, v)
	}
	return s
}

// apiClient talks to a node's REST API.
type apiClient struct {
	base       string // http://127.0.0.1:PORT
	user, pass string // basic auth when user != ""
}

func newAPI(addr string) apiClient { return apiClient{base: "http://" + addr} }

var httpClient = &http.Client{Timeout: 5 * time.Second}

// do sends one request and returns the status and body; transport errors are
// returned, not fatal, so callers can poll.
func (a apiClient) do(method, path, body string) (int, string, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		return 0, "", err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.user != "" {
		req.SetBasicAuth(a.user, a.pass)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// mustDo is do that fails the test on a transport error.
func (a apiClient) mustDo(t testing.TB, method, path, body string) (int, string) {
	t.Helper()
	code, b, err := a.do(method, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return code, b
}

// wait polls GET /ping until it answers 200.
func (a apiClient) wait(t testing.TB, n *node) {
	t.Helper()
	eventually(t, 15*time.Second, "API /ping", func() error {
		n.requireRunning()
		code, _, err := a.do("GET", "/ping", "")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
}

// serverStats is GET /servers/{name}/stats in gobetween 0.8's shape.
type serverStats struct {
	ActiveConnections  int64          `json:"active_connections"`
	TotalConnections   int64          `json:"total_connections"`
	RefusedConnections int64          `json:"refused_connections"`
	RxTotal            uint64         `json:"rx_total"`
	TxTotal            uint64         `json:"tx_total"`
	RxSecond           uint64         `json:"rx_second"`
	TxSecond           uint64         `json:"tx_second"`
	Backends           []backendStats `json:"backends"`
}

type backendStats struct {
	Host           string `json:"host"`
	Port           string `json:"port"`
	Priority       int    `json:"priority"`
	Weight         int    `json:"weight"`
	MaxConnections int    `json:"max_connections"`
	Sni            string `json:"sni"`
	Stats          struct {
		Live               bool   `json:"live"`
		Discovered         bool   `json:"discovered"`
		TotalConnections   int64  `json:"total_connections"`
		ActiveConnections  int64  `json:"active_connections"`
		RefusedConnections int64  `json:"refused_connections"`
		Rx                 uint64 `json:"rx"`
		Tx                 uint64 `json:"tx"`
	} `json:"stats"`
}

// stats fetches a server's stats; errors are returned so callers can poll.
func (a apiClient) stats(name string) (serverStats, error) {
	var s serverStats
	return s, a.getJSON("/servers/"+name+"/stats", &s)
}

// getJSON GETs path and decodes a 200 answer into v.
func (a apiClient) getJSON(path string, v any) error {
	code, body, err := a.do("GET", path, "")
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: status %d: %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		return fmt.Errorf("GET %s: %w: %s", path, err, body)
	}
	return nil
}

// backendOf returns the stats of backend b in s.
func (s serverStats) backendOf(b *backend) (backendStats, error) {
	for _, x := range s.Backends {
		if x.Host+":"+x.Port == b.addr {
			return x, nil
		}
	}
	return backendStats{}, fmt.Errorf("backend %s (%s) not in stats %+v", b.name, b.addr, s.Backends)
}

// waitLive polls the stats until backend b of server name is live (or not).
func (a apiClient) waitLive(t testing.TB, name string, b *backend, live bool) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("backend %s live=%v", b.name, live), func() error {
		s, err := a.stats(name)
		if err != nil {
			return err
		}
		bs, err := s.backendOf(b)
		if err != nil {
			return err
		}
		if bs.Stats.Live != live {
			return fmt.Errorf("live=%v", bs.Stats.Live)
		}
		return nil
	})
}

// waitIdle polls the stats until server name has no active connection, so that
// gobetween's own bookkeeping (not only the client's) has seen every close.
func (a apiClient) waitIdle(t testing.TB, name string) {
	t.Helper()
	eventually(t, 10*time.Second, "server "+name+" without active connections", func() error {
		s, err := a.stats(name)
		if err != nil {
			return err
		}
		if s.ActiveConnections != 0 {
			return fmt.Errorf("active_connections=%d", s.ActiveConnections)
		}
		for _, b := range s.Backends {
			if b.Stats.ActiveConnections != 0 {
				return fmt.Errorf("backend %s:%s active_connections=%d", b.Host, b.Port, b.Stats.ActiveConnections)
			}
		}
		return nil
	})
}
