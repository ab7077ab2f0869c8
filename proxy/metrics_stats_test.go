package proxy

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// closedByProxy dials addr and waits until the proxy closes the connection
// without relaying anything.
func closedByProxy(t *testing.T, addr string) {
	t.Helper()
	c := dial(t, addr)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("client at %s: read %d bytes, err %v; want the proxy to close it", addr, n, err)
	}
}

func sumRefusals(r Refusals) int64 {
	return r.MaxConnections + r.NoBackend + r.BackendsFull + r.SNI + r.DialsFailed + r.Other
}

// Every refused client is counted under one reason, and the reasons other than
// access add up to RefusedConnections.
func TestRefusalsByReason(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, h *harness) string // returns the server address, with a client about to be refused
		want    func(Refusals) int64
		refused int64 // RefusedConnections after one refused client
	}{
		{"max_connections", func(t *testing.T, h *harness) string {
			addr := h.start("web", serverCfg([]string{startBackend(t, echo).addr()}, withMax(1)))
			c := dial(t, addr)
			mustRelay(t, c, "the first client")
			return addr
		}, func(r Refusals) int64 { return r.MaxConnections }, 1},
		{"access", func(t *testing.T, h *harness) string {
			return h.start("web", serverCfg([]string{startBackend(t, echo).addr()}, withAccess("deny")))
		}, func(r Refusals) int64 { return r.Access }, 0},
		{"dials_failed", func(t *testing.T, h *harness) string {
			return h.start("web", serverCfg([]string{deadPort(t)}, withDialTimeout(time.Second)))
		}, func(r Refusals) int64 { return r.DialsFailed }, 1},
		{"backends_full", func(t *testing.T, h *harness) string {
			addr := h.start("web", serverCfg([]string{startBackend(t, echo).addr() + " max=1"}))
			mustRelay(t, dial(t, addr), "the first client")
			return addr
		}, func(r Refusals) int64 { return r.BackendsFull }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			addr := tt.setup(t, h)
			closedByProxy(t, addr)
			waitFor(t, 5*time.Second, "the refusal counted", func() bool { return tt.want(h.stats("web").Refusals) == 1 })
			st := h.stats("web")
			if st.RefusedConnections != tt.refused {
				t.Fatalf("refused_connections = %d, want %d (refusals %+v)", st.RefusedConnections, tt.refused, st.Refusals)
			}
			if got := sumRefusals(st.Refusals); got != st.RefusedConnections {
				t.Fatalf("reasons add up to %d, refused_connections is %d (%+v)", got, st.RefusedConnections, st.Refusals)
			}
		})
	}
}

// Every failed dial counts in the backend's DialFailures; those that are the
// backend's fault in RefusedConnections too.
func TestDialFailuresCounted(t *testing.T) {
	h := newHarness(t)
	dead := deadPort(t)
	addr := h.start("web", serverCfg([]string{dead}, withDialTimeout(time.Second)))
	for range 3 {
		closedByProxy(t, addr)
	}
	waitFor(t, 5*time.Second, "3 refusals", func() bool { return h.stats("web").RefusedConnections == 3 })
	b := h.mustBackendStats("web", dead)
	// The test balancer tries a failed backend once per client.
	if b.DialFailures != 3 || b.RefusedConnections != 3 {
		t.Fatalf("dial failures %d, refused %d; want 3 and 3", b.DialFailures, b.RefusedConnections)
	}
}

// checkingMonitor is the fake monitor with OnCheck, as healthcheck.Monitor has:
// the test plays the checks.
type checkingMonitor struct {
	*fakeMonitor
	fn atomic.Pointer[func(config.Target, bool, time.Duration)]
}

func (m *checkingMonitor) OnCheck(fn func(config.Target, bool, time.Duration)) { m.fn.Store(&fn) }

func (m *checkingMonitor) check(t config.Target, passed bool, took time.Duration) {
	(*m.fn.Load())(t, passed, took)
}

