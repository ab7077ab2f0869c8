package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// backendStats returns the stats of backend t of server name; ok is false when
// the server does not list it.
func (h *harness) backendStats(name string, t config.Target) (BackendCounters, bool) {
	h.t.Helper()
	for _, b := range h.stats(name).Backends {
		if b.Target == t {
			return b.Stats, true
		}
	}
	return BackendCounters{}, false
}

// twoBackends starts server "web" over two echo backends and opens one
// connection on each. It returns the backends in the order their connections
// landed: on[0] relays to bs[0], on[1] to bs[1].
func twoBackends(t *testing.T, h *harness) (addr string, bs [2]*testBackend, on [2]*net.TCPConn) {
	t.Helper()
	b1, b2 := startBackend(t, echo), startBackend(t, echo)
	addr = h.start("web", serverCfg([]string{b1.addr(), b2.addr()}))
	waitFor(t, 5*time.Second, "both backends are candidates", func() bool { return len(h.candidates("web")) == 2 })
	for i := range on {
		on[i] = dial(t, addr)
		mustRelay(t, on[i], fmt.Sprint("connection ", i))
	}
	if b1.total.Load() != 1 || b2.total.Load() != 1 {
		t.Fatalf("round robin put %d/%d connections on the backends, want 1/1", b1.total.Load(), b2.total.Load())
	}
	// Which connection went where: ask the proxy.
	s := h.server("web")
	var first *backend
	s.conns.each(func(c *conn) {
		c.mu.Lock()
		if c.client.RemoteAddr().String() == on[0].LocalAddr().String() {
			first = c.b
		}
		c.mu.Unlock()
	})
	if first == nil {
		t.Fatal("connection 0 not found in the server's connections")
	}
	if first.key == b1.addr() {
		return addr, [2]*testBackend{b1, b2}, on
	}
	return addr, [2]*testBackend{b2, b1}, on
}

func overrides(server, backend, state string) map[string]map[string]string {
	return map[string]map[string]string{server: {backend: state}}
}

func desiredOf(h *harness, name string) map[string]config.Server {
	return map[string]config.Server{name: h.server(name).cfg}
}

func TestBackendOverrides(t *testing.T) {
	tests := []struct {
		state      string
		openCloses bool
	}{
		{BackendDrain, false},
		{BackendDisable, true},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			h := newHarness(t)
			addr, bs, on := twoBackends(t, h)
			s := h.server("web")
			ln := s.listeners[0]
			target := bs[0].target()

			if err := h.rt.ApplyState(t.Context(), desiredOf(h, "web"), overrides("web", target.Address(), tt.state)); err != nil {
				t.Fatal(err)
			}
			if h.server("web") != s || s.listeners[0] != ln || h.addr("web") != addr || h.tw.runs("web") != 1 {
				t.Fatal("an override restarted the server, its listener or its discovery")
			}
			mustRelay(t, on[1], "connection on the other backend")
			if tt.openCloses {
				c := on[0]
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				var buf [16]byte
				if n, err := c.Read(buf[:]); !errors.Is(err, io.EOF) {
					t.Fatalf("connection to the disabled backend: read %d, %v; want a clean EOF", n, err)
				}
				waitFor(t, 5*time.Second, "disabled backend has no active connection", func() bool {
					st, _ := h.backendStats("web", target)
					return st.ActiveConnections == 0
				})
			} else {
				mustRelay(t, on[0], "open connection to the drained backend")
			}
			before := bs[0].total.Load()
			for i := range 4 {
				mustRelay(t, dial(t, addr), fmt.Sprint("new connection ", i))
			}
			if got := bs[0].total.Load(); got != before {
				t.Errorf("%s backend got %d new connections", tt.state, got-before)
			}
			st, ok := h.backendStats("web", target)
			if !ok || st.State != tt.state || !st.Live || !st.Discovered {
				t.Errorf("stats of the %s backend = %+v (listed %v)", tt.state, st, ok)
			}
			if st, _ := h.backendStats("web", bs[1].target()); st.State != "" {
				t.Errorf("other backend shows state %q", st.State)
			}

			// Enable: clearing the override puts the backend back into rotation.
			if err := h.rt.ApplyState(t.Context(), desiredOf(h, "web"), nil); err != nil {
				t.Fatal(err)
			}
			before = bs[0].total.Load()
			for i := range 2 {
				mustRelay(t, dial(t, addr), fmt.Sprint("after enable ", i))
			}
			if got := bs[0].total.Load(); got != before+1 {
				t.Errorf("re-enabled backend got %d of 2 new connections, want 1", got-before)
			}
			if st, _ := h.backendStats("web", target); st.State != "" {
				t.Errorf("re-enabled backend shows state %q", st.State)
			}
			if s.listeners[0] != ln {
				t.Error("enabling restarted the listener")
			}
		})
	}
}

