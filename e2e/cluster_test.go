package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCluster is three gobetween nodes on 127.0.0.1, 127.0.0.2 and 127.0.0.3,
// one shared config but for the node's own addresses, as `make cluster` runs.
type testCluster struct {
	t                     *testing.T
	gossip, raft, apiPort int
	nodes                 [3]*node
	dirs                  [3]string
	extra                 string // shared [servers...] sections
}

func newTestCluster(t *testing.T, extra string) *testCluster {
	c := &testCluster{t: t, gossip: freePort(t), raft: freePort(t), apiPort: freePort(t), extra: extra}
	for i := range c.dirs {
		c.dirs[i] = t.TempDir()
	}
	return c
}

func (c *testCluster) host(i int) string { return "127.0.0." + strconv.Itoa(i+1) }

func (c *testCluster) api(i int) apiClient {
	return newAPI(c.host(i) + ":" + strconv.Itoa(c.apiPort))
}

func (c *testCluster) config(i int) string {
	return clusterNodeConfig([3]string{c.host(0), c.host(1), c.host(2)}, i, c.apiPort, c.gossip, c.raft, c.extra)
}

func (c *testCluster) start(i int) {
	c.nodes[i] = startNodeWith(c.t, c.config(i), nodeOptions{dir: c.dirs[i]})
}

// status is GET /cluster.
type clusterStatus struct {
	NodeID   string `json:"node_id"`
	LeaderID string `json:"leader_id"`
	Revision uint64 `json:"revision"`
	Members  []struct {
		ID     string `json:"id"`
		Raft   string `json:"raft"`
		Gossip string `json:"gossip"`
	} `json:"members"`
}

func (c *testCluster) status(i int) (clusterStatus, error) {
	return clusterStatusOf(c.api(i))
}

// waitFormed waits until every running node sees the same leader and three
// voters, and returns the leader's index.
func (c *testCluster) waitFormed(timeout time.Duration, running ...int) int {
	c.t.Helper()
	leader := -1
	eventually(c.t, timeout, "one cluster with one leader", func() error {
		ids := map[string]bool{}
		for _, i := range running {
			c.nodes[i].requireRunning()
			s, err := c.status(i)
			if err != nil {
				return err
			}
			if s.LeaderID == "" {
				return fmt.Errorf("n%d: no leader", i+1)
			}
			ids[s.LeaderID] = true
			voters := 0
			for _, m := range s.Members {
				if m.Raft == "leader" || m.Raft == "voter" {
					voters++
				}
			}
			if voters < len(running) {
				return fmt.Errorf("n%d sees %d voters: %+v", i+1, voters, s.Members)
			}
		}
		if len(ids) != 1 {
			return fmt.Errorf("nodes disagree on the leader: %v", ids)
		}
		for id := range ids {
			leader, _ = strconv.Atoi(strings.TrimPrefix(id, "n"))
			leader--
		}
		return nil
	})
	return leader
}

func (c *testCluster) waitServingEverywhere(port int, timeout time.Duration, nodes ...int) {
	c.t.Helper()
	for _, i := range nodes {
		addr := c.host(i) + ":" + strconv.Itoa(port)
		eventually(c.t, timeout, "serving on "+addr, func() error {
			_, err := who(addr)
			return err
		})
	}
}

