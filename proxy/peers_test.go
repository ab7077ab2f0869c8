package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
)

// fakeView is the in-memory twin of the cluster's observed view: the reports of
// other nodes by "server/host:port". Build it with report, then hand it to
// SetPeers and leave it alone (a PeerView is immutable).
type fakeView map[string][]peerReport

type peerReport struct {
	node    string
	healthy bool
	conns   int64
	rx, tx  uint64
}

func newView() fakeView { return make(fakeView) }

func (v fakeView) report(server, backend, node string, healthy bool, conns int64) fakeView {
	k := server + "/" + backend
	v[k] = append(v[k], peerReport{node: node, healthy: healthy, conns: conns})
	return v
}

// reportBytes is report with the node's bytes per second from and to the
// backend.
func (v fakeView) reportBytes(server, backend, node string, rx, tx uint64) fakeView {
	k := server + "/" + backend
	v[k] = append(v[k], peerReport{node: node, healthy: true, rx: rx, tx: tx})
	return v
}

func (v fakeView) Backend(server, backend string) PeerBackend {
	var p PeerBackend
	for _, r := range v[server+"/"+backend] {
		p.Nodes++
		if r.healthy {
			p.Healthy++
		}
		p.Conns += r.conns
		p.RxBps += r.rx
		p.TxBps += r.tx
	}
	return p
}

func (v fakeView) Verdicts(server, backend string) []NodeVerdict {
	var out []NodeVerdict
	for _, r := range v[server+"/"+backend] {
		out = append(out, NodeVerdict{Node: r.node, Healthy: r.healthy})
	}
	return out
}

func withVerdict(policy string) serverOpt {
	return func(s *config.Server) {
		hc := *s.Healthcheck
		hc.ClusterVerdict = policy
		s.Healthcheck = &hc
	}
}

func targetOf(t testing.TB, addr string) config.Target {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return config.Target{Host: host, Port: port}
}

// mustBackendStats is backendStats that fails the test when the backend is not
// listed.
func (h *harness) mustBackendStats(name, addr string) BackendCounters {
	h.t.Helper()
	st, ok := h.backendStats(name, targetOf(h.t, addr))
	if !ok {
		h.t.Fatalf("server %q does not list backend %s", name, addr)
	}
	return st
}

func TestClusterVerdict(t *testing.T) {
	none := PeerBackend{}
	peers := func(nodes, healthy int) PeerBackend { return PeerBackend{Nodes: nodes, Healthy: healthy} }
	tests := []struct {
		name   string
		policy verdictPolicy
		local  bool
		p      PeerBackend
		want   bool
	}{
		{"majority no peers healthy", verdictMajority, true, none, true},
		{"majority no peers unhealthy", verdictMajority, false, none, false},
		{"majority two nodes, only this one healthy", verdictMajority, true, peers(1, 0), false},
		{"majority two nodes, only the peer healthy", verdictMajority, false, peers(1, 1), false},
		{"majority two nodes agree", verdictMajority, true, peers(1, 1), true},
		{"majority 2 of 3 without this one", verdictMajority, false, peers(2, 2), true},
		{"majority 2 of 3 with this one", verdictMajority, true, peers(2, 1), true},
		{"majority 1 of 3", verdictMajority, true, peers(2, 0), false},
		{"majority 2 of 4 is no majority", verdictMajority, true, peers(3, 1), false},
		{"majority 3 of 5", verdictMajority, false, peers(4, 3), true},
		{"any no peers healthy", verdictAny, true, none, true},
		{"any no peers unhealthy", verdictAny, false, none, false},
		{"any one peer healthy", verdictAny, false, peers(3, 1), true},
		{"any only this one healthy", verdictAny, true, peers(3, 0), true},
		{"any nobody", verdictAny, false, peers(3, 0), false},
		{"all no peers healthy", verdictAll, true, none, true},
		{"all no peers unhealthy", verdictAll, false, none, false},
		{"all everybody", verdictAll, true, peers(2, 2), true},
		{"all one peer disagrees", verdictAll, true, peers(2, 1), false},
		{"all this one disagrees", verdictAll, false, peers(2, 2), false},
		{"local ignores healthy peers", verdictLocal, false, peers(4, 4), false},
		{"local ignores unhealthy peers", verdictLocal, true, peers(4, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.healthy(tt.local, tt.p); got != tt.want {
				t.Fatalf("%s.healthy(local=%v, %+v) = %v, want %v", tt.policy, tt.local, tt.p, got, tt.want)
			}
		})
	}
}

