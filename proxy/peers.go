package proxy

import (
	"fmt"

	"github.com/gobetween/gobetween/config"
)

// PeerView is what the other live nodes of the cluster last reported about the
// backends (cmd adapts cluster.ObservedView). Safe for concurrent use; immutable.
type PeerView interface {
	// Backend sums the reports of the other live nodes that check backend
	// ("host:port") of server.
	Backend(server, backend string) PeerBackend
	// Verdicts lists each other reporting node's own verdict on the backend, for
	// stats.
	Verdicts(server, backend string) []NodeVerdict
}

// PeerBackend is the sum of the other live nodes' last reports on one backend.
type PeerBackend struct {
	Nodes   int    // other live nodes reporting the backend
	Healthy int    // of those, how many find it healthy
	Conns   int64  // their open connections to it
	RxBps   uint64 // their bytes per second received from it
	TxBps   uint64 // their bytes per second sent to it
}

// NodeVerdict is one node's own health verdict on a backend.
type NodeVerdict struct {
	Node    string
	Healthy bool
}

// Observation is what this node sees of one discovered backend of one running
// server; Runtime.Observe lists them for the gossip.
type Observation struct {
	Server, Backend string // Backend is "host:port", the backend's key
	// Healthy is this node's own verdict (its monitor's), not the cluster's.
	Healthy bool
	// Conns is balance.Load.Active: open connections plus in-flight reservations.
	Conns        int64
	RxBps, TxBps uint64
	// Capped is set when the backend has max_connections > 0.
	Capped bool
}

// peerState boxes the last view SetPeers applied (atomic.Pointer needs a
// concrete type); view is nil when there are no peers.
type peerState struct{ view PeerView }

// verdictPolicy is a server's healthcheck.cluster_verdict: how this node's own
// verdict on a backend and the other nodes' combine into the verdict every
// connection of this node routes by.
type verdictPolicy uint8

const (
	verdictMajority verdictPolicy = iota // strict majority of the live nodes that check it
	verdictAny                           // healthy when any node finds it healthy
	verdictAll                           // healthy when every node finds it healthy
	verdictLocal                         // this node's verdict only
)

// policyOf reads the cluster_verdict of a server; an absent health check or an
// empty value is majority, the default.
func policyOf(cfg config.Server) (verdictPolicy, error) {
	if cfg.Healthcheck == nil {
		return verdictMajority, nil
	}
	switch v := cfg.Healthcheck.ClusterVerdict; v {
	case "", "majority":
		return verdictMajority, nil
	case "any":
		return verdictAny, nil
	case "all":
		return verdictAll, nil
	case "local":
		return verdictLocal, nil
	default:
		return verdictMajority, fmt.Errorf("healthcheck: cluster_verdict: unknown verdict %q (want majority, any, all or local)", v)
	}
}

func (v verdictPolicy) String() string {
	switch v {
	case verdictAny:
		return "any"
	case verdictAll:
		return "all"
	case verdictLocal:
		return "local"
	}
	return "majority"
}

// healthy is the cluster verdict on a backend from this node's own verdict
// (local) and the other live nodes' reports (p). With no peers (p.Nodes == 0)
// every policy gives the local verdict. A node that cannot reach a backend the
// cluster deems healthy keeps it as a candidate: its dials fail over to the
// next candidate and its passive failures turn its own vote, so one node's
// view of the network does not evict a backend for everybody it serves.
func (v verdictPolicy) healthy(local bool, p PeerBackend) bool {
	switch v {
	case verdictAny:
		return local || p.Healthy > 0
	case verdictAll:
		return local && p.Healthy == p.Nodes
	case verdictLocal:
		return local
	}
	votes := p.Healthy
	if local {
		votes++
	}
	// Strict majority of the p.Nodes+1 nodes that check it, this one included:
	// two nodes that disagree make it unhealthy.
	return 2*votes > p.Nodes+1
}

// peerBackend is v's sum for a backend, zero without a view.
func peerBackend(v PeerView, server, key string) PeerBackend {
	if v == nil {
		return PeerBackend{}
	}
	return v.Backend(server, key)
}

