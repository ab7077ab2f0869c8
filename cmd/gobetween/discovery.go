package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/discovery"
	"github.com/gobetween/gobetween/proxy"
)

// leaderPoll is how often a node checks whether it leads, to start or stop the
// cluster-scope discoveries: a new leader takes them over within it.
const leaderPoll = 250 * time.Millisecond

// clusterScoped reports whether a discovery runs on the leader only, its
// result going through the Raft log: in a cluster, unless scope = "node".
// static lists are in the definition itself: every node reads them.
func clusterScoped(clustered bool, d config.Discovery) bool {
	return clustered && d.Kind != "static" && d.Scope != "node"
}

// fetchCounts counts, per server, the cluster-scope discovery fetches this node
// made while it led: the fetch counters (metrics, stats) of a cluster-scope
// discovery are those of the node that fetched, as for a node-scope one. Safe
// for concurrent use; a nil *fetchCounts counts nothing.
type fetchCounts struct {
	mu sync.Mutex
	m  map[string]*fetchCount
}

type fetchCount struct{ fetches, errors atomic.Uint64 }

func newFetchCounts() *fetchCounts { return &fetchCounts{m: map[string]*fetchCount{}} }

func (c *fetchCounts) of(server string) *fetchCount {
	if c == nil {
		return &fetchCount{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	fc, ok := c.m[server]
	if !ok {
		fc = &fetchCount{}
		c.m[server] = fc
	}
	return fc
}

// newDiscovery builds the discovery of one server for the proxy: a Source that
// fetches here, or, for a cluster-scope discovery, the result the leader
// stored in the log.
func newDiscovery(logger *slog.Logger, registry *discovery.Registry, node *cluster.Node, clustered bool, counts *fetchCounts) func(string, config.Discovery) (proxy.Discoverer, error) {
	return func(server string, cfg config.Discovery) (proxy.Discoverer, error) {
		p, err := registry.New(cfg)
		if err != nil {
			return nil, err
		}
		if clusterScoped(clustered, cfg) {
			// The proxy adds a replaced discoverer's counts to the server's, so
			// this one reports only the fetches made after it was created.
			fc := counts.of(server)
			return logDiscoverer{node: node, server: server, count: fc, baseFetches: fc.fetches.Load(), baseErrors: fc.errors.Load()}, nil
		}
		return discovery.NewSource(cfg, p, logger.With("component", "discovery", "server", server)), nil
	}
}

// logDiscoverer delivers what the leader's discovery of one server stored in
// the log (proxy.Discoverer).
type logDiscoverer struct {
	node                    *cluster.Node
	server                  string
	count                   *fetchCount // this node's fetches as leader
	baseFetches, baseErrors uint64      // count when the discoverer was made
}

func (d logDiscoverer) Run(ctx context.Context, update func([]config.Backend)) {
	changed, cancel := d.node.Subscribe()
	defer cancel()
	var last *cluster.Discovered
	for {
		if r, ok := d.node.State().Discovered[d.server]; ok && (last == nil || !r.Fetched.Equal(last.Fetched)) {
			last = &r
			update(r.Backends)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// LastFetch implements proxy.FetchReporter with what the leader recorded, and
// the fetches this node made while it led.
func (d logDiscoverer) LastFetch() (discovery.FetchResult, bool) {
	r, ok := d.node.State().Discovered[d.server]
	if !ok {
		return discovery.FetchResult{}, false
	}
	var err error
	if r.Error != "" {
		err = errors.New(r.Error)
	}
	f := discovery.FetchResult{At: r.Fetched, Backends: len(r.Backends), Err: err}
	if d.count != nil {
		f.Fetches = d.count.fetches.Load() - d.baseFetches
		f.Errors = d.count.errors.Load() - d.baseErrors
	}
	return f, true
}

// leaderDiscovery runs, on the leader only, the cluster-scope discoveries of
// the servers in the desired state and writes each result to the log. A node
// that loses the lead stops them; the new leader starts them at once (its
// first fetch is immediate), so the hand-over costs less than one interval.
type leaderDiscovery struct {
	node     *cluster.Node
	registry *discovery.Registry
	log      *slog.Logger
	counts   *fetchCounts // nil: not counted
	running  map[string]*leaderSource
}

type leaderSource struct {
	cfg    config.Discovery
	cancel context.CancelFunc
	done   chan struct{}
}

func (l *leaderDiscovery) run(ctx context.Context) {
	changed, cancel := l.node.Subscribe()
	defer cancel()
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	l.running = map[string]*leaderSource{}
	defer l.stopAll()
	for {
		l.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

func (l *leaderDiscovery) reconcile(ctx context.Context) {
	if !l.node.IsLeader() {
		l.stopAll()
		return
	}
	st := l.node.State()
	for name, r := range l.running {
		e, ok := st.Servers[name]
		if !ok || e.Server.Discovery == nil || !clusterScoped(true, *e.Server.Discovery) ||
			!(config.Server{Discovery: e.Server.Discovery}).Equal(config.Server{Discovery: &r.cfg}) {
			l.stop(name)
		}
	}
	for name, e := range st.Servers {
		d := e.Server.Discovery
		if d == nil || !clusterScoped(true, *d) {
			continue
		}
		if _, ok := l.running[name]; !ok {
			l.start(ctx, name, *d)
		}
	}
}

func (l *leaderDiscovery) start(ctx context.Context, name string, cfg config.Discovery) {
	log := l.log.With("server", name)
	p, err := l.registry.New(cfg)
	if err != nil {
		log.Error("cluster discovery not started", "err", err)
		return
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &leaderSource{cfg: cfg, cancel: cancel, done: make(chan struct{})}
	l.running[name] = r
	src := discovery.NewSource(cfg, p, log)
	store := func(list []config.Backend, fetchErr string) {
		_, err := l.node.Apply(rctx, cluster.Command{
			Type: cluster.PutDiscovered, Name: name,
			Discovered: &cluster.Discovered{Backends: list, Fetched: time.Now().UTC(), Error: fetchErr, By: l.node.ID()},
		})
		if err != nil && rctx.Err() == nil {
			log.Warn("cluster discovery: result not stored", "backends", len(list), "err", err)
		}
	}
	fc := l.counts.of(name)
	var counted discovery.FetchResult // the source's counts already added to fc
	count := func(f discovery.FetchResult) {
		fc.fetches.Add(f.Fetches - counted.Fetches)
		fc.errors.Add(f.Errors - counted.Errors)
		counted = f
	}
	go func() {
		defer close(r.done)
		stop := make(chan struct{})
		polled := make(chan struct{})
		defer func() {
			close(stop)
			<-polled
			if f, ok := src.LastFetch(); ok {
				count(f)
			}
		}()
		// Source delivers lists only when they change; a failure, and the
		// recovery from it, are recorded from its last fetch so that every
		// node's stats show them.
		go func() {
			defer close(polled)
			t := time.NewTicker(leaderPoll)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
				}
				f, ok := src.LastFetch()
				if !ok {
					continue
				}
				count(f)
				msg := ""
				if f.Err != nil {
					msg = f.Err.Error()
				}
				cur, had := l.node.State().Discovered[name]
				if had && cur.Error != msg {
					store(cur.Backends, msg)
				}
			}
		}()
		src.Run(rctx, func(list []config.Backend) { store(list, "") })
	}()
	log.Info("cluster discovery started on the leader", "kind", cfg.Kind)
}

func (l *leaderDiscovery) stop(name string) {
	r := l.running[name]
	delete(l.running, name)
	r.cancel()
	<-r.done
}

func (l *leaderDiscovery) stopAll() {
	for name := range l.running {
		l.stop(name)
	}
}
