package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// inmemCluster starts three nodes on raft's in-memory transport and stores, n1
// bootstrapped, n2 and n3 added as voters.
func inmemCluster(t *testing.T) ([]*Node, []*raft.InmemTransport) {
	t.Helper()
	var nodes []*Node
	var trans []*raft.InmemTransport
	for i, id := range []string{"n1", "n2", "n3"} {
		_, tr := raft.NewInmemTransport(raft.ServerAddress(id + "-addr"))
		store := raft.NewInmemStore()
		n, err := Open(context.Background(), Options{
			NodeID: id, Bootstrap: i == 0, Logger: testLogger(t),
			stores: &stores{logs: store, stable: store, snaps: raft.NewInmemSnapshotStore(), trans: tr},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
		trans = append(trans, tr)
	}
	for i, a := range trans {
		for j, b := range trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	waitLeader(t, nodes[0], 5*time.Second)
	ctx := context.Background()
	for _, n := range nodes[1:] {
		if err := nodes[0].AddVoter(ctx, n.ID(), n.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.ID()+" sees three members", func() bool { return len(n.Members()) == 3 })
	}
	return nodes, trans
}

// An isolated leader cannot commit: the write fails within the apply deadline
// and, once healed, every node holds the same state without it.
func TestIsolatedLeaderFailsWrites(t *testing.T) {
	nodes, trans := inmemCluster(t)
	ctx := context.Background()
	if _, err := nodes[0].Apply(ctx, putCmd("web", "a:1")); err != nil {
		t.Fatal(err)
	}

	trans[0].DisconnectAll()
	for _, tr := range trans[1:] {
		tr.Disconnect(trans[0].LocalAddr())
	}
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := nodes[0].Apply(actx, putCmd("lost", "b:1"))
	cancel()
	if !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader) {
		t.Fatalf("write on an isolated leader: %v", err)
	}
	if took := time.Since(start); took > 3500*time.Millisecond {
		t.Fatalf("the failed write took %s", took)
	}
	t.Logf("isolated leader: write failed after %s: %v", time.Since(start), err)

	// The majority elects a leader and takes writes meanwhile.
	var leader *Node
	eventually(t, 5*time.Second, "a leader in the majority", func() bool {
		for _, n := range nodes[1:] {
			if n.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	rev, err := leader.Apply(ctx, putCmd("db", "d:1"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the old leader steps down", func() bool { return !nodes[0].IsLeader() })

	for i, a := range trans {
		for j, b := range trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	want := ""
	eventually(t, 5*time.Second, "all three converge", func() bool {
		for _, n := range nodes {
			if n.State().Servers["db"].Revision != rev {
				return false
			}
		}
		want = stateJSON(t, nodes[1].State())
		return stateJSON(t, nodes[0].State()) == want && stateJSON(t, nodes[2].State()) == want
	})
	if _, ok := nodes[0].State().Servers["lost"]; ok {
		t.Fatal("the uncommitted write of the isolated leader was applied")
	}
}
