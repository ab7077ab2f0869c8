// Package discovery finds the backends of a server. A Provider fetches the
// current list once; a Source runs the poll loop around a Provider (interval,
// timeout, failpolicy, retry backoff) and delivers each changed list. Kinds plug
// in through a Registry.
package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobetween/gobetween/config"
)

// Provider fetches the current backend list of one server. Fetch honours ctx
// (its deadline is the discovery timeout). A Source calls Fetch from one
// goroutine at a time; the returned slice becomes the caller's.
type Provider interface {
	Fetch(ctx context.Context) ([]config.Backend, error)
}

// Watcher is an optional capability of a Provider whose source can wait for a
// change (a Consul blocking query). Watch returns as soon as the list differs
// from the one the previous Watch returned, or with the unchanged list when its
// wait ends; it keeps that wait short enough to answer before ctx's deadline.
// The first Watch returns at once. A Source calls Watch instead of Fetch.
type Watcher interface {
	Watch(ctx context.Context) ([]config.Backend, error)
}

// Factory builds a provider from its config. It may reject settings that
// validation normally rejects first; it must not panic on them.
type Factory func(cfg config.Discovery) (Provider, error)

// Registry maps a discovery kind to its Factory. It is safe for concurrent use;
// kinds are normally registered once at start.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// builtinKinds are the kinds this package provides. Each kind's file adds
// itself in init (coredns plugins do the same); nothing changes it afterwards.
var builtinKinds = map[string]Factory{}

// NewRegistry returns a registry with the built-in kinds registered.
func NewRegistry() *Registry {
	r := &Registry{factories: maps.Clone(builtinKinds)}
	return r
}

// Register makes f the factory of kind, replacing any earlier one. A nil f
// removes the kind.
func (r *Registry) Register(kind string, f Factory) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f == nil {
		delete(r.factories, kind)
		return
	}
	r.factories[kind] = f
}

// New builds the provider of cfg.Kind. An unknown kind is an error.
func (r *Registry) New(cfg config.Discovery) (Provider, error) {
	r.mu.RLock()
	f, ok := r.factories[cfg.Kind]
	known := slices.Sorted(maps.Keys(r.factories))
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("unknown discovery kind %q (want %s)", cfg.Kind, strings.Join(known, ", "))
	}
	p, err := f(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery %s: %w", cfg.Kind, err)
	}
	if p == nil {
		return nil, fmt.Errorf("discovery %s: factory returned no provider", cfg.Kind)
	}
	return p, nil
}

// Retry backoff after a failed fetch: it starts at minBackoff and doubles up to
// the interval, and never beyond maxBackoff (gobetween 0.8 retried every 2s
// whatever the interval).
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
	// minWatchGap is the shortest time between the starts of two Watch calls
	// when the interval is shorter: a source whose list changes all the time,
	// or one that ignores the wait and answers at once, costs one query a
	// second, not a busy loop (Consul asks clients of blocking queries to rate
	// limit).
	minWatchGap = time.Second
)

// Source runs the discovery loop of one server around a Provider.
type Source struct {
	cfg    config.Discovery
	p      Provider
	logger *slog.Logger

	// minBackoff and maxBackoff are the package constants; tests shorten them.
	minBackoff time.Duration
	maxBackoff time.Duration
	// minWatchGap is the package constant; tests shorten it.
	minWatchGap time.Duration

	last atomic.Pointer[FetchResult] // the last fetch's outcome; nil before the first
	// fetches and failed count the completed fetches and the failed ones
	// since the Source was created, for metrics.
	fetches, failed atomic.Uint64
}

// FetchResult is how a fetch went, for stats: when it ended, how many backends
// it returned, and its error (nil on success). Fetches and Errors count the
// completed fetches, and of those the failed ones, since the Source was
// created; zero where the fetches are not made here.
type FetchResult struct {
	At       time.Time
	Backends int
	Err      error
	Fetches  uint64
	Errors   uint64
}

// LastFetch reports the outcome of the last completed fetch; ok is false
// before the first. Safe to call from any goroutine while Run runs.
func (s *Source) LastFetch() (r FetchResult, ok bool) {
	if p := s.last.Load(); p != nil {
		r = *p
		r.Fetches, r.Errors = s.fetches.Load(), s.failed.Load()
		return r, true
	}
	return FetchResult{}, false
}

// NewSource returns a Source polling p with the interval, timeout and
// failpolicy of cfg. A nil logger discards.
func NewSource(cfg config.Discovery, p Provider, logger *slog.Logger) *Source {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Source{
		cfg:         cfg,
		p:           p,
		logger:      logger.With("component", "discovery", "kind", cfg.Kind),
		minBackoff:  minBackoff,
		maxBackoff:  maxBackoff,
		minWatchGap: minWatchGap,
	}
}

