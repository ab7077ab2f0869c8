package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The TestClusterView tests check "one cluster view": every node routes by the
// same healthy set and counts the other nodes' connections. They assert on
// timings (gossip convergence, the max_connections overshoot), so they do not
// call t.Parallel: they run one after the other, before the parallel tests,
// on an otherwise idle machine. Each starts its own three-node cluster.

// startViewCluster starts three nodes on 127.0.0.1-3 and waits for one leader.
func startViewCluster(t *testing.T) *testCluster {
	t.Helper()
	c := newTestCluster(t, "")
	for i := range 3 {
		c.start(i)
	}
	c.waitFormed(20*time.Second, 0, 1, 2)
	return c
}

// postServer creates server name through node i's API.
func postServer(c *testCluster, i int, name, body string) {
	c.t.Helper()
	if code, b := c.api(i).mustDo(c.t, "POST", "/servers/"+name, body); code != 200 {
		c.t.Fatalf("POST /servers/%s on n%d: %d %s", name, i+1, code, b)
	}
}

// clientIPs are the source addresses of the iphash1 clients: 127.0.1.1-200,
// clear of the nodes' 127.0.0.1-3.
func clientIPs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.1.%d", i+1)
	}
	return out
}

// pickedEverywhere asks, for every source address, which backend each node
// sends it to; it fails unless the three nodes agree on every address, and
// returns the agreed backend per address.
func pickedEverywhere(t *testing.T, c *testCluster, port int, srcs []string) map[string]string {
	t.Helper()
	type pick struct {
		src  string
		via  [3]string
		errs []error
	}
	work := make(chan string)
	results := make(chan pick)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for src := range work {
				p := pick{src: src}
				for i := range 3 {
					name, err := whoFrom(src, serverAddr(c, i, port))
					if err != nil {
						p.errs = append(p.errs, fmt.Errorf("via n%d: %w", i+1, err))
					}
					p.via[i] = name
				}
				results <- p
			}
		}()
	}
	go func() {
		for _, s := range srcs {
			work <- s
		}
		close(work)
		wg.Wait()
		close(results)
	}()
	out := map[string]string{}
	var problems []string
	for p := range results {
		if len(p.errs) > 0 {
			problems = append(problems, fmt.Sprintf("client %s: %v", p.src, errors.Join(p.errs...)))
			continue
		}
		if p.via[0] != p.via[1] || p.via[0] != p.via[2] {
			problems = append(problems, fmt.Sprintf("client %s: n1 -> %s, n2 -> %s, n3 -> %s", p.src, p.via[0], p.via[1], p.via[2]))
			continue
		}
		out[p.src] = p.via[0]
	}
	if len(problems) > 0 {
		if len(problems) > 10 {
			problems = append(problems[:10], fmt.Sprintf("… and %d more", len(problems)-10))
		}
		t.Fatalf("%d of %d clients not sent to one backend by all three nodes:\n%s", len(problems), len(srcs), strings.Join(problems, "\n"))
	}
	return out
}

// onlyMovedFrom checks that, from before to after, exactly the clients of the
// backends in gone moved (to a backend not in gone), and no other client did.
func onlyMovedFrom(t *testing.T, before, after map[string]string, gone ...string) int {
	t.Helper()
	isGone := map[string]bool{}
	for _, g := range gone {
		isGone[g] = true
	}
	moved := 0
	var problems []string
	for src, was := range before {
		now := after[src]
		switch {
		case isGone[now]:
			problems = append(problems, fmt.Sprintf("client %s still sent to %s, which is gone", src, now))
		case !isGone[was] && now != was:
			problems = append(problems, fmt.Sprintf("client %s moved from %s to %s", src, was, now))
		case now != was:
			moved++
		}
	}
	if len(problems) > 0 {
		t.Fatalf("only the clients of %v may move:\n%s", gone, strings.Join(problems, "\n"))
	}
	return moved
}

func perBackend(m map[string]string) map[string]int {
	out := map[string]int{}
	for _, b := range m {
		out[b]++
	}
	return out
}

