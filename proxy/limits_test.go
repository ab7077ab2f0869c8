package proxy

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// holdClients opens n clients at once; each sends a byte and waits for its echo
// (served) or for the end of the connection (refused). Served clients stay open
// until release is closed.
func holdClients(t *testing.T, addr string, n int, release <-chan struct{}) (served int) {
	t.Helper()
	var ok atomic.Int64
	var ready, wg sync.WaitGroup
	ready.Add(n)
	wg.Add(n)
	for range n {
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				ready.Done()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1)
			if _, err := c.Write([]byte("x")); err == nil {
				if _, err := io.ReadFull(c, buf); err == nil {
					ok.Add(1)
				}
			}
			ready.Done()
			<-release
		}()
	}
	ready.Wait()
	served = int(ok.Load())
	return served
}

func TestMaxConnections(t *testing.T) {
	const clients = 24
	t.Run("server", func(t *testing.T) {
		h := newHarness(t)
		be := startBackend(t, echo)
		addr := h.start("web", serverCfg([]string{be.addr()}, withMax(3)))
		release := make(chan struct{})
		served := holdClients(t, addr, clients, release)
		if served != 3 {
			t.Errorf("served %d clients at once, want max_connections = 3", served)
		}
		if p := be.peak.Load(); p > 3 {
			t.Errorf("backend saw %d concurrent connections, limit 3", p)
		}
		st := h.stats("web")
		if st.ActiveConnections != 3 || st.RefusedConnections != clients-3 {
			t.Errorf("active/refused = %d/%d, want 3/%d", st.ActiveConnections, st.RefusedConnections, clients-3)
		}
		close(release)
		waitFor(t, 5*time.Second, "all ended", func() bool { return h.stats("web").ActiveConnections == 0 })
		// Slots come back: the next clients are served.
		served = holdClients(t, addr, 3, closedChan())
		if served != 3 {
			t.Errorf("after release served %d, want 3", served)
		}
	})
	t.Run("backends", func(t *testing.T) {
		h := newHarness(t)
		b1, b2 := startBackend(t, echo), startBackend(t, echo)
		addr := h.start("web", serverCfg([]string{b1.addr() + " max=2", b2.addr() + " max=3"}))
		release := make(chan struct{})
		served := holdClients(t, addr, clients, release)
		if served != 5 {
			t.Errorf("served %d clients at once, want 2+3", served)
		}
		if p1, p2 := b1.peak.Load(), b2.peak.Load(); p1 > 2 || p2 > 3 {
			t.Errorf("backend peaks %d/%d exceed max_connections 2/3", p1, p2)
		}
		if r := h.stats("web").RefusedConnections; r != clients-5 {
			t.Errorf("refused = %d, want %d", r, clients-5)
		}
		close(release)
	})
}

func closedChan() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func TestDialFailureTriesNextBackend(t *testing.T) {
	h := newHarness(t)
	dead := deadPort(t)
	live := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{dead, live.addr()}, withDialTimeout(time.Second)))
	for i := range 6 {
		c := dial(t, addr)
		msg := []byte(fmt.Sprint("hello ", i))
		if _, err := roundTrip(c, msg); err != nil {
			t.Fatalf("client %d was not served by the live backend: %v", i, err)
		}
		c.Close()
	}
	st := h.stats("web")
	if st.RefusedConnections != 0 {
		t.Errorf("server refused %d, want 0 (every client got the live backend)", st.RefusedConnections)
	}
	host, port, _ := net.SplitHostPort(dead)
	deadT := config.Target{Host: host, Port: port}
	for _, b := range st.Backends {
		if b.Target == deadT && b.Stats.RefusedConnections == 0 {
			t.Errorf("dead backend refused count = 0")
		}
		if b.Target == live.target() && b.Stats.TotalConnections != 6 {
			t.Errorf("live backend total = %d, want 6", b.Stats.TotalConnections)
		}
	}
	if n := h.tw.monitor("web").passiveCount(deadT); n == 0 {
		t.Error("no passive failure reported for the dead backend")
	}

	t.Run("all dead", func(t *testing.T) {
		h := newHarness(t)
		addr := h.start("web", serverCfg([]string{deadPort(t), deadPort(t)}))
		c := dial(t, addr)
		expectClosed(t, c, 5*time.Second)
		waitFor(t, 5*time.Second, "refused counted", func() bool { return h.stats("web").RefusedConnections == 1 })
		for _, b := range h.stats("web").Backends {
			if b.Stats.RefusedConnections != 1 {
				t.Errorf("backend %s refused %d, want 1 (each tried once)", b.Address(), b.Stats.RefusedConnections)
			}
		}
	})
}

