package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
)

func TestUDPManyClients(t *testing.T) {
	h := newHarness(t)
	b1, b2 := startUDPBackend(t, "b1"), startUDPBackend(t, "b2")
	addr := h.startUDP("dns", udpCfg([]string{b1.addr(), b2.addr()}))
	const clients, each = 200, 3
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var sent, answered int64
	var mu sync.Mutex
	for i := range clients {
		c := udpDial(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first string
			for j := range each {
				msg := fmt.Sprintf("q-%d-%d", i, j)
				got, err := ask(c, msg)
				if err != nil {
					errs <- fmt.Errorf("client %d datagram %d: %w", i, j, err)
					return
				}
				name, payload, _ := strings.Cut(got, "|")
				if payload != msg {
					errs <- fmt.Errorf("client %d: answer %q to %q", i, got, msg)
					return
				}
				if j == 0 {
					first = name
				} else if name != first {
					errs <- fmt.Errorf("client %d: answered by %s then %s within one session", i, first, name)
					return
				}
				mu.Lock()
				sent += int64(len(msg))
				answered += int64(len(got))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// A reply is counted right after it is sent: the client may see it first.
	waitFor(t, 5*time.Second, "rx counted", func() bool { return h.stats("dns").RxTotal == uint64(answered) })
	st := h.stats("dns")
	if st.TotalConnections != clients || st.ActiveConnections != clients || h.sessions("dns") != clients {
		t.Errorf("total/active/sessions = %d/%d/%d, want %d each", st.TotalConnections, st.ActiveConnections, h.sessions("dns"), clients)
	}
	if st.TxTotal != uint64(sent) || st.RxTotal != uint64(answered) {
		t.Errorf("tx/rx = %d/%d, want %d/%d", st.TxTotal, st.RxTotal, sent, answered)
	}
	s1, s2 := backendStatsOf(st, b1.target()), backendStatsOf(st, b2.target())
	if s1.TotalConnections != clients/2 || s2.TotalConnections != clients/2 || s1.ActiveConnections+s2.ActiveConnections != clients {
		t.Errorf("backend totals %d/%d active %d/%d, want %d each (round robin)", s1.TotalConnections, s2.TotalConnections,
			s1.ActiveConnections, s2.ActiveConnections, clients/2)
	}
	if s1.Tx+s2.Tx != st.TxTotal || s1.Rx+s2.Rx != st.RxTotal {
		t.Errorf("backend bytes do not add up to the server's")
	}
}

func TestUDPMaxRequests(t *testing.T) {
	tests := []struct {
		name        string
		maxRequests uint64
		datagrams   int
		want        string // the backend answering each datagram: A the first, B the other
		sessions    int64  // total sessions
	}{
		{"1 relays every answer, one session each", 1, 4, "ABAB", 4},
		{"3 then a new pick", 3, 5, "AAABB", 2},
		{"0 is unlimited", 0, 5, "AAAAA", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			b1, b2 := startUDPBackend(t, "b1"), startUDPBackend(t, "b2")
			addr := h.startUDP("u", udpCfg([]string{b1.addr(), b2.addr()}, withUDP(tt.maxRequests, 0), withIdle(300*time.Millisecond, 0)))
			c := udpDial(t, addr)
			got, first := "", ""
			for i := range tt.datagrams {
				name := mustAsk(t, c, fmt.Sprintf("m%d", i))
				if first == "" {
					first = name
				}
				if name == first {
					got += "A"
				} else {
					got += "B"
				}
			}
			if got != tt.want {
				t.Errorf("answered by %s, want %s (round robin over two)", got, tt.want)
			}
			if n := h.stats("u").TotalConnections; n != tt.sessions {
				t.Errorf("total sessions %d, want %d", n, tt.sessions)
			}
			// Retired sessions end with the idle limit like the others.
			waitFor(t, 5*time.Second, "sessions idle out", func() bool { return h.sessions("u") == 0 && h.stats("u").ActiveConnections == 0 })
		})
	}
}

func TestUDPMaxResponses(t *testing.T) {
	t.Run("1: the next datagram is a new session", func(t *testing.T) {
		h := newHarness(t)
		b1, b2 := startUDPBackend(t, "b1"), startUDPBackend(t, "b2")
		addr := h.startUDP("u", udpCfg([]string{b1.addr(), b2.addr()}, withUDP(0, 1)))
		c := udpDial(t, addr)
		first := mustAsk(t, c, "a")
		waitFor(t, 5*time.Second, "session ends after one response", func() bool { return h.sessions("u") == 0 })
		if got := mustAsk(t, c, "b"); got == first {
			t.Fatalf("second answer from %s again, want a new pick (round robin)", got)
		}
		if st := h.stats("u"); st.TotalConnections != 2 {
			t.Errorf("total %d, want 2", st.TotalConnections)
		}
	})
	t.Run("2 of 3 replies relayed", func(t *testing.T) {
		h := newHarness(t)
		be := startUDPBackend(t, "b1")
		addr := h.startUDP("u", udpCfg([]string{be.addr()}, withUDP(0, 2)))
		c := udpDial(t, addr)
		if err := write(c, "multi:3:x"); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := recv(c, 2*time.Second); err != nil {
				t.Fatalf("reply %d: %v", i+1, err)
			}
		}
		expectSilence(t, c, 300*time.Millisecond)
		if n := h.sessions("u"); n != 0 {
			t.Errorf("%d sessions after max_responses, want 0", n)
		}
		if st := h.stats("u"); st.RxTotal != 2*uint64(len("b1|multi:3:x")) {
			t.Errorf("rx %d, want two replies", st.RxTotal)
		}
	})
	t.Run("max_requests 1 with max_responses 1: one session per exchange", func(t *testing.T) {
		h := newHarness(t)
		be := startUDPBackend(t, "b1")
		addr := h.startUDP("u", udpCfg([]string{be.addr()}, withUDP(1, 1)))
		c := udpDial(t, addr)
		for i := range 5 {
			mustAsk(t, c, fmt.Sprint(i))
		}
		waitFor(t, 5*time.Second, "every session ended", func() bool { return h.sessions("u") == 0 })
		if st := h.stats("u"); st.TotalConnections != 5 || st.ActiveConnections != 0 {
			t.Errorf("total/active %d/%d, want 5/0", st.TotalConnections, st.ActiveConnections)
		}
	})
}

func TestUDPIdle(t *testing.T) {
	const limit = 200 * time.Millisecond
	tests := []struct {
		name    string
		opt     serverOpt
		msg     string
		keepFor time.Duration // the client sends every limit/3 for this long first
	}{
		{"client idle", withIdle(limit, 0), "x", 0},
		{"client idle, kept by the client", withIdle(limit, 0), "x", 3 * limit},
		{"backend idle, silent backend", withIdle(0, limit), "quiet:x", 0},
		{"backend idle, kept by replies", withIdle(0, limit), "x", 3 * limit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			be := startUDPBackend(t, "b1")
			addr := h.startUDP("u", udpCfg([]string{be.addr()}, tt.opt))
			c := udpDial(t, addr)
			send := func() {
				if err := write(c, tt.msg); err != nil {
					t.Fatal(err)
				}
			}
			send()
			waitFor(t, 5*time.Second, "session", func() bool { return h.stats("u").TotalConnections == 1 })
			for end := time.Now().Add(tt.keepFor); time.Now().Before(end); {
				time.Sleep(limit / 3)
				send()
			}
			last := time.Now()
			waitFor(t, 5*time.Second, "session expires", func() bool { return h.sessions("u") == 0 })
			if idle := time.Since(last); idle < limit-20*time.Millisecond {
				t.Errorf("session ended %v after the last datagram, limit %v", idle, limit)
			}
			if st := h.stats("u"); st.TotalConnections != 1 || st.ActiveConnections != 0 {
				t.Errorf("total/active %d/%d, want one session, ended", st.TotalConnections, st.ActiveConnections)
			}
		})
	}
}

