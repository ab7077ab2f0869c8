package cluster

import (
	"context"
	"testing"
	"time"
)

// A single node is a one-voter cluster: leader, its own term and indices, one
// leader learned of, and the latency of every write it applies.
func TestMetricsSingleNode(t *testing.T) {
	n := openNode(t, "n1", t.TempDir(), true)
	waitLeader(t, n, 5*time.Second)
	ctx := context.Background()
	const writes = 3
	for i := range writes {
		if _, err := n.Apply(ctx, putCmd("web", "a:"+string(rune('1'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	m := n.Metrics()
	tests := []struct {
		name string
		ok   bool
	}{
		{"id", m.ID == "n1"},
		{"state leader", m.State == "leader"},
		{"leader is itself", m.Leader == "n1"},
		{"term at least 1", m.Term >= 1},
		{"indices ordered", m.AppliedIndex <= m.CommitIndex && m.CommitIndex <= m.LastLogIndex},
		{"writes applied", m.AppliedIndex >= writes},
		{"one leader learned", m.LeaderChanges == 1},
		{"one voter", m.Voters == 1 && m.Nonvoters == 0},
		{"a leader has no last contact", m.LastContact.IsZero()},
		{"no gossip", m.Gossip == nil},
		{"apply latency counts the writes", m.Apply.Count == writes && m.Apply.Sum > 0},
		{"apply buckets cumulative up to the count", m.Apply.Buckets[10] == writes && m.Apply.Buckets[0.001] <= m.Apply.Buckets[0.01]},
	}
	for _, tt := range tests {
		if !tt.ok {
			t.Errorf("%s: metrics %+v", tt.name, m)
		}
	}

	// A refused command was still committed: it counts.
	if _, err := n.Apply(ctx, Command{Type: DeleteServer, Name: "absent", Origin: OriginAPI}); err == nil {
		t.Fatal("deleting an absent server succeeded")
	}
	if got := n.Metrics().Apply.Count; got != writes+1 {
		t.Fatalf("apply count %d after a refused command, want %d", got, writes+1)
	}

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if st := n.Metrics().State; st != "shutdown" {
		t.Fatalf("state after Close %q, want shutdown", st)
	}
}

// In a gossip cluster every node sees the members by state, followers have a
// last contact and the forwarded writes' latency, and a new election counts.
func TestMetricsCluster(t *testing.T) {
	nodes := expectCluster(t)
	leader := leaderOf(t, nodes, 5*time.Second)
	f := follower(nodes)
	if _, err := f.Apply(context.Background(), putCmd("web", "a:1")); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.ID()+" sees 3 alive members", func() bool {
			return n.Metrics().Gossip[GossipAlive] == 3
		})
		m := n.Metrics()
		for _, s := range GossipStates {
			if _, ok := m.Gossip[s]; !ok {
				t.Errorf("%s: gossip state %q missing: %v", n.ID(), s, m.Gossip)
			}
		}
		if m.Voters != 3 || m.LeaderChanges < 1 || m.Leader != leader.ID() {
			t.Errorf("%s: voters %d, leader changes %d, leader %q; want 3, >= 1, %q", n.ID(), m.Voters, m.LeaderChanges, m.Leader, leader.ID())
		}
		if n != leader && (m.State != "follower" || m.LastContact.IsZero()) {
			t.Errorf("%s: state %q, last contact %v; want a follower that heard from the leader", n.ID(), m.State, m.LastContact)
		}
		if m.Traffic.BytesSent == 0 || m.Traffic.BytesReceived == 0 {
			t.Errorf("%s: no gossip traffic counted: %+v", n.ID(), m.Traffic)
		}
	}
	if got := f.Metrics().Apply.Count; got != 1 {
		t.Fatalf("forwarding follower's apply count %d, want 1", got)
	}
	if got := leader.Metrics().Apply.Count; got < 1 {
		t.Fatalf("leader's apply count %d: the forwarded write was applied there", got)
	}

	// The leader stops: the others see it dead and elect a new leader.
	before := map[string]uint64{}
	var rest []*Node
	for _, n := range nodes {
		if n != leader {
			before[n.ID()] = n.Metrics().LeaderChanges
			rest = append(rest, n)
		}
	}
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	next := leaderOf(t, rest, 10*time.Second)
	for _, n := range rest {
		eventually(t, 10*time.Second, n.ID()+" sees the old leader dead and a new leader", func() bool {
			m := n.Metrics()
			return m.Gossip[GossipDead] == 1 && m.Gossip[GossipAlive] == 2 &&
				m.Leader == next.ID() && m.LeaderChanges > before[n.ID()]
		})
	}
}