// iphash1 with the cluster verdict: 200 client addresses get the same backend
// through each of the three nodes; a backend removed by a PUT on one node, and
// then a backend that dies, move only their own clients, and the nodes still
// agree on every client. GET /cluster shows each member's gossip reports.
func TestClusterViewIphash1SameBackendOnEveryNode(t *testing.T) {
	bs := startBackends(t, 5)
	c := startViewCluster(t)
	port := freePort(t)
	body := func(bs ...*backend) string {
		return viewServer(":"+strconv.Itoa(port), "iphash1", viewPing("300ms"), lines(bs...)...)
	}
	postServer(c, 0, "ih", body(bs...))
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	apis := clusterAPIs(c, 0, 1, 2)
	waitViews(t, apis, "ih", 10*time.Second, "every backend healthy on every node, by all three", clusterHealthy(nodeIDs[:], bs...))

	// Every node hears every member's reports, and they keep coming.
	seqs := map[string]uint64{} // "n1 on n2" -> report_seq
	eventually(t, 10*time.Second, "each node lists every member's gossip reports, advancing", func() error {
		for i, a := range apis {
			ms, err := clusterViewOf(a)
			if err != nil {
				return err
			}
			for _, id := range nodeIDs {
				m, ok := memberOf(ms, id)
				if !ok {
					return fmt.Errorf("n%d does not list %s: %+v", i+1, id, ms)
				}
				if m.Gossip != "alive" || m.ReportSeq == 0 || m.ReportBackends < len(bs) {
					return fmt.Errorf("n%d: member %+v: want gossip alive, report_seq > 0, report_backends >= %d", i+1, m, len(bs))
				}
				if age := time.Since(m.LastReport); age > 5*time.Second || age < -5*time.Second {
					return fmt.Errorf("n%d: member %s last_report %v is %v old", i+1, id, m.LastReport, age)
				}
				key := id + " on n" + strconv.Itoa(i+1)
				if seqs[key] == 0 {
					seqs[key] = m.ReportSeq
				}
				if m.ReportSeq <= seqs[key] {
					return fmt.Errorf("n%d: report_seq of %s not advancing (%d)", i+1, id, m.ReportSeq)
				}
			}
		}
		return nil
	})

	srcs := clientIPs(200)
	first := pickedEverywhere(t, c, port, srcs)
	spread := perBackend(first)
	t.Logf("200 clients over 5 backends: %v", spread)
	if len(spread) != len(bs) {
		t.Fatalf("200 client addresses use only %d of %d backends: %v", len(spread), len(bs), spread)
	}
	// Asked again, every client keeps its backend.
	if again := pickedEverywhere(t, c, port, srcs); onlyMovedFrom(t, first, again) != 0 {
		t.Fatal("clients moved without a change")
	}

	// b1 is removed by a PUT on n2.
	removed := bs[0]
	if code, b := c.api(1).mustDo(t, "PUT", "/servers/ih", body(bs[1:]...)); code != 200 {
		t.Fatalf("PUT /servers/ih without %s on n2: %d %s", removed.name, code, b)
	}
	waitViews(t, apis, "ih", 5*time.Second, removed.name+" gone from every node", func(_ int, s viewStats) error {
		if s.backend(removed) != nil {
			return fmt.Errorf("%s still listed", removed.name)
		}
		return nil
	})
	second := pickedEverywhere(t, c, port, srcs)
	moved := onlyMovedFrom(t, first, second, removed.name)
	if moved != spread[removed.name] {
		t.Fatalf("%d clients moved, want the %d of %s", moved, spread[removed.name], removed.name)
	}
	t.Logf("after removing %s: %d clients moved, %v", removed.name, moved, perBackend(second))

	// b2 dies: every node's health check sees it, the cluster verdict drops it
	// everywhere, and only its clients move.
	dead := bs[1]
	dead.Kill()
	waitViews(t, apis, "ih", 10*time.Second, dead.name+" out of the healthy set on every node", func(_ int, s viewStats) error {
		v := s.backend(dead)
		if v == nil {
			return fmt.Errorf("%s not listed", dead.name)
		}
		if v.Stats.Live || v.Stats.Cluster.Healthy {
			return fmt.Errorf("%s live=%v cluster.healthy=%v nodes=%v", dead.name, v.Stats.Live, v.Stats.Cluster.Healthy, v.Stats.Cluster.Nodes)
		}
		return nil
	})
	third := pickedEverywhere(t, c, port, srcs)
	moved = onlyMovedFrom(t, second, third, dead.name)
	if moved != perBackend(second)[dead.name] {
		t.Fatalf("%d clients moved, want the %d of %s", moved, perBackend(second)[dead.name], dead.name)
	}
	t.Logf("after %s died: %d clients moved, %v", dead.name, moved, perBackend(third))
}

