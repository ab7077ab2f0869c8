package e2e

import (
	"fmt"
	"io"
	"testing"
	"time"
)

func TestBalanceRoundrobin(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 3)
	addr := freeAddr(t)
	n := startNode(t, config("", server{name: "rr", bind: addr, balance: "roundrobin", lines: lines(bs...)}))
	n.waitServing(addr)

	// Sequential requests rotate over the backends: every window of three holds
	// each backend once, so 30 requests give exactly 10 each.
	seq := make([]string, 30)
	for i := range seq {
		seq[i] = mustWho(t, addr)
	}
	for i := 3; i < len(seq); i++ {
		if seq[i] != seq[i-3] || seq[i] == seq[i-1] || seq[i] == seq[i-2] {
			t.Fatalf("roundrobin does not rotate: %v", seq)
		}
	}
	counts := map[string]int{}
	for _, name := range seq {
		counts[name]++
	}
	for _, b := range bs {
		if counts[b.name] != 10 {
			t.Fatalf("roundrobin: %s got %d of 30 requests, want 10 (%v)", b.name, counts[b.name], seq)
		}
	}
}

// Weight balancing: only the lowest priority group gets traffic, split by weight;
// when that whole group is dead the next group takes over, and the first group
// gets traffic back when it returns.
func TestBalanceWeightPriority(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 4)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	srv := server{name: "w", bind: addr, balance: "weight", hc: pingHC, lines: []string{
		bs[0].line("weight=1", "priority=1"),
		bs[1].line("priority=1", "weight=3"), // options in any order
		bs[2].line("weight=1", "priority=2"),
		bs[3].line("priority=2"),
	}}
	n := startNode(t, config(apiAddr, srv))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)

	counts := countWho(t, addr, 200)
	if counts["b3"]+counts["b4"] != 0 {
		t.Fatalf("priority 2 backends got traffic while priority 1 is healthy: %v", counts)
	}
	if share := float64(counts["b2"]) / 200; counts["b1"] == 0 || share < 0.6 || share > 0.9 {
		t.Errorf("weight 1:3 split over 200 requests: %v (b2 share %.2f, want about 0.75)", counts, share)
	}

	bs[0].Kill()
	bs[1].Kill()
	api.waitLive(t, "w", bs[0], false)
	api.waitLive(t, "w", bs[1], false)
	counts = countWho(t, addr, 40)
	if counts["b3"] == 0 || counts["b4"] == 0 || counts["b3"]+counts["b4"] != 40 {
		t.Fatalf("after priority 1 died, want all 40 requests on b3 and b4 (weight 1:1): %v", counts)
	}

	bs[0].Restart()
	api.waitLive(t, "w", bs[0], true)
	counts = countWho(t, addr, 20)
	if counts["b1"] != 20 {
		t.Fatalf("b1 (priority 1) is back, want every request on it: %v", counts)
	}
}

// iphash1: a client address always lands on the same backend, different clients
// spread, and when a backend goes down only its clients move.
func TestBalanceIphash1(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 3)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "ih", bind: addr, balance: "iphash1", hc: pingHC, lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)

	const clients = 24
	first := map[string]string{}
	used := map[string]bool{}
	for i := 1; i <= clients; i++ {
		src := fmt.Sprintf("127.0.0.%d", i)
		for j := 0; j < 4; j++ {
			name, err := whoFrom(src, addr)
			if err != nil {
				t.Fatalf("client %s: %v", src, err)
			}
			if j == 0 {
				first[src] = name
				used[name] = true
			} else if name != first[src] {
				t.Fatalf("client %s went to %s, then to %s", src, first[src], name)
			}
		}
	}
	if len(used) < 2 {
		t.Fatalf("%d client addresses all went to one backend: %v", clients, first)
	}

	// Take down the backend with clients; the others' clients must not move.
	var victim *backend
	for _, b := range bs {
		if used[b.name] {
			victim = b
			break
		}
	}
	victim.Kill()
	api.waitLive(t, "ih", victim, false)
	for src, was := range first {
		name, err := whoFrom(src, addr)
		if err != nil {
			t.Fatalf("client %s after %s died: %v", src, victim.name, err)
		}
		switch {
		case was == victim.name && name == victim.name:
			t.Errorf("client %s still on dead %s", src, name)
		case was != victim.name && name != was:
			t.Errorf("client %s moved from %s to %s although only %s died", src, was, name, victim.name)
		}
	}
}

func TestBalanceIphash(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 3)
	addr := freeAddr(t)
	n := startNode(t, config("", server{name: "ih", bind: addr, balance: "iphash", lines: lines(bs...)}))
	n.waitServing(addr)
	for i := 1; i <= 8; i++ {
		src := fmt.Sprintf("127.0.0.%d", i)
		want, err := whoFrom(src, addr)
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			if got, err := whoFrom(src, addr); err != nil || got != want {
				t.Fatalf("iphash client %s: first %s, then %q (%v)", src, want, got, err)
			}
		}
	}
}

