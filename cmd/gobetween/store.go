package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/gobetween/gobetween/api"
	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

// store is the desired state as the REST API and the config file see it: the
// Raft log of package cluster. Writes go through the log and return once the
// proxy runtime has applied them (so a server answers as soon as its POST
// does); reads come from the applied state. It implements api.Store.
type store struct {
	node     *cluster.Node
	rt       *proxy.Runtime
	follower *follower
	logger   *slog.Logger
	loadMu   sync.Mutex // one config load at a time
	// origin is the origin of this node's config source's servers: file,
	// URL or Consul KV (cluster.OriginConfig when unset).
	origin string
}

func (s *store) sourceOrigin() string {
	if s.origin == "" {
		return cluster.OriginConfig
	}
	return s.origin
}

// follower applies every new state of the log to the proxy runtime and records
// which revision the runtime has reached.
type follower struct {
	node       *cluster.Node
	rt         *proxy.Runtime
	logger     *slog.Logger
	mu         sync.Mutex
	applied    uint64
	changed    chan struct{} // closed and replaced after each apply
	served     chan struct{} // closed after the first apply
	servedOnce sync.Once
}

func newFollower(node *cluster.Node, rt *proxy.Runtime, logger *slog.Logger) *follower {
	return &follower{node: node, rt: rt, logger: logger, changed: make(chan struct{}), served: make(chan struct{})}
}

// run reconciles the runtime with the log until ctx ends. The data plane never
// waits for the control plane: a node without a leader keeps its last state.
func (f *follower) run(ctx context.Context) {
	ch, cancel := f.node.Subscribe()
	defer cancel()
	for {
		st := f.node.State()
		desired := make(map[string]config.Server, len(st.Servers))
		for name, e := range st.Servers {
			desired[name] = e.Server
		}
		overrides := make(map[string]map[string]string, len(st.Overrides))
		for name, bs := range st.Overrides {
			m := make(map[string]string, len(bs))
			for b, o := range bs {
				m[b] = o.Action
			}
			overrides[name] = m
		}
		if err := f.rt.ApplyState(ctx, desired, overrides); err != nil && !errors.Is(err, proxy.ErrClosed) {
			for _, l := range problemLines(err) {
				f.logger.Error("server did not start", "err", l)
			}
		}
		f.servedOnce.Do(func() { close(f.served) })
		f.mu.Lock()
		f.applied = st.Revision
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// wait returns once the runtime has applied revision rev.
func (f *follower) wait(ctx context.Context, rev uint64) error {
	for {
		f.mu.Lock()
		done, ch := f.applied >= rev, f.changed
		f.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the proxy to apply revision %d: %w", rev, ctx.Err())
		case <-ch:
		}
	}
}

// apply writes c to the log and waits for the runtime to follow.
func (s *store) apply(ctx context.Context, c cluster.Command) (uint64, error) {
	rev, err := s.node.Apply(ctx, c)
	if err != nil {
		return rev, storeError(err)
	}
	return rev, s.follower.wait(ctx, rev)
}

// storeError maps cluster errors onto the sentinels the API answers with.
func storeError(err error) error {
	switch {
	case errors.Is(err, cluster.ErrExists):
		return fmt.Errorf("%w: %w", api.ErrExists, err)
	case errors.Is(err, cluster.ErrNotFound):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, cluster.ErrStale), errors.Is(err, cluster.ErrOriginConflict):
		return fmt.Errorf("%w: %w", api.ErrConflict, err)
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, cluster.ErrNotLeader),
		errors.Is(err, cluster.ErrUnavailable), errors.Is(err, cluster.ErrClosed):
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return err
}

// Servers implements api.Store.
func (s *store) Servers() map[string]config.Server {
	st := s.node.State()
	out := make(map[string]config.Server, len(st.Servers))
	for name, e := range st.Servers {
		out[name] = e.Server.Clone()
	}
	return out
}

// Server implements api.Store.
func (s *store) Server(name string) (config.Server, bool) {
	e, ok := s.node.State().Servers[name]
	if !ok {
		return config.Server{}, false
	}
	return e.Server.Clone(), true
}

// CreateServer implements api.Store. A server this node could not start (a
// feature not built in, a port in use) is refused before it reaches the log.
func (s *store) CreateServer(ctx context.Context, name string, srv config.Server) error {
	if _, ok := s.node.State().Servers[name]; ok {
		return fmt.Errorf("server %q: %w", name, api.ErrExists)
	}
	if err := s.rt.Runnable(ctx, srv); err != nil {
		return runnableError(err)
	}
	_, err := s.apply(ctx, cluster.Command{
		Type: cluster.PutServer, Name: name, Server: &srv, Origin: cluster.OriginAPI, IfAbsent: true,
	})
	return err
}

// DeleteServer implements api.Store: the server stops accepting before the call
// returns and drains its connections in the background.
func (s *store) DeleteServer(ctx context.Context, name string) error {
	_, err := s.apply(ctx, cluster.Command{Type: cluster.DeleteServer, Name: name})
	return err
}

