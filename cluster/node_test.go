package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return nil
}

func openNode(t testing.TB, id, dir string, bootstrap bool) *Node {
	t.Helper()
	n, err := Open(context.Background(), Options{
		NodeID: id, DataDir: dir, RaftBind: "127.0.0.1:0", Bootstrap: bootstrap, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func waitLeader(t testing.TB, n *Node, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !n.IsLeader() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not become leader within %s", n.ID(), d)
		case <-time.After(5 * time.Millisecond):
		}
	}
	return time.Since(start)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func putCmd(name string, backends ...string) Command {
	return Command{Type: PutServer, Name: name, Origin: OriginAPI, Server: srv(":3000", backends...)}
}

func TestSingleNodePersistsAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, "n1", dir, true)
	took := waitLeader(t, n, 5*time.Second)
	t.Logf("single node: leader %s after open", took)
	if ms := n.Members(); len(ms) != 1 || ms[0].ID != "n1" || ms[0].Suffrage != "voter" || !ms[0].Leader || ms[0].Address != n.Addr() {
		t.Fatalf("members %+v", ms)
	}

	ctx := context.Background()
	rev, err := n.Apply(ctx, putCmd("web", "a:1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := n.State().Servers["web"]; got.Revision != rev || got.Origin != OriginAPI {
		t.Fatalf("applied %+v, revision %d", got, rev)
	}
	// The same write again is a no-op answered with the same revision.
	if again, err := n.Apply(ctx, putCmd("web", "a:1")); err != nil || again != rev {
		t.Fatalf("retry: %d, %v (want %d)", again, err, rev)
	}
	if _, err := n.Apply(ctx, Command{Type: PutServer, Name: "web", Origin: OriginAPI, Server: srv(":1"), IfAbsent: true}); !errors.Is(err, ErrExists) {
		t.Fatalf("if-absent: %v", err)
	}
	if _, err := n.Apply(ctx, Command{Type: SetOverride, Name: "web", Backend: "a:1", Action: ActionDrain}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(ctx, Command{Type: PutServer, Name: "bad"}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("invalid: %v", err)
	}
	// Snapshot, then write more: the restart restores the snapshot and replays
	// the entries after it.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Apply(ctx, putCmd("after-snapshot", "c:1")); err != nil {
		t.Fatal(err)
	}
	if snaps, err := os.ReadDir(filepath.Join(dir, "snapshots")); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %v, %v", snaps, err)
	}
	want := stateJSON(t, n.State())
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := n.Apply(ctx, putCmd("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}

	// Bootstrap again on the same directory: the state exists, so it must not
	// bootstrap (which would fail with ErrCantBootstrap) and must come back as
	// the same one-voter cluster with the same state and revisions.
	n2 := openNode(t, "n1", dir, true)
	took = waitLeader(t, n2, 5*time.Second)
	t.Logf("single node: leader %s after restart", took)
	// Barrier returns once the log is replayed: no polling needed after it.
	if err := n2.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := stateJSON(t, n2.State()); got != want {
		t.Fatalf("state after Barrier:\n%s\nwant\n%s", got, want)
	}
	if got := n2.State().Servers["web"]; got.Revision != rev {
		t.Fatalf("revision after restart %d, want %d", got.Revision, rev)
	}
	rev2, err := n2.Apply(ctx, putCmd("web", "b:1"))
	if err != nil || rev2 <= rev {
		t.Fatalf("write after restart: %d, %v", rev2, err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	openNode(t, "n1", dir, true)
	// A second process (here: a second Open) on the same directory fails
	// instead of blocking on bolt's lock.
	start := time.Now()
	if _, err := Open(context.Background(), Options{NodeID: "n1", DataDir: dir, RaftBind: "127.0.0.1:0"}); err == nil {
		t.Fatal("second open of one data dir succeeded")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("second open blocked")
	}
	for _, o := range []Options{
		{DataDir: dir, RaftBind: "127.0.0.1:0"},
		{NodeID: "x", RaftBind: "127.0.0.1:0"},
		{NodeID: "x", DataDir: t.TempDir()},
		{NodeID: "x", DataDir: t.TempDir(), RaftBind: "0.0.0.0:0"}, // wildcard without advertise
		{NodeID: "x", DataDir: filepath.Join(dir, "raft.db"), RaftBind: "127.0.0.1:0"},
	} {
		if n, err := Open(context.Background(), o); err == nil {
			_ = n.Close()
			t.Fatalf("open %+v succeeded", o)
		}
	}
}

func TestAdvertise(t *testing.T) {
	n, err := Open(context.Background(), Options{
		NodeID: "n1", DataDir: t.TempDir(), RaftBind: "0.0.0.0:0", Advertise: "127.0.0.1:7947", Bootstrap: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Addr() != "127.0.0.1:7947" {
		t.Fatalf("addr %s", n.Addr())
	}
	waitLeader(t, n, 5*time.Second)
	if ms := n.Members(); len(ms) != 1 || ms[0].Address != "127.0.0.1:7947" {
		t.Fatalf("members %+v", ms)
	}
}

func TestNoLeaderWithoutBootstrap(t *testing.T) {
	n := openNode(t, "lonely", t.TempDir(), false)
	if _, err := n.Apply(context.Background(), putCmd("web")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("apply without a cluster: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := n.WaitForLeader(ctx); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("wait for leader: %v", err)
	}
	if err := n.AddVoter(context.Background(), "x", "127.0.0.1:1"); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("add voter: %v", err)
	}
}

// threeNodes starts n1 bootstrapped and adds n2 and n3 as non-voters, then
// promotes them.
func threeNodes(t testing.TB) []*Node {
	t.Helper()
	ctx := context.Background()
	nodes := []*Node{openNode(t, "n1", t.TempDir(), true)}
	waitLeader(t, nodes[0], 5*time.Second)
	for _, id := range []string{"n2", "n3"} {
		n := openNode(t, id, t.TempDir(), false)
		if err := nodes[0].AddNonvoter(ctx, id, n.Addr()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	for _, id := range []string{"n2", "n3"} {
		if err := nodes[0].Promote(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// Each node must know it is a voter before a test kills the leader: a
	// promotion commits on two of three nodes, and a node that has not yet
	// received its own promotion refuses to vote.
	want := []string{"n1=voter", "n2=voter", "n3=voter"}
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.ID()+" sees three voters", func() bool {
			return slices.Equal(suffrages(n.Members()), want)
		})
	}
	return nodes
}

func suffrages(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID+"="+m.Suffrage)
	}
	slices.Sort(out)
	return out
}

func TestThreeNodes(t *testing.T) {
	ctx := context.Background()
	nodes := threeNodes(t)
	if got := suffrages(nodes[0].Members()); !slices.Equal(got, []string{"n1=voter", "n2=voter", "n3=voter"}) {
		t.Fatalf("members %v", got)
	}

	changed, cancel := nodes[2].Subscribe()
	defer cancel()
	rev, err := nodes[0].Apply(ctx, putCmd("web", "a:1"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(2 * time.Second):
		t.Fatal("a follower's subscriber was not notified of the replicated write")
	}
	for _, n := range nodes {
		eventually(t, 2*time.Second, n.ID()+" applies the write", func() bool {
			return n.State().Servers["web"].Revision == rev
		})
	}
	// A follower forwards the write to the leader and has applied it when
	// Apply returns.
	frev, err := nodes[1].Apply(ctx, putCmd("x", "f:1"))
	if err != nil {
		t.Fatalf("write on a follower: %v", err)
	}
	if got := nodes[1].State().Servers["x"].Revision; got != frev || frev <= rev {
		t.Fatalf("follower after its forwarded write: revision %d, answer %d", got, frev)
	}
	// The leader's refusal arrives as the same sentinel.
	if _, err := nodes[2].Apply(ctx, Command{Type: DeleteServer, Name: "nope"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("forwarded delete of an unknown server: %v", err)
	}
	if id, addr := nodes[2].Leader(); id != "n1" || addr != nodes[0].Addr() {
		t.Fatalf("follower sees leader %s %s", id, addr)
	}

	// Kill the leader: the two others elect one of themselves and take writes.
	killed := time.Now()
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	var leader *Node
	eventually(t, 5*time.Second, "a new leader", func() bool {
		for _, n := range nodes[1:] {
			if n.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	t.Logf("leader loss to new leader: %s", time.Since(killed))
	rev2, err := leader.Apply(ctx, putCmd("web", "b:1"))
	if err != nil || rev2 <= rev {
		t.Fatalf("write on the new leader: %d, %v", rev2, err)
	}
	for _, n := range nodes[1:] {
		eventually(t, 2*time.Second, n.ID()+" applies the second write", func() bool {
			return n.State().Servers["web"].Revision == rev2
		})
	}

	// Membership: remove the dead node; the survivors keep a quorum of 2.
	if err := leader.Remove(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if got := suffrages(leader.Members()); len(got) != 2 || slices.Contains(got, "n1=voter") {
		t.Fatalf("members after remove %v", got)
	}
	if _, err := leader.Apply(ctx, Command{Type: DeleteServer, Name: "web"}); err != nil {
		t.Fatal(err)
	}
}

// TestLeaderLoss measures leader-loss-to-new-leader several times.
func TestLeaderLoss(t *testing.T) {
	const rounds = 3
	var times []time.Duration
	for i := 0; i < rounds; i++ {
		nodes := threeNodes(t)
		killed := time.Now()
		if err := nodes[0].Close(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "a new leader", func() bool { return nodes[1].IsLeader() || nodes[2].IsLeader() })
		times = append(times, time.Since(killed))
		for _, n := range nodes {
			_ = n.Close()
		}
	}
	slices.Sort(times)
	t.Logf("leader loss to new leader over %d rounds: min %s, max %s", rounds, times[0], times[len(times)-1])
	if times[len(times)-1] > 3*time.Second {
		t.Fatalf("failover took %s, want well under 3s", times[len(times)-1])
	}
}

func benchApply(b *testing.B, n *Node) {
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := n.Apply(ctx, putCmd(fmt.Sprint("s", i%50), fmt.Sprint("h:", i))); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func BenchmarkApplyOneNode(b *testing.B) {
	n := openNode(b, "n1", b.TempDir(), true)
	waitLeader(b, n, 5*time.Second)
	benchApply(b, n)
}

func BenchmarkApplyThreeNodes(b *testing.B) {
	nodes := threeNodes(b)
	benchApply(b, nodes[0])
}

// BenchmarkApplyForwarded writes through a follower: forwarded to the leader,
// then waited for until applied on the follower.
func BenchmarkApplyForwarded(b *testing.B) {
	nodes := threeNodes(b)
	benchApply(b, nodes[1])
}
