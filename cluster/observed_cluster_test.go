package cluster

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// observations is a node's settable observed state, handed to SetObserver.
type observations struct {
	mu   sync.Mutex
	list []Observation
}

func newObservations(node, n int) *observations {
	o := &observations{}
	for i := range n {
		o.list = append(o.list, Observation{
			Server: fmt.Sprint("srv", i%7), Backend: fmt.Sprintf("10.%d.%d.%d:80", node, i/250, i%250),
			Healthy: true, Conns: int64(node*1000 + i), RxBps: uint64(i) * 1500, TxBps: uint64(i) * 90000,
			Capped: i%2 == 0,
		})
	}
	return o
}

func (o *observations) observe(dst []Observation) []Observation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append(dst, o.list...)
}

func (o *observations) update(f func(list []Observation)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f(o.list)
}

// expected is what a view should sum for backend i of o, when o is the only
// origin reporting it.
func (o *observations) expected(i int) (server, backend string, sum ObservedSum) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ob := o.list[i]
	sum = ObservedSum{Nodes: 1, Conns: ob.Conns, RxBps: ob.RxBps, TxBps: ob.TxBps}
	if ob.Healthy {
		sum.Healthy = 1
	}
	return ob.Server, ob.Backend, sum
}

// sees reports whether n's view holds exactly the observations of the given
// origins (each observes its own backends).
func sees(n *Node, origins map[string]*observations) bool {
	v := n.Observed()
	got := v.Origins()
	if len(got) != len(origins) {
		return false
	}
	for _, or := range got {
		o := origins[or.NodeID]
		if o == nil {
			return false
		}
		o.mu.Lock()
		k := len(o.list)
		o.mu.Unlock()
		if or.Backends != k {
			return false
		}
		for i := range k {
			s, b, want := o.expected(i)
			if v.Sum(s, b) != want {
				return false
			}
		}
	}
	return true
}

// gossipTrio starts n1 bootstrapping alone, without join addresses, and n2 and
// n3 joining it, and waits until all three are alive in each other's gossip.
func gossipTrio(t testing.TB, mod ...netOpts) []*Node {
	t.Helper()
	n1 := openGossipNode(t, "n1", append([]netOpts{func(o *Options) { o.Bootstrap = true }}, mod...)...)
	join := func(o *Options) { o.Join = []string{n1.GossipAddr()} }
	nodes := []*Node{n1, openGossipNode(t, "n2", append([]netOpts{join}, mod...)...), openGossipNode(t, "n3", append([]netOpts{join}, mod...)...)}
	allAlive(t, nodes)
	return nodes
}

func allAlive(t testing.TB, nodes []*Node) {
	t.Helper()
	eventually(t, 10*time.Second, "all members alive in gossip", func() bool {
		for _, n := range nodes {
			for _, m := range nodes {
				if gossipOf(n.Members(), m.ID()) != GossipAlive {
					return false
				}
			}
		}
		return true
	})
}

// othersOf maps the other nodes' IDs to their observations.
func othersOf(nodes []*Node, obs []*observations, self int) map[string]*observations {
	m := map[string]*observations{}
	for i, n := range nodes {
		if i != self && obs[i] != nil {
			m[n.ID()] = obs[i]
		}
	}
	return m
}

// converge waits until every node's view holds the others' observations and
// returns how long that took.
func converge(t testing.TB, nodes []*Node, obs []*observations, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for i, n := range nodes {
		eventually(t, d, n.ID()+" sees the others' reports", func() bool { return sees(n, othersOf(nodes, obs, i)) })
	}
	return time.Since(start)
}

