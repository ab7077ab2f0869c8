package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"
)

// freeAddr returns a 127.0.0.1 port free for TCP and UDP at the time of the
// call (gossip needs both), so three nodes can share one join list.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

type netOpts func(*Options)

func openGossipNode(t testing.TB, id string, mod ...netOpts) *Node {
	t.Helper()
	o := Options{
		NodeID: id, DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", GossipBind: "127.0.0.1:0", Logger: testLogger(t),
	}
	for _, m := range mod {
		m(&o)
	}
	n, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func leaderOf(t testing.TB, nodes []*Node, d time.Duration) *Node {
	t.Helper()
	var l *Node
	eventually(t, d, "one leader", func() bool {
		l = nil
		for _, n := range nodes {
			if n.IsLeader() {
				if l != nil {
					return false
				}
				l = n
			}
		}
		return l != nil
	})
	return l
}

func follower(nodes []*Node) *Node {
	for _, n := range nodes {
		if !n.IsLeader() {
			return n
		}
	}
	return nil
}

// expectCluster starts three nodes with bootstrap_expect 3 and one shared join
// list, in a random order with pauses between them.
func expectCluster(t testing.TB, mod ...netOpts) []*Node {
	t.Helper()
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	order := rand.Perm(3)
	nodes := make([]*Node, 3)
	for k, i := range order {
		m := append([]netOpts{func(o *Options) {
			o.GossipBind = addrs[i]
			o.Join = addrs
			o.BootstrapExpect = 3
		}}, mod...)
		nodes[i] = openGossipNode(t, fmt.Sprint("n", i+1), m...)
		if k < 2 {
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		}
	}
	want := []string{"n1=voter", "n2=voter", "n3=voter"}
	for _, n := range nodes {
		eventually(t, 15*time.Second, n.ID()+" sees three voters", func() bool {
			return slices.Equal(suffrages(raftOnly(n.Members())), want)
		})
	}
	leaderOf(t, nodes, 5*time.Second)
	return nodes
}

func raftOnly(ms []Member) []Member {
	var out []Member
	for _, m := range ms {
		if m.Suffrage != "" {
			out = append(out, m)
		}
	}
	return out
}

func gossipOf(ms []Member, id string) string {
	for _, m := range ms {
		if m.ID == id {
			return m.Gossip
		}
	}
	return ""
}

func TestBootstrapExpectForwardAndFailover(t *testing.T) {
	start := time.Now()
	nodes := expectCluster(t)
	t.Logf("three nodes formed a cluster in %s", time.Since(start))
	leader := leaderOf(t, nodes, 5*time.Second)
	for _, n := range nodes {
		for _, m := range n.Members() {
			if m.Gossip != GossipAlive || m.GossipAddress == "" || m.Address == "" {
				t.Fatalf("%s sees member %+v", n.ID(), m)
			}
		}
	}
	// Restarting does not bootstrap again: a node with state reports it.
	if st := nodes[0].status(); !st.HasState {
		t.Fatalf("status %+v", st)
	}

	// A write on a follower is forwarded and visible there when Apply returns;
	// refusals keep their sentinel.
	ctx := context.Background()
	f := follower(nodes)
	var lat []time.Duration
	for i := range 200 {
		s := time.Now()
		rev, err := f.Apply(ctx, putCmd(fmt.Sprint("s", i%20), fmt.Sprint("h:", i)))
		lat = append(lat, time.Since(s))
		if err != nil {
			t.Fatal(err)
		}
		if got := f.State().Servers[fmt.Sprint("s", i%20)].Revision; got != rev {
			t.Fatalf("follower read after its write: revision %d, want %d", got, rev)
		}
	}
	slices.Sort(lat)
	t.Logf("follower-forwarded write latency over %d writes: p50 %s, p99 %s", len(lat), lat[len(lat)/2], lat[len(lat)*99/100])
	if _, err := f.Apply(ctx, Command{Type: PutServer, Name: "s1", Origin: OriginAPI, Server: srv(":1", "z:1"), IfAbsent: true}); !errors.Is(err, ErrExists) {
		t.Fatalf("forwarded if_absent on an existing server: %v", err)
	}

	// The leader closes (no hand-over): a new leader, and writes through a
	// follower work again.
	killed := time.Now()
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	var rest []*Node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	nl := leaderOf(t, rest, 5*time.Second)
	t.Logf("leader loss to new leader: %s", time.Since(killed))
	f = follower(rest)
	s := time.Now()
	rev, err := f.Apply(ctx, putCmd("after", "a:1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first forwarded write after failover took %s", time.Since(s))
	if f.State().Servers["after"].Revision != rev {
		t.Fatal("follower does not see its write after failover")
	}
	// The closed node is dead in gossip and kept in Raft.
	eventually(t, 15*time.Second, "the closed leader is dead in gossip", func() bool {
		return gossipOf(nl.Members(), leader.ID()) == GossipDead
	})
	if got := suffrages(raftOnly(nl.Members())); len(got) != 3 {
		t.Fatalf("a dead member was removed from raft: %v", got)
	}

	// Two of three gone: the survivor (a follower) fails writes with
	// ErrNoLeader within a few seconds.
	survivor := f
	if err := nl.Close(); err != nil {
		t.Fatal(err)
	}
	s = time.Now()
	_, err = survivor.Apply(ctx, putCmd("lost", "l:1"))
	took := time.Since(s)
	if !errors.Is(err, ErrNoLeader) || took > 4*time.Second {
		t.Fatalf("apply without a quorum: %v after %s", err, took)
	}
	t.Logf("no quorum: apply failed after %s: %v", took, err)
}

func TestJoinPromoteRemoveLeave(t *testing.T) {
	nodes := expectCluster(t, func(o *Options) { o.MaxVoters = 4 })
	seed := []string{nodes[0].GossipAddr()}
	ctx := context.Background()

	// A node with join only comes in as a non-voter, then is promoted.
	n4 := openGossipNode(t, "n4", func(o *Options) { o.Join = seed; o.MaxVoters = 4 })
	eventually(t, 10*time.Second, "n4 is a non-voter", func() bool {
		return slices.Contains(suffrages(raftOnly(nodes[0].Members())), "n4=nonvoter")
	})
	eventually(t, 10*time.Second, "n4 is promoted and knows it", func() bool {
		return n4.status().Voter && slices.Contains(suffrages(raftOnly(nodes[0].Members())), "n4=voter")
	})
	if _, err := n4.Apply(ctx, putCmd("from4", "x:1")); err != nil {
		t.Fatal(err)
	}

	// Past MaxVoters a joined node stays a non-voter (it joins through Join,
	// not the option).
	n5 := openGossipNode(t, "n5", func(o *Options) { o.MaxVoters = 4 })
	if err := n5.Join(ctx, seed); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "n5 is a non-voter that applies the log", func() bool {
		return slices.Contains(suffrages(raftOnly(nodes[0].Members())), "n5=nonvoter") && n5.State().Servers["from4"].Revision > 0
	})
	time.Sleep(2 * promoteAfter)
	if got := suffrages(raftOnly(nodes[1].Members())); !slices.Contains(got, "n5=nonvoter") {
		t.Fatalf("n5 promoted past max voters: %v", got)
	}
	rev, err := n5.Apply(ctx, putCmd("from5", "y:1"))
	if err != nil || n5.State().Servers["from5"].Revision != rev {
		t.Fatalf("write through a non-voter: %d, %v", rev, err)
	}

	// Remove, from a follower: forwarded to the leader; the removed member
	// leaves gossip and is not re-added.
	all := append(slices.Clone(nodes), n4, n5)
	f := follower(all)
	if f.ID() == "n5" {
		f = follower(nodes)
	}
	if err := f.Remove(ctx, "n5"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "n5 left gossip and raft", func() bool {
		ms := nodes[0].Members()
		return gossipOf(ms, "n5") == GossipLeft && !slices.ContainsFunc(ms, func(m Member) bool { return m.ID == "n5" && m.Suffrage != "" })
	})
	if err := f.Remove(ctx, "nobody"); !errors.Is(err, ErrNotMember) {
		t.Fatalf("remove unknown: %v", err)
	}

	// The leader leaves gracefully: leadership moves first, then it is removed.
	l := leaderOf(t, all[:4], 5*time.Second)
	s := time.Now()
	if err := l.Leave(); err != nil {
		t.Fatal(err)
	}
	var rest []*Node
	for _, n := range all[:4] {
		if n != l {
			rest = append(rest, n)
		}
	}
	nl := leaderOf(t, rest, 5*time.Second)
	t.Logf("leave with leadership transfer: new leader after %s", time.Since(s))
	eventually(t, 5*time.Second, "the leaver is removed from raft", func() bool {
		return !slices.ContainsFunc(raftOnly(nl.Members()), func(m Member) bool { return m.ID == l.ID() })
	})
	_ = l.Close()
	if _, err := follower(rest).Apply(ctx, putCmd("afterleave", "z:1")); err != nil {
		t.Fatal(err)
	}
}

func TestEncryptKey(t *testing.T) {
	key := []byte("0123456789abcdef")
	a := openGossipNode(t, "a", func(o *Options) { o.EncryptKey = key; o.BootstrapExpect = 1 })
	waitLeader(t, a, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	wrong := openGossipNode(t, "wrong", func(o *Options) { o.EncryptKey = []byte("fedcba9876543210") })
	if err := wrong.Join(ctx, []string{a.GossipAddr()}); err == nil {
		t.Fatal("a node with another key joined")
	}
	none := openGossipNode(t, "none")
	if err := none.Join(ctx, []string{a.GossipAddr()}); err == nil {
		t.Fatal("a node without a key joined")
	}
	right := openGossipNode(t, "right", func(o *Options) { o.EncryptKey = key })
	if err := right.Join(ctx, []string{a.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the node with the key is added", func() bool {
		return slices.Contains(suffrages(raftOnly(a.Members())), "right=voter")
	})
	for _, id := range []string{"wrong", "none"} {
		if g := gossipOf(a.Members(), id); g != "" {
			t.Fatalf("%s is known to the cluster: %s", id, g)
		}
	}
	if _, err := Open(context.Background(), Options{NodeID: "x", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", GossipBind: "127.0.0.1:0", EncryptKey: []byte("short")}); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}

// A node with state never bootstraps again: restarted with the same data and
// the same bootstrap_expect, it comes back as the voter it was. A late node
// with bootstrap_expect finds the cluster and waits to be added.
func TestRestartAndLateExpectNode(t *testing.T) {
	addrs := []string{freeAddr(t), freeAddr(t), freeAddr(t)}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	open := func(i int) *Node {
		return openGossipNode(t, fmt.Sprint("n", i+1), func(o *Options) {
			o.GossipBind, o.Join, o.BootstrapExpect, o.DataDir = addrs[i], addrs, 3, dirs[i]
		})
	}
	nodes := []*Node{open(0), open(1), open(2)}
	leader := leaderOf(t, nodes, 15*time.Second)
	ctx := context.Background()
	rev, err := leader.Apply(ctx, putCmd("web", "a:1"))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		if n == leader {
			continue
		}
		_ = n.Close()
		nodes[i] = open(i)
		eventually(t, 10*time.Second, "the restarted node has the write and votes", func() bool {
			return nodes[i].State().Servers["web"].Revision == rev && nodes[i].status().Voter
		})
		break
	}
	if got := suffrages(raftOnly(leader.Members())); !slices.Equal(got, []string{"n1=voter", "n2=voter", "n3=voter"}) {
		t.Fatalf("members after restart: %v", got)
	}
	late := openGossipNode(t, "n4", func(o *Options) { o.Join = addrs; o.BootstrapExpect = 3 })
	eventually(t, 10*time.Second, "the late node is added and has the write", func() bool {
		return late.State().Servers["web"].Revision == rev
	})
	if id, _ := late.Leader(); id != leader.ID() {
		t.Fatalf("the late node follows %q, want %q", id, leader.ID())
	}
}
