package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/discovery"
	"github.com/gobetween/gobetween/internal/latency"
)

const (
	// statsInterval is how often bytes per second are computed.
	statsInterval = time.Second
	// Accept errors back off from minAcceptBackoff, doubling up to maxAcceptBackoff.
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// server is one running [servers.<name>]: its listeners, accept loops, pool and
// counters. Fields under "guarded by Runtime.mu" change only during reconcile.
type server struct {
	rt   *Runtime
	name string
	log  *slog.Logger

	settings atomic.Pointer[settings]
	pool     *pool
	conns    connSet
	udp      udpServer // protocol udp: settings, sessions (udp.go)

	active       atomic.Int64 // slots held: connections from accept to end
	total        atomic.Int64
	refused      atomic.Int64
	rx, tx       atomic.Uint64
	rxSec, txSec atomic.Uint64

	// For metrics only, off the path of a served connection.
	refusedBy [numRefusals]atomic.Int64 // refused split by reason, and access denials
	// discFetches and discErrors carry the fetch counts of the discoveries
	// the server ran before the current one, so that a restart of discovery
	// does not reset them.
	discFetches, discErrors atomic.Uint64
	checkLatency            latency.Histogram

	lastRefusalLog atomic.Int64 // unix nanoseconds of the last refusal logged

	// Guarded by Runtime.mu.
	cfg        config.Server // the config as applied (parts that failed keep their old value)
	listeners  []*listener
	discCancel context.CancelFunc
	disc       atomic.Pointer[Discoverer] // the running discovery, for its last fetch in stats

	ctx      context.Context // lives until the server has drained: loop, discovery
	cancel   context.CancelFunc
	loopDone chan struct{}
	discWG   sync.WaitGroup

	draining atomic.Bool
	idle     chan struct{} // closed once draining and no connection is left
	idleOnce sync.Once
	kill     chan struct{} // closed to end a drain at once
	killOnce sync.Once
	drained  chan struct{} // closed when drain has returned

	lastRx, lastTx uint64 // owned by loop
}

// listener is one listening socket and its accept loop (tcp) or read loop
// (udp).
type listener struct {
	ln     net.Listener  // tcp; nil for udp
	pc     *net.UDPConn  // udp; nil for tcp
	done   chan struct{} // closed by close: the accept loop must stop
	exited chan struct{} // closed by the accept loop when it returns
	once   sync.Once
}

// close stops the loop. A UDP socket stays open (its read is woken): the
// sessions still send replies through it until the caller closes it
// (closeUDPSockets, or the drain).
func (l *listener) close() {
	l.once.Do(func() {
		close(l.done)
		if l.pc != nil {
			l.pc.SetReadDeadline(aLongTimeAgo)
			return
		}
		l.ln.Close()
	})
}

// closeSocket closes the socket of a listener whose loop never ran (a probe).
func (l *listener) closeSocket() error {
	if l.pc != nil {
		return l.pc.Close()
	}
	return l.ln.Close()
}

func (l *listener) addr() net.Addr {
	if l.pc != nil {
		return l.pc.LocalAddr()
	}
	return l.ln.Addr()
}

// startServer starts a server: health monitor, discovery, listener, loops. On
// error nothing is left running.
func startServer(ctx context.Context, rt *Runtime, name string, cfg config.Server) (*server, error) {
	if err := unsupported(cfg); err != nil {
		return nil, err
	}
	st, err := newSettings(cfg, rt.opts.ACME)
	if err != nil {
		return nil, err
	}
	us, err := newUDPSettings(cfg)
	if err != nil {
		return nil, err
	}
	policy, err := policyOf(cfg)
	if err != nil {
		return nil, err
	}
	if rt.opts.NewBalancer == nil {
		return nil, errors.New("no balancer constructor (Options.NewBalancer is nil)")
	}
	s := &server{
		rt:       rt,
		name:     name,
		log:      rt.log.With("server", name),
		cfg:      cfg,
		loopDone: make(chan struct{}),
		idle:     make(chan struct{}),
		kill:     make(chan struct{}),
		drained:  make(chan struct{}),
	}
	s.settings.Store(st)
	s.udp.settings.Store(us)
	s.pool = newPool(rt, name, s.log, cfg, policy, rt.overrides[name])
	if rt.opts.NewMonitor != nil {
		m, err := rt.opts.NewMonitor(name, healthcheckOf(cfg), s.pool.onHealthChange)
		if err != nil {
			return nil, fmt.Errorf("healthcheck: %w", err)
		}
		s.pool.monitor = m
		if co, ok := m.(CheckObserver); ok {
			co.OnCheck(s.recordCheck)
		}
	}
	var d Discoverer
	if cfg.Discovery != nil && rt.opts.NewDiscovery != nil {
		if d, err = rt.opts.NewDiscovery(name, *cfg.Discovery); err != nil {
			s.closeMonitor()
			return nil, fmt.Errorf("discovery: %w", err)
		}
	}
	l, err := rt.listenServer(ctx, cfg.Protocol, rt.effectiveBind(cfg.Bind))
	if err != nil {
		s.closeMonitor()
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.loop()
	if d != nil {
		s.startDiscovery(d)
	}
	s.listeners = []*listener{l}
	s.startAccepting(l)
	s.log.Info("server started", "bind", l.addr().String(), "protocol", cfg.Protocol, "balance", cfg.Balance)
	return s, nil
}

func healthcheckOf(cfg config.Server) config.Healthcheck {
	if cfg.Healthcheck == nil {
		return config.Healthcheck{Kind: "none"}
	}
	return *cfg.Healthcheck
}

func (s *server) closeMonitor() {
	if s.pool.monitor != nil {
		s.pool.monitor.Close()
	}
}

// update changes a running server in place: settings swap atomically (new
// connections use them, open ones keep theirs); a changed strategy rebuilds the
// snapshot; a changed discovery restarts it, keeping the backends and their
// counters; a changed health check is reconfigured; a changed bind or protocol
// restarts the listener while open connections keep relaying. Each part that
// fails keeps its old value, so the next reconcile retries it.
func (s *server) update(ctx context.Context, cfg config.Server) error {
	if err := unsupported(cfg); err != nil {
		return err
	}
	st, err := newSettings(cfg, s.rt.opts.ACME)
	if err != nil {
		return err
	}
	us, err := newUDPSettings(cfg)
	if err != nil {
		return err
	}
	policy, err := policyOf(cfg)
	if err != nil {
		return err
	}
	old, applied := s.cfg, cfg
	var errs []error
	s.settings.Store(st)
	s.udp.settings.Store(us)

	if cfg.Balance != old.Balance || !(config.Server{Sni: cfg.Sni}).Equal(config.Server{Sni: old.Sni}) {
		if err := s.pool.setStrategy(cfg.Balance, cfg.Sni); err != nil {
			errs = append(errs, err)
			applied.Balance, applied.Sni = old.Balance, old.Sni
		}
	}
	if !(config.Server{Discovery: cfg.Discovery}).Equal(config.Server{Discovery: old.Discovery}) {
		if err := s.restartDiscovery(cfg.Discovery); err != nil {
			errs = append(errs, fmt.Errorf("discovery: %w", err))
			applied.Discovery = old.Discovery
		}
	}
	if !(config.Server{Healthcheck: cfg.Healthcheck}).Equal(config.Server{Healthcheck: old.Healthcheck}) {
		reconfigured := true
		if s.pool.monitor != nil {
			if err := s.pool.monitor.Reconfigure(healthcheckOf(cfg)); err != nil {
				errs = append(errs, fmt.Errorf("healthcheck: %w", err))
				applied.Healthcheck = old.Healthcheck
				reconfigured = false
			}
			s.pool.wake()
		}
		// The cluster verdict is part of the health check: it changes with
		// the rest of it, so that the config as applied tells the truth.
		if reconfigured {
			if err := s.pool.setPolicy(policy); err != nil {
				errs = append(errs, fmt.Errorf("backends not updated; clients are refused: %w", err))
			}
		}
	}
	if cfg.Bind != old.Bind || cfg.Protocol != old.Protocol || len(s.listeners) == 0 {
		if err := s.rebind(ctx, cfg.Protocol, cfg.Bind); err != nil {
			errs = append(errs, err)
			applied.Bind, applied.Protocol = old.Bind, old.Protocol
		}
	}
	s.cfg = applied
	return errors.Join(errs...)
}

func (s *server) restartDiscovery(dc *config.Discovery) error {
	var d Discoverer
	if dc != nil && s.rt.opts.NewDiscovery != nil {
		var err error
		if d, err = s.rt.opts.NewDiscovery(s.name, *dc); err != nil {
			return err
		}
	}
	s.stopDiscovery()
	if d != nil {
		s.startDiscovery(d)
	}
	return nil
}

// startDiscovery runs d until the server stops or discovery restarts. Lists from
// an older generation arriving late are dropped by pool.deliver.
func (s *server) startDiscovery(d Discoverer) {
	s.pool.mu.Lock()
	s.pool.discGen++
	gen := s.pool.discGen
	s.pool.mu.Unlock()
	ctx, cancel := context.WithCancel(s.ctx)
	s.discCancel = cancel
	s.disc.Store(&d)
	s.discWG.Add(1)
	go func() {
		defer s.discWG.Done()
		d.Run(ctx, func(list []config.Backend) { s.pool.deliver(gen, list) })
	}()
}

func (s *server) stopDiscovery() {
	if s.discCancel == nil {
		return
	}
	s.discCancel()
	s.discCancel = nil
	if r, ok := lastFetchOf(s.disc.Load()); ok {
		// A fetch the cancelled discovery still completes is not counted.
		s.discFetches.Add(r.Fetches)
		s.discErrors.Add(r.Errors)
	}
	s.disc.Store(nil)
	s.pool.mu.Lock()
	s.pool.discGen++
	s.pool.mu.Unlock()
}

// listen opens the listening socket of a server of protocol (udp, or tcp for
// anything else).
func listen(ctx context.Context, protocol, bind string) (*listener, error) {
	if protocol == "udp" {
		return listenUDP(ctx, bind)
	}
	// Keep-alive is set per connection, by settings (see settings.keepAlive).
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", bind)
	if err != nil {
		return nil, &bindError{err}
	}
	return &listener{ln: ln, done: make(chan struct{}), exited: make(chan struct{})}, nil
}

// rebind moves the server to bind. The new socket is opened first, so there is
// no moment without a listener; when the address is taken (by this server's own
// socket, as when only the protocol changed, or a wildcard bind covers it) the
// old socket is closed first, and reopened if the new bind still fails. The
// sessions of an old UDP socket end with it.
func (s *server) rebind(ctx context.Context, protocol, bind string) error {
	bind = s.rt.effectiveBind(bind)
	old := s.listeners
	nl, err := s.rt.listenServer(ctx, protocol, bind)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) && len(old) > 0 {
		s.closeListeners(old)
		s.closeUDPSockets(old)
		old = nil
		s.listeners = nil
		nl, err = s.rt.listenServer(ctx, protocol, bind)
		if err != nil {
			oldBind := s.rt.effectiveBind(s.cfg.Bind)
			if ol, rerr := s.rt.listenServer(ctx, s.cfg.Protocol, oldBind); rerr == nil {
				s.listeners = []*listener{ol}
				s.startAccepting(ol)
			} else {
				s.log.Error("server is not listening: old bind could not be reopened", "bind", oldBind, "err", rerr)
			}
			return err
		}
	}
	if err != nil {
		return err
	}
	s.closeListeners(old)
	s.closeUDPSockets(old)
	s.listeners = []*listener{nl}
	s.startAccepting(nl)
	s.log.Info("server listening", "bind", nl.addr().String(), "protocol", protocol)
	return nil
}

// closeListeners closes ls and waits for their accept loops to return.
func (s *server) closeListeners(ls []*listener) {
	for _, l := range ls {
		l.close()
	}
	for _, l := range ls {
		<-l.exited
	}
}

func (s *server) startAccepting(l *listener) {
	if l.pc != nil {
		go s.udpReadLoop(l)
		return
	}
	go s.acceptLoop(l)
}

// acceptLoop accepts until l is closed. Any other Accept error (EMFILE, ENFILE,
// ECONNABORTED, ENOBUFS, …) backs off from 5 ms doubling to 1 s and retries,
// logging at most once a second: a listener never stops silently.
func (s *server) acceptLoop(l *listener) {
	defer close(l.exited)
	r := loopRetry{s: s, l: l, closed: "listener closed unexpectedly; server stops accepting", retrying: "accept failed; retrying"}
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if !r.failed(err) {
				return
			}
			continue
		}
		r.backoff = 0
		s.admit(nc)
	}
}

