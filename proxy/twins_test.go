package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
)

// rrBalancer is the in-memory twin of a balance strategy: round robin over the
// candidates, skipping excluded ones and honouring per-backend max_connections
// through Load.Reserve, as balance's middleware does.
type rrBalancer struct {
	cands []*balance.Candidate
	next  atomic.Uint64
}

func newRR(strategy string, _ *config.Sni, cands []*balance.Candidate) (balance.Balancer, error) {
	if strategy == "bogus" {
		return nil, errors.New("unknown strategy \"bogus\"")
	}
	return &rrBalancer{cands: cands}, nil
}

func (b *rrBalancer) Pick(req *balance.Request) (*balance.Candidate, error) {
	n := len(b.cands)
	start := int(b.next.Add(1) - 1)
	full := false
	for i := range n {
		c := b.cands[(start+i)%n]
		if req.Excluded(c) {
			continue
		}
		if !c.Load.Reserve(int64(c.Backend.MaxConnections)) {
			full = true
			continue
		}
		return c, nil
	}
	if full {
		return nil, balance.ErrAllFull
	}
	return nil, balance.ErrNoBackends
}

// twins is the in-memory discovery and health of a test: discovery reads
// static_list ("host:port" or "host:port max=N") and can be pushed new lists;
// every backend is healthy until set otherwise.
type twins struct {
	mu       sync.Mutex
	pushes   map[string]chan []config.Backend
	monitors map[string]*fakeMonitor
	discRuns map[string]int
}

func newTwins() *twins {
	return &twins{
		pushes:   make(map[string]chan []config.Backend),
		monitors: make(map[string]*fakeMonitor),
		discRuns: make(map[string]int),
	}
}

func (tw *twins) options(log *slog.Logger) Options {
	return Options{
		Logger: log,
		NewDiscovery: func(server string, cfg config.Discovery) (Discoverer, error) {
			if cfg.Kind == "broken" {
				return nil, errors.New("kind \"broken\" cannot start")
			}
			list, err := parseList(cfg.StaticList)
			if err != nil {
				return nil, err
			}
			tw.mu.Lock()
			defer tw.mu.Unlock()
			tw.discRuns[server]++
			return &fakeDiscovery{initial: list, push: tw.pushChan(server)}, nil
		},
		NewMonitor: func(server string, cfg config.Healthcheck, onChange func(config.Target, bool)) (HealthMonitor, error) {
			tw.mu.Lock()
			defer tw.mu.Unlock()
			m := &fakeMonitor{cfg: cfg, onChange: onChange, down: make(map[config.Target]bool)}
			tw.monitors[server] = m
			return m, nil
		},
		NewBalancer: newRR,
	}
}

func (tw *twins) pushChan(server string) chan []config.Backend {
	ch := tw.pushes[server]
	if ch == nil {
		ch = make(chan []config.Backend, 4)
		tw.pushes[server] = ch
	}
	return ch
}

// push delivers list as the next discovery result of server.
func (tw *twins) push(server string, list ...string) {
	bs, err := parseList(list)
	if err != nil {
		panic(err)
	}
	tw.mu.Lock()
	ch := tw.pushChan(server)
	tw.mu.Unlock()
	ch <- bs
}

func (tw *twins) monitor(server string) *fakeMonitor {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.monitors[server]
}

func (tw *twins) runs(server string) int {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.discRuns[server]
}

func parseList(lines []string) ([]config.Backend, error) {
	var out []config.Backend
	for _, l := range lines {
		var addr, opt string
		if i := indexByte(l, ' '); i >= 0 {
			addr, opt = l[:i], l[i+1:]
		} else {
			addr = l
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		b := config.Backend{Target: config.Target{Host: host, Port: port}, Weight: 1}
		if len(opt) > 4 && opt[:4] == "max=" {
			if b.MaxConnections, err = strconv.Atoi(opt[4:]); err != nil {
				return nil, err
			}
		}
		out = append(out, b)
	}
	return out, nil
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

type fakeDiscovery struct {
	initial []config.Backend
	push    chan []config.Backend
}

func (d *fakeDiscovery) Run(ctx context.Context, update func([]config.Backend)) {
	update(d.initial)
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-d.push:
			update(l)
		}
	}
}

type fakeMonitor struct {
	mu       sync.Mutex
	cfg      config.Healthcheck
	onChange func(config.Target, bool)
	down     map[config.Target]bool
	targets  []config.Target
	passive  map[config.Target]int
	closed   bool
}

func (m *fakeMonitor) SetTargets(ts []config.Target) {
	m.mu.Lock()
	m.targets = append([]config.Target(nil), ts...)
	m.mu.Unlock()
}

func (m *fakeMonitor) Healthy(t config.Target) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.down[t]
}

func (m *fakeMonitor) PassiveFailure(t config.Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.passive == nil {
		m.passive = make(map[config.Target]int)
	}
	m.passive[t]++
}

func (m *fakeMonitor) Reconfigure(cfg config.Healthcheck) error {
	if cfg.Kind == "broken" {
		return errors.New("kind \"broken\" cannot check")
	}
	m.mu.Lock()
	m.cfg = cfg
	m.mu.Unlock()
	return nil
}

func (m *fakeMonitor) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
}

func (m *fakeMonitor) set(t config.Target, healthy bool) {
	m.mu.Lock()
	m.down[t] = !healthy
	m.mu.Unlock()
	m.onChange(t, healthy)
}