func TestNoBackendsRefuses(t *testing.T) {
	h := newHarness(t)
	if err := h.rt.Upsert(t.Context(), "web", serverCfg(nil)); err != nil {
		t.Fatal(err)
	}
	c := dial(t, h.addr("web"))
	expectClosed(t, c, 5*time.Second)
	waitFor(t, 5*time.Second, "refused counted", func() bool { return h.stats("web").RefusedConnections == 1 })
}

func TestAccessRules(t *testing.T) {
	tests := []struct {
		name  string
		def   string
		rules []string
		ip    string
		allow bool
	}{
		{"no rules allow", "allow", nil, "10.1.2.3", true},
		{"no rules deny", "deny", nil, "10.1.2.3", false},
		{"single v4 deny", "allow", []string{"deny 10.1.2.3"}, "10.1.2.3", false},
		{"single v4 other", "allow", []string{"deny 10.1.2.3"}, "10.1.2.4", true},
		{"v4 cidr allow, default deny", "deny", []string{"allow 192.168.0.0/16"}, "192.168.44.1", true},
		{"v4 cidr miss, default deny", "deny", []string{"allow 192.168.0.0/16"}, "192.169.0.1", false},
		{"first match wins", "deny", []string{"deny 10.0.0.1", "allow 10.0.0.0/8"}, "10.0.0.1", false},
		{"first match wins, later rule", "deny", []string{"deny 10.0.0.1", "allow 10.0.0.0/8"}, "10.0.0.2", true},
		{"v6 single", "deny", []string{"allow ::1"}, "::1", true},
		{"v6 cidr", "allow", []string{"deny 2001:db8::/32"}, "2001:db8:1::5", false},
		{"v6 cidr miss", "allow", []string{"deny 2001:db8::/32"}, "2001:db9::5", true},
		{"v4 rule does not match v6", "deny", []string{"allow 10.0.0.0/8"}, "2001:db8::1", false},
		{"empty default is allow", "", []string{"deny 10.0.0.0/8"}, "11.0.0.1", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := parseAccess(config.Access{Default: tc.def, Rules: tc.rules})
			if err != nil {
				t.Fatal(err)
			}
			if got := l.allows(netip.MustParseAddr(tc.ip)); got != tc.allow {
				t.Errorf("allows(%s) = %v, want %v", tc.ip, got, tc.allow)
			}
		})
	}
	for _, bad := range []config.Access{
		{Default: "maybe"},
		{Rules: []string{"permit 10.0.0.1"}},
		{Rules: []string{"allow 10.0.0.300"}},
		{Rules: []string{"allow"}},
	} {
		if _, err := parseAccess(bad); err == nil {
			t.Errorf("parseAccess(%+v) accepted", bad)
		}
	}
}

func TestAccessRulesOnConnections(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	denied := h.start("denied", serverCfg([]string{be.addr()}, withAccess("allow", "deny 127.0.0.0/8")))
	allowed := h.start("allowed", serverCfg([]string{be.addr()}, withAccess("deny", "allow 127.0.0.1")))

	c := dial(t, denied)
	expectClosed(t, c, 5*time.Second)
	if n := be.total.Load(); n != 0 {
		t.Errorf("a denied client reached the backend (%d connections)", n)
	}
	c = dial(t, allowed)
	if _, err := roundTrip(c, []byte("hi")); err != nil {
		t.Fatalf("allowed client not served: %v", err)
	}
}