// Three nodes started in any order form one cluster; a server POSTed to a
// follower serves on all three within 2 s; losing the leader under load costs the
// survivors no connection, they elect a leader and take writes within 5 s; the
// killed node comes back and catches up; a full restart keeps every write.
func TestClusterReplicatesAndSurvivesLeaderLoss(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	c := newTestCluster(t, "")
	for _, i := range []int{2, 0, 1} {
		c.start(i)
	}
	leader := c.waitFormed(20*time.Second, 0, 1, 2)
	follower := (leader + 1) % 3

	port := freePort(t)
	posted := time.Now()
	code, body := c.api(follower).mustDo(t, "POST", "/servers/web", postBody(":"+strconv.Itoa(port), bs[0].line()))
	if code != 200 {
		t.Fatalf("POST /servers/web on follower n%d: %d %s", follower+1, code, body)
	}
	c.waitServingEverywhere(port, 2*time.Second-time.Since(posted), 0, 1, 2)

	// Hammer the two survivors while the leader is killed.
	survivors := []int{(leader + 1) % 3, (leader + 2) % 3}
	var addrs []string
	for _, i := range survivors {
		addrs = append(addrs, c.host(i)+":"+strconv.Itoa(port))
	}
	ld := startLiveLoad(addrs...)
	killed := time.Now()
	c.nodes[leader].signal(syscall.SIGKILL)
	c.nodes[leader].waitExit(5 * time.Second)

	port2 := freePort(t)
	eventually(t, 5*time.Second-time.Since(killed), "a write accepted by the survivors", func() error {
		code, body, err := c.api(survivors[0]).do("POST", "/servers/web2", postBody(":"+strconv.Itoa(port2), bs[1].line()))
		if err != nil {
			return err
		}
		if code != 200 && code != 409 { // 409: an earlier attempt committed
			return fmt.Errorf("POST /servers/web2: %d %s", code, body)
		}
		return nil
	})
	t.Logf("leader killed -> write accepted: %v", time.Since(killed))
	ld.Stop()
	if f := ld.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests to the surviving nodes failed while the leader was lost (last: %v)", f, ld.requests.Load(), ld.lastErr.Load())
	}
	c.waitServingEverywhere(port2, 5*time.Second, survivors...)

	// The killed node restarts and catches up.
	c.start(leader)
	c.waitServingEverywhere(port2, 15*time.Second, leader)

	// All three restart together and keep every acknowledged write.
	for i := range 3 {
		c.nodes[i].signal(syscall.SIGTERM)
	}
	for i := range 3 {
		if code := c.nodes[i].waitExit(15 * time.Second); code != 0 {
			t.Fatalf("n%d exit code %d", i+1, code)
		}
	}
	for i := range 3 {
		c.start(i)
	}
	c.waitFormed(20*time.Second, 0, 1, 2)
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	c.waitServingEverywhere(port2, 10*time.Second, 0, 1, 2)
}

// A node restarted while the rest of the cluster is down serves the servers it
// served before, at once and without a leader, and /health says so: a VIP may
// then rest on it (before, its state was empty until a leader appeared).
func TestClusterNodeRestartedAloneServesItsLastState(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 1)
	c := newTestCluster(t, "")
	for i := range 3 {
		c.start(i)
	}
	c.waitFormed(20*time.Second, 0, 1, 2)
	port := freePort(t)
	if code, body := c.api(0).mustDo(t, "POST", "/servers/web", postBody(":"+strconv.Itoa(port), bs[0].line())); code != 200 {
		t.Fatalf("POST /servers/web: %d %s", code, body)
	}
	c.waitServingEverywhere(port, 5*time.Second, 0, 1, 2)
	for i := range 3 {
		c.nodes[i].signal(syscall.SIGTERM)
	}
	for i := range 3 {
		c.nodes[i].waitExit(10 * time.Second)
	}

	c.start(1)
	addr := c.host(1) + ":" + strconv.Itoa(port)
	started := time.Now()
	eventually(t, 5*time.Second, "n2 alone serves web", func() error {
		_, err := who(addr)
		return err
	})
	t.Logf("n2 alone serves its last state %v after its start", time.Since(started).Round(time.Millisecond))
	if code, body, err := c.api(1).do("GET", "/health", ""); err != nil || code != 200 {
		t.Fatalf("GET /health on n2 alone: %d %s %v", code, body, err)
	}
	if s, err := c.status(1); err != nil || s.LeaderID != "" || s.Revision == 0 {
		t.Fatalf("n2 alone: %+v %v; want no leader and its last revision", s, err)
	}
}
