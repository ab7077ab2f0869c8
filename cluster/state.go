package cluster

import (
	"maps"
	"slices"
	"time"

	"github.com/gobetween/gobetween/config"
)

// ServerEntry is one server of the desired state.
type ServerEntry struct {
	Server   config.Server `json:"server"`
	Origin   string        `json:"origin"`   // OriginAPI or a source origin (OriginConfig, OriginURL, OriginConsul): who wrote it last
	Revision uint64        `json:"revision"` // log index of the command that wrote it
	Updated  time.Time     `json:"updated"`  // the command's time
}

// Override is an operator's override of one backend (drain or disable).
type Override struct {
	Action   string    `json:"action"`
	Revision uint64    `json:"revision"`
	Updated  time.Time `json:"updated"`
}

// State is the applied desired state. A published State is immutable: readers may
// keep and share it (maps and all) without locks, and the FSM copies what it
// changes. Callers must never modify a State they did not build.
type State struct {
	Revision  uint64                         `json:"revision"` // log index of the last applied command
	Servers   map[string]ServerEntry         `json:"servers"`
	Overrides map[string]map[string]Override `json:"overrides"` // server -> backend -> override
	// Blobs are the values of put_blob by key. A value is shared like the
	// rest: never modify it (copy it to keep it beyond the State's use).
	Blobs map[string][]byte `json:"blobs,omitempty"`
	// Discovered are the last results of the cluster-scope discoveries, by
	// server name.
	Discovered map[string]Discovered `json:"discovered,omitempty"`
}

// Discovered is one cluster-scope discovery result, as the leader fetched it.
type Discovered struct {
	Backends []config.Backend `json:"backends"`
	// Fetched is when the leader's fetch ended; Error is its error, "" on
	// success (Backends then are what the fail policy keeps: the last good
	// set with keeplast, none with setempty).
	Fetched time.Time `json:"fetched"`
	Error   string    `json:"error,omitempty"`
	// By is the node that fetched.
	By string `json:"by,omitempty"`
}

func (d *Discovered) clone() Discovered {
	c := *d
	c.Backends = slices.Clone(d.Backends)
	return c
}

func emptyState() *State {
	return &State{Servers: map[string]ServerEntry{}, Overrides: map[string]map[string]Override{}, Blobs: map[string][]byte{}, Discovered: map[string]Discovered{}}
}

// withRevision returns a shallow copy of s at revision rev; the maps are shared,
// which is safe because neither copy is ever mutated once published.
func (s *State) withRevision(rev uint64) *State {
	c := *s
	c.Revision = rev
	return &c
}

// withServers returns a copy of s at rev whose Servers map may be modified.
func (s *State) withServers(rev uint64) *State {
	c := s.withRevision(rev)
	c.Servers = make(map[string]ServerEntry, len(s.Servers)+1)
	for k, v := range s.Servers {
		c.Servers[k] = v
	}
	return c
}

// withOverrides returns a copy of s at rev whose Overrides map may be modified
// (the outer map only: replace an inner map, never write into a shared one).
func (s *State) withOverrides(rev uint64) *State {
	c := s.withRevision(rev)
	c.Overrides = make(map[string]map[string]Override, len(s.Overrides)+1)
	for k, v := range s.Overrides {
		c.Overrides[k] = v
	}
	return c
}

// withDiscovered returns a copy of s at rev whose Discovered map may be
// modified (replace a value, never write into a shared one).
func (s *State) withDiscovered(rev uint64) *State {
	c := s.withRevision(rev)
	c.Discovered = maps.Clone(s.Discovered)
	if c.Discovered == nil {
		c.Discovered = map[string]Discovered{}
	}
	return c
}

// withBlobs returns a copy of s at rev whose Blobs map may be modified (the
// map only: replace a value, never write into a shared one).
func (s *State) withBlobs(rev uint64) *State {
	c := s.withRevision(rev)
	c.Blobs = maps.Clone(s.Blobs)
	if c.Blobs == nil {
		c.Blobs = map[string][]byte{}
	}
	return c
}