// change applies f to backend 0 of node 0's observations and returns how long
// until nodes 1 and 2 see the result.
func change(t testing.TB, nodes []*Node, obs []*observations, d time.Duration, f func(*Observation)) time.Duration {
	t.Helper()
	obs[0].update(func(l []Observation) { f(&l[0]) })
	s, b, want := obs[0].expected(0)
	start := time.Now()
	deadline := start.Add(d)
	for _, n := range nodes[1:] {
		for n.Observed().Sum(s, b) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not see the change within %s: %+v, want %+v", n.ID(), d, n.Observed().Sum(s, b), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return time.Since(start)
}

// Three nodes share their reports, plain and encrypted. With a 5 s report
// interval a health flip and a capped backend's connections still arrive at
// once; an uncapped backend's connections come with the next periodic report
// (TestPublishWhenDue shows they do not go earlier).
func TestObservedThreeNodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
	}{{"plain", nil}, {"encrypted", []byte("0123456789abcdef0123456789abcdef")}} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := gossipTrio(t, func(o *Options) { o.EncryptKey = tc.key; o.ReportInterval = 5 * time.Second })
			ch, cancel := nodes[1].SubscribeObserved()
			defer cancel()
			obs := make([]*observations, 3)
			for i, n := range nodes {
				obs[i] = newObservations(i+1, 3)
				n.SetObserver(obs[i].observe)
			}
			took := converge(t, nodes, obs, 3*time.Second)
			t.Logf("three nodes see each other's reports %s after SetObserver", took)
			select {
			case <-ch:
			default:
				t.Fatal("the subscriber was not notified")
			}

			flip := change(t, nodes, obs, time.Second, func(o *Observation) { o.Healthy = false })
			conns := change(t, nodes, obs, time.Second, func(o *Observation) { o.Conns += 5 }) // backend 0 is capped
			t.Logf("with a 5 s report interval: health flip seen in %s, capped connections in %s", flip, conns)

			obs[0].update(func(l []Observation) { l[1].Conns += 7 })
			s, b, want := obs[0].expected(1)
			eventually(t, 6*time.Second, "the uncapped change with the next report", func() bool { return nodes[1].Observed().Sum(s, b) == want })

			for _, n := range nodes {
				st := n.GossipStats()
				if st.ReportsSent < 2 || st.ReportsReceived < 2 || st.Seq != st.ReportsSent || st.BytesSent == 0 || st.BytesReceived == 0 || time.Since(st.LastReport) > 6*time.Second {
					t.Fatalf("%s stats %+v", n.ID(), st)
				}
				for _, m := range n.Members() {
					if m.ReportSeq == 0 || m.ReportBackends != 3 || m.LastReport.IsZero() {
						t.Fatalf("%s sees member %+v", n.ID(), m)
					}
				}
			}
			s, b, _ = obs[0].expected(0)
			if r := nodes[1].Observed().Reports(s, b); len(r) != 1 || r[0].NodeID != "n1" || r[0].Healthy {
				t.Fatalf("reports %+v", r)
			}
		})
	}
}

// A member that leaves stops counting at once; one that dies stops counting
// when its report expires (or gossip declares it dead, whichever is first).
// The node without join addresses then rejoins the dead member's address, so
// the member, restarted without join addresses, is back.
func TestObservedLeaveDeathAndRejoin(t *testing.T) {
	addr3, dir3 := freeAddr(t), t.TempDir()
	n3opts := func(o *Options) { o.GossipBind, o.DataDir = addr3, dir3 }
	n1 := openGossipNode(t, "n1", func(o *Options) { o.Bootstrap = true })
	join := func(o *Options) { o.Join = []string{n1.GossipAddr()} }
	n2 := openGossipNode(t, "n2", join)
	n3 := openGossipNode(t, "n3", join, n3opts)
	nodes := []*Node{n1, n2, n3}
	allAlive(t, nodes)
	eventually(t, 10*time.Second, "n3 is a raft member", func() bool {
		return slices.ContainsFunc(raftOnly(n1.Members()), func(m Member) bool { return m.ID == "n3" })
	})
	obs := []*observations{newObservations(1, 3), newObservations(2, 3), newObservations(3, 3)}
	for i, n := range nodes {
		n.SetObserver(obs[i].observe)
	}
	converge(t, nodes, obs, 3*time.Second)

	s := time.Now()
	if err := n2.Leave(); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "n2 stops counting after it left", func() bool {
		return sees(n1, othersOf([]*Node{n1, n3}, []*observations{obs[0], obs[2]}, 0)) &&
			sees(n3, othersOf([]*Node{n1, n3}, []*observations{obs[0], obs[2]}, 1))
	})
	t.Logf("a member that left stopped counting after %s", time.Since(s))
	_ = n2.Close()

	s = time.Now()
	if err := n3.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 8*time.Second, "n3 stops counting after it died", func() bool { return len(n1.Observed().Origins()) == 0 })
	t.Logf("a member that died stopped counting after %s (report interval 1 s)", time.Since(s))
	eventually(t, 15*time.Second, "n3 is dead in gossip", func() bool { return gossipOf(n1.Members(), "n3") == GossipDead })
	if got := n1.rejoinAddrs(); !slices.Contains(got, addr3) {
		t.Fatalf("rejoin addresses %v lack the dead raft member's %s", got, addr3)
	}
	if got := n1.rejoinAddrs(); slices.Contains(got, n2.GossipAddr()) {
		t.Fatalf("rejoin addresses %v hold the member that left", got)
	}

	s = time.Now()
	n3 = openGossipNode(t, "n3", n3opts)
	n3.SetObserver(obs[2].observe)
	eventually(t, 15*time.Second, "the restarted n3 counts again on n1", func() bool {
		return sees(n1, map[string]*observations{"n3": obs[2]})
	})
	t.Logf("the dead member, restarted without join addresses, was rejoined and counted after %s", time.Since(s))

	// Close leaves no publisher, sender or transport goroutine behind.
	for _, n := range []*Node{n1, n3} {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "no observed-state goroutines left", func() bool {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, f := range []string{"(*observer)", "(*meteredTransport)", "(*meteredConn)"} {
			if strings.Contains(stacks, f) {
				return false
			}
		}
		return true
	})
}

