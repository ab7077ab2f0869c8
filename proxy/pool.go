package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
)

// backend is the runtime of one backend of a server, keyed by host:port. It
// outlives candidate sets and discovery restarts, so its load and counters are
// continuous while discovery keeps reporting it.
type backend struct {
	key    string        // host:port
	target config.Target // immutable: the key's host and port
	load   balance.Load

	total   atomic.Int64
	active  atomic.Int64 // relaying connections
	refused atomic.Int64 // failed dials, not counting this host's own failures
	rx, tx  atomic.Uint64
	rxSec   atomic.Uint64
	txSec   atomic.Uint64
	lastLog atomic.Int64 // unix nanoseconds of the last dial failure logged

	// For metrics: every failed dial, and this node's active health checks.
	dialFailures               atomic.Int64
	checksPassed, checksFailed atomic.Int64

	// admin is the backend's administrative state (stateActive, stateDrain,
	// stateDisable). Written under pool.mu; read by a connection when it
	// attaches to the backend, under conn.mu, so that once a drain or disable
	// is stored no connection starts relaying to the backend.
	admin atomic.Uint32

	// remoteConns is the other live nodes' open connections to the backend,
	// as last reported (also in load, which has no getter for it).
	remoteConns atomic.Int64
	// remoteRx and remoteTx are the other live nodes' bytes per second
	// received from and sent to the backend, as last reported.
	remoteRx, remoteTx atomic.Uint64

	// Guarded by pool.mu; written only by a rebuild.
	cfg        config.Backend
	discovered bool
	live       bool // the cluster verdict: what this node routes by
	local      bool // this node's own verdict (its monitor's)
	checked    bool // local and live hold a verdict

	// Owned by the server loop's ticker.
	lastRx, lastTx uint64
	idleTicks      int
}

func newBackend(key string, t config.Target) *backend {
	return &backend{key: key, target: t}
}

// dial connects to the backend. An IP address is dialed as is; a host name is
// resolved at every dial, so that a DNS change is followed.
func (b *backend) dial(d *net.Dialer) (net.Conn, error) {
	// Not Dialer.DialTCP: with a zero local address it binds 0.0.0.0:0 before
	// connecting, which fails with EADDRINUSE when many sockets sit in TIME_WAIT,
	// while connect(2) on an unbound socket picks a port that only has to be
	// unique for this destination. An IP literal is parsed, never resolved.
	return d.Dial("tcp", b.key)
}

// isLocalDialError reports whether a dial failed for a reason of this host (no
// free port, no file descriptors, no buffers) rather than of the backend. Such
// a failure must not count against the backend's health.
func isLocalDialError(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOBUFS)
}

// logDialFailure logs at most one dial failure per backend per second: a dead
// backend under load must not flood the log, the refused counter has the rest.
func (b *backend) logDialFailure(log *slog.Logger, err error) {
	now := time.Now().UnixNano()
	last := b.lastLog.Load()
	if now-last < int64(time.Second) || !b.lastLog.CompareAndSwap(last, now) {
		return
	}
	log.Warn("backend dial failed", "backend", b.key, "err", err)
}

// Administrative states of a backend, as stored in backend.admin.
const (
	stateActive uint32 = iota
	stateDrain
	stateDisable
)

// parseState maps an override value to a state.
func parseState(v string) (uint32, bool) {
	switch v {
	case BackendDrain:
		return stateDrain, true
	case BackendDisable:
		return stateDisable, true
	}
	return stateActive, false
}

func stateName(st uint32) string {
	switch st {
	case stateDrain:
		return BackendDrain
	case stateDisable:
		return BackendDisable
	}
	return ""
}

// inRotation reports whether new connections may go to b.
func (b *backend) inRotation() bool { return b.admin.Load() == stateActive }

// snapshot is the immutable candidate set connections pick from. A rebuild
// replaces it whole; a connection loads it once.
type snapshot struct {
	balancer balance.Balancer // nil: no candidates, clients are refused
	byLoad   map[*balance.Load]*backend
}

var emptySnapshot = &snapshot{}