func TestOverrideOfUndiscoveredBackendAppliesWhenItAppears(t *testing.T) {
	h := newHarness(t)
	b1, b2 := startBackend(t, echo), startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{b1.addr()}))
	if err := h.rt.ApplyState(t.Context(), desiredOf(h, "web"), overrides("web", b2.addr(), BackendDisable)); err != nil {
		t.Fatal(err)
	}
	h.tw.push("web", b1.addr(), b2.addr())
	waitFor(t, 5*time.Second, "the new backend listed as disabled", func() bool {
		st, ok := h.backendStats("web", b2.target())
		return ok && st.Discovered && st.State == BackendDisable
	})
	for i := range 4 {
		mustRelay(t, dial(t, addr), fmt.Sprint("client ", i))
	}
	if n := b2.total.Load(); n != 0 {
		t.Fatalf("disabled backend got %d connections on appearing", n)
	}

	// It flaps out of discovery until forgotten, then comes back: still disabled.
	h.tw.push("web", b1.addr())
	s := h.server("web")
	waitFor(t, 5*time.Second, "the undiscovered backend forgotten", func() bool {
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		return s.pool.backends[b2.addr()] == nil
	})
	h.tw.push("web", b1.addr(), b2.addr())
	waitFor(t, 5*time.Second, "the backend back, still disabled", func() bool {
		st, ok := h.backendStats("web", b2.target())
		return ok && st.Discovered && st.State == BackendDisable
	})
	for i := range 4 {
		mustRelay(t, dial(t, addr), fmt.Sprint("client after flap ", i))
	}
	if n := b2.total.Load(); n != 0 {
		t.Fatalf("disabled backend got %d connections after flapping", n)
	}

	if err := h.rt.Apply(t.Context(), desiredOf(h, "web")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		mustRelay(t, dial(t, addr), fmt.Sprint("after enable ", i))
	}
	if n := b2.total.Load(); n != 1 {
		t.Fatalf("re-enabled backend got %d of 2 connections, want 1", n)
	}
}

func TestOverridesForLaterServerAndBadState(t *testing.T) {
	h := newHarness(t)
	b1, b2 := startBackend(t, echo), startBackend(t, echo)
	desired := map[string]config.Server{"web": serverCfg([]string{b1.addr(), b2.addr()})}
	ov := map[string]map[string]string{
		"web":   {b1.addr(): BackendDrain, b2.addr(): "sleep"},
		"other": {b1.addr(): BackendDisable},
	}
	err := h.rt.ApplyState(t.Context(), desired, ov)
	if err == nil || !strings.Contains(err.Error(), `server "web": backend `+b2.addr()+`: unknown state "sleep"`) {
		t.Fatalf("ApplyState with an unknown state: %v", err)
	}
	h.waitReady("web")
	if got := h.candidates("web"); len(got) != 1 || got[0] != b2.addr() {
		t.Errorf("candidates = %v, want only %s (drained b1, unknown state ignored)", got, b2.addr())
	}
	// A server started later by Upsert takes its recorded overrides.
	addr := h.start("other", serverCfg([]string{b1.addr(), b2.addr()}))
	for i := range 3 {
		mustRelay(t, dial(t, addr), fmt.Sprint("client ", i))
	}
	if st, _ := h.backendStats("other", b1.target()); st.State != BackendDisable || st.TotalConnections != 0 {
		t.Errorf("b1 of a server started after ApplyState: %+v, want disabled and unused", st)
	}
}

