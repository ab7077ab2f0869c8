package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
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

	conns sync.Pool // *conn
	bufs  sync.Pool // *[]byte, for connections that cannot splice

	mu       sync.Mutex
	servers  map[string]*server
	draining map[*server]struct{} // removed, still draining
	closed   bool
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
// naming its server; the other servers keep running.
func (r *Runtime) Apply(ctx context.Context, desired map[string]config.Server) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	for _, name := range sortedKeys(r.servers) {
		if _, ok := desired[name]; !ok {
			r.removeLocked(name)
		}
	}
	var errs []error
	for _, name := range sortedKeys(desired) {
		if err := r.upsertLocked(ctx, name, desired[name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
	return nil
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
	r.mu.Unlock()
	if !ok {
		return ServerStats{}, false
	}
	return s.stats(), true
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
