package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// discoWant is one backend a discovery source lists, with its weight.
type discoWant struct {
	b      *backend
	weight int
}

// discoSource is a real peer of one discovery kind that the test controls:
// set makes it list exactly these backends, fail makes it go down or answer
// garbage.
type discoSource interface {
	section() string // the keys of [servers.X.discovery] but failpolicy
	set(ws []discoWant)
	fail()
}

// discoStats is the part of GET /servers/{name}/stats a discovery test reads.
type discoStats struct {
	Backends []struct {
		Host   string `json:"host"`
		Port   string `json:"port"`
		Weight int    `json:"weight"`
	} `json:"backends"`
}

// discoSet renders the backends of a stats answer as sorted "port/weight"
// strings; every test backend is on 127.0.0.1, so the port names it.
func (a apiClient) discoSet(name string) ([]string, error) {
	var s discoStats
	if err := a.getJSON("/servers/"+name+"/stats", &s); err != nil {
		return nil, err
	}
	out := []string{}
	for _, b := range s.Backends {
		out = append(out, b.Port+"/"+strconv.Itoa(b.Weight))
	}
	slices.Sort(out)
	return out, nil
}

func wantSet(ws []discoWant) []string {
	out := []string{}
	for _, w := range ws {
		out = append(out, w.b.port()+"/"+strconv.Itoa(w.weight))
	}
	slices.Sort(out)
	return out
}

// waitDiscoSet polls the stats of every named server on every api until each
// lists exactly ws, and returns how long that took.
func waitDiscoSet(t testing.TB, apis []apiClient, timeout time.Duration, what string, ws []discoWant, names ...string) time.Duration {
	t.Helper()
	return waitDiscoLines(t, apis, timeout, what, wantSet(ws), names...)
}

// waitDiscoLines is waitDiscoSet with the wanted set as sorted "port/weight"
// strings.
func waitDiscoLines(t testing.TB, apis []apiClient, timeout time.Duration, what string, want []string, names ...string) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, what, func() error {
		for i, a := range apis {
			for _, name := range names {
				got, err := a.discoSet(name)
				if err != nil {
					return fmt.Errorf("api %d %s: %w", i, name, err)
				}
				if !slices.Equal(got, want) {
					return fmt.Errorf("api %d %s: backends %v, want %v", i, name, got, want)
				}
			}
		}
		return nil
	})
	return time.Since(start)
}

// httpSource serves a body rendered from the wanted list (plaintext or json)
// and counts the requests it answers with their times.
type httpSource struct {
	mu     sync.Mutex
	body   string
	status int
	hits   []time.Time
	render func(ws []discoWant) string
	srv    *httptest.Server
}

func newHTTPSource(t testing.TB, render func([]discoWant) string) *httpSource {
	s := &httpSource{render: render, status: http.StatusOK, body: render(nil)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits = append(s.hits, time.Now())
		body, status := s.body, s.status
		s.mu.Unlock()
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *httpSource) set(ws []discoWant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = s.render(ws), http.StatusOK
}

// fail answers 200 with a body that is neither backend lines nor JSON.
func (s *httpSource) fail() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body, s.status = "<html>garbage: not a backend list", http.StatusOK
}

// hitTimes is a copy of the request times so far.
func (s *httpSource) hitTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hits)
}

func plaintextLines(ws []discoWant) string {
	var sb strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&sb, "%s weight=%d\n", w.b.addr, w.weight)
	}
	return sb.String()
}

func jsonList(ws []discoWant) string {
	type elem struct {
		Host   string `json:"host"`
		Port   int    `json:"port"`
		Weight int    `json:"weight"`
	}
	list := []elem{}
	for _, w := range ws {
		p, _ := strconv.Atoi(w.b.port())
		list = append(list, elem{"127.0.0.1", p, w.weight})
	}
	b, _ := json.Marshal(list)
	return string(b)
}

type plaintextSource struct{ *httpSource }

func (s plaintextSource) section() string {
	return fmt.Sprintf("kind = \"plaintext\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nplaintext_endpoint = %q\n", s.srv.URL+"/list")
}

type jsonSource struct{ *httpSource }

func (s jsonSource) section() string {
	return fmt.Sprintf("kind = \"json\"\ninterval = \"200ms\"\ntimeout = \"1s\"\njson_endpoint = %q\n", s.srv.URL+"/backends.json")
}

// execSource is a shell script that prints a file the test rewrites.
type execSource struct {
	t            testing.TB
	script, list string
}