// Run calls update with the first list, then with every list that differs from
// the last delivered one (order does not matter), until ctx is done. update runs
// on Run's goroutine, one call at a time, and owns the slice it gets.
//
// A backend listed twice (same host:port) is delivered once, as first listed,
// and the duplicate logged. A successful fetch of zero backends is delivered as
// an empty list whatever the failpolicy, as in gobetween 0.8.
//
// Interval 0 means never refreshed: Run returns after the first successful
// fetch. Otherwise the next fetch starts an interval after the previous one
// ended. Each Fetch gets a context with the configured timeout (0: none).
//
// After a failed fetch the error is logged; failpolicy keeplast delivers
// nothing, setempty delivers an empty list (once, not at every failure in a
// row). The fetch is retried after a backoff that starts at 1s and doubles up to
// min(interval, 30s), or 30s when the interval is 0.
//
// A Provider that is a Watcher is watched instead of polled: Run calls Watch,
// which itself waits for a change, again after each success, so a change is
// delivered when it happens, not at the next poll, and Run does not stop after
// the first success even with interval 0. The interval (at least 1s) is then
// the shortest time between the starts of two calls, a rate limit for a list
// that changes all the time; a Watch whose wait ended without a change is
// followed at once by the next one.
func (s *Source) Run(ctx context.Context, update func([]config.Backend)) {
	var (
		last      []config.Backend // sorted copy of the last delivered list
		delivered bool
		backoff   = s.minBackoff
		failures  int
	)
	// deliver hands list to update unless it equals the last delivered one, and
	// reports whether it did.
	deliver := func(list []config.Backend) bool {
		sorted := sortedCopy(list)
		if delivered && slices.Equal(sorted, last) {
			return false
		}
		last, delivered = sorted, true
		update(list)
		return true
	}
	call := s.p.Fetch
	w, watching := s.p.(Watcher)
	if watching {
		call = w.Watch
	}
	limit := s.backoffLimit()
	for {
		start := time.Now()
		list, err := s.fetch(ctx, call)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.failed.Add(1)
		}
		s.fetches.Add(1)
		s.last.Store(&FetchResult{At: time.Now(), Backends: len(list), Err: err})
		var wait time.Duration
		if err != nil {
			failures++
			wait = min(backoff, limit)
			backoff = min(backoff*2, limit)
			s.logger.Warn("discovery fetch failed", "error", err, "failures", failures, "retry_in", wait)
			if s.cfg.Failpolicy == "setempty" {
				deliver([]config.Backend{})
			}
		} else {
			if failures > 0 {
				s.logger.Info("discovery fetch recovered", "failures", failures)
			}
			failures, backoff = 0, s.minBackoff
			list, dups := dedupe(list)
			// Duplicates are logged once per change of the list, not at every poll.
			if deliver(list) {
				for _, d := range dups {
					s.logger.Warn("duplicate backend ignored: the first one listed is kept", "backend", d.Address())
				}
			}
			switch {
			case watching:
				wait = max(s.cfg.Interval.D, s.minWatchGap) - time.Since(start)
			case s.cfg.Interval.D <= 0:
				return
			default:
				wait = s.cfg.Interval.D
			}
		}
		if wait > 0 && !sleep(ctx, wait) {
			return
		}
	}
}

// fetch runs call (Fetch or Watch) under the configured timeout.
func (s *Source) fetch(ctx context.Context, call func(context.Context) ([]config.Backend, error)) ([]config.Backend, error) {
	if s.cfg.Timeout.D > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.Timeout.D)
		defer cancel()
	}
	list, err := call(ctx)
	if err != nil && errors.Is(err, context.DeadlineExceeded) && s.cfg.Timeout.D > 0 {
		err = fmt.Errorf("timed out after %s: %w", s.cfg.Timeout.D, err)
	}
	return list, err
}

// backoffLimit is the longest wait between retries: the interval, capped at
// maxBackoff, or maxBackoff when the interval is 0.
func (s *Source) backoffLimit() time.Duration {
	if s.cfg.Interval.D <= 0 {
		return s.maxBackoff
	}
	return min(s.cfg.Interval.D, s.maxBackoff)
}

// sleep waits d or until ctx is done, and reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// dedupe keeps the first backend of each host:port, in order, and returns the
// later ones apart.
func dedupe(list []config.Backend) (kept, dups []config.Backend) {
	seen := make(map[config.Target]bool, len(list))
	kept = make([]config.Backend, 0, len(list))
	for _, b := range list {
		if seen[b.Target] {
			dups = append(dups, b)
			continue
		}
		seen[b.Target] = true
		kept = append(kept, b)
	}
	return kept, dups
}

// sortedCopy orders a copy of list by host and port, so that two lists holding
// the same backends compare equal whatever order a provider returned them in.
func sortedCopy(list []config.Backend) []config.Backend {
	out := slices.Clone(list)
	slices.SortFunc(out, func(a, b config.Backend) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// maxPayload bounds what one fetch reads from a source (an HTTP body, a
// command's output, an API answer): a larger payload is a failed fetch, not
// an exhausted heap.
const maxPayload = 8 << 20

var errPayloadTooLarge = fmt.Errorf("payload larger than %d bytes", maxPayload)

// readPayload reads r to its end, failing past maxPayload.
func readPayload(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPayload+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPayload {
		return nil, errPayloadTooLarge
	}
	return b, nil
}