// leastconn counts the other nodes' connections: 30 connections held through n1
// on the only backend A; once a PUT adds B and C, n2 and n3 see A's 30 within
// 2 s and send every new connection to B or C.
func TestClusterViewLeastconnCountsOtherNodes(t *testing.T) {
	bs := startBackends(t, 3)
	a := bs[0]
	c := startViewCluster(t)
	port := freePort(t)
	body := func(bs ...*backend) string {
		return viewServer(":"+strconv.Itoa(port), "leastconn", viewPing("500ms"), lines(bs...)...)
	}
	postServer(c, 0, "lc", body(a))
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	apis := clusterAPIs(c, 0, 1, 2)
	waitViews(t, apis, "lc", 10*time.Second, "the readiness probes closed", clusterConns(a, 0))

	held := newHeld(t)
	for i := range 30 {
		name, err := held.open("", serverAddr(c, 0, port))
		if err != nil {
			t.Fatalf("connection %d through n1: %v", i+1, err)
		}
		if name != a.name {
			t.Fatalf("connection %d through n1 went to %s, the only backend is %s", i+1, name, a.name)
		}
	}

	heldAt := time.Now()
	if code, b := c.api(0).mustDo(t, "PUT", "/servers/lc", body(bs...)); code != 200 {
		t.Fatalf("PUT /servers/lc with three backends: %d %s", code, b)
	}
	waitViews(t, apis, "lc", 5*time.Second, "the PUT applied on every node", func(_ int, s viewStats) error {
		for _, b := range bs {
			if s.backend(b) == nil {
				return fmt.Errorf("%s not listed yet", b.name)
			}
		}
		return nil
	})
	applied := time.Now()
	seen := waitViews(t, clusterAPIs(c, 1, 2), "lc", 2*time.Second, "n2 and n3 count n1's 30 connections on "+a.name, func(_ int, s viewStats) error {
		v := s.backend(a)
		if v == nil {
			return fmt.Errorf("%s not listed", a.name)
		}
		if got := v.Stats.Cluster.ActiveConnections; got < 30 {
			return fmt.Errorf("%s cluster.active_connections=%d", a.name, got)
		}
		return nil
	})
	t.Logf("update applied everywhere -> n2 and n3 see A's 30 remote connections: %v (%v after the 30th connection)", seen, time.Since(heldAt))

	// 20 new connections each through n2 and n3, interleaved, all held.
	for i := range 40 {
		via := 1 + i%2
		name, err := held.open("", serverAddr(c, via, port))
		if err != nil {
			t.Fatalf("new connection %d through n%d: %v", i+1, via+1, err)
		}
		if name == a.name {
			t.Fatalf("new connection %d through n%d went to %s, which holds 30 connections through n1 (%v after the update applied)",
				i+1, via+1, a.name, time.Since(applied))
		}
	}
	nb, nc := held.count(bs[1].name), held.count(bs[2].name)
	t.Logf("40 new connections through n2 and n3: %s=%d %s=%d", bs[1].name, nb, bs[2].name, nc)
	if nb < 10 || nc < 10 {
		t.Fatalf("40 new connections split %s=%d %s=%d: want both near 20", bs[1].name, nb, bs[2].name, nc)
	}
	// The totals are the same on every node.
	waitViews(t, apis, "lc", 5*time.Second, "every node counts every connection", func(i int, s viewStats) error {
		for _, b := range bs {
			if err := clusterConns(b, int64(held.count(b.name)))(i, s); err != nil {
				return err
			}
		}
		return nil
	})
}

// pacedOvershoot bounds how far over max_connections the cluster may go when
// connections arrive one every 20 ms, round-robin over the three nodes. A node
// publishes a change on a capped backend within one observe interval (25 ms)
// and, in a cluster this small, sends it straight to each member over UDP: a
// node may not yet count what the others admitted in the last ~30 ms, at this
// pace one or two arrivals. Without any cluster-wide count the three nodes
// would admit 10 each, an overshoot of 20.
const pacedOvershoot = 3

// attempt is one client of the max_connections test: held when a backend
// answered, refused when closed without data.
type attempt struct {
	c       *client
	refused bool
	err     error
}

func tryHold(addr string) attempt {
	c, err := dialFrom("", addr)
	if err != nil {
		return attempt{refused: true}
	}
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.c, "WHO\n"); err != nil {
		c.Close()
		return attempt{refused: true}
	}
	line, err := c.r.ReadString('\n')
	c.c.SetDeadline(time.Time{})
	if err != nil {
		c.Close()
		var ne net.Error
		if line == "" && !(errors.As(err, &ne) && ne.Timeout()) {
			return attempt{refused: true}
		}
		return attempt{err: fmt.Errorf("neither answered nor closed: %q %w", line, err)}
	}
	return attempt{c: c}
}