func TestPolicyOf(t *testing.T) {
	tests := []struct {
		hc      *config.Healthcheck
		want    verdictPolicy
		wantErr string
	}{
		{nil, verdictMajority, ""},
		{&config.Healthcheck{Kind: "none"}, verdictMajority, ""},
		{&config.Healthcheck{ClusterVerdict: "majority"}, verdictMajority, ""},
		{&config.Healthcheck{ClusterVerdict: "any"}, verdictAny, ""},
		{&config.Healthcheck{ClusterVerdict: "all"}, verdictAll, ""},
		{&config.Healthcheck{ClusterVerdict: "local"}, verdictLocal, ""},
		{&config.Healthcheck{ClusterVerdict: "most"}, verdictMajority, `cluster_verdict: unknown verdict "most"`},
	}
	for _, tt := range tests {
		name := "nil"
		if tt.hc != nil {
			name = fmt.Sprintf("%q", tt.hc.ClusterVerdict)
		}
		t.Run(name, func(t *testing.T) {
			got, err := policyOf(config.Server{Healthcheck: tt.hc})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("policyOf = %v, %v; want %v", got, err, tt.want)
			}
			if tt.hc != nil && tt.hc.ClusterVerdict != "" && got.String() != tt.hc.ClusterVerdict {
				t.Fatalf("String() = %q, want %q", got.String(), tt.hc.ClusterVerdict)
			}
		})
	}
}

// A backend this node cannot reach but the other nodes find healthy stays a
// candidate under majority: dials to it fail over to the next candidate and
// count as passive failures; the node does not evict it alone.
func TestPeersKeepBackendThisNodeCannotReach(t *testing.T) {
	h := newHarness(t)
	h.rt.opts.NodeID = "n1"
	dead := deadPort(t)
	b, c := startBackend(t, echo), startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{dead, b.addr(), c.addr()}))

	h.rt.SetPeers(newView().report("web", dead, "n2", true, 0).report("web", dead, "n3", true, 0))
	h.tw.monitor("web").set(targetOf(t, dead), false)
	waitFor(t, 5*time.Second, "this node's own verdict on the dead backend is unhealthy", func() bool {
		own, ok := h.mustBackendStats("web", dead).Cluster.Nodes["n1"]
		return ok && !own
	})
	if !slices.Contains(h.candidates("web"), dead) {
		t.Fatalf("candidates %v: the backend the cluster finds healthy was evicted", h.candidates("web"))
	}
	const n = 6
	for i := range n {
		mustRelay(t, dial(t, addr), fmt.Sprint("client ", i))
	}
	if got := b.total.Load() + c.total.Load(); got != n {
		t.Fatalf("reachable backends served %d clients, want %d", got, n)
	}
	st := h.mustBackendStats("web", dead)
	if !st.Live || !st.Cluster.Healthy {
		t.Fatalf("dead backend live=%v cluster.healthy=%v, want both true (the cluster keeps it)", st.Live, st.Cluster.Healthy)
	}
	if st.RefusedConnections == 0 || h.tw.monitor("web").passiveCount(targetOf(t, dead)) == 0 {
		t.Fatalf("no dial to the dead backend was tried: refused=%d passive=%d",
			st.RefusedConnections, h.tw.monitor("web").passiveCount(targetOf(t, dead)))
	}
	want := map[string]bool{"n1": false, "n2": true, "n3": true}
	if !maps.Equal(st.Cluster.Nodes, want) {
		t.Fatalf("cluster.nodes = %v, want %v", st.Cluster.Nodes, want)
	}

	// Without peers the node's own verdict rules again.
	h.rt.SetPeers(nil)
	if slices.Contains(h.candidates("web"), dead) {
		t.Fatal("without peers a backend this node finds unhealthy is still a candidate")
	}
	if st := h.mustBackendStats("web", dead); st.Live {
		t.Fatal("without peers the dead backend is live")
	}
}

