package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

func mustRelay(t *testing.T, c net.Conn, what string) {
	t.Helper()
	msg := []byte("ping " + what)
	got, err := roundTrip(c, msg)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("%s: connection does not relay: %q, %v", what, got, err)
	}
}

func TestApplyStartsAndRemoves(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	err := h.rt.Apply(t.Context(), map[string]config.Server{
		"a": serverCfg([]string{be.addr()}),
		"b": serverCfg([]string{be.addr()}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.rt.Names(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Names() = %v", got)
	}
	h.waitReady("a")
	h.waitReady("b")
	for _, name := range []string{"a", "b"} {
		mustRelay(t, dial(t, h.addr(name)), name)
	}
	bAddr := h.addr("b")
	if err := h.rt.Apply(t.Context(), map[string]config.Server{"a": serverCfg([]string{be.addr()})}); err != nil {
		t.Fatal(err)
	}
	if got := h.rt.Names(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Names() after removal = %v", got)
	}
	if _, ok := h.rt.Stats("b"); ok {
		t.Error("stats of a removed server")
	}
	if c, err := net.Dial("tcp", bAddr); err == nil {
		c.Close()
		t.Error("removed server still accepts")
	}
	if h.rt.Remove("b") {
		t.Error("Remove of an unknown server reported true")
	}
}

func TestApplyUnchangedServerIsUntouched(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	cfg := serverCfg([]string{be.addr()})
	addr := h.start("web", cfg)
	s := h.server("web")
	ln := s.listeners[0]
	c := dial(t, addr)
	mustRelay(t, c, "before")
	same := serverCfg([]string{be.addr()})
	same.DrainTimeout = config.DurPtr(5000 * time.Millisecond) // "5s" written differently
	if err := h.rt.Apply(t.Context(), map[string]config.Server{"web": same}); err != nil {
		t.Fatal(err)
	}
	if h.server("web") != s || s.listeners[0] != ln || h.tw.runs("web") != 1 {
		t.Fatal("an unchanged server was restarted")
	}
	mustRelay(t, c, "after")
}

func TestApplyUpdatesInPlace(t *testing.T) {
	h := newHarness(t)
	old, fresh := startBackend(t, echo), startBackend(t, echo)
	cfg := serverCfg([]string{old.addr()})
	addr := h.start("web", cfg)
	s := h.server("web")
	ln := s.listeners[0]
	c := dial(t, addr)
	mustRelay(t, c, "before update")

	upd := serverCfg([]string{fresh.addr()}, withMax(10), withAccess("allow", "deny 10.0.0.0/8"))
	upd.Healthcheck = &config.Healthcheck{Kind: "ping", Interval: config.Dur(time.Second), Timeout: config.Dur(time.Second), Fails: 1, Passes: 1}
	if err := h.rt.Apply(t.Context(), map[string]config.Server{"web": upd}); err != nil {
		t.Fatal(err)
	}
	if h.server("web") != s || s.listeners[0] != ln {
		t.Fatal("update in place replaced the server or its listener")
	}
	if got := h.addr("web"); got != addr {
		t.Fatalf("listening on %s after update, was %s", got, addr)
	}
	mustRelay(t, c, "open connection after update")
	if got := h.tw.monitor("web").config().Kind; got != "ping" {
		t.Errorf("health check not reconfigured: kind %q", got)
	}
	if st := s.settings.Load(); st.maxConns != 10 || st.access == nil {
		t.Errorf("settings not swapped: %+v", st)
	}
	// New connections go to the new backend list; the old backend is shown
	// undiscovered while its connection lives.
	waitFor(t, 5*time.Second, "new backend list applied", func() bool {
		return slices.Equal(h.candidates("web"), []string{fresh.addr()})
	})
	c2 := dial(t, addr)
	mustRelay(t, c2, "new connection")
	if fresh.total.Load() != 1 {
		t.Errorf("new connection did not reach the new backend")
	}
	for _, b := range h.stats("web").Backends {
		if b.Target == old.target() && (b.Stats.Discovered || b.Stats.ActiveConnections != 1) {
			t.Errorf("old backend stats = %+v, want undiscovered with 1 active", b.Stats)
		}
	}
	c.Close()
	waitFor(t, 5*time.Second, "the undiscovered backend is forgotten once drained", func() bool {
		st := h.stats("web")
		return len(st.Backends) == 1 && st.Backends[0].Target == fresh.target()
	})
}

func TestUpdateFailuresKeepTheOldParts(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	cfg := serverCfg([]string{be.addr()})
	addr := h.start("web", cfg)
	c := dial(t, addr)

	bad := serverCfg([]string{be.addr()})
	bad.Discovery.Kind = "broken"
	bad.Healthcheck = &config.Healthcheck{Kind: "broken"}
	bad.Balance = "bogus"
	err := h.rt.Upsert(t.Context(), "web", bad)
	if err == nil {
		t.Fatal("update with a broken discovery, health check and strategy succeeded")
	}
	for _, want := range []string{`server "web"`, "discovery", "healthcheck", "bogus"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	s := h.server("web")
	if s.cfg.Discovery.Kind != "static" || s.cfg.Healthcheck.Kind != "none" || s.cfg.Balance != "roundrobin" {
		t.Errorf("failed parts were recorded as applied: %+v", s.cfg)
	}
	h.waitReady("web")
	mustRelay(t, c, "after failed update")
	mustRelay(t, dial(t, addr), "new connection after failed update")
}

func TestApplyRebindKeepsOpenConnections(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}))
	c := dial(t, addr)
	mustRelay(t, c, "before")
	newBind := deadPort(t)
	if err := h.rt.Apply(t.Context(), map[string]config.Server{"web": serverCfg([]string{be.addr()}, withBind(newBind))}); err != nil {
		t.Fatal(err)
	}
	mustRelay(t, c, "connection accepted on the old bind")
	mustRelay(t, dial(t, newBind), "new bind")
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("old bind still accepts")
	}
}

