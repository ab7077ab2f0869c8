package e2e

import (
	"fmt"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"
)

// nodesAre is a waitViews condition: backend b's cluster.nodes is want, and its
// cluster verdict (live and cluster.healthy) is live.
func nodesAre(b *backend, want map[string]bool, live bool) func(int, viewStats) error {
	return func(_ int, s viewStats) error {
		v := s.backend(b)
		if v == nil {
			return fmt.Errorf("%s not in stats", b.name)
		}
		if !maps.Equal(v.Stats.Cluster.Nodes, want) {
			return fmt.Errorf("%s cluster.nodes=%v, want %v", b.name, v.Stats.Cluster.Nodes, want)
		}
		if v.Stats.Live != live || v.Stats.Cluster.Healthy != live {
			return fmt.Errorf("%s live=%v cluster.healthy=%v, want %v", b.name, v.Stats.Live, v.Stats.Cluster.Healthy, live)
		}
		return nil
	}
}

// liveWatch polls backend b's live flag on every api until stop, remembering
// every time one of them said it was not live.
type liveWatch struct {
	mu    sync.Mutex
	downs []string
	stop  chan struct{}
	done  chan struct{}
}

func watchLive(apis []apiClient, name string, b *backend) *liveWatch {
	w := &liveWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for i, a := range apis {
				s, err := a.viewStats(name)
				if err != nil {
					continue // a slow answer is no verdict
				}
				if v := s.backend(b); v == nil || !v.Stats.Live {
					w.mu.Lock()
					w.downs = append(w.downs, fmt.Sprintf("n%d at %s: %+v", i+1, time.Now().Format("15:04:05.000"), v))
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// Stop ends the watch and returns what it saw.
func (w *liveWatch) Stop() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.downs
}

// The majority cluster verdict with real per-node unreachability (the nodes in
// network namespaces, the backends on the bridge side, backend B on an address
// of its own): B unreachable from n1 alone stays live on every node, n1's own
// verdict shows false, and clients through n1 are all served (its dials to B
// fail over to A). Unreachable from n1 and n2, B leaves the healthy set on every
// node, n3 included, which still reaches it: no client through n3 gets B. Healed,
// B is back everywhere.
func TestClusterViewHealthMajorityNetns(t *testing.T) {
	l := newNetnsLab(t)
	a := startBackendOn(t, "a", l.bridge())
	bIP := fmt.Sprintf("169.254.%d.253", l.subnet)
	if err := ipRun("addr", "add", bIP+"/32", "dev", l.uplink()); err != nil {
		t.Fatalf("an address of its own for backend B: %v", err)
	}
	b := startBackendOn(t, "b", bIP)

	apiPort, gossip, raftPort := freePort(t), freePort(t), freePort(t)
	hosts := [3]string{l.host(0), l.host(1), l.host(2)}
	apis := make([]apiClient, 3)
	byID := map[string]*node{}
	apiByID := map[string]apiClient{}
	for i := range 3 {
		n := startNodeInNetns(t, l.ns[i], clusterNodeConfig(hosts, i, apiPort, gossip, raftPort, ""), t.TempDir())
		apis[i] = newAPI(l.addr(i, apiPort))
		byID[nodeIDs[i]] = n
		apiByID[nodeIDs[i]] = apis[i]
	}
	leaderOf(t, 20*time.Second, 3, apiByID, byID)

	port := freePort(t)
	// No cluster_verdict: majority is the default.
	body := viewServer(":"+strconv.Itoa(port), "roundrobin", viewPing("300ms"), a.line(), b.line())
	if code, resp := apis[0].mustDo(t, "POST", "/servers/hm", body); code != 200 {
		t.Fatalf("POST /servers/hm: %d %s", code, resp)
	}
	via := func(i int) string { return l.addr(i, port) }
	for i := range 3 {
		eventually(t, 10*time.Second, "serving on "+via(i), func() error {
			_, err := who(via(i))
			return err
		})
	}
	waitViews(t, apis, "hm", 10*time.Second, "a and b healthy by all three", func(i int, s viewStats) error {
		if err := clusterHealthy(nodeIDs[:], a, b)(i, s); err != nil {
			return err
		}
		if p := s.backend(b).Stats.Cluster.Policy; p != "majority" {
			return fmt.Errorf("cluster.policy=%q, want the default majority", p)
		}
		return nil
	})

	unreachable := func(k int, op string) {
		t.Helper()
		if err := ipRun("-n", l.ns[k], "route", op, "unreachable", bIP+"/32"); err != nil {
			t.Fatalf("route %s unreachable %s in n%d: %v", op, bIP, k+1, err)
		}
	}

	// B unreachable from n1 only.
	unreachable(0, "add")
	watch := watchLive(apis, "hm", b)
	took := waitViews(t, apis, "hm", 10*time.Second, "every node sees n1's verdict on b, b still live",
		nodesAre(b, map[string]bool{"n1": false, "n2": true, "n3": true}, true))
	t.Logf("b unreachable from n1 -> n1's verdict seen on every node: %v", took)
	for k := range 30 {
		name, err := who(via(0))
		if err != nil {
			t.Fatalf("request %d through n1, which cannot reach b: %v", k+1, err)
		}
		if name != a.name {
			t.Fatalf("request %d through n1 answered by %s, which n1 cannot reach", k+1, name)
		}
	}
	if got := countWho(t, via(1), 10); got[b.name] == 0 {
		t.Fatalf("n2 sends nothing to b, which the cluster deems healthy: %v", got)
	}
	if downs := watch.Stop(); len(downs) > 0 {
		t.Fatalf("b, unreachable from n1 only, left the healthy set: %v", downs)
	}

	// B unreachable from n1 and n2: out of the healthy set on n3 too.
	unreachable(1, "add")
	took = waitViews(t, apis, "hm", 10*time.Second, "b out of the healthy set on every node",
		nodesAre(b, map[string]bool{"n1": false, "n2": false, "n3": true}, false))
	t.Logf("b unreachable from n1 and n2 -> out of the healthy set everywhere: %v", took)
	onlyGoesTo(t, via(2), a, 30)

	// Healed: back on every node, n3 sends to it again.
	unreachable(0, "del")
	unreachable(1, "del")
	took = waitViews(t, apis, "hm", 10*time.Second, "b back in the healthy set on every node", clusterHealthy(nodeIDs[:], b))
	t.Logf("healed -> b healthy everywhere: %v", took)
	for i := range 3 {
		eventuallyServes(t, via(i), b)
	}
}