// Two peers find a backend unhealthy that this node finds healthy: the policy
// decides whether it stays a candidate.
func TestPeersOutvoteThisNode(t *testing.T) {
	tests := []struct {
		policy string
		kept   bool
	}{
		{"majority", false},
		{"", false}, // the default is majority
		{"all", false},
		{"any", true},
		{"local", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.policy), func(t *testing.T) {
			h := newHarness(t)
			a, b := startBackend(t, echo), startBackend(t, echo)
			addr := h.start("web", serverCfg([]string{a.addr(), b.addr()}, withVerdict(tt.policy)))
			waitFor(t, 5*time.Second, "both backends are candidates", func() bool { return len(h.candidates("web")) == 2 })
			h.rt.SetPeers(newView().report("web", a.addr(), "n2", false, 0).report("web", a.addr(), "n3", false, 0))
			if got := slices.Contains(h.candidates("web"), a.addr()); got != tt.kept {
				t.Fatalf("candidate = %v, want %v", got, tt.kept)
			}
			st := h.mustBackendStats("web", a.addr())
			if st.Live != tt.kept || st.Cluster.Healthy != tt.kept {
				t.Fatalf("live=%v cluster.healthy=%v, want %v", st.Live, st.Cluster.Healthy, tt.kept)
			}
			for i := range 4 {
				mustRelay(t, dial(t, addr), fmt.Sprint("client ", i))
			}
			if served := a.total.Load() > 0; served != tt.kept {
				t.Fatalf("outvoted backend served %d clients (kept=%v)", a.total.Load(), tt.kept)
			}
		})
	}
}

// holdConns opens n connections to addr and relays once on each, so each is
// attached to a backend when holdConns returns.
func holdConns(t *testing.T, addr string, n int) []*net.TCPConn {
	t.Helper()
	cs := make([]*net.TCPConn, n)
	for i := range cs {
		cs[i] = dial(t, addr)
		mustRelay(t, cs[i], fmt.Sprint("held ", i))
	}
	return cs
}

// Other nodes' connections count for leastconn: a backend they load is passed
// over, and it comes back when their count drops, without a rebuild.
func TestRemoteConnsSteerLeastConn(t *testing.T) {
	h := newHarness(t)
	h.rt.opts.NewBalancer = balance.New
	a, b, c := startBackend(t, echo), startBackend(t, echo), startBackend(t, echo)
	cfg := serverCfg([]string{a.addr(), b.addr(), c.addr()})
	cfg.Balance = "leastconn"
	addr := h.start("web", cfg)
	waitFor(t, 5*time.Second, "three candidates", func() bool { return len(h.candidates("web")) == 3 })

	h.rt.SetPeers(newView().report("web", a.addr(), "n2", true, 30))
	snap := h.server("web").pool.snap.Load()
	holdConns(t, addr, 4)
	if a.total.Load() != 0 || b.total.Load() != 2 || c.total.Load() != 2 {
		t.Fatalf("connections a/b/c = %d/%d/%d, want 0/2/2", a.total.Load(), b.total.Load(), c.total.Load())
	}

	h.rt.SetPeers(newView().report("web", a.addr(), "n2", true, 0))
	if h.server("web").pool.snap.Load() != snap {
		t.Fatal("a change of counts alone rebuilt the candidate set")
	}
	holdConns(t, addr, 1)
	if a.total.Load() != 1 {
		t.Fatalf("after the peer's connections ended the next client went elsewhere: a/b/c = %d/%d/%d",
			a.total.Load(), b.total.Load(), c.total.Load())
	}
}

// A backend's max_connections counts the other nodes' connections: with 8 of
// 10 taken elsewhere, this node relays 2.
func TestRemoteConnsCountTowardMaxConnections(t *testing.T) {
	h := newHarness(t)
	a := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{a.addr() + " max=10"}))
	h.rt.SetPeers(newView().report("web", a.addr(), "n2", true, 8))

	holdConns(t, addr, 2)
	extra := dial(t, addr)
	expectClosed(t, extra, 5*time.Second)
	if got := a.total.Load(); got != 2 {
		t.Fatalf("backend got %d connections, want 2", got)
	}
	if st := h.stats("web"); st.RefusedConnections != 1 {
		t.Fatalf("server refused %d connections, want 1", st.RefusedConnections)
	}

	h.rt.SetPeers(newView().report("web", a.addr(), "n2", true, 7))
	mustRelay(t, dial(t, addr), "a slot freed by a peer")
}