func TestRebindSamePortDifferentHost(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	port := freeWildcardPort(t)
	h.start("web", serverCfg([]string{be.addr()}, withBind(":"+port)))
	// 127.0.0.1:port collides with the wildcard socket of the same server: it
	// is closed first, then the new one opened.
	narrow := "127.0.0.1:" + port
	if err := h.rt.Upsert(t.Context(), "web", serverCfg([]string{be.addr()}, withBind(narrow))); err != nil {
		t.Fatal(err)
	}
	if got := h.addr("web"); got != narrow {
		t.Fatalf("listening on %s, want %s", got, narrow)
	}
	mustRelay(t, dial(t, narrow), "after rebind")
}

func TestApplyPortInUseFailsOnlyThatServer(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	err = h.rt.Apply(t.Context(), map[string]config.Server{
		"web":   serverCfg([]string{be.addr()}),
		"clash": serverCfg([]string{be.addr()}, withBind(taken.Addr().String())),
		"acme": func() config.Server {
			s := serverCfg([]string{be.addr()})
			s.Protocol = "tls"
			s.Tls = &config.Tls{AcmeHosts: []string{"a.example"}}
			return s
		}(),
	})
	if err == nil {
		t.Fatal("Apply succeeded with a port in use and an ACME server without [acme]")
	}
	if !errors.Is(err, ErrBindFailed) || !errors.Is(err, ErrUnsupported) {
		t.Errorf("error %v does not wrap ErrBindFailed and ErrUnsupported", err)
	}
	want := fmt.Sprintf(`server "clash": listen tcp %s: bind: address already in use`, taken.Addr())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if !strings.Contains(err.Error(), `server "acme": tls.acme_hosts`) {
		t.Errorf("error %q does not name the acme server and key", err)
	}
	if got := h.rt.Names(); !slices.Equal(got, []string{"web"}) {
		t.Fatalf("running = %v, want only web", got)
	}
	h.waitReady("web")
	mustRelay(t, dial(t, h.addr("web")), "web")
	if err := h.rt.Upsert(t.Context(), "clash2", serverCfg(nil, withBind(taken.Addr().String()))); !errors.Is(err, ErrBindFailed) {
		t.Errorf("Upsert on a taken port: %v, want ErrBindFailed", err)
	}
}