// LoadFile makes the config file's servers part of the desired state: each is
// upserted (a no-op when unchanged); a server of origin config for which prune
// says so is deleted, unless it changed since. A file server never overwrites
// one changed through the API: the conflict is logged and the API definition
// kept.
func (s *store) LoadFile(ctx context.Context, file map[string]config.Server, prune func(name string) bool) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(file)) {
		srv := file[name]
		_, err := s.apply(ctx, cluster.Command{Type: cluster.PutServer, Name: name, Server: &srv, Origin: s.sourceOrigin()})
		switch {
		case errors.Is(err, cluster.ErrOriginConflict):
			s.logger.Warn("the config file defines a server that was changed through the API; the API definition is kept", "server", name)
		case err != nil:
			errs = append(errs, fmt.Errorf("server %q: %w", name, err))
		}
	}
	for name, e := range s.node.State().Servers {
		// Any source's servers: a node that moved from a file to a URL prunes
		// what the file defined and the URL no longer does.
		if !cluster.IsSourceOrigin(e.Origin) || prune == nil || !prune(name) {
			continue
		}
		_, err := s.apply(ctx, cluster.Command{Type: cluster.DeleteServer, Name: name, IfRevision: e.Revision})
		if err != nil && !errors.Is(err, cluster.ErrNotFound) && !errors.Is(err, cluster.ErrStale) {
			errs = append(errs, fmt.Errorf("server %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// LoadFileRetrying is LoadFile for a cluster node at start: it retries while
// the cluster cannot take writes (no leader yet), until ctx ends.
func (s *store) LoadFileRetrying(ctx context.Context, file map[string]config.Server) {
	wait := 500 * time.Millisecond
	for {
		err := s.LoadFile(ctx, file, nil)
		if err == nil {
			s.logger.Info("config servers are in the cluster's desired state", "servers", len(file))
			return
		}
		if !errors.Is(err, api.ErrUnavailable) {
			for _, l := range problemLines(err) {
				s.logger.Error("config servers", "err", l)
			}
			return
		}
		s.logger.Debug("config servers: waiting for a leader", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// pruneMissing prunes every config server the file does not define (a single
// node: the file is the only config source).
func pruneMissing(file map[string]config.Server) func(string) bool {
	return func(name string) bool { _, ok := file[name]; return !ok }
}

// pruneRemoved prunes the servers this node's previous file defined and the new
// one does not (a cluster node: other nodes' files may define more).
func pruneRemoved(prev, next map[string]config.Server) func(string) bool {
	return func(name string) bool {
		_, was := prev[name]
		_, is := next[name]
		return was && !is
	}
}

// ServerInfo implements api.Store.
func (s *store) ServerInfo(name string) (api.ServerInfo, bool) {
	e, ok := s.node.State().Servers[name]
	if !ok {
		return api.ServerInfo{}, false
	}
	return api.ServerInfo{Server: e.Server.Clone(), Origin: e.Origin, Revision: e.Revision, Updated: e.Updated}, true
}

// UpdateServer implements api.Store: an update in place through the log, which
// makes the server an API server (a reload of the file no longer overwrites it).
// A new bind must be free on this node.
func (s *store) UpdateServer(ctx context.Context, name string, srv config.Server, ifRevision uint64) (uint64, error) {
	cur, ok := s.node.State().Servers[name]
	if !ok {
		return 0, fmt.Errorf("server %q: %w", name, api.ErrNotFound)
	}
	// The bind probe fails on the server's own port: only a new bind counts.
	if err := s.rt.Runnable(ctx, srv); err != nil && (srv.Bind != cur.Server.Bind || !errors.Is(err, proxy.ErrBindFailed)) {
		return 0, runnableError(err)
	}
	return s.apply(ctx, cluster.Command{
		Type: cluster.PutServer, Name: name, Server: &srv, Origin: cluster.OriginAPI, IfRevision: ifRevision,
	})
}

// SetBackendState implements api.Store: drain and disable are stored in the log
// as a backend override, enable clears it.
func (s *store) SetBackendState(ctx context.Context, server, backend, action string) (uint64, error) {
	c := cluster.Command{Type: cluster.SetOverride, Name: server, Backend: backend, Action: action}
	if action == api.BackendEnable {
		c = cluster.Command{Type: cluster.ClearOverride, Name: server, Backend: backend}
	}
	return s.apply(ctx, c)
}

// BackendStates implements api.Store.
func (s *store) BackendStates(server string) map[string]string {
	bs := s.node.State().Overrides[server]
	out := make(map[string]string, len(bs))
	for b, o := range bs {
		out[b] = o.Action
	}
	return out
}

// runnableError maps why this node cannot run a definition to the API's
// sentinels: a feature or a file it cannot use is 422, a taken port 409.
func runnableError(err error) error {
	if errors.Is(err, proxy.ErrUnsupported) || errors.Is(err, proxy.ErrInvalid) {
		return fmt.Errorf("%w: %w", api.ErrUnsupported, err)
	}
	return fmt.Errorf("%w: %w", api.ErrConflict, err)
}