func TestObserve(t *testing.T) {
	h := newHarness(t)
	a, b := startBackend(t, echo), startBackend(t, echo)
	h.start("api", serverCfg([]string{a.addr()}))
	addr := h.start("web", serverCfg([]string{a.addr(), b.addr() + " max=5"}))
	waitFor(t, 5*time.Second, "both backends are candidates", func() bool { return len(h.candidates("web")) == 2 })

	// This node finds a unhealthy; the cluster keeps it.
	h.rt.SetPeers(newView().report("web", a.addr(), "n2", true, 3).report("web", a.addr(), "n3", true, 0))
	h.tw.monitor("web").set(a.target(), false)
	find := func(obs []Observation, server, backend string) (Observation, bool) {
		for _, o := range obs {
			if o.Server == server && o.Backend == backend {
				return o, true
			}
		}
		return Observation{}, false
	}
	waitFor(t, 5*time.Second, "a's own verdict is observed unhealthy", func() bool {
		o, ok := find(h.rt.Observe(nil), "web", a.addr())
		return ok && !o.Healthy
	})
	// Round robin over a and b: two held connections put one on each.
	holdConns(t, addr, 2)

	obs := h.rt.Observe(make([]Observation, 7))
	if len(obs) != 3 {
		t.Fatalf("Observe listed %d backends, want 3: %+v", len(obs), obs)
	}
	tests := []struct {
		server, backend string
		want            Observation
	}{
		{"api", a.addr(), Observation{Server: "api", Backend: a.addr(), Healthy: true}},
		{"web", a.addr(), Observation{Server: "web", Backend: a.addr(), Healthy: false, Conns: 1}},
		{"web", b.addr(), Observation{Server: "web", Backend: b.addr(), Healthy: true, Conns: 1, Capped: true}},
	}
	for _, tt := range tests {
		got, ok := find(obs, tt.server, tt.backend)
		got.RxBps, got.TxBps = 0, 0 // the rates depend on when the ticker ran
		if !ok || got != tt.want {
			t.Errorf("observation of %s %s = %+v (listed %v), want %+v", tt.server, tt.backend, got, ok, tt.want)
		}
	}
	if obs[0].Server != "api" {
		t.Errorf("servers not in name order: first is %q", obs[0].Server)
	}

	buf := make([]Observation, 0, 8)
	if allocs := testing.AllocsPerRun(100, func() { buf = h.rt.Observe(buf) }); allocs != 0 {
		t.Errorf("Observe into a large enough buffer allocates %.1f times", allocs)
	}

	h.rt.Remove("api")
	if obs := h.rt.Observe(obs); len(obs) != 2 || obs[0].Server != "web" {
		t.Errorf("after removing api Observe lists %+v", obs)
	}
}