// admit takes a server slot for nc (max_connections) before anything else, and
// hands nc to its own goroutine. Over the limit nc is closed at once.
func (s *server) admit(nc net.Conn) {
	st := s.settings.Load()
	if !s.reserve(st.maxConns) {
		s.countRefusal(refusedMaxConnections)
		nc.Close()
		return
	}
	s.total.Add(1)
	c := s.rt.getConn()
	c.srv, c.st, c.client = s, st, nc
	s.conns.add(c)
	go s.serve(c)
}

func (s *server) reserve(limit int64) bool {
	if limit <= 0 {
		s.active.Add(1)
		return true
	}
	for {
		cur := s.active.Load()
		if cur >= limit {
			return false
		}
		if s.active.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// release gives back c's slot and membership.
func (s *server) release(c *conn) {
	s.conns.remove(c)
	if s.active.Add(-1) == 0 && s.draining.Load() {
		s.idleOnce.Do(func() { close(s.idle) })
	}
}

// loop serialises the asynchronous work of a server: rebuilds asked for by
// discovery and health, and the per-second rates.
func (s *server) loop() {
	defer close(s.loopDone)
	t := time.NewTicker(statsInterval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.pool.kick:
			if err := s.pool.rebuild(); err != nil {
				s.log.Error("backends not updated; clients are refused", "err", err)
			}
		case now := <-t.C:
			elapsed := now.Sub(last)
			last = now
			rx, tx := s.rx.Load(), s.tx.Load()
			s.rxSec.Store(perSecond(rx-s.lastRx, elapsed))
			s.txSec.Store(perSecond(tx-s.lastTx, elapsed))
			s.lastRx, s.lastTx = rx, tx
			s.pool.tick(elapsed)
		}
	}
}

// stats reads the counters; bind is the listening address, read by the caller
// under Runtime.mu.
func (s *server) stats(bind string) ServerStats {
	var udp *UDPStats
	if s.udp.settings.Load() != nil {
		udp = &UDPStats{Dropped: s.udp.dropped.Load(), Evicted: s.udp.evicted.Load()}
	}
	return ServerStats{
		UDP:                udp,
		ActiveConnections:  s.active.Load(),
		TotalConnections:   s.total.Load(),
		RefusedConnections: s.refused.Load(),
		RxTotal:            s.rx.Load(),
		TxTotal:            s.tx.Load(),
		RxSecond:           s.rxSec.Load(),
		TxSecond:           s.txSec.Load(),
		Backends:           s.pool.stats(s.rt.nodeID()),
		Bind:               bind,
		Discovery:          s.lastFetch(),
		Refusals:           s.refusals(),
		CheckLatency:       s.checkLatency.Snapshot(),
	}
}

// lastFetch is how the running discovery's last fetch went, when it can say.
func (s *server) lastFetch() *DiscoveryStats {
	d := s.disc.Load()
	if d == nil {
		return nil
	}
	if _, ok := (*d).(FetchReporter); !ok {
		return nil
	}
	ds := &DiscoveryStats{Fetches: s.discFetches.Load(), Errors: s.discErrors.Load()}
	r, ok := lastFetchOf(d)
	if !ok {
		return ds
	}
	ds.Fetched, ds.Backends, ds.OK = r.At, r.Backends, r.Err == nil
	ds.Fetches += r.Fetches
	ds.Errors += r.Errors
	if r.Err != nil {
		ds.Error = r.Err.Error()
	}
	return ds
}

// lastFetchOf is d's last fetch, when d is a FetchReporter that has fetched.
func lastFetchOf(d *Discoverer) (discovery.FetchResult, bool) {
	if d == nil {
		return discovery.FetchResult{}, false
	}
	f, ok := (*d).(FetchReporter)
	if !ok {
		return discovery.FetchResult{}, false
	}
	return f.LastFetch()
}

// refusal is a reason a client was refused, an index of server.refusedBy.
type refusal uint8

const (
	refusedMaxConnections refusal = iota
	refusedNoBackend
	refusedBackendsFull
	refusedSNI
	refusedDialsFailed
	refusedOther
	refusedAccess // denied, not refused: not in RefusedConnections (as in 0.8)
	numRefusals
)

// refusalOf classifies why a client could not be given a backend.
func refusalOf(why error) refusal {
	switch {
	case errors.Is(why, balance.ErrNoBackends):
		return refusedNoBackend
	case errors.Is(why, balance.ErrAllFull):
		return refusedBackendsFull
	case errors.Is(why, balance.ErrSniReject):
		return refusedSNI
	case errors.Is(why, errDialsFailed):
		return refusedDialsFailed
	}
	return refusedOther
}

// countRefusal counts a refused client: RefusedConnections and its reason.
func (s *server) countRefusal(r refusal) {
	s.refused.Add(1)
	s.refusedBy[r].Add(1)
}

func (s *server) refusals() Refusals {
	return Refusals{
		MaxConnections: s.refusedBy[refusedMaxConnections].Load(),
		NoBackend:      s.refusedBy[refusedNoBackend].Load(),
		BackendsFull:   s.refusedBy[refusedBackendsFull].Load(),
		SNI:            s.refusedBy[refusedSNI].Load(),
		DialsFailed:    s.refusedBy[refusedDialsFailed].Load(),
		Other:          s.refusedBy[refusedOther].Load(),
		Access:         s.refusedBy[refusedAccess].Load(),
	}
}

// recordCheck counts one active health check of t (the monitor's OnCheck).
func (s *server) recordCheck(t config.Target, passed bool, took time.Duration) {
	s.checkLatency.Observe(took)
	s.pool.recordCheck(t.Address(), passed)
}

// bind is the address the server listens on, empty when it is not listening.
// Called under Runtime.mu.
func (s *server) bind() string {
	if len(s.listeners) == 0 {
		return ""
	}
	return s.listeners[0].addr().String()
}

// setOverrides applies the administrative states of the backends: the snapshot
// is rebuilt without drained and disabled backends, then the open connections
// of newly disabled ones are closed. Listeners and other connections are not
// touched. Called under Runtime.mu.
func (s *server) setOverrides(overrides map[string]uint32) error {
	disabled, changed, err := s.pool.setOverrides(overrides)
	if !changed {
		return nil
	}
	if err != nil {
		err = fmt.Errorf("backends not updated; clients are refused: %w", err)
	}
	s.closeBackendConns(disabled)
	s.log.Info("backend overrides applied", "overrides", len(overrides), "disabled", len(disabled))
	return err
}

// closeBackendConns closes, without reset, the open connections relaying to
// any of bs. A connection that attaches to one of them later sees its state
// in relay and goes elsewhere (see relay).
func (s *server) closeBackendConns(bs []*backend) {
	if len(bs) == 0 {
		return
	}
	s.closeUDPBackendSessions(bs)
	// Closed during the walk, under the shard lock, as drain does: once a conn
	// leaves the set it may be recycled.
	n := 0
	s.conns.each(func(c *conn) {
		c.mu.Lock()
		b := c.b
		c.mu.Unlock()
		if b != nil && slices.Contains(bs, b) {
			c.closeSockets(false)
			n++
		}
	})
	if n > 0 {
		s.log.Info("connections of disabled backends closed", "connections", n)
	}
}

// stopAccepting closes the listeners (new clients are refused by the kernel at
// once; a UDP socket stops being read but stays open for the replies of its
// sessions until the drain ends) and stops discovery. Called under Runtime.mu.
func (s *server) stopAccepting() {
	s.closeListeners(s.listeners)
	s.keepUDPSockets(s.listeners)
	s.listeners = nil
	s.stopDiscovery()
}

// drain lets open connections finish for up to drain_timeout, or until kill,
// then closes the rest and stops the loop, discovery and health checks. Runs
// after stopAccepting, in its own goroutine.
func (s *server) drain() {
	defer close(s.drained)
	s.draining.Store(true)
	if s.active.Load() == 0 {
		s.idleOnce.Do(func() { close(s.idle) })
	}
	if d := s.settings.Load().drain; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-s.idle:
		case <-t.C:
		case <-s.kill:
		}
		t.Stop()
	}
	if n := s.active.Load(); n > 0 {
		s.log.Info("closing connections left after drain", "connections", n)
		s.conns.each(func(c *conn) { c.closeSockets(false) })
		s.closeKeptUDPSockets()
		// Closed connections end promptly; one still dialing ends within its dial timeout.
		select {
		case <-s.idle:
		case <-s.kill:
		}
	}
	s.closeKeptUDPSockets()
	s.cancel()
	<-s.loopDone
	discDone := make(chan struct{})
	go func() {
		s.discWG.Wait()
		close(discDone)
	}()
	select {
	case <-discDone:
	case <-s.kill:
	}
	s.closeMonitor()
	s.log.Info("server stopped")
}