func newExecSource(t testing.TB) *execSource {
	dir := t.TempDir()
	s := &execSource{t: t, script: filepath.Join(dir, "discover.sh"), list: filepath.Join(dir, "list")}
	writeFile(t, s.list, "")
	writeFile(t, s.script, "#!/bin/sh\nexec cat "+s.list+"\n")
	if err := os.Chmod(s.script, 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *execSource) section() string {
	return fmt.Sprintf("kind = \"exec\"\ninterval = \"200ms\"\ntimeout = \"1s\"\nexec_command = %s\n", tomlList("/bin/sh", s.script))
}
func (s *execSource) set(ws []discoWant) { writeFile(s.t, s.list, plaintextLines(ws)) }
func (s *execSource) fail()              { writeFile(s.t, s.list, "this is not a backend line\n") }

// srvSource is a real dnsmasq on a loopback port, restarted with new records.
type srvSource struct {
	t      testing.TB
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
}

const dnsmasqPath = "/usr/sbin/dnsmasq"

func newSrvSource(t testing.TB) *srvSource {
	if _, err := os.Stat(dnsmasqPath); err != nil {
		t.Fatalf("srv discovery needs a real DNS server: install dnsmasq (%v)", err)
	}
	s := &srvSource{t: t, port: freePort(t)}
	t.Cleanup(s.stop)
	return s
}

func (s *srvSource) section() string {
	return fmt.Sprintf("kind = \"srv\"\ninterval = \"200ms\"\ntimeout = \"500ms\"\nsrv_lookup_server = \"127.0.0.1:%d\"\nsrv_lookup_pattern = \"_web._tcp.disco.test.\"\n", s.port)
}

func (s *srvSource) set(ws []discoWant) {
	s.stop()
	args := []string{
		"--keep-in-foreground", "--port=" + strconv.Itoa(s.port),
		"--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--no-hosts", "--pid-file=", "--log-facility=-",
		"--host-record=be.disco.test,127.0.0.1",
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	for _, w := range ws {
		args = append(args, fmt.Sprintf("--srv-host=_web._tcp.disco.test,be.disco.test,%s,10,%d", w.b.port(), w.weight))
	}
	cmd := exec.Command(dnsmasqPath, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start dnsmasq: %v", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(s.exited)
	eventually(s.t, 10*time.Second, "dnsmasq listening", func() error {
		select {
		case <-s.exited:
			s.t.Fatalf("dnsmasq exited: %s", out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(s.port), 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// fail stops dnsmasq: lookups time out.
func (s *srvSource) fail() { s.stop() }

func (s *srvSource) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// consulSource is an in-process Consul agent answering
// /v1/health/service/web with X-Consul-Index and blocking queries.
type consulSource struct {
	mu      sync.Mutex
	index   uint64
	entries []byte
	failing bool
	changed chan struct{} // closed and replaced on every change
	srv     *httptest.Server
}

func newConsulSource(t testing.TB) *consulSource {
	s := &consulSource{index: 1, entries: []byte("[]"), changed: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *consulSource) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/health/service/web" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	idx, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, err := time.ParseDuration(q.Get("wait"))
	if err != nil || wait <= 0 || wait > 10*time.Second {
		wait = 10 * time.Second
	}
	s.mu.Lock()
	cur, ch := s.index, s.changed
	s.mu.Unlock()
	if idx != 0 && idx >= cur {
		select {
		case <-ch:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	body, index, failing := s.entries, s.index, s.failing
	s.mu.Unlock()
	if failing {
		http.Error(w, "rpc error: No cluster leader", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
	_, _ = w.Write(body)
}

func (s *consulSource) section() string {
	return fmt.Sprintf("kind = \"consul\"\ninterval = \"1s\"\ntimeout = \"2s\"\nconsul_host = %q\nconsul_service_name = \"web\"\n", strings.TrimPrefix(s.srv.URL, "http://"))
}

func (s *consulSource) update(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
	s.index++
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *consulSource) set(ws []discoWant) {
	type entry struct {
		Node struct {
			Node    string
			Address string
		}
		Service struct {
			ID      string
			Service string
			Address string
			Port    int
			Weights struct{ Passing, Warning int }
		}
		Checks []any
	}
	list := []entry{}
	for i, w := range ws {
		var e entry
		e.Node.Node, e.Node.Address = "node"+strconv.Itoa(i), "127.0.0.1"
		p, _ := strconv.Atoi(w.b.port())
		e.Service.ID, e.Service.Service, e.Service.Address, e.Service.Port = "web"+strconv.Itoa(i), "web", "127.0.0.1", p
		e.Service.Weights.Passing, e.Service.Weights.Warning = w.weight, 1
		e.Checks = []any{}
		list = append(list, e)
	}
	b, _ := json.Marshal(list)
	s.update(func() { s.entries, s.failing = b, false })
}

func (s *consulSource) fail() { s.update(func() { s.failing = true }) }

// discoServers is the config of one node with two servers over the same
// discovery source: "keep" (failpolicy keeplast) and "empty" (setempty).
func discoServers(apiPort int, keepPort, emptyPort int, section string) string {
	cfg := fmt.Sprintf(`[logging]
level = "debug"
output = "stdout"

[api]
enabled = true
bind = "127.0.0.1:%d"
`, apiPort)
	for _, s := range []struct {
		name, policy string
		port         int
	}{{"keep", "keeplast", keepPort}, {"empty", "setempty", emptyPort}} {
		cfg += fmt.Sprintf(`
[servers.%s]
bind = "127.0.0.1:%d"
protocol = "tcp"
balance = "weight"

  [servers.%s.discovery]
  failpolicy = %q
%s`, s.name, s.port, s.name, s.policy, indent(section, "  "))
	}
	return cfg
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

// Each discovery kind against a real peer: the listed backends show in the
// stats with their weights and get traffic, a weight change and a removal
// show, a source that fails keeps the last set under keeplast and empties it
// under setempty, and a recovered source is followed again.
func TestDiscoveryKindsSingleNode(t *testing.T) {
	t.Parallel()
	kinds := []struct {
		name   string
		source func(t *testing.T) discoSource
		settle time.Duration // how long a change may take to show
	}{
		{"exec", func(t *testing.T) discoSource { return newExecSource(t) }, 5 * time.Second},
		{"plaintext", func(t *testing.T) discoSource { return plaintextSource{newHTTPSource(t, plaintextLines)} }, 5 * time.Second},
		{"json", func(t *testing.T) discoSource { return jsonSource{newHTTPSource(t, jsonList)} }, 5 * time.Second},
		{"srv", func(t *testing.T) discoSource { return newSrvSource(t) }, 5 * time.Second},
		{"consul", func(t *testing.T) discoSource { return newConsulSource(t) }, 8 * time.Second},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			bs := startBackends(t, 3)
			src := k.source(t)
			first := []discoWant{{bs[0], 1}, {bs[1], 1}}
			src.set(first)

			apiPort, keepPort, emptyPort := freePort(t), freePort(t), freePort(t)
			n := startNode(t, discoServers(apiPort, keepPort, emptyPort, src.section()))
			a := newAPI("127.0.0.1:" + strconv.Itoa(apiPort))
			keep := "127.0.0.1:" + strconv.Itoa(keepPort)
			a.wait(t, n)

			waitDiscoSet(t, []apiClient{a}, 10*time.Second, "first set discovered", first, "keep", "empty")
			if got := countWho(t, keep, 20); got["b1"] == 0 || got["b2"] == 0 || got["b3"] != 0 {
				t.Fatalf("traffic over the first set {b1, b2}: %v", got)
			}

			// b1's weight 1 → 5, b2 removed, b3 added.
			second := []discoWant{{bs[0], 5}, {bs[2], 1}}
			src.set(second)
			d := waitDiscoSet(t, []apiClient{a}, k.settle, "changed set discovered", second, "keep", "empty")
			t.Logf("%s: change shown after %v", k.name, d)
			if got := countWho(t, keep, 60); got["b2"] != 0 || got["b1"] == 0 || got["b3"] == 0 || got["b1"] <= got["b3"] {
				t.Fatalf("traffic over {b1 weight 5, b3 weight 1}: %v", got)
			}

			// The source fails: setempty empties its server; keeplast, which
			// fetched from the same source as often, still has the last set.
			src.fail()
			waitDiscoSet(t, []apiClient{a}, k.settle, "setempty server emptied by a failing source", nil, "empty")
			waitDiscoSet(t, []apiClient{a}, time.Second, "keeplast server keeps the last set", second, "keep")
			if got := countWho(t, keep, 10); got["b1"]+got["b3"] != 10 {
				t.Fatalf("traffic through keeplast while the source fails: %v", got)
			}

			// Back: both follow the source again (retry backoff is at most the
			// interval for the fast kinds, 1s for consul).
			third := []discoWant{{bs[1], 2}}
			src.set(third)
			waitDiscoSet(t, []apiClient{a}, k.settle, "recovered source followed", third, "keep", "empty")
			if got := countWho(t, keep, 5); got["b2"] != 5 {
				t.Fatalf("traffic after recovery: %v", got)
			}
		})
	}
}

// hitsBetween counts the request times in [from, to).
func hitsBetween(hits []time.Time, from, to time.Time) int {
	n := 0
	for _, h := range hits {
		if !h.Before(from) && h.Before(to) {
			n++
		}
	}
	return n
}

// A json discovery in a three-node cluster is fetched by the leader alone
// (the endpoint sees one fetcher's rate, not three), every node balances over
// the one set it stored in the log and follows its changes; the leader killed,
// the new leader fetches within an interval plus the election and the
// survivors follow a change made after the kill.
func TestClusterDiscoveryOneSetAndLeaderKill(t *testing.T) {
	t.Parallel()
	const interval = 500 * time.Millisecond
	bs := startBackends(t, 3)
	src := newHTTPSource(t, jsonList)
	var srcIPs sync.Map // remote IPs the endpoint saw
	inner := src.srv.Config.Handler
	src.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		srcIPs.Store(host, true)
		inner.ServeHTTP(w, r)
	})
	first := []discoWant{{bs[0], 1}, {bs[1], 3}}
	src.set(first)

	port := freePort(t)
	c := newTestCluster(t, fmt.Sprintf(`[servers.web]
bind = ":%d"
protocol = "tcp"
balance = "weight"

  [servers.web.discovery]
  kind = "json"
  interval = %q
  timeout = "1s"
  failpolicy = "keeplast"
  json_endpoint = %q
`, port, interval.String(), src.srv.URL+"/backends.json"))
	for i := range 3 {
		c.start(i)
	}
	leader := c.waitFormed(20*time.Second, 0, 1, 2)
	apis := []apiClient{c.api(0), c.api(1), c.api(2)}
	waitDiscoSet(t, apis, 10*time.Second, "first set on all three nodes", first, "web")
	for i := range 3 {
		addr := c.host(i) + ":" + strconv.Itoa(port)
		if got := countWho(t, addr, 40); got["b1"] == 0 || got["b2"] == 0 || got["b3"] != 0 {
			t.Fatalf("n%d balances over %v, want b1 and b2 only", i+1, got)
		}
	}

	// One fetcher: over 3 s, 3 s / interval fetches (+2 for timer phase),
	// where three fetchers would make three times as many.
	window := 3 * time.Second
	from := time.Now()
	time.Sleep(window)
	nHits := hitsBetween(src.hitTimes(), from, time.Now())
	t.Logf("endpoint requests in %v with interval %v: %d (one fetcher ≈ %d)", window, interval, nHits, int(window/interval))
	if max := int(window/interval) + 2; nHits > max || nHits < int(window/interval)-2 {
		t.Fatalf("%d requests in %v: want %d±2, one fetcher (the leader)", nHits, window, int(window/interval))
	}

	second := []discoWant{{bs[1], 1}, {bs[2], 2}}
	src.set(second)
	d := waitDiscoSet(t, apis, 5*time.Second, "changed set on all three nodes", second, "web")
	t.Logf("change shown on all three nodes after %v", d)

	// Kill the leader; the survivors elect one, which starts the discovery.
	survivors := []int{(leader + 1) % 3, (leader + 2) % 3}
	killed := time.Now()
	c.nodes[leader].signal(syscall.SIGKILL)
	c.nodes[leader].waitExit(5 * time.Second)
	third := []discoWant{{bs[0], 4}}
	src.set(third)
	d = waitDiscoSet(t, []apiClient{apis[survivors[0]], apis[survivors[1]]}, 10*time.Second,
		"change after the leader kill on both survivors", third, "web")
	t.Logf("leader n%d killed -> change made after the kill shown on both survivors: %v", leader+1, d)

	hits := src.hitTimes()
	var lastBefore, firstAfter time.Time
	for _, h := range hits {
		if h.Before(killed) {
			lastBefore = h
		} else if firstAfter.IsZero() {
			firstAfter = h
		}
	}
	gap := firstAfter.Sub(lastBefore)
	t.Logf("fetch gap over the hand-over: %v (last fetch %v before the kill, first %v after)", gap, killed.Sub(lastBefore), firstAfter.Sub(killed))
	// Detection: a follower's heartbeat timeout (500 ms, randomised up to
	// twice that), perhaps a second election round, then the new leader's
	// next poll (250 ms) and its immediate first fetch.
	if limit := interval + 3*time.Second; gap > limit {
		t.Fatalf("no fetch for %v across the leader kill, want under %v (interval + leader failure detection)", gap, limit)
	}
	for _, i := range survivors {
		addr := c.host(i) + ":" + strconv.Itoa(port)
		if got := countWho(t, addr, 5); got["b1"] != 5 {
			t.Fatalf("n%d after the hand-over balances over %v, want b1 only", i+1, got)
		}
	}

	// Still one fetcher after the hand-over.
	from = time.Now()
	time.Sleep(2 * time.Second)
	nHits = hitsBetween(src.hitTimes(), from, time.Now())
	if max := int(2*time.Second/interval) + 2; nHits > max {
		t.Fatalf("%d requests in 2s after the hand-over: more than one fetcher", nHits)
	}
	var ips []string
	srcIPs.Range(func(k, _ any) bool { ips = append(ips, k.(string)); return true })
	t.Logf("source addresses the endpoint saw: %v", ips)
}