// burst runs n clients, client k through addrs[k%len], starting one every pace
// (all at once when pace is 0), and waits for them.
func burst(n int, pace time.Duration, addrs []string) []attempt {
	out := make([]attempt, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for k := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			out[k] = tryHold(addrs[k%len(addrs)])
		}()
		if pace > 0 {
			if k == 0 {
				close(gate)
			}
			time.Sleep(pace)
		}
	}
	if pace == 0 {
		close(gate)
	}
	wg.Wait()
	return out
}

// Per-backend max_connections caps the cluster-wide total: 40 clients spread
// over the three nodes, held, on a backend with max_connections=10 (the only one
// of its server, so a client over the cap is closed without data). At a moderate
// pace the backend never holds more than 10+pacedOvershoot; in a burst of 40 at
// once no node exceeds 10 itself, and the overshoot is logged.
func TestClusterViewMaxConnectionsClusterWide(t *testing.T) {
	b := startBackend(t, "b1")
	c := startViewCluster(t)
	port := freePort(t)
	// No health check: its probes would count among the connections b1 holds.
	postServer(c, 1, "mc", viewServer(":"+strconv.Itoa(port), "roundrobin", nil, b.line("max_connections=10")))
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	apis := clusterAPIs(c, 0, 1, 2)
	waitViews(t, apis, "mc", 10*time.Second, "b1 healthy by all three, no connection", func(i int, s viewStats) error {
		if err := clusterHealthy(nodeIDs[:], b)(i, s); err != nil {
			return err
		}
		if v := s.backend(b); v != nil && v.MaxConnections != 10 {
			return fmt.Errorf("max_connections=%d in stats", v.MaxConnections)
		}
		return clusterConns(b, 0)(i, s)
	})
	addrs := []string{serverAddr(c, 0, port), serverAddr(c, 1, port), serverAddr(c, 2, port)}

	run := func(what string, pace time.Duration) (served, peak int) {
		t.Helper()
		eventually(t, 5*time.Second, "b1 idle", func() error {
			if n := b.active(); n != 0 {
				return fmt.Errorf("b1 holds %d connections", n)
			}
			return nil
		})
		sampler := samplePeak(b)
		attempts := burst(40, pace, addrs)
		peak = sampler.Stop()
		refused := 0
		for k, a := range attempts {
			switch {
			case a.err != nil:
				t.Fatalf("%s: client %d through n%d: %v", what, k+1, k%3+1, a.err)
			case a.refused:
				refused++
			default:
				served++
			}
		}
		if n := b.active(); n > peak {
			peak = n
		}
		t.Logf("%s: %d clients served, %d closed without data; b1 held at most %d at once (max_connections=10, overshoot %d)",
			what, served, refused, peak, max(0, peak-10))
		if served < 10 {
			t.Fatalf("%s: only %d of 40 clients served by a backend with max_connections=10", what, served)
		}
		// Every node's view counts what b1 holds; no node holds more than 10 itself.
		waitViews(t, apis, "mc", 5*time.Second, what+": every node counts the held connections", func(i int, s viewStats) error {
			if v := s.backend(b); v != nil && v.Stats.ActiveConnections > 10 {
				return fmt.Errorf("this node alone holds %d connections to b1 (max_connections=10)", v.Stats.ActiveConnections)
			}
			return clusterConns(b, int64(served))(i, s)
		})
		for _, a := range attempts {
			if a.c != nil {
				a.c.Close()
			}
		}
		waitViews(t, apis, "mc", 5*time.Second, what+": connections closed everywhere", clusterConns(b, 0))
		return served, peak
	}

	if _, peak := run("one every 20 ms", 20*time.Millisecond); peak > 10+pacedOvershoot {
		t.Errorf("one every 20 ms: b1 held %d connections at once, max_connections=10 allows an overshoot of %d at this pace", peak, pacedOvershoot)
	}
	// All at once, every node decides before any report arrives: each node keeps
	// its own count under 10 (checked in run), the cluster at most 3×10.
	if _, peak := run("40 at once", 0); peak > 30 {
		t.Errorf("40 at once: b1 held %d connections, more than 10 per node", peak)
	}
}