// setRemote hands the other nodes' load on b to its balance.Load (leastconn,
// leastbandwidth and max_connections count it) and keeps their connection
// count and bytes per second for stats. Called with pool.rebuildMu held, so
// remote writes never interleave.
func (b *backend) setRemote(p PeerBackend) {
	b.load.SetRemote(p.Conns, int64(p.RxBps+p.TxBps))
	b.remoteConns.Store(p.Conns)
	b.remoteRx.Store(p.RxBps)
	b.remoteTx.Store(p.TxBps)
}

// SetPeers applies a new view of the other live nodes: each backend's remote
// load (balance.Load.SetRemote: leastconn, leastbandwidth and max_connections
// then count other nodes) and votes; servers where some backend's cluster
// verdict changed rebuild their candidate set before SetPeers returns. nil means
// no peers: every verdict is this node's own. Servers started later use the last
// view. Safe for concurrent use; it does not wait for a reconcile in progress.
func (r *Runtime) SetPeers(v PeerView) {
	r.peers.Store(&peerState{view: v})
	for _, s := range r.runningServers() {
		if err := s.pool.syncPeers(); err != nil {
			s.log.Error("backends not updated; clients are refused", "err", err)
		}
	}
}

// Observe appends this node's observation of every discovered backend of every
// running server to dst[:0] and returns it: servers in name order, the backends
// of one server in no particular order. A backend appears once it has had a
// verdict. Cheap enough to call every 100 ms with thousands of backends: one
// pool lock per server, no allocation once dst has grown.
func (r *Runtime) Observe(dst []Observation) []Observation {
	dst = dst[:0]
	for _, s := range r.runningServers() {
		dst = s.pool.observe(dst)
	}
	return dst
}

// runningServers is the servers as last published by reconcile, in name order.
func (r *Runtime) runningServers() []*server {
	if l := r.running.Load(); l != nil {
		return *l
	}
	return nil
}

// publishRunningLocked publishes the running servers for SetPeers and Observe,
// which do not take Runtime.mu. Called under Runtime.mu whenever servers
// changes.
func (r *Runtime) publishRunningLocked() {
	l := make([]*server, 0, len(r.servers))
	for _, name := range sortedKeys(r.servers) {
		l = append(l, r.servers[name])
	}
	r.running.Store(&l)
}

// view is the peers' view to build with; nil when there are no peers.
func (r *Runtime) view() PeerView {
	if st := r.peers.Load(); st != nil {
		return st.view
	}
	return nil
}

// nodeID is this node's name in stats.
func (r *Runtime) nodeID() string {
	if r.opts.NodeID == "" {
		return "local"
	}
	return r.opts.NodeID
}

// syncPeers hands the current view's remote loads to the discovered backends
// and rebuilds the snapshot when a backend's cluster verdict changed. Counts
// alone change atomics in place: no rebuild. It reads the view after taking
// rebuildMu, so a rebuild that ran with an older view is corrected here, and a
// later one sees this view. On a balancer error the snapshot is emptied, as by
// rebuild.
func (p *pool) syncPeers() error {
	p.rebuildMu.Lock()
	defer p.rebuildMu.Unlock()
	view := p.rt.view()
	p.mu.Lock()
	flipped := false
	for _, b := range p.backends {
		if !b.discovered {
			continue
		}
		pb := peerBackend(view, p.server, b.key)
		b.setRemote(pb)
		if b.checked && p.policy.healthy(b.local, pb) != b.live {
			flipped = true
		}
	}
	p.mu.Unlock()
	if !flipped {
		return nil
	}
	return p.rebuildLocked()
}

// setPolicy makes policy the server's cluster verdict and rebuilds the snapshot
// when it changed.
func (p *pool) setPolicy(policy verdictPolicy) error {
	p.mu.Lock()
	same := p.policy == policy
	p.policy = policy
	p.mu.Unlock()
	if same {
		return nil
	}
	return p.rebuild()
}

// observe appends the observation of every discovered backend that has had a
// verdict.
func (p *pool) observe(dst []Observation) []Observation {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.backends {
		if !b.discovered || !b.checked {
			continue
		}
		dst = append(dst, Observation{
			Server:  p.server,
			Backend: b.key,
			Healthy: b.local,
			Conns:   b.load.Active(),
			RxBps:   b.rxSec.Load(),
			TxBps:   b.txSec.Load(),
			Capped:  b.cfg.MaxConnections > 0,
		})
	}
	return dst
}