// pool is the backends of one server and the snapshot built from them. Rebuilds
// are serialised by rebuildMu; the connection path only loads snap.
type pool struct {
	rt          *Runtime // the view of the peers
	server      string
	log         *slog.Logger
	newBalancer func(string, *config.Sni, []*balance.Candidate) (balance.Balancer, error)
	monitor     HealthMonitor // nil: every backend is healthy; set before the first rebuild

	snap atomic.Pointer[snapshot]
	kick chan struct{} // a rebuild is wanted (discovery delivered, health flipped)

	rebuildMu sync.Mutex

	mu         sync.Mutex
	backends   map[string]*backend
	strategy   string
	sni        *config.Sni
	policy     verdictPolicy    // healthcheck.cluster_verdict
	pending    []config.Backend // the last list discovery delivered, not yet applied
	hasPending bool
	discGen    uint64 // the running discovery's generation; older deliveries are dropped
	// overrides are the administrative states by host:port, also of backends
	// discovery does not report (yet): they apply when the backend appears and
	// stay until cleared.
	overrides map[string]uint32
}

func newPool(rt *Runtime, server string, log *slog.Logger, cfg config.Server, policy verdictPolicy, overrides map[string]uint32) *pool {
	p := &pool{
		rt:          rt,
		server:      server,
		log:         log,
		newBalancer: rt.opts.NewBalancer,
		kick:        make(chan struct{}, 1),
		backends:    make(map[string]*backend),
		strategy:    cfg.Balance,
		sni:         cfg.Sni,
		policy:      policy,
		overrides:   maps.Clone(overrides),
	}
	p.snap.Store(emptySnapshot)
	return p
}