func TestUDPExpiry(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name                  string
		client, backend       time.Duration
		lastClient, lastReply time.Duration
		want                  time.Duration
	}{
		{"neither set: default, both ways", 0, 0, 10 * s, 20 * s, 20*s + udpDefaultIdle},
		{"client only", 5 * s, 0, 10 * s, 100 * s, 15 * s},
		{"backend only", 0, 5 * s, 100 * s, 10 * s, 15 * s},
		{"both: the first to pass", 5 * s, 30 * s, 10 * s, 0, 15 * s},
		{"both: backend first", 30 * s, 5 * s, 10 * s, 0, 5 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			us := &udpSettings{clientIdle: tt.client, backendIdle: tt.backend}
			if got := us.expiry(tt.lastClient, tt.lastReply); got != tt.want {
				t.Errorf("expiry = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestUDPSessionCap(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	const limit, clients = 50, 400
	addr := h.startUDP("u", udpCfg([]string{be.addr()}, withMax(limit)))
	for i := range clients {
		// Kept open: every client has a port of its own.
		c := udpDial(t, addr)
		mustAsk(t, c, fmt.Sprint(i)) // every new client is served, the table being full
		if n := h.sessions("u"); n > limit {
			t.Fatalf("%d sessions after %d clients, cap %d", n, i+1, limit)
		}
	}
	if ev := h.server("u").udp.evicted.Load(); ev != clients-limit {
		t.Errorf("evicted %d, want %d", ev, clients-limit)
	}
	if u := h.stats("u").UDP; u == nil || u.Evicted != clients-limit {
		t.Errorf("stats UDP = %+v, want %d evicted", u, clients-limit)
	}
	waitFor(t, 5*time.Second, "active = cap", func() bool { return h.stats("u").ActiveConnections == limit })
	if b := backendStatsOf(h.stats("u"), be.target()); b.ActiveConnections != limit || b.TotalConnections != clients {
		t.Errorf("backend active/total %d/%d, want %d/%d", b.ActiveConnections, b.TotalConnections, limit, clients)
	}
}

func TestUDPDefaultSessionCap(t *testing.T) {
	got := defaultUDPSessions()
	if got < 64 || got > udpMaxSessions {
		t.Fatalf("default cap %d outside [64, %d]", got, udpMaxSessions)
	}
	if lim := fdLimit(); lim > 0 && lim/2 < udpMaxSessions && got != max(lim/2, 64) {
		t.Errorf("default cap %d, want half the fd limit %d", got, lim)
	}
	us, err := newUDPSettings(udpCfg(nil, withMax(10)))
	if err != nil || us.maxSessions != 10 {
		t.Errorf("max_connections 10: cap %d, %v", us.maxSessions, err)
	}
}

func TestUDPAccess(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	addr := h.startUDP("u", udpCfg([]string{be.addr()}, withAccess("deny", "allow 127.0.0.2/32")))
	denied := udpDialFrom(t, "127.0.0.1", addr)
	for range 3 {
		if err := write(denied, "x"); err != nil {
			t.Fatal(err)
		}
	}
	expectSilence(t, denied, 300*time.Millisecond)
	mustAsk(t, udpDialFrom(t, "127.0.0.2", addr), "y")
	if n := be.got.Load(); n != 1 {
		t.Errorf("backend got %d datagrams, want only the allowed client's", n)
	}
	if st := h.stats("u"); st.TotalConnections != 1 || st.RefusedConnections != 0 {
		t.Errorf("total/refused %d/%d, want 1/0 (denials are not counted)", st.TotalConnections, st.RefusedConnections)
	}
	// Each datagram of a denied client is checked and dropped: each counts
	// as denied, for metrics.
	if st := h.stats("u"); st.Refusals.Access != 3 {
		t.Errorf("access denials %d, want the denied client's 3 datagrams", st.Refusals.Access)
	}
}

func TestUDPLeastconnCountsSessions(t *testing.T) {
	h := newHarness(t)
	h.rt.opts.NewBalancer = balance.New
	b1, b2 := startUDPBackend(t, "b1"), startUDPBackend(t, "b2")
	addr := h.startUDP("u", udpCfg([]string{b1.addr(), b2.addr()}, func(s *config.Server) { s.Balance = "leastconn" }))
	count := map[string]int{}
	var clients []*net.UDPConn
	for i := range 3 {
		c := udpDial(t, addr)
		clients = append(clients, c)
		count[mustAsk(t, c, fmt.Sprint(i))]++
	}
	if count["b1"]+count["b2"] != 3 || count["b1"] == 0 || count["b2"] == 0 {
		t.Fatalf("3 sessions went %v", count)
	}
	fewer := "b1"
	if count["b2"] < count["b1"] {
		fewer = "b2"
	}
	if got := mustAsk(t, udpDial(t, addr), "4th"); got != fewer {
		t.Errorf("4th session went to %s, want %s (fewer live sessions: %v)", got, fewer, count)
	}
	// Datagrams on live sessions do not move them.
	for i, c := range clients {
		mustAsk(t, c, fmt.Sprint("again", i))
	}
	st := h.stats("u")
	for _, b := range []*udpBackend{b1, b2} {
		bs := backendStatsOf(st, b.target())
		if bs.ActiveConnections != 2 || bs.Cluster.ActiveConnections != 2 {
			t.Errorf("%s: active %d, load %d, want 2 sessions each", b.name, bs.ActiveConnections, bs.Cluster.ActiveConnections)
		}
	}
}

func TestUDPBackendStates(t *testing.T) {
	for _, state := range []string{BackendDisable, BackendDrain} {
		t.Run(state, func(t *testing.T) {
			h := newHarness(t)
			b1, b2 := startUDPBackend(t, "b1"), startUDPBackend(t, "b2")
			cfg := udpCfg([]string{b1.addr(), b2.addr()})
			addr := h.startUDP("u", cfg)
			c1, c2 := udpDial(t, addr), udpDial(t, addr)
			if mustAsk(t, c1, "1") == "b2" {
				c1, c2 = c2, c1
				mustAsk(t, c1, "1")
			} else {
				mustAsk(t, c2, "2")
			}
			// c1's session is on b1, c2's on b2.
			err := h.rt.ApplyState(t.Context(), map[string]config.Server{"u": cfg}, map[string]map[string]string{"u": {b1.addr(): state}})
			if err != nil {
				t.Fatal(err)
			}
			switch state {
			case BackendDisable:
				// Ended at once: the client's next datagram is a new session, on b2.
				if n := h.sessions("u"); n != 1 {
					t.Errorf("%d sessions after disable, want 1", n)
				}
				if got := mustAsk(t, c1, "3"); got != "b2" {
					t.Errorf("after disable answered by %s, want b2", got)
				}
			case BackendDrain:
				if got := mustAsk(t, c1, "3"); got != "b1" {
					t.Errorf("drained backend's session answered by %s, want b1 (it continues)", got)
				}
				if got := mustAsk(t, udpDial(t, addr), "new"); got != "b2" {
					t.Errorf("new session went to %s, want b2", got)
				}
			}
			if got := mustAsk(t, c2, "4"); got != "b2" {
				t.Errorf("b2's session answered by %s", got)
			}
			st := backendStatsOf(h.stats("u"), b1.target())
			if st.State != state || st.TotalConnections != 1 {
				t.Errorf("b1 state %q total %d, want %q 1", st.State, st.TotalConnections, state)
			}
		})
	}
}

func TestUDPRemoveDrains(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	addr := h.startUDP("u", udpCfg([]string{be.addr()}, withDrain(5*time.Second), withUDP(0, 1)))
	s := h.server("u")
	c := udpDial(t, addr)
	if err := write(c, "slow:300:x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "session", func() bool { return be.got.Load() == 1 })
	start := time.Now()
	h.rt.Remove("u")
	// No more reading: a new client's datagram goes nowhere.
	late := udpDial(t, addr)
	if err := write(late, "late"); err != nil {
		t.Fatal(err)
	}
	// The reply to the open session still leaves from the server's address.
	if got, err := recv(c, 2*time.Second); err != nil || got != "b1|slow:300:x" {
		t.Fatalf("reply during drain: %q, %v", got, err)
	}
	select {
	case <-s.drained:
	case <-time.After(3 * time.Second):
		t.Fatal("drain did not end with the last session")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("drain took %v, the session ended after ~300 ms", d)
	}
	expectSilence(t, late, 200*time.Millisecond)
	if n := be.got.Load(); n != 1 {
		t.Errorf("backend got %d datagrams, want 1 (nothing read after the removal)", n)
	}
}

func TestUDPRemoveDrainTimeoutAndTakeover(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	addr := h.startUDP("old", udpCfg([]string{be.addr()}, withDrain(30*time.Second)))
	old := h.server("old")
	c := udpDial(t, addr)
	mustAsk(t, c, "x")
	h.rt.Remove("old")
	// A new server on the same address takes it over at once; the draining
	// server's session ends.
	if err := h.rt.Upsert(t.Context(), "new", udpCfg([]string{be.addr()}, withBind(addr))); err != nil {
		t.Fatalf("new server on the address of a draining one: %v", err)
	}
	h.waitReady("new")
	select {
	case <-old.drained:
	case <-time.After(5 * time.Second):
		t.Fatal("the old server still drains after its address was taken over")
	}
	mustAsk(t, c, "y") // same client, now a session of the new server
	if st := h.stats("new"); st.TotalConnections != 1 {
		t.Errorf("new server total %d, want 1", st.TotalConnections)
	}
}

func TestUDPRemoveDrainTimeout(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	addr := h.startUDP("u", udpCfg([]string{be.addr()}, withDrain(300*time.Millisecond)))
	s := h.server("u")
	mustAsk(t, udpDial(t, addr), "x")
	start := time.Now()
	h.rt.Remove("u")
	select {
	case <-s.drained:
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not end at drain_timeout")
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("drain ended after %v, before drain_timeout", d)
	}
	if n := s.udpSessions(); n != 0 || s.active.Load() != 0 {
		t.Errorf("%d sessions, %d active after the drain", n, s.active.Load())
	}
	// The socket is closed: the port is free again.
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("port still taken after the drain: %v", err)
	}
	pc.Close()
}

func TestUDPRebindEndsOldSessions(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	addr := h.startUDP("u", udpCfg([]string{be.addr()}))
	c := udpDial(t, addr)
	mustAsk(t, c, "x")
	if err := h.rt.Upsert(t.Context(), "u", udpCfg([]string{be.addr()}, withBind("127.0.0.2:0"))); err != nil {
		t.Fatal(err)
	}
	if n := h.sessions("u"); n != 0 {
		t.Errorf("%d sessions after the rebind, want the old socket's ended", n)
	}
	if got, err := ask(c, "y"); err == nil {
		t.Errorf("the old address still answers: %q", got)
	}
	mustAsk(t, udpDial(t, h.udpAddr("u")), "z")
}

func TestUDPProtocolChange(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	tb := startBackend(t, echo)
	tcp := serverCfg([]string{tb.addr()}, withBind("127.0.0.1:0"))
	addr := h.start("u", tcp)
	c := dial(t, addr)
	mustRelay(t, c, "tcp before")
	udp := udpCfg([]string{be.addr()}, withBind(addr))
	if err := h.rt.Upsert(t.Context(), "u", udp); err != nil {
		t.Fatal(err)
	}
	h.waitBackends("u", be.target())
	mustAsk(t, udpDial(t, addr), "over udp")
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("tcp listener still accepts after the change to udp")
	}
	mustRelay(t, c, "open tcp connection after the change")
	// And back: the UDP sessions end, TCP serves.
	if err := h.rt.Upsert(t.Context(), "u", serverCfg([]string{tb.addr()}, withBind(addr))); err != nil {
		t.Fatal(err)
	}
	h.waitBackends("u", tb.target())
	mustRelay(t, dial(t, addr), "tcp after")
	if n := h.sessions("u"); n != 0 {
		t.Errorf("%d udp sessions after the change to tcp", n)
	}
}

func TestUDPNamedBackend(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackendOn(t, "b1", ":0") // localhost may resolve to ::1 or 127.0.0.1
	_, port, _ := net.SplitHostPort(be.addr())
	addr := h.startUDP("u", udpCfg([]string{"localhost:" + port}))
	c := udpDial(t, addr)
	for i := range 3 {
		mustAsk(t, c, fmt.Sprint(i)) // the first one waits for the resolution, kept
	}
	if st := h.stats("u"); st.TotalConnections != 1 {
		t.Errorf("total %d, want one session", st.TotalConnections)
	}
}

func TestUDPBackendRefused(t *testing.T) {
	h := newHarness(t)
	dead := startUDPBackend(t, "dead")
	deadAddr := dead.addr()
	dead.pc.Close()
	addr := h.startUDP("u", udpCfg([]string{deadAddr}))
	c := udpDial(t, addr)
	if err := write(c, "x"); err != nil {
		t.Fatal(err)
	}
	target := dead.target()
	waitFor(t, 5*time.Second, "refused session ends", func() bool {
		return h.sessions("u") == 0 && backendStatsOf(h.stats("u"), target).RefusedConnections == 1
	})
	if n := h.tw.monitor("u").passiveCount(target); n != 1 {
		t.Errorf("passive failures %d, want 1", n)
	}
}

func TestUDPStatsPerSecond(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	addr := h.startUDP("u", udpCfg([]string{be.addr()}))
	c := udpDial(t, addr)
	waitFor(t, 5*time.Second, "rx and tx per second", func() bool {
		mustAsk(t, c, "tick")
		st := h.stats("u")
		b := backendStatsOf(st, be.target())
		return st.RxSecond > 0 && st.TxSecond > 0 && b.RxSecond > 0 && b.TxSecond > 0
	})
}

func TestUDPSettingsRefuseTCPOnlyKeys(t *testing.T) {
	tests := []struct {
		name string
		opt  serverOpt
		want string
	}{
		{"sni", func(s *config.Server) { s.Sni = &config.Sni{} }, "sni: not supported with protocol udp"},
		{"proxy_protocol", func(s *config.Server) { s.ProxyProtocol = &config.ProxyProtocol{Version: "1"} }, "proxy_protocol"},
		{"backends_tls", func(s *config.Server) { s.BackendsTls = &config.BackendsTls{} }, "backends_tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			err := h.rt.Upsert(t.Context(), "u", udpCfg([]string{"127.0.0.1:1"}, tt.opt))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Upsert = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func TestUDPRunnable(t *testing.T) {
	taken, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := udpCfg([]string{"127.0.0.1:1"})
	busy := udpCfg([]string{"127.0.0.1:1"}, withBind(taken.LocalAddr().String()))
	if err := Runnable(context.Background(), free); err != nil {
		t.Errorf("free udp bind: %v", err)
	}
	if err := Runnable(context.Background(), busy); !errors.Is(err, ErrBindFailed) {
		t.Errorf("taken udp bind: %v, want ErrBindFailed", err)
	}
}