// leastconn with long-lived connections: they spread evenly, and new ones go to
// the backend whose connections were closed.
func TestBalanceLeastconn(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 3)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "lc", bind: addr, balance: "leastconn", lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)
	api.waitIdle(t, "lc") // the readiness probe's connection is gone

	held := map[string][]*client{}
	for i := 0; i < 6; i++ {
		c := mustDial(t, addr)
		name, err := c.cmd("WHO")
		if err != nil {
			t.Fatal(err)
		}
		held[name] = append(held[name], c)
	}
	for _, b := range bs {
		if len(held[b.name]) != 2 {
			t.Fatalf("6 long-lived connections over 3 backends with leastconn: want 2 each, got b1=%d b2=%d b3=%d",
				len(held["b1"]), len(held["b2"]), len(held["b3"]))
		}
	}

	for _, c := range held["b2"] {
		c.Close()
	}
	eventually(t, 10*time.Second, "b2 connections closed in gobetween", func() error {
		s, err := api.stats("lc")
		if err != nil {
			return err
		}
		b, err := s.backendOf(bs[1])
		if err != nil {
			return err
		}
		if b.Stats.ActiveConnections != 0 {
			return fmt.Errorf("b2 active_connections=%d", b.Stats.ActiveConnections)
		}
		return nil
	})
	for i := 0; i < 2; i++ {
		c := mustDial(t, addr)
		if name, err := c.cmd("WHO"); err != nil || name != "b2" {
			t.Fatalf("new connection %d: want the least loaded b2, got %q (%v)", i, name, err)
		}
	}
}

// Backend max_connections: a full backend is skipped, and when every backend is
// full the connection is closed without data.
func TestBalanceBackendMaxConnections(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	srv := server{name: "mc", bind: addr, balance: "roundrobin", lines: []string{
		bs[0].line("max_connections=1"),
		bs[1].line("max_connections=2", "weight=1"),
	}}
	n := startNode(t, config(apiAddr, srv))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)
	api.waitIdle(t, "mc")

	held := map[string][]*client{}
	for i := 0; i < 3; i++ {
		c := mustDial(t, addr)
		name, err := c.cmd("WHO")
		if err != nil {
			t.Fatalf("connection %d of 3 (capacity 3): %v", i+1, err)
		}
		held[name] = append(held[name], c)
	}
	if len(held["b1"]) != 1 || len(held["b2"]) != 2 {
		t.Fatalf("want b1=1 (its max) and b2=2, got b1=%d b2=%d", len(held["b1"]), len(held["b2"]))
	}
	if err := closedWithoutData("", addr); err != nil {
		t.Fatalf("4th connection with every backend full: %v", err)
	}

	held["b1"][0].Close()
	eventually(t, 10*time.Second, "a freed slot on b1 is used again", func() error {
		name, err := who(addr)
		if err != nil {
			return err
		}
		if name != "b1" {
			return fmt.Errorf("got %s", name)
		}
		return nil
	})
	// b2's two connections were held throughout.
	if got := bs[1].active(); got != 2 {
		t.Errorf("b2 has %d open connections, want 2", got)
	}
}

// Server max_connections: the next connection is closed without data, and a slot
// frees when a client leaves.
func TestBalanceServerMaxConnections(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr := freeAddr(t)
	srv := server{name: "smc", bind: addr, balance: "roundrobin", lines: lines(bs...), options: []string{"max_connections = 2"}}
	n := startNode(t, config("", srv))
	n.waitServing(addr)

	var held []*client
	eventually(t, 10*time.Second, "two long-lived connections", func() error {
		// the readiness probe may still hold its slot for a moment
		c, err := dialFrom("", addr)
		if err != nil {
			return err
		}
		if _, err := c.cmd("WHO"); err != nil {
			c.Close()
			return err
		}
		held = append(held, c)
		if len(held) < 2 {
			return fmt.Errorf("have %d", len(held))
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := 0; i < 3; i++ {
		if err := closedWithoutData("", addr); err != nil {
			t.Fatalf("connection over server max_connections=2: %v", err)
		}
	}
	for _, c := range held {
		if err := c.echo("still here"); err != nil {
			t.Fatalf("held connection after refusals: %v", err)
		}
	}
	held[0].Close()
	eventually(t, 10*time.Second, "a slot frees when a client leaves", func() error {
		_, err := who(addr)
		return err
	})
}

// leastbandwidth: while one backend carries a stream, new connections go to the
// other.
func TestBalanceLeastBandwidth(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "lb", bind: addr, balance: "leastbandwidth", lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)

	heavy := mustDial(t, addr)
	busy, err := heavy.cmd("WHO")
	if err != nil {
		t.Fatal(err)
	}
	// 64 KiB/s for 8 s, read by a goroutine so the stream never stalls.
	if _, err := heavy.c.Write([]byte("STREAM 400 20ms\n")); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, heavy.r)
	other := "b1"
	if busy == "b1" {
		other = "b2"
	}
	// Bandwidth is measured over time: until the balancer has seen it, ties are
	// broken either way. Then 20 new connections in a row avoid the busy backend
	// (a tie-break cannot do that by chance).
	eventually(t, 6*time.Second, "new connections avoid the streaming backend "+busy, func() error {
		for i := 0; i < 20; i++ {
			name, err := who(addr)
			if err != nil {
				return err
			}
			if name != other {
				return fmt.Errorf("request %d of 20 went to %s", i+1, name)
			}
		}
		return nil
	})
}