// Health check reports count per backend and in the server's latency
// histogram; a check of a target the server does not have is not counted per
// backend.
func TestHealthCheckCounts(t *testing.T) {
	h := newHarness(t)
	var mon atomic.Pointer[checkingMonitor]
	newMon := h.rt.opts.NewMonitor
	h.rt.opts.NewMonitor = func(server string, cfg config.Healthcheck, onChange func(config.Target, bool)) (HealthMonitor, error) {
		m, err := newMon(server, cfg, onChange)
		if err != nil {
			return nil, err
		}
		cm := &checkingMonitor{fakeMonitor: m.(*fakeMonitor)}
		mon.Store(cm)
		return cm, nil
	}
	a, b := startBackend(t, echo), startBackend(t, echo)
	h.start("web", serverCfg([]string{a.addr(), b.addr()}))
	m := mon.Load()
	if m.fn.Load() == nil {
		t.Fatal("OnCheck not called on a monitor that has it")
	}
	ta, tb := targetOf(t, a.addr()), targetOf(t, b.addr())
	m.check(ta, true, 2*time.Millisecond)
	m.check(ta, true, 30*time.Millisecond)
	m.check(ta, false, 3*time.Second)
	m.check(tb, false, 500*time.Microsecond)
	m.check(config.Target{Host: "10.9.9.9", Port: "1"}, true, time.Millisecond)

	tests := []struct {
		addr         string
		pass, failed int64
	}{
		{a.addr(), 2, 1},
		{b.addr(), 0, 1},
	}
	for _, tt := range tests {
		st := h.mustBackendStats("web", tt.addr)
		if st.ChecksPassed != tt.pass || st.ChecksFailed != tt.failed {
			t.Errorf("%s: passed %d failed %d, want %d %d", tt.addr, st.ChecksPassed, st.ChecksFailed, tt.pass, tt.failed)
		}
	}
	hist := h.stats("web").CheckLatency
	// The unknown target's check counts here: the histogram is the server's.
	wantBuckets := map[float64]uint64{0.001: 2, 0.0025: 3, 0.005: 3, 0.025: 3, 0.05: 4, 2.5: 4, 5: 5, 10: 5}
	if hist.Count != 5 {
		t.Fatalf("histogram count %d, want 5", hist.Count)
	}
	if want := 0.002 + 0.03 + 3 + 0.0005 + 0.001; hist.Sum < want-1e-9 || hist.Sum > want+1e-9 {
		t.Fatalf("histogram sum %v, want %v", hist.Sum, want)
	}
	for le, n := range wantBuckets {
		if hist.Buckets[le] != n {
			t.Errorf("bucket le=%v: %d, want %d (%v)", le, hist.Buckets[le], n, hist.Buckets)
		}
	}
}

// A server's discovery counts every fetch and every failed one, and a restart
// of its discovery (a changed interval) does not reset them.
func TestDiscoveryFetchCounts(t *testing.T) {
	h, p, cfg := startFlipDiscovery(t, 10*time.Millisecond)

	disc := func() DiscoveryStats { return *h.stats("web").Discovery }
	waitFor(t, 5*time.Second, "3 fetches", func() bool { return disc().Fetches >= 3 })
	if d := disc(); d.Errors != 0 {
		t.Fatalf("%d errors without a failure", d.Errors)
	}
	p.fail.Store(true)
	// Failed fetches are retried after a backoff of at least a second.
	waitFor(t, 5*time.Second, "a failed fetch", func() bool { return disc().Errors >= 1 })
	before := disc()

	cfg.Discovery.Interval = config.Dur(15 * time.Millisecond)
	if err := h.rt.Upsert(context.Background(), "web", cfg); err != nil {
		t.Fatal(err)
	}
	if d := disc(); d.Fetches < before.Fetches || d.Errors < before.Errors {
		t.Fatalf("discovery restart reset the counts: %+v, before %+v", d, before)
	}
	waitFor(t, 5*time.Second, "the new discovery's failed fetch counted", func() bool {
		d := disc()
		return d.Fetches > before.Fetches && d.Errors > before.Errors
	})
	js, err := json.Marshal(disc())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"fetches":`, `"errors":`} {
		if !strings.Contains(string(js), key) {
			t.Fatalf("discovery JSON %s lacks %s", js, key)
		}
	}
}