func (m *fakeMonitor) passiveCount(t config.Target) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.passive[t]
}

func (m *fakeMonitor) config() config.Healthcheck {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

func (m *fakeMonitor) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// testBackend is a real loopback TCP backend. Its handler runs per connection;
// it counts connections and the peak of concurrent ones.
type testBackend struct {
	ln      net.Listener
	handler func(net.Conn)
	active  atomic.Int64
	peak    atomic.Int64
	total   atomic.Int64
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
}

func startBackend(t testing.TB, handler func(net.Conn)) *testBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &testBackend{ln: ln, handler: handler, conns: make(map[net.Conn]struct{})}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			n := b.active.Add(1)
			b.total.Add(1)
			for {
				p := b.peak.Load()
				if n <= p || b.peak.CompareAndSwap(p, n) {
					break
				}
			}
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				handler(c)
				c.Close()
				b.active.Add(-1)
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *testBackend) addr() string { return b.ln.Addr().String() }

func (b *testBackend) target() config.Target {
	host, port, _ := net.SplitHostPort(b.addr())
	return config.Target{Host: host, Port: port}
}

func (b *testBackend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// echo copies a connection back to itself and forwards the half-close.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// deadPort returns a loopback address nobody listens on.
func deadPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type serverOpt func(*config.Server)

func withMax(n int) serverOpt { return func(s *config.Server) { s.MaxConnections = &n } }
func withIdle(client, backend time.Duration) serverOpt {
	return func(s *config.Server) {
		s.ClientIdleTimeout, s.BackendIdleTimeout = config.DurPtr(client), config.DurPtr(backend)
	}
}
func withDrain(d time.Duration) serverOpt {
	return func(s *config.Server) { s.DrainTimeout = config.DurPtr(d) }
}
func withDialTimeout(d time.Duration) serverOpt {
	return func(s *config.Server) { s.BackendConnectionTimeout = config.DurPtr(d) }
}
func withAccess(def string, rules ...string) serverOpt {
	return func(s *config.Server) { s.Access = &config.Access{Default: def, Rules: rules} }
}
func withBind(bind string) serverOpt { return func(s *config.Server) { s.Bind = bind } }

// serverCfg is a defaulted tcp server on a free loopback port with a static
// list of backends.
func serverCfg(backends []string, opts ...serverOpt) config.Server {
	zero := 0
	s := config.Server{
		ConnectionOptions: config.ConnectionOptions{
			MaxConnections:           &zero,
			ClientIdleTimeout:        config.DurPtr(0),
			BackendIdleTimeout:       config.DurPtr(0),
			BackendConnectionTimeout: config.DurPtr(0),
			DrainTimeout:             config.DurPtr(5 * time.Second),
		},
		Bind:        "127.0.0.1:0",
		Protocol:    "tcp",
		Balance:     "roundrobin",
		Discovery:   &config.Discovery{Kind: "static", StaticList: backends},
		Healthcheck: &config.Healthcheck{Kind: "none"},
	}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// harness is a Runtime with twins, shut down at the end of the test.
type harness struct {
	t  testing.TB
	rt *Runtime
	tw *twins
}

func newHarness(t testing.TB) *harness {
	return newHarnessLog(t, slog.New(slog.DiscardHandler))
}

func newHarnessLog(t testing.TB, log *slog.Logger) *harness {
	tw := newTwins()
	h := &harness{t: t, rt: New(tw.options(log)), tw: tw}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.rt.Shutdown(ctx)
	})
	return h
}

// start upserts a server and waits until its pool has candidates.
func (h *harness) start(name string, cfg config.Server) string {
	h.t.Helper()
	if err := h.rt.Upsert(context.Background(), name, cfg); err != nil {
		h.t.Fatal(err)
	}
	h.waitReady(name)
	return h.addr(name)
}

func (h *harness) server(name string) *server {
	h.rt.mu.Lock()
	defer h.rt.mu.Unlock()
	return h.rt.servers[name]
}

// addr is the address server name listens on.
func (h *harness) addr(name string) string {
	h.t.Helper()
	h.rt.mu.Lock()
	defer h.rt.mu.Unlock()
	s := h.rt.servers[name]
	if s == nil || len(s.listeners) == 0 {
		h.t.Fatalf("server %q is not listening", name)
	}
	return s.listeners[0].ln.Addr().String()
}

func (h *harness) waitReady(name string) {
	h.t.Helper()
	waitFor(h.t, 5*time.Second, "server "+name+" has candidates", func() bool {
		s := h.server(name)
		return s != nil && s.pool.snap.Load().balancer != nil
	})
}

func (h *harness) stats(name string) ServerStats {
	h.t.Helper()
	st, ok := h.rt.Stats(name)
	if !ok {
		h.t.Fatalf("no stats for %q", name)
	}
	return st
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads the same number of bytes back.
func roundTrip(c net.Conn, msg []byte) ([]byte, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return got, err
}

// expectClosed waits until the peer of c ends the connection (EOF or reset).
func expectClosed(t testing.TB, c net.Conn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	var buf [64]byte
	for {
		_, err := c.Read(buf[:])
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return
	}
}

// recordHandler is a slog handler that keeps records, to count log lines.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r)
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Message == msg {
			n++
		}
	}
	return n
}
