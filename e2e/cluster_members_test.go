package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startFourth starts n4 on 127.0.0.4 with `join` only: no bootstrap_expect, so
// it can only come in through the running cluster.
func (c *testCluster) startFourth(maxVoters int) (*node, apiClient) {
	c.t.Helper()
	var join []string
	for j := range 3 {
		join = append(join, c.host(j)+":"+strconv.Itoa(c.gossip))
	}
	cfg := fmt.Sprintf(`[logging]
level = "debug"
output = "stdout"

[api]
enabled = true
bind = "127.0.0.4:%[1]d"

[cluster]
node_id = "n4"
data_dir = "data"
bind = "127.0.0.4:%[2]d"
raft_bind = "127.0.0.4:%[3]d"
join = %[4]s
max_voters = %[5]d
servers_host = "127.0.0.4"

[defaults]
drain_timeout = "1s"
`, c.apiPort, c.gossip, c.raft, tomlList(join...), maxVoters)
	n := startNodeWith(c.t, cfg, nodeOptions{})
	return n, newAPI("127.0.0.4:" + strconv.Itoa(c.apiPort))
}

// startWithMaxVoters starts node i with the shared config plus max_voters.
func (c *testCluster) startWithMaxVoters(i, maxVoters int) {
	cfg := c.config(i)
	with := strings.Replace(cfg, "bootstrap_expect = 3\n", fmt.Sprintf("bootstrap_expect = 3\nmax_voters = %d\n", maxVoters), 1)
	if with == cfg {
		c.t.Fatal("shared cluster config has no bootstrap_expect line to put max_voters after")
	}
	c.nodes[i] = startNodeWith(c.t, with, nodeOptions{dir: c.dirs[i]})
}

// A fourth node joins a running cluster through `join` alone: it comes in as a
// non-voter, is promoted while under max_voters (and stays a non-voter that
// still applies and serves the log at the cap), and DELETE /cluster/members/n4
// on a follower takes it out of Raft.
func TestClusterFourthNodeJoinsAndMemberRemoved(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		maxVoters int
		promoted  bool
	}{
		{"promoted under max_voters 5", 5, true},
		{"non-voter at max_voters 3", 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bs := startBackends(t, 1)
			c := newTestCluster(t, "")
			for i := range 3 {
				c.startWithMaxVoters(i, tc.maxVoters)
			}
			leader := c.waitFormed(20*time.Second, 0, 1, 2)
			follower := (leader + 1) % 3
			port := freePort(t)
			if code, b := c.api(follower).mustDo(t, "POST", "/servers/web", postBody(":"+strconv.Itoa(port), bs[0].line())); code != 200 {
				t.Fatalf("POST /servers/web: %d %s", code, b)
			}
			c.waitServingEverywhere(port, 5*time.Second, 0, 1, 2)

			n4, api4 := c.startFourth(tc.maxVoters)
			// Watch n4's role on the leader closely enough to see the non-voter
			// phase (promotion waits at least a second).
			var roles []string
			eventually(t, 15*time.Second, "n4 in the Raft configuration", func() error {
				n4.requireRunning()
				s, err := c.status(leader)
				if err != nil {
					return err
				}
				r := raftRole(s, "n4")
				if len(roles) == 0 || roles[len(roles)-1] != r {
					roles = append(roles, r)
				}
				if r != "nonvoter" && r != "voter" {
					return fmt.Errorf("n4 is %q on the leader", r)
				}
				return nil
			})
			// The replicated server serves on n4, and a write through n4 is forwarded.
			eventually(t, 10*time.Second, "n4 serves the replicated server", func() error {
				_, err := who("127.0.0.4:" + strconv.Itoa(port))
				return err
			})
			port2 := freePort(t)
			if code, b := api4.mustDo(t, "POST", "/servers/web2", postBody(":"+strconv.Itoa(port2), bs[0].line())); code != 200 {
				t.Fatalf("POST /servers/web2 on n4: %d %s", code, b)
			}
			c.waitServingEverywhere(port2, 5*time.Second, 0, 1, 2)
			eventually(t, 5*time.Second, "n4 serves web2", func() error {
				_, err := who("127.0.0.4:" + strconv.Itoa(port2))
				return err
			})

			apis := map[string]apiClient{"n1": c.api(0), "n2": c.api(1), "n3": c.api(2), "n4": api4}
			nodes := map[string]*node{"n1": c.nodes[0], "n2": c.nodes[1], "n3": c.nodes[2], "n4": n4}
			if tc.promoted {
				eventually(t, 15*time.Second, "n4 promoted to voter", func() error {
					s, err := c.status(leader)
					if err != nil {
						return err
					}
					r := raftRole(s, "n4")
					if len(roles) == 0 || roles[len(roles)-1] != r {
						roles = append(roles, r)
					}
					if r != "voter" {
						return fmt.Errorf("n4 is %q", r)
					}
					return nil
				})
				if !containsRole(roles, "nonvoter") {
					t.Fatalf("n4 was never a non-voter before its promotion (roles seen: %v)", roles)
				}
				leaderOf(t, 10*time.Second, 4, apis, nodes)
			} else {
				// Well past the promotion delay, n4 is still a non-voter everywhere.
				hold := time.Now().Add(3 * time.Second)
				for time.Now().Before(hold) {
					for id, a := range apis {
						s, err := clusterStatusOf(a)
						if err != nil {
							t.Fatalf("%s: %v", id, err)
						}
						if r := raftRole(s, "n4"); r != "nonvoter" {
							t.Fatalf("%s lists n4 as %q with max_voters 3", id, r)
						}
						if v := countVoters(s); v != 3 {
							t.Fatalf("%s sees %d voters with max_voters 3: %+v", id, v, s.Members)
						}
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			t.Logf("n4 roles seen on the leader: %v", roles)

			// Remove n4 through a follower.
			if code, b := c.api(follower).mustDo(t, "DELETE", "/cluster/members/nX", ""); code != 404 {
				t.Fatalf("DELETE /cluster/members/nX (unknown): want 404, got %d %s", code, b)
			}
			if code, b := c.api(follower).mustDo(t, "DELETE", "/cluster/members/n4", ""); code != 200 {
				t.Fatalf("DELETE /cluster/members/n4 on follower n%d: %d %s", follower+1, code, b)
			}
			for i := range 3 {
				eventually(t, 10*time.Second, fmt.Sprintf("n%d no longer lists n4 in Raft", i+1), func() error {
					s, err := c.status(i)
					if err != nil {
						return err
					}
					if r := raftRole(s, "n4"); r != "" && r != "none" {
						return fmt.Errorf("n4 is %q", r)
					}
					if v := countVoters(s); v != 3 {
						return fmt.Errorf("%d voters: %+v", v, s.Members)
					}
					return nil
				})
			}
			// The three keep a leader and take writes.
			port3 := freePort(t)
			eventually(t, 5*time.Second, "a write after the removal", func() error {
				code, b, err := c.api(follower).do("POST", "/servers/web3", postBody(":"+strconv.Itoa(port3), bs[0].line()))
				if err != nil {
					return err
				}
				if code != 200 && code != 409 {
					return fmt.Errorf("POST /servers/web3: %d %s", code, b)
				}
				return nil
			})
			c.waitServingEverywhere(port3, 5*time.Second, 0, 1, 2)
		})
	}
}

func containsRole(roles []string, r string) bool {
	for _, x := range roles {
		if x == r {
			return true
		}
	}
	return false
}