// Drain through one node stops new connections to the backend on all three; the
// connections it held live on, and every node shows how many (cluster
// active_connections) until they close.
func TestClusterViewDrainEverywhereShowsHeld(t *testing.T) {
	bs := startBackends(t, 2)
	drained := bs[0]
	c := startViewCluster(t)
	port := freePort(t)
	postServer(c, 0, "dr", viewServer(":"+strconv.Itoa(port), "roundrobin", viewPing("500ms"), lines(bs...)...))
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	apis := clusterAPIs(c, 0, 1, 2)
	waitViews(t, apis, "dr", 10*time.Second, "both backends healthy by all three", clusterHealthy(nodeIDs[:], bs...))

	held := newHeld(t)
	for i := range 3 {
		for range 4 {
			if _, err := held.open("", serverAddr(c, i, port)); err != nil {
				t.Fatalf("connection through n%d: %v", i+1, err)
			}
		}
	}
	h := held.count(drained.name)
	if h == 0 {
		t.Fatalf("roundrobin put none of 12 connections on %s", drained.name)
	}
	waitViews(t, apis, "dr", 5*time.Second, fmt.Sprintf("every node counts the %d connections on %s", h, drained.name), clusterConns(drained, int64(h)))

	path := "/servers/dr/backends/" + drained.addr + "/drain"
	if code, b := c.api(1).mustDo(t, "POST", path, ""); code != 200 {
		t.Fatalf("POST %s on n2: %d %s", path, code, b)
	}
	took := waitViews(t, apis, "dr", 5*time.Second, drained.name+" drained on every node", backendState(drained, "drain"))
	t.Logf("drain on n2 -> applied on every node: %v", took)
	for i := range 3 {
		onlyGoesTo(t, serverAddr(c, i, port), bs[1], 20)
	}
	if err := held.echoAll("after drain"); err != nil {
		t.Fatal(err)
	}
	waitViews(t, apis, "dr", 5*time.Second, "every node still shows the held connections on the drained backend", func(i int, s viewStats) error {
		if err := backendState(drained, "drain")(i, s); err != nil {
			return err
		}
		return clusterConns(drained, int64(h))(i, s)
	})
	held.closeAll()
	waitViews(t, apis, "dr", 5*time.Second, "every node shows the drained backend's connections closed", clusterConns(drained, 0))
}

// A SIGKILLed node's report stops counting once it is three report intervals
// old (3 s here), or when memberlist declares the node dead (a missed probe,
// then 4 s of suspicion on the LAN preset, about 5-7 s), whichever comes
// first. countBound bounds the first on a loaded two-core machine,
// deadBound the second.
const (
	countBound = 6 * time.Second
	deadBound  = 15 * time.Second
)

// Killing a node removes its connections from the totals on the others: 10
// connections held through n1 and 3 through n2 on the only backend; after n1's
// SIGKILL, n2 and n3 count 3 within countBound and list n1 as dead within
// deadBound.
func TestClusterViewKilledNodeLeavesTotals(t *testing.T) {
	b := startBackend(t, "b1")
	c := startViewCluster(t)
	port := freePort(t)
	postServer(c, 2, "kl", viewServer(":"+strconv.Itoa(port), "roundrobin", viewPing("500ms"), b.line()))
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	apis := clusterAPIs(c, 0, 1, 2)
	waitViews(t, apis, "kl", 10*time.Second, "b1 healthy by all three, no connection", func(i int, s viewStats) error {
		if err := clusterHealthy(nodeIDs[:], b)(i, s); err != nil {
			return err
		}
		return clusterConns(b, 0)(i, s)
	})

	held := newHeld(t)
	for via, n := range map[int]int{0: 10, 1: 3} {
		for range n {
			if _, err := held.open("", serverAddr(c, via, port)); err != nil {
				t.Fatalf("connection through n%d: %v", via+1, err)
			}
		}
	}
	waitViews(t, apis, "kl", 5*time.Second, "every node counts 13 connections on b1", clusterConns(b, 13))

	c.nodes[0].signal(syscall.SIGKILL)
	killed := time.Now()
	c.nodes[0].waitExit(5 * time.Second)
	survivors := clusterAPIs(c, 1, 2)
	waitViews(t, survivors, "kl", countBound, "n2 and n3 drop n1's connections from the totals", clusterConns(b, 3))
	countGone := time.Since(killed)
	eventually(t, deadBound, "n2 and n3 list n1 as dead", func() error {
		var errs []error
		for k, a := range survivors {
			ms, err := clusterViewOf(a)
			if err != nil {
				return err
			}
			if m, ok := memberOf(ms, "n1"); !ok || m.Gossip != "dead" {
				errs = append(errs, fmt.Errorf("n%d lists n1 as %+v", k+2, m))
			}
		}
		return errors.Join(errs...)
	})
	deadSeen := time.Since(killed)
	t.Logf("SIGKILL n1 -> its connections out of the totals on n2 and n3: %v; -> n1 gossip dead on both: %v", countGone, deadSeen)
	// The survivors keep counting their own.
	waitViews(t, survivors, "kl", 5*time.Second, "n2 and n3 still count n2's 3 connections", clusterConns(b, 3))
}