// TestGossipCostReport measures, for 10, 100 and 1,000 backends on each of
// three nodes: how long until all reports arrive complete, how long a health
// flip on one node takes to show on the other two, and the gossip traffic per
// node. Reports of 100 and 1,000 backends exceed a broadcast and go over TCP.
func TestGossipCostReport(t *testing.T) {
	nodes := gossipTrio(t)
	const window = 3 * time.Second
	for _, size := range []int{10, 100, 1000} {
		obs := make([]*observations, 3)
		for i, n := range nodes {
			obs[i] = newObservations(i+1, size)
			n.SetObserver(obs[i].observe)
		}
		full := converge(t, nodes, obs, 5*time.Second)

		var flips []time.Duration
		for range 5 {
			flips = append(flips, change(t, nodes, obs, 2*time.Second, func(o *Observation) { o.Healthy = !o.Healthy }))
		}
		slices.Sort(flips)

		before := make([]GossipStats, 3)
		for i, n := range nodes {
			before[i] = n.GossipStats()
		}
		time.Sleep(window)
		var sent, recv, reports uint64
		for i, n := range nodes {
			st := n.GossipStats()
			sent += st.BytesSent - before[i].BytesSent
			recv += st.BytesReceived - before[i].BytesReceived
			reports += st.ReportsSent - before[i].ReportsSent
		}
		perNode := float64(sent) / 3 / window.Seconds()
		msg := len(encodeReportMsg(&report{origin: "n1", entries: make([]reportEntry, size)}))
		t.Logf("%4d backends (report ≥ %5d B, %s): all reports complete in %s; health flip seen by both peers p50 %s max %s; "+
			"gossip %.1f KB/s sent per node (received %.1f KB/s), %.1f reports/s per node",
			size, msg, map[bool]string{true: "broadcast", false: "TCP"}[msg <= maxBroadcastReport], full.Round(time.Millisecond),
			flips[2].Round(time.Millisecond), flips[4].Round(time.Millisecond),
			perNode/1000, float64(recv)/3/window.Seconds()/1000, float64(reports)/3/window.Seconds())
		if flips[4] > time.Second {
			t.Errorf("%d backends: a health flip took %s to reach both peers", size, flips[4])
		}
		if r := float64(reports) / 3 / window.Seconds(); r < 0.6 || r > 1.5 {
			t.Errorf("%d backends: %.2f reports/s per node, want about one", size, r)
		}
		// Each report goes to two peers a few times (broadcast) or once each
		// (TCP), plus memberlist's own traffic and push/pull every 10 s.
		if limit := 10_000 + 12*float64(size*20); perNode > limit {
			t.Errorf("%d backends: %.0f B/s per node, over %.0f", size, perNode, limit)
		}
	}
}

// BenchmarkGossipConvergence: ns/op is the time from a health flip on one of
// three nodes until the other two see it; bytes/s/node is the gossip traffic
// each node sends meanwhile.
func BenchmarkGossipConvergence(b *testing.B) {
	for _, size := range []int{10, 100, 1000} {
		b.Run(fmt.Sprint(size, "backends"), func(b *testing.B) {
			nodes := gossipTrio(b)
			obs := make([]*observations, 3)
			for i, n := range nodes {
				obs[i] = newObservations(i+1, size)
				n.SetObserver(obs[i].observe)
			}
			converge(b, nodes, obs, 5*time.Second)
			var sent uint64
			for _, n := range nodes {
				sent -= n.GossipStats().BytesSent
			}
			start := time.Now()
			b.ResetTimer()
			for b.Loop() {
				change(b, nodes, obs, 5*time.Second, func(o *Observation) { o.Healthy = !o.Healthy })
			}
			b.StopTimer()
			for _, n := range nodes {
				sent += n.GossipStats().BytesSent
			}
			b.ReportMetric(float64(sent)/3/time.Since(start).Seconds(), "bytes/s/node")
		})
	}
}