// Stats show what the cluster sees: connections across nodes and each node's
// verdict; a drained backend still shows them.
func TestClusterStats(t *testing.T) {
	h := newHarness(t)
	h.rt.opts.NodeID = "n1"
	a, b := startBackend(t, echo), startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{a.addr(), b.addr()}))
	waitFor(t, 5*time.Second, "both backends are candidates", func() bool { return len(h.candidates("web")) == 2 })
	holdConns(t, addr, 2) // one on each
	h.rt.SetPeers(newView().report("web", a.addr(), "n2", true, 3).report("web", a.addr(), "n3", false, 2))

	check := func(when string) {
		t.Helper()
		st := h.mustBackendStats("web", a.addr())
		want := BackendCluster{ActiveConnections: 6, Healthy: true, Policy: "majority",
			Nodes: map[string]bool{"n1": true, "n2": true, "n3": false}}
		got := st.Cluster
		if got.ActiveConnections != want.ActiveConnections || got.Healthy != want.Healthy ||
			got.Policy != want.Policy || !maps.Equal(got.Nodes, want.Nodes) {
			t.Fatalf("%s: cluster = %+v, want %+v", when, got, want)
		}
		if !st.Live {
			t.Fatalf("%s: live = false, want the cluster verdict true", when)
		}
	}
	check("in rotation")
	if st := h.mustBackendStats("web", b.addr()); st.Cluster.ActiveConnections != 1 || !maps.Equal(st.Cluster.Nodes, map[string]bool{"n1": true}) {
		t.Fatalf("backend without reports: cluster = %+v", st.Cluster)
	}

	js, err := json.Marshal(h.stats("web"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"cluster":{"active_connections":6,"rx_second":0,"tx_second":0,"healthy":true,"policy":"majority","nodes":{"n1":true,"n2":true,"n3":false}}`} {
		if !strings.Contains(string(js), want) {
			t.Fatalf("stats JSON %s lacks %s", js, want)
		}
	}

	if err := h.rt.ApplyState(t.Context(), desiredOf(h, "web"), overrides("web", a.addr(), BackendDrain)); err != nil {
		t.Fatal(err)
	}
	check("drained")
	found := false
	for _, o := range h.rt.Observe(nil) {
		found = found || (o.Backend == a.addr() && o.Conns == 1)
	}
	if !found {
		t.Fatal("a drained backend with a connection is not observed")
	}
}

// stats.cluster.rx_second and tx_second are this node's bytes per second plus
// the live peers' last reports; a new view replaces the peers' part.
func TestClusterStatsBytesPerSecond(t *testing.T) {
	h := newHarness(t)
	a := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{a.addr()}))
	waitFor(t, 5*time.Second, "a is a candidate", func() bool { return len(h.candidates("web")) == 1 })
	c := dial(t, addr)
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 16<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := roundTrip(c, buf); err != nil {
				return
			}
		}
	}()
	h.rt.SetPeers(newView().reportBytes("web", a.addr(), "n2", 1000, 300).reportBytes("web", a.addr(), "n3", 20, 7))
	// One stats call reads the local and the cluster rates under one lock, so
	// they agree exactly.
	waitFor(t, 5*time.Second, "local traffic and peers in stats.cluster", func() bool {
		st := h.mustBackendStats("web", a.addr())
		return st.RxSecond > 0 && st.TxSecond > 0 &&
			st.Cluster.RxSecond == st.RxSecond+1020 && st.Cluster.TxSecond == st.TxSecond+307
	})

	h.rt.SetPeers(newView().reportBytes("web", a.addr(), "n2", 5, 6))
	st := h.mustBackendStats("web", a.addr())
	if st.Cluster.RxSecond != st.RxSecond+5 || st.Cluster.TxSecond != st.TxSecond+6 {
		t.Fatalf("after a new view: local rx/tx %d/%d, cluster %d/%d, want local + 5/6",
			st.RxSecond, st.TxSecond, st.Cluster.RxSecond, st.Cluster.TxSecond)
	}
	h.rt.SetPeers(nil)
	st = h.mustBackendStats("web", a.addr())
	if st.Cluster.RxSecond != st.RxSecond || st.Cluster.TxSecond != st.TxSecond {
		t.Fatalf("without peers: local rx/tx %d/%d, cluster %d/%d, want equal",
			st.RxSecond, st.TxSecond, st.Cluster.RxSecond, st.Cluster.TxSecond)
	}
	js, err := json.Marshal(st.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"rx_second":`, `"tx_second":`} {
		if !strings.Contains(string(js), key) {
			t.Fatalf("stats.cluster JSON %s lacks %s", js, key)
		}
	}
}