func TestRemoveDrains(t *testing.T) {
	const drain = 400 * time.Millisecond
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}, withDrain(drain)))
	c := dial(t, addr)
	mustRelay(t, c, "before removal")
	start := time.Now()
	if !h.rt.Remove("web") {
		t.Fatal("Remove reported an unknown server")
	}
	if nc, err := net.Dial("tcp", addr); err == nil {
		nc.Close()
		t.Fatal("a removed server still accepts new connections")
	}
	mustRelay(t, c, "open connection while draining")
	expectClosed(t, c, 5*time.Second)
	if el := time.Since(start); el < drain {
		t.Fatalf("connection closed after %v, before drain_timeout %v", el, drain)
	}
	if m := h.tw.monitor("web"); !eventually(func() bool { return m.isClosed() }) {
		t.Error("health monitor of a drained server not closed")
	}
}

func TestRemoveEndsAtOnceWhenConnectionsFinish(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}, withDrain(time.Hour)))
	c := dial(t, addr)
	mustRelay(t, c, "before removal")
	s := h.server("web")
	h.rt.Remove("web")
	c.Close()
	select {
	case <-s.drained:
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not end when the last connection ended")
	}
}

func TestShutdownDrainsThenReturns(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}, withDrain(time.Hour)))
	c := dial(t, addr)
	mustRelay(t, c, "before shutdown")
	done := make(chan error, 1)
	go func() { done <- h.rt.Shutdown(context.Background()) }()
	waitFor(t, 5*time.Second, "listener closed", func() bool {
		nc, err := net.Dial("tcp", addr)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
	mustRelay(t, c, "open connection during shutdown")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a connection was open", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last connection ended")
	}
	if err := h.rt.Upsert(t.Context(), "x", serverCfg(nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Upsert after Shutdown: %v, want ErrClosed", err)
	}
}

func TestShutdownContextForcesClose(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}, withDrain(time.Hour)))
	c := dial(t, addr)
	mustRelay(t, c, "before shutdown")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.rt.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the context's deadline error", err)
	}
	expectClosed(t, c, 5*time.Second)
}

func TestHealthFlipChangesCandidates(t *testing.T) {
	h := newHarness(t)
	b1, b2 := startBackend(t, echo), startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{b1.addr(), b2.addr()}))
	m := h.tw.monitor("web")
	waitFor(t, 5*time.Second, "targets set", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.targets) == 2
	})
	m.set(b1.target(), false)
	waitFor(t, 5*time.Second, "b1 shown down", func() bool {
		for _, b := range h.stats("web").Backends {
			if b.Target == b1.target() {
				return !b.Stats.Live
			}
		}
		return false
	})
	for i := range 4 {
		mustRelay(t, dial(t, addr), fmt.Sprint("client ", i))
	}
	if b1.total.Load() != 0 || b2.total.Load() != 4 {
		t.Errorf("connections b1/b2 = %d/%d, want 0/4 with b1 unhealthy", b1.total.Load(), b2.total.Load())
	}
	m.set(b1.target(), true)
	waitFor(t, 5*time.Second, "b1 back", func() bool {
		bal, ok := h.server("web").pool.snap.Load().balancer.(*rrBalancer)
		return ok && len(bal.cands) == 2
	})
}

func TestStatsSortedAndPerSecond(t *testing.T) {
	h := newHarness(t)
	bs := []*testBackend{startBackend(t, echo), startBackend(t, echo), startBackend(t, echo)}
	var list []string
	for i := len(bs) - 1; i >= 0; i-- {
		list = append(list, bs[i].addr())
	}
	addr := h.start("web", serverCfg(list))
	st := h.stats("web")
	if !slices.IsSortedFunc(st.Backends, func(a, b BackendStats) int { return compareBackends(a.Target, b.Target) }) {
		t.Errorf("backends not sorted: %v", st.Backends)
	}
	c := dial(t, addr)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := roundTrip(c, buf); err != nil {
				return
			}
		}
	}()
	waitFor(t, 5*time.Second, "rx/tx per second computed", func() bool {
		st := h.stats("web")
		return st.RxSecond > 0 && st.TxSecond > 0
	})
	s := h.server("web")
	waitFor(t, 5*time.Second, "bandwidth handed to the balancer's load", func() bool {
		for _, b := range s.pool.snap.Load().byLoad {
			if b.load.Bandwidth() > 0 {
				return true
			}
		}
		return false
	})
}

