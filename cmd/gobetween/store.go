package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/gobetween/gobetween/api"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

// origin says where a server definition came from.
type origin string

const (
	originConfig origin = "config" // the config file
	originAPI    origin = "api"    // POST /servers/{name}
)

type entry struct {
	server config.Server
	origin origin
}

// localStore is the desired state of a single node: the servers of the config
// file plus those created through the API, applied to the proxy runtime. It
// implements api.Store. Writes are serialised by mu; the data path never takes it.
//
// The next step replaces it with the replicated Raft log (package cluster); the
// API sees the same api.Store either way.
type localStore struct {
	mu      sync.Mutex
	rt      *proxy.Runtime
	logger  *slog.Logger
	servers map[string]entry
}

func newLocalStore(rt *proxy.Runtime, logger *slog.Logger) *localStore {
	return &localStore{rt: rt, logger: logger, servers: map[string]entry{}}
}

// Load makes the config file's servers the desired state: new ones start,
// changed ones update in place, servers of an earlier file that are gone stop.
// Servers created through the API are kept; a file server with the name of an API
// server does not overwrite it (the conflict is logged), so no reload silently
// undoes an API change.
func (s *localStore) Load(ctx context.Context, file map[string]config.Server) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]entry, len(file))
	for name, e := range s.servers {
		if e.origin == originAPI {
			next[name] = e
		}
	}
	for name, srv := range file {
		if e, ok := next[name]; ok && e.origin == originAPI {
			s.logger.Warn("config file defines a server that was created through the API; the API definition is kept", "server", name)
			continue
		}
		next[name] = entry{server: srv, origin: originConfig}
	}
	desired := make(map[string]config.Server, len(next))
	for name, e := range next {
		desired[name] = e.server
	}
	err := s.rt.Apply(ctx, desired)
	s.servers = next
	return err
}

// Servers implements api.Store.
func (s *localStore) Servers() map[string]config.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]config.Server, len(s.servers))
	for name, e := range s.servers {
		out[name] = e.server.Clone()
	}
	return out
}

// Server implements api.Store.
func (s *localStore) Server(name string) (config.Server, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.servers[name]
	if !ok {
		return config.Server{}, false
	}
	return e.server.Clone(), true
}

// CreateServer implements api.Store: the server starts before the call returns,
// and is not kept if it cannot start.
func (s *localStore) CreateServer(ctx context.Context, name string, srv config.Server) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.servers[name]; ok {
		return fmt.Errorf("server %q: %w", name, api.ErrExists)
	}
	if err := s.rt.Upsert(ctx, name, srv); err != nil {
		s.rt.Remove(name)
		if errors.Is(err, proxy.ErrUnsupported) {
			return fmt.Errorf("%w: %w", api.ErrUnsupported, err)
		}
		if errors.Is(err, proxy.ErrBindFailed) {
			return fmt.Errorf("%w: %w", api.ErrConflict, err)
		}
		return err
	}
	s.servers[name] = entry{server: srv.Clone(), origin: originAPI}
	return nil
}

// DeleteServer implements api.Store: the server stops accepting at once and
// drains its connections in the background.
func (s *localStore) DeleteServer(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.servers[name]; !ok {
		return fmt.Errorf("server %q: %w", name, api.ErrNotFound)
	}
	s.rt.Remove(name)
	delete(s.servers, name)
	return nil
}
