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
	"time"

	"github.com/gobetween/gobetween/config"
)

// Runtime runs a set of servers and reconciles them with the desired set. All
// methods are safe for concurrent use; reconciling (Apply, Upsert, Remove,
// Shutdown) is serialised by one mutex that the connection path never takes.
type Runtime struct {
	opts Options
	log  *slog.Logger
	base time.Time // origin of now(); carries the monotonic clock

	conns   sync.Pool // *conn
	bufs    sync.Pool // *[]byte, for connections that cannot splice
	pres    sync.Pool // *[]byte, client bytes read before the pick
	readers sync.Pool // *bufio.Reader, for PROXY headers

	mu       sync.Mutex
	servers  map[string]*server
	draining map[*server]struct{} // removed, still draining
	closed   bool
	// overrides are the backend states of the last ApplyState, by server then
	// host:port; a server that starts later (Upsert, a retried start) takes its
	// entry.
	overrides map[string]map[string]uint32

	// running is servers in name order, republished under mu at every change,
	// for SetPeers and Observe, which never wait for a reconcile.
	running atomic.Pointer[[]*server]
	peers   atomic.Pointer[peerState] // the last SetPeers; nil: none yet
}

// New returns a Runtime with no servers.
func New(opts Options) *Runtime {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{
		opts:     opts,
		log:      log,
		base:     time.Now(),
		servers:  make(map[string]*server),
		draining: make(map[*server]struct{}),
	}
}

// now is a monotonic clock for idle checks.
func (r *Runtime) now() time.Duration { return time.Since(r.base) }

// Apply reconciles the running servers with desired (already defaulted and
// validated): servers not in desired stop accepting at once and drain in the
// background; new ones start; changed ones are updated in place (see Upsert);
// unchanged ones are left alone. The error joins every server's failure, each
// naming its server; the other servers keep running. Apply(ctx, d) is
// ApplyState(ctx, d, nil): it clears every backend override.
func (r *Runtime) Apply(ctx context.Context, desired map[string]config.Server) error {
	return r.ApplyState(ctx, desired, nil)
}