func TestCompareBackends(t *testing.T) {
	in := []config.Target{{Host: "10.0.0.10", Port: "80"}, {Host: "b.example", Port: "1"}, {Host: "10.0.0.2", Port: "8080"},
		{Host: "10.0.0.2", Port: "443"}, {Host: "::1", Port: "80"}, {Host: "a.example", Port: "9"}}
	slices.SortFunc(in, compareBackends)
	var got []string
	for _, t := range in {
		got = append(got, t.Address())
	}
	want := []string{"10.0.0.2:443", "10.0.0.2:8080", "10.0.0.10:80", "[::1]:80", "a.example:9", "b.example:1"}
	if !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
}

// candidates lists the addresses in the current snapshot of server name.
func (h *harness) candidates(name string) []string {
	var out []string
	for _, b := range h.server(name).pool.snap.Load().byLoad {
		out = append(out, b.key)
	}
	slices.Sort(out)
	return out
}

func eventually(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

func TestUpdateToUnsupportedKeepsServer(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}))
	c := dial(t, addr)
	upd := serverCfg([]string{be.addr()})
	upd.Tls = &config.Tls{AcmeHosts: []string{"example.com"}}
	err := h.rt.Upsert(t.Context(), "web", upd)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `server "web": tls.acme_hosts`) {
		t.Fatalf("update to acme_hosts: %v, want ErrUnsupported naming the server and key", err)
	}
	mustRelay(t, c, "open connection after a refused update")
	mustRelay(t, dial(t, addr), "new connection after a refused update")
}

func TestDiscoveryRestartKeepsCounters(t *testing.T) {
	h := newHarness(t)
	b1, b2 := startBackend(t, echo), startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{b1.addr()}))
	for range 3 {
		c := dial(t, addr)
		mustRelay(t, c, "b1")
		c.Close()
	}
	if err := h.rt.Upsert(t.Context(), "web", serverCfg([]string{b1.addr(), b2.addr()})); err != nil {
		t.Fatal(err)
	}
	if n := h.tw.runs("web"); n != 2 {
		t.Fatalf("discovery started %d times, want a restart", n)
	}
	waitFor(t, 5*time.Second, "both backends discovered", func() bool { return len(h.stats("web").Backends) == 2 })
	for _, b := range h.stats("web").Backends {
		if b.Target == b1.target() && b.Stats.TotalConnections != 3 {
			t.Errorf("b1 total = %d after the discovery restart, want 3", b.Stats.TotalConnections)
		}
	}
	// A list pushed by the running discovery applies too.
	h.tw.push("web", b2.addr())
	waitFor(t, 5*time.Second, "pushed list applied", func() bool {
		st := h.stats("web")
		return len(st.Backends) == 1 && st.Backends[0].Target == b2.target()
	})
}

func TestRunnable(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := serverCfg([]string{"127.0.0.1:1"})
	free.Bind = "127.0.0.1:0"
	busy := free
	busy.Bind = taken.Addr().String()
	acme := free
	acme.Protocol = "tls"
	acme.Tls = &config.Tls{AcmeHosts: []string{"a.example"}}
	tests := []struct {
		name string
		s    config.Server
		want error
	}{
		{"free", free, nil},
		{"port in use", busy, ErrBindFailed},
		{"unsupported", acme, ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Runnable(context.Background(), tt.s)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Runnable = %v, want %v", err, tt.want)
			}
		})
	}
}

// freeWildcardPort is a port free on every address, taken below the kernel's
// ephemeral range: a port from that range, released, may meanwhile be the
// local end of some outgoing connection of a parallel test, which makes a
// wildcard bind fail.
func freeWildcardPort(t *testing.T) string {
	t.Helper()
	lo := 20000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				lo = n - 10000
			}
		}
	}
	for range 200 {
		p := strconv.Itoa(lo + rand.IntN(10000))
		ln, err := net.Listen("tcp", ":"+p)
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}