func (s *server) forceClose() { s.killOnce.Do(func() { close(s.kill) }) }

// loopRetry is the error handling of a listener's loop (accept or UDP read):
// an error after close ends the loop; any other backs off from 5 ms doubling
// to 1 s and retries, logged at most once a second.
type loopRetry struct {
	s                *server
	l                *listener
	closed, retrying string // the log messages

	backoff    time.Duration // reset to 0 by the loop after a success
	lastLog    time.Time
	suppressed int
}

// failed handles err and reports whether the loop goes on.
func (r *loopRetry) failed(err error) bool {
	select {
	case <-r.l.done:
		return false
	default:
	}
	if errors.Is(err, net.ErrClosed) {
		r.s.log.Error(r.closed, "err", err)
		return false
	}
	r.backoff = min(max(2*r.backoff, minAcceptBackoff), maxAcceptBackoff)
	if now := time.Now(); now.Sub(r.lastLog) >= maxAcceptBackoff {
		r.s.log.Warn(r.retrying, "err", err, "retry_in", r.backoff, "suppressed", r.suppressed)
		r.lastLog, r.suppressed = now, 0
	} else {
		r.suppressed++
	}
	t := time.NewTimer(r.backoff)
	select {
	case <-t.C:
		return true
	case <-r.l.done:
		t.Stop()
		return false
	}
}