// wake asks the server loop for a rebuild; never blocks.
func (p *pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// deliver records a list from the discovery of generation gen.
func (p *pool) deliver(gen uint64, list []config.Backend) {
	cp := slices.Clone(list)
	p.mu.Lock()
	if gen != p.discGen {
		p.mu.Unlock()
		return
	}
	p.pending, p.hasPending = cp, true
	p.mu.Unlock()
	p.wake()
}

// onHealthChange is the monitor's callback: the verdict is read back during the
// rebuild, so the callback only asks for one.
func (p *pool) onHealthChange(config.Target, bool) { p.wake() }

func (p *pool) passiveFailure(b *backend) {
	if p.monitor != nil {
		p.monitor.PassiveFailure(b.target)
	}
}

// setOverrides makes overrides the administrative states of the backends and,
// when they changed, rebuilds the snapshot so that no new connection goes to a
// drained or disabled backend. It returns the backends that became disabled:
// their open connections are the caller's to close. On a balancer error the
// snapshot is emptied, as by rebuild, and the error returned.
func (p *pool) setOverrides(overrides map[string]uint32) (disabled []*backend, changed bool, err error) {
	p.mu.Lock()
	if maps.Equal(p.overrides, overrides) {
		p.mu.Unlock()
		return nil, false, nil
	}
	p.overrides = maps.Clone(overrides)
	for key, b := range p.backends {
		st := overrides[key]
		if old := b.admin.Swap(st); st == stateDisable && old != stateDisable {
			disabled = append(disabled, b)
		}
	}
	p.mu.Unlock()
	return disabled, true, p.rebuild()
}

// setStrategy rebuilds the snapshot with a new strategy and sni section. When
// the balancer cannot be built the strategy and the snapshot stay as they were.
func (p *pool) setStrategy(strategy string, sni *config.Sni) error {
	p.rebuildMu.Lock()
	defer p.rebuildMu.Unlock()
	snap, err := p.build(strategy, sni)
	if err != nil {
		// build may have applied a pending discovery list: the old strategy
		// still has to see it.
		p.mu.Lock()
		oldStrategy, oldSni := p.strategy, p.sni
		p.mu.Unlock()
		if snap, err := p.build(oldStrategy, oldSni); err == nil {
			p.snap.Store(snap)
		}
		return err
	}
	p.mu.Lock()
	p.strategy, p.sni = strategy, sni
	p.mu.Unlock()
	p.snap.Store(snap)
	return nil
}

// rebuild stores a new snapshot with the current strategy. On a balancer error
// the snapshot is emptied (clients are refused) and the error returned.
func (p *pool) rebuild() error {
	p.rebuildMu.Lock()
	defer p.rebuildMu.Unlock()
	return p.rebuildLocked()
}

// rebuildLocked is rebuild with rebuildMu held.
func (p *pool) rebuildLocked() error {
	p.mu.Lock()
	strategy, sni := p.strategy, p.sni
	p.mu.Unlock()
	snap, err := p.build(strategy, sni)
	if err != nil {
		p.snap.Store(emptySnapshot)
		return err
	}
	p.snap.Store(snap)
	return nil
}

// build applies the pending discovery list, refreshes health verdicts and the
// peers' loads, and returns a snapshot of the discovered backends the cluster
// verdict finds healthy. Called with rebuildMu held.
func (p *pool) build(strategy string, sni *config.Sni) (*snapshot, error) {
	view := p.rt.view()
	p.mu.Lock()
	policy := p.policy
	targetsChanged := false
	if p.hasPending {
		targetsChanged = p.applyListLocked(p.pending)
		p.pending, p.hasPending = nil, false
	}
	discovered := make([]*backend, 0, len(p.backends))
	for _, b := range p.backends {
		if b.discovered {
			discovered = append(discovered, b)
		}
	}
	p.mu.Unlock()

	slices.SortFunc(discovered, func(a, b *backend) int { return compareBackends(a.target, b.target) })
	if targetsChanged && p.monitor != nil {
		ts := make([]config.Target, len(discovered))
		for i, b := range discovered {
			ts[i] = b.target
		}
		p.monitor.SetTargets(ts)
	}
	// Drained and disabled backends stay in the monitor's targets, so that
	// their verdict is current when they come back into rotation.
	live := make([]bool, len(discovered))
	local := make([]bool, len(discovered))
	cands := make([]*balance.Candidate, 0, len(discovered))
	byLoad := make(map[*balance.Load]*backend, len(discovered))
	for i, b := range discovered {
		local[i] = p.monitor == nil || p.monitor.Healthy(b.target)
		pb := peerBackend(view, p.server, b.key)
		b.setRemote(pb)
		live[i] = policy.healthy(local[i], pb)
		if live[i] && b.inRotation() {
			cands = append(cands, balance.NewCandidate(b.cfg, &b.load))
			byLoad[&b.load] = b
		}
	}
	p.mu.Lock()
	for i, b := range discovered {
		b.live, b.local, b.checked = live[i], local[i], true
	}
	p.mu.Unlock()

	if len(cands) == 0 {
		return emptySnapshot, nil
	}
	bal, err := p.newBalancer(strategy, sni, cands)
	if err != nil {
		return nil, fmt.Errorf("balance %q: %w", strategy, err)
	}
	return &snapshot{balancer: bal, byLoad: byLoad}, nil
}

// applyListLocked makes list the discovered set: new backends are created,
// known ones keep their counters and take the list's properties, missing ones
// are marked undiscovered (they stay for stats until their connections end).
// The first entry of a duplicated host:port wins. Reports whether the set of
// discovered targets changed.
func (p *pool) applyListLocked(list []config.Backend) bool {
	changed := false
	seen := make(map[string]struct{}, len(list))
	for _, cb := range list {
		key := cb.Address()
		if _, dup := seen[key]; dup {
			continue
		}
		seen[key] = struct{}{}
		b := p.backends[key]
		if b == nil {
			b = newBackend(key, cb.Target)
			b.admin.Store(p.overrides[key])
			p.backends[key] = b
		}
		if !b.discovered {
			changed = true
		}
		b.cfg, b.discovered, b.idleTicks = cb, true, 0
	}
	for key, b := range p.backends {
		if _, ok := seen[key]; !ok && b.discovered {
			b.discovered = false
			changed = true
		}
	}
	return changed
}

// tick computes bytes per second of every backend over elapsed, hands each
// backend's bandwidth to its load (leastbandwidth), and forgets backends that
// discovery dropped once they have had no connection for a whole tick.
func (p *pool) tick(elapsed time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key, b := range p.backends {
		rx, tx := b.rx.Load(), b.tx.Load()
		rs, ts := perSecond(rx-b.lastRx, elapsed), perSecond(tx-b.lastTx, elapsed)
		b.lastRx, b.lastTx = rx, tx
		b.rxSec.Store(rs)
		b.txSec.Store(ts)
		b.load.SetBandwidth(int64(rs + ts))
		if !b.discovered && b.active.Load() == 0 && b.load.Active() == 0 {
			b.idleTicks++
			if b.idleTicks > 1 {
				delete(p.backends, key)
			}
		}
	}
}

func perSecond(delta uint64, elapsed time.Duration) uint64 {
	if elapsed <= 0 {
		return 0
	}
	return uint64(float64(delta) * float64(time.Second) / float64(elapsed))
}

// stats lists the discovered backends and the undiscovered ones still
// relaying, sorted by address. nodeID names this node in the cluster section.
func (p *pool) stats(nodeID string) []BackendStats {
	type entry struct {
		st  BackendStats
		key string
	}
	p.mu.Lock()
	policy := p.policy.String()
	entries := make([]entry, 0, len(p.backends))
	for _, b := range p.backends {
		active := b.active.Load()
		if !b.discovered && active == 0 {
			continue
		}
		entries = append(entries, entry{key: b.key, st: BackendStats{
			Backend: b.cfg,
			Stats: BackendCounters{
				Live:               b.live,
				Discovered:         b.discovered,
				TotalConnections:   b.total.Load(),
				ActiveConnections:  active,
				RefusedConnections: b.refused.Load(),
				Rx:                 b.rx.Load(),
				Tx:                 b.tx.Load(),
				RxSecond:           b.rxSec.Load(),
				TxSecond:           b.txSec.Load(),
				State:              stateName(b.admin.Load()),
				DialFailures:       b.dialFailures.Load(),
				ChecksPassed:       b.checksPassed.Load(),
				ChecksFailed:       b.checksFailed.Load(),
				Cluster: BackendCluster{
					ActiveConnections: b.load.Active() + b.remoteConns.Load(),
					RxSecond:          b.rxSec.Load() + b.remoteRx.Load(),
					TxSecond:          b.txSec.Load() + b.remoteTx.Load(),
					Healthy:           b.live,
					Policy:            policy,
					Nodes:             make(map[string]bool),
				},
			},
		}})
		if b.checked {
			entries[len(entries)-1].st.Stats.Cluster.Nodes[nodeID] = b.local
		}
	}
	p.mu.Unlock()
	// The peers' verdicts are looked up outside pool.mu: stats may be slow.
	view := p.rt.view()
	out := make([]BackendStats, len(entries))
	for i, e := range entries {
		if view != nil {
			for _, v := range view.Verdicts(p.server, e.key) {
				e.st.Stats.Cluster.Nodes[v.Node] = v.Healthy
			}
		}
		out[i] = e.st
	}
	slices.SortFunc(out, func(a, b BackendStats) int { return compareBackends(a.Target, b.Target) })
	return out
}

// recordCheck counts one active health check of the backend at key; a
// backend the pool no longer holds is not counted.
func (p *pool) recordCheck(key string, passed bool) {
	p.mu.Lock()
	b := p.backends[key]
	p.mu.Unlock()
	switch {
	case b == nil:
	case passed:
		b.checksPassed.Add(1)
	default:
		b.checksFailed.Add(1)
	}
}

// compareBackends orders targets by host (IP addresses numerically, before
// names) then by port number.
func compareBackends(a, b config.Target) int {
	if c := compareHosts(a.Host, b.Host); c != 0 {
		return c
	}
	pa, errA := strconv.Atoi(a.Port)
	pb, errB := strconv.Atoi(b.Port)
	if errA == nil && errB == nil {
		return cmp.Compare(pa, pb)
	}
	return cmp.Compare(a.Port, b.Port)
}

func compareHosts(a, b string) int {
	ia, errA := netip.ParseAddr(a)
	ib, errB := netip.ParseAddr(b)
	switch {
	case errA == nil && errB == nil:
		return ia.Compare(ib)
	case errA == nil:
		return -1
	case errB == nil:
		return 1
	}
	return cmp.Compare(a, b)
}