// cluster_verdict changes in place: no new listener, the verdicts follow.
func TestClusterVerdictPolicyUpdate(t *testing.T) {
	h := newHarness(t)
	a, b := startBackend(t, echo), startBackend(t, echo)
	cfg := serverCfg([]string{a.addr(), b.addr()})
	h.start("web", cfg)
	waitFor(t, 5*time.Second, "both backends are candidates", func() bool { return len(h.candidates("web")) == 2 })
	s := h.server("web")
	ln := s.listeners[0]
	held := holdConns(t, h.addr("web"), 1)[0]
	h.rt.SetPeers(newView().report("web", a.addr(), "n2", false, 0).report("web", a.addr(), "n3", false, 0))
	if slices.Contains(h.candidates("web"), a.addr()) {
		t.Fatal("majority kept a backend two of three nodes find unhealthy")
	}

	upsert := func(policy string) error {
		c := cfg
		withVerdict(policy)(&c)
		return h.rt.Upsert(t.Context(), "web", c)
	}
	if err := upsert("local"); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(h.candidates("web"), a.addr()) {
		t.Fatal("after cluster_verdict = local the backend this node finds healthy is not a candidate")
	}
	if st := h.mustBackendStats("web", a.addr()); !st.Live || st.Cluster.Policy != "local" {
		t.Fatalf("stats after the update: live=%v policy=%q", st.Live, st.Cluster.Policy)
	}
	if h.server("web") != s || s.listeners[0] != ln {
		t.Fatal("a cluster_verdict change restarted the server or its listener")
	}
	mustRelay(t, held, "held across the update")

	// A health check that fails to reconfigure keeps the whole old health
	// check, the cluster verdict included.
	bad := cfg
	bad.Healthcheck = &config.Healthcheck{Kind: "broken", ClusterVerdict: "majority"}
	if err := h.rt.Upsert(t.Context(), "web", bad); err == nil {
		t.Fatal("a health check that cannot be configured was accepted")
	}
	if st := h.mustBackendStats("web", a.addr()); !st.Live || st.Cluster.Policy != "local" {
		t.Fatalf("after a failed update: live=%v policy=%q, want the old policy", st.Live, st.Cluster.Policy)
	}
	if err := upsert("sometimes"); err == nil || !strings.Contains(err.Error(), "cluster_verdict") {
		t.Fatalf("unknown cluster_verdict: err = %v", err)
	}

	if err := upsert("majority"); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(h.candidates("web"), a.addr()) {
		t.Fatal("back to majority, the outvoted backend is still a candidate")
	}
}

// Only a flipped verdict rebuilds; a server started after SetPeers, and a
// backend discovered after it, take the last view.
func TestPeersLaterServersAndBackends(t *testing.T) {
	h := newHarness(t)
	a, b, c := startBackend(t, echo), startBackend(t, echo), startBackend(t, echo)
	v := newView().
		report("web", a.addr(), "n2", false, 4).report("web", a.addr(), "n3", false, 0).
		report("web", c.addr(), "n2", true, 7)
	h.rt.SetPeers(v)
	h.start("web", serverCfg([]string{a.addr(), b.addr()}))
	waitFor(t, 5*time.Second, "a is checked", func() bool {
		_, ok := h.mustBackendStats("web", a.addr()).Cluster.Nodes["local"]
		return ok
	})
	if got := h.candidates("web"); !slices.Equal(got, []string{b.addr()}) {
		t.Fatalf("a server started after SetPeers has candidates %v, want only %s", got, b.addr())
	}
	if st := h.mustBackendStats("web", a.addr()); st.Cluster.ActiveConnections != 4 {
		t.Fatalf("cluster active of a = %d, want the peers' 4", st.Cluster.ActiveConnections)
	}

	h.tw.push("web", a.addr(), b.addr(), c.addr())
	waitFor(t, 5*time.Second, "c is a candidate", func() bool { return slices.Contains(h.candidates("web"), c.addr()) })
	if st := h.mustBackendStats("web", c.addr()); st.Cluster.ActiveConnections != 7 || st.Cluster.Nodes["n2"] != true {
		t.Fatalf("a backend discovered after SetPeers: cluster = %+v", st.Cluster)
	}
	p := h.server("web").pool
	p.mu.Lock()
	got := p.backends[c.addr()].load.Conns()
	p.mu.Unlock()
	if got != 7 {
		t.Fatalf("leastconn sees %d connections on c, want the peers' 7", got)
	}

	snap := p.snap.Load()
	h.rt.SetPeers(newView().
		report("web", a.addr(), "n2", false, 9).report("web", a.addr(), "n3", false, 0).
		report("web", c.addr(), "n2", true, 1))
	if p.snap.Load() != snap {
		t.Fatal("SetPeers without a flipped verdict rebuilt the candidate set")
	}
	h.rt.SetPeers(newView().report("web", a.addr(), "n2", true, 0))
	if p.snap.Load() == snap || !slices.Contains(h.candidates("web"), a.addr()) {
		t.Fatal("a flipped verdict did not rebuild the candidate set")
	}
}