// TestDisableUnderLoad checks that once ApplyState returns, no connection starts
// relaying to the disabled backend, also one that picked it from the snapshot
// before, and none of its connections is left open.
func TestDisableUnderLoad(t *testing.T) {
	h := newHarness(t)
	b1, b2 := startBackend(t, echo), startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{b1.addr(), b2.addr()}))
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				roundTrip(c, []byte("x"))
				c.Close()
			}
		})
	}
	defer func() {
		cancel()
		wg.Wait()
	}()
	for round := range 5 {
		base, _ := h.backendStats("web", b1.target())
		waitFor(t, 5*time.Second, "traffic on b1", func() bool {
			st, _ := h.backendStats("web", b1.target())
			return st.TotalConnections > base.TotalConnections+2
		})
		if err := h.rt.ApplyState(t.Context(), desiredOf(h, "web"), overrides("web", b1.addr(), BackendDisable)); err != nil {
			t.Fatal(err)
		}
		st, _ := h.backendStats("web", b1.target())
		waitFor(t, 5*time.Second, "disabled backend idle", func() bool {
			now, _ := h.backendStats("web", b1.target())
			return now.ActiveConnections == 0
		})
		if now, _ := h.backendStats("web", b1.target()); now.TotalConnections != st.TotalConnections {
			t.Fatalf("round %d: %d connections relayed to b1 after it was disabled", round, now.TotalConnections-st.TotalConnections)
		}
		if err := h.rt.ApplyState(t.Context(), desiredOf(h, "web"), nil); err != nil {
			t.Fatal(err)
		}
	}
}

func newHarnessHost(t *testing.T, serversHost string) *harness {
	tw := newTwins()
	opts := tw.options(slog.New(slog.DiscardHandler))
	opts.ServersHost = serversHost
	h := &harness{t: t, rt: New(opts), tw: tw}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.rt.Shutdown(ctx)
	})
	return h
}

func TestServersHost(t *testing.T) {
	port := func(t *testing.T) string {
		_, p, _ := net.SplitHostPort(deadPort(t))
		return p
	}
	tests := []struct {
		name string
		bind func(port string) string
		want func(port string) string
	}{
		{"empty host", func(p string) string { return ":" + p }, func(p string) string { return "127.0.0.2:" + p }},
		{"ipv4 wildcard", func(p string) string { return "0.0.0.0:" + p }, func(p string) string { return "127.0.0.2:" + p }},
		{"ipv6 wildcard", func(p string) string { return "[::]:" + p }, func(p string) string { return "127.0.0.2:" + p }},
		{"specific host", func(p string) string { return "127.0.0.1:" + p }, func(p string) string { return "127.0.0.1:" + p }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarnessHost(t, "127.0.0.2")
			be := startBackend(t, echo)
			p := port(t)
			addr := h.start("web", serverCfg([]string{be.addr()}, withBind(tt.bind(p))))
			if want := tt.want(p); addr != want {
				t.Fatalf("listening on %s, want %s", addr, want)
			}
			if got := h.stats("web").Bind; got != addr {
				t.Errorf("stats bind = %q, want %q", got, addr)
			}
			mustRelay(t, dial(t, addr), "effective bind")
			// A rebind to another wildcard port is rewritten too.
			p2 := port(t)
			if err := h.rt.Upsert(t.Context(), "web", serverCfg([]string{be.addr()}, withBind(tt.bind(p2)))); err != nil {
				t.Fatal(err)
			}
			if got, want := h.addr("web"), tt.want(p2); got != want {
				t.Fatalf("after rebind listening on %s, want %s", got, want)
			}
		})
	}
}

func TestEffectiveBind(t *testing.T) {
	tests := []struct{ host, bind, want string }{
		{"", ":3000", ":3000"},
		{"127.0.0.3", ":3000", "127.0.0.3:3000"},
		{"127.0.0.3", "0.0.0.0:3000", "127.0.0.3:3000"},
		{"127.0.0.3", "[::]:3000", "127.0.0.3:3000"},
		{"::1", ":3000", "[::1]:3000"},
		{"127.0.0.3", "10.1.2.3:3000", "10.1.2.3:3000"},
		{"127.0.0.3", "localhost:3000", "localhost:3000"},
		{"127.0.0.3", "no port", "no port"},
	}
	for _, tt := range tests {
		t.Run(tt.host+" "+tt.bind, func(t *testing.T) {
			r := New(Options{ServersHost: tt.host})
			if got := r.effectiveBind(tt.bind); got != tt.want {
				t.Errorf("effectiveBind(%q) = %q, want %q", tt.bind, got, tt.want)
			}
		})
	}
}

func TestRunnableWithServersHost(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	s := serverCfg([]string{"127.0.0.1:1"}, withBind(":"+port))
	tests := []struct {
		name string
		run  func() error
		want error
	}{
		{"rewritten to the taken host", func() error { return New(Options{ServersHost: "127.0.0.2"}).Runnable(t.Context(), s) }, ErrBindFailed},
		{"rewritten to a free host", func() error { return New(Options{ServersHost: "127.0.0.3"}).Runnable(t.Context(), s) }, nil},
		{"package level probes the wildcard", func() error { return Runnable(t.Context(), s) }, ErrBindFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Runnable = %v, want %v", err, tt.want)
			}
		})
	}
}