// ApplyState is Apply with the administrative state of the backends: overrides
// maps a server's name to backend addresses ("host:port", as
// config.Target.Address gives it) to BackendDrain or BackendDisable. A drained
// backend gets no new connection and its open ones continue until they end; a
// disabled one gets no new connection and its open ones are closed now (FIN,
// not RST). A backend without an entry is in rotation when discovered and
// healthy. An entry for a backend that discovery does not report (yet) is kept
// and applies when the backend appears, until an ApplyState without it.
// Changing overrides rebuilds the server's candidate set only: its listener and
// the other backends' connections are not touched. Once ApplyState returns no
// connection starts relaying to a drained or disabled backend. An unknown
// state is reported in the error and that entry ignored.
func (r *Runtime) ApplyState(ctx context.Context, desired map[string]config.Server, overrides map[string]map[string]string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	parsed, errs := parseOverrides(overrides)
	r.overrides = parsed
	for _, name := range sortedKeys(r.servers) {
		if _, ok := desired[name]; !ok {
			r.removeLocked(name)
		}
	}
	for _, name := range sortedKeys(desired) {
		if err := r.upsertLocked(ctx, name, desired[name]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range sortedKeys(r.servers) {
		if err := r.servers[name].setOverrides(r.overrides[name]); err != nil {
			errs = append(errs, fmt.Errorf("server %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// parseOverrides converts override values to states, dropping empty maps and
// reporting unknown values in sorted order.
func parseOverrides(in map[string]map[string]string) (map[string]map[string]uint32, []error) {
	var errs []error
	out := make(map[string]map[string]uint32, len(in))
	for _, name := range sortedKeys(in) {
		var m map[string]uint32
		for _, addr := range sortedKeys(in[name]) {
			v := in[name][addr]
			st, ok := parseState(v)
			if !ok {
				errs = append(errs, fmt.Errorf("server %q: backend %s: unknown state %q (want %q or %q)", name, addr, v, BackendDrain, BackendDisable))
				continue
			}
			if m == nil {
				m = make(map[string]uint32)
			}
			m[addr] = st
		}
		if m != nil {
			out[name] = m
		}
	}
	return out, errs
}

// Upsert starts server name, or updates it in place when it runs: its listener
// and open connections are kept unless bind or protocol changed, in which case
// the listener is restarted and open connections still keep relaying. A listen
// failure wraps ErrBindFailed. A failed update leaves the failed parts as they
// were and the server running.
func (r *Runtime) Upsert(ctx context.Context, name string, s config.Server) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	return r.upsertLocked(ctx, name, s)
}

func (r *Runtime) upsertLocked(ctx context.Context, name string, cfg config.Server) error {
	if s, ok := r.servers[name]; ok {
		if s.cfg.Equal(cfg) && len(s.listeners) > 0 {
			return nil
		}
		if err := s.update(ctx, cfg); err != nil {
			return fmt.Errorf("server %q: %w", name, err)
		}
		s.log.Info("server updated")
		return nil
	}
	s, err := startServer(ctx, r, name, cfg)
	if err != nil {
		return fmt.Errorf("server %q: %w", name, err)
	}
	r.servers[name] = s
	r.publishRunningLocked()
	// A SetPeers that listed the servers before s was published has stored its
	// view before this reads it: s takes it now.
	if err := s.pool.syncPeers(); err != nil {
		s.log.Error("backends not updated; clients are refused", "err", err)
	}
	return nil
}

// ReloadCertificates re-reads the certificate and CA files of every running
// server that uses TLS (termination or backends_tls), as on SIGHUP after a
// renewal: new connections get the new files, open ones keep theirs. A server
// whose files fail to load keeps the ones it has; the error names it.
func (r *Runtime) ReloadCertificates() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for name, s := range r.servers {
		if s.cfg.Tls == nil && s.cfg.BackendsTls == nil {
			continue
		}
		st, err := newSettings(s.cfg, r.opts.ACME)
		if err != nil {
			errs = append(errs, fmt.Errorf("server %q: %w", name, err))
			continue
		}
		s.settings.Store(st)
	}
	return errors.Join(errs...)
}

// Remove stops server name from accepting at once and drains its connections in
// the background for up to its drain_timeout. It reports false for an unknown
// name.
func (r *Runtime) Remove(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.servers[name]; !ok {
		return false
	}
	r.removeLocked(name)
	return true
}

func (r *Runtime) removeLocked(name string) {
	s := r.servers[name]
	delete(r.servers, name)
	r.publishRunningLocked()
	s.stopAccepting()
	r.draining[s] = struct{}{}
	go func() {
		s.drain()
		r.mu.Lock()
		delete(r.draining, s)
		r.mu.Unlock()
	}()
}

// Stats returns the live counters of server name.
func (r *Runtime) Stats(name string) (ServerStats, bool) {
	r.mu.Lock()
	s, ok := r.servers[name]
	var bind string
	if ok {
		bind = s.bind()
	}
	r.mu.Unlock()
	if !ok {
		return ServerStats{}, false
	}
	return s.stats(bind), true
}

// Runnable is the package-level Runnable with this runtime's bind rewrite
// (Options.ServersHost): it probes the address the server would listen on.
func (r *Runtime) Runnable(ctx context.Context, s config.Server) error {
	return runnable(ctx, s, r.effectiveBind(s.Bind), r.opts.ACME)
}

// effectiveBind is the address a server with bind listens on: with
// Options.ServersHost set, a wildcard or empty host (":3000", "0.0.0.0:3000",
// "[::]:3000") is replaced by it; any other bind is used as written.
func (r *Runtime) effectiveBind(bind string) string {
	if r.opts.ServersHost == "" {
		return bind
	}
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return bind // listen reports the malformed address
	}
	switch host {
	case "", "0.0.0.0", "::":
		return net.JoinHostPort(r.opts.ServersHost, port)
	}
	return bind
}

// Names lists the running servers, sorted.
func (r *Runtime) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return sortedKeys(r.servers)
}

// Shutdown stops every server from accepting, lets connections finish for up to
// each server's drain_timeout, closes the rest and stops discovery and health
// checks. When ctx ends first, every remaining connection is closed at once and
// ctx's error returned. Apply and Upsert fail with ErrClosed afterwards.
func (r *Runtime) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	for _, name := range sortedKeys(r.servers) {
		r.removeLocked(name)
	}
	all := make([]*server, 0, len(r.draining))
	for s := range r.draining {
		all = append(all, s)
	}
	r.mu.Unlock()

	for _, s := range all {
		select {
		case <-s.drained:
		case <-ctx.Done():
			for _, s := range all {
				s.forceClose()
			}
			for _, s := range all {
				<-s.drained
			}
			return fmt.Errorf("shutdown: connections closed before draining: %w", ctx.Err())
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