// SetPeers races reconcile, health flips, discovery, Observe and Stats; once
// the last of them is applied the verdicts follow it.
func TestSetPeersConcurrent(t *testing.T) {
	h := newHarness(t)
	a, b, c := startBackend(t, echo), startBackend(t, echo), startBackend(t, echo)
	cfg := serverCfg([]string{a.addr(), b.addr(), c.addr()})
	addr := h.start("web", cfg)
	down := newView().report("web", a.addr(), "n2", false, 1).report("web", a.addr(), "n3", false, 1)
	up := newView().report("web", a.addr(), "n2", true, 2).report("web", a.addr(), "n3", true, 2)

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	loop := func(f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				f(i)
			}
		}()
	}
	loop(func(i int) {
		if i%2 == 0 {
			h.rt.SetPeers(down)
		} else {
			h.rt.SetPeers(up)
		}
	})
	loop(func(i int) { h.tw.monitor("web").set(b.target(), i%2 == 0); time.Sleep(time.Millisecond) })
	loop(func(i int) {
		u := cfg
		withVerdict([]string{"majority", "any", "all", "local"}[i%4])(&u)
		ov := overrides("web", c.addr(), BackendDrain)
		if i%3 == 0 {
			ov = nil
		}
		if err := h.rt.ApplyState(ctx, map[string]config.Server{"web": u}, ov); err != nil {
			t.Error(err)
		}
		time.Sleep(time.Millisecond)
	})
	loop(func(i int) {
		h.tw.push("web", a.addr(), b.addr(), c.addr())
		time.Sleep(time.Millisecond)
	})
	loop(func(int) {
		h.rt.Observe(nil)
		h.rt.Stats("web")
		time.Sleep(time.Millisecond)
	})
	loop(func(i int) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			roundTrip(c, []byte("x"))
			c.Close()
		}
	})
	wg.Wait()

	if err := h.rt.ApplyState(t.Context(), map[string]config.Server{"web": cfg}, nil); err != nil {
		t.Fatal(err)
	}
	h.tw.monitor("web").set(b.target(), true)
	h.rt.SetPeers(down)
	waitFor(t, 5*time.Second, "candidates follow the last view and verdicts", func() bool {
		return slices.Equal(h.candidates("web"), sortedAddrs(b.addr(), c.addr()))
	})
	h.rt.SetPeers(up)
	if got := h.candidates("web"); !slices.Equal(got, sortedAddrs(a.addr(), b.addr(), c.addr())) {
		t.Fatalf("candidates %v after the peers find a healthy again", got)
	}
	waitFor(t, 5*time.Second, "cluster active of a is the last view's 4", func() bool {
		return h.mustBackendStats("web", a.addr()).Cluster.ActiveConnections == 4
	})
}

func sortedAddrs(addrs ...string) []string {
	slices.Sort(addrs)
	return addrs
}

// sumView is a PeerView of precomputed sums, as the cluster's is: one map
// lookup per backend.
type sumView map[[2]string]PeerBackend

func (v sumView) Backend(server, backend string) PeerBackend { return v[[2]string{server, backend}] }
func (v sumView) Verdicts(string, string) []NodeVerdict      { return nil }

// BenchmarkPeers1000 measures SetPeers without a flipped verdict, with one
// (a rebuild), and Observe, for a server with 1,000 backends.
func BenchmarkPeers1000(b *testing.B) {
	h := newHarness(b)
	list := make([]string, 1000)
	for i := range list {
		list[i] = fmt.Sprintf("127.0.0.1:%d", 20000+i)
	}
	h.start("web", serverCfg(list))
	views := [2]sumView{make(sumView), make(sumView)}
	for i, addr := range list {
		views[0][[2]string{"web", addr}] = PeerBackend{Nodes: 2, Healthy: 2, Conns: int64(i % 7)}
		views[1][[2]string{"web", addr}] = PeerBackend{Nodes: 2, Healthy: 2, Conns: int64(i % 5)}
	}
	flipped := make(sumView)
	maps.Copy(flipped, views[0])
	flipped[[2]string{"web", list[0]}] = PeerBackend{Nodes: 2}
	b.Run("counts", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			h.rt.SetPeers(views[i%2])
		}
	})
	b.Run("flip", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if i%2 == 0 {
				h.rt.SetPeers(flipped)
			} else {
				h.rt.SetPeers(views[0])
			}
		}
	})
	b.Run("observe", func(b *testing.B) {
		var buf []Observation
		for b.Loop() {
			buf = h.rt.Observe(buf)
		}
	})
}
