package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/gobetween/gobetween/internal/latency"
)

// Errors of Node. Errors of the FSM rules (ErrExists, …) are in command.go.
var (
	ErrNotLeader   = errors.New("this node is not the leader")
	ErrNoLeader    = errors.New("the cluster has no leader")
	ErrUnavailable = errors.New("the cluster could not commit the write")
	ErrClosed      = errors.New("the cluster node is closed")
)

// DefaultApplyTimeout caps how long Apply and the membership calls wait when the
// context has no deadline.
const DefaultApplyTimeout = 5 * time.Second

// Timeouts tuned for a LAN: a crashed leader is replaced in about a second
// (raft's defaults, 1 s/1 s/500 ms, take about two).
const (
	heartbeatTimeout   = 500 * time.Millisecond
	electionTimeout    = 500 * time.Millisecond
	leaderLeaseTimeout = 250 * time.Millisecond
	commitTimeout      = 50 * time.Millisecond
)

// Options configures Open.
type Options struct {
	NodeID    string       // stable forever; the Raft server ID and the gossip name
	DataDir   string       // raft.db (log and stable store) and snapshots/
	RaftBind  string       // host:port of the cluster port (Raft and forwarding); port 0 picks one
	Advertise string       // address other nodes dial, when RaftBind is a wildcard; default: the bound address
	Bootstrap bool         // make this node a one-voter cluster if, and only if, DataDir holds no Raft state
	Logger    *slog.Logger // nil discards

	// GossipBind is the memberlist host:port (UDP and TCP; port 0 picks one).
	// Empty: no gossip, so no automatic membership (a single node).
	GossipBind      string
	GossipAdvertise string   // gossip address other nodes use, when GossipBind is a wildcard
	Join            []string // gossip addresses of any members (own address allowed), joined at start and retried
	// BootstrapExpect > 1: a node without Raft state waits until this many
	// members with the same setting, all without state, see each other in
	// gossip, then each bootstraps the same configuration of all of them.
	// 1 is the same as Bootstrap.
	BootstrapExpect int
	EncryptKey      []byte      // memberlist SecretKey (16, 24 or 32 bytes); nodes without it cannot join
	MaxVoters       int         // voters the leader promotes up to; default 5
	TLS             *tls.Config // mutual TLS for the cluster port (Raft and forwarding); nil: plain TCP
	// ReportInterval is how often this node gossips its observed state
	// (SetObserver) when nothing urgent changes; peers stop counting a report
	// three intervals after it arrived. 0: DefaultReportInterval (1 s); at
	// least 100 ms.
	ReportInterval time.Duration

	// stores replaces the bolt stores, snapshot store and TCP transport (tests).
	stores *stores
}

// DefaultMaxVoters is the voter cap when Options.MaxVoters is 0.
const DefaultMaxVoters = 5

type stores struct {
	logs   raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
	trans  raft.Transport
}

// Member is one member of the cluster, as the Raft configuration and the gossip
// layer see it; a member known to only one of them appears too.
type Member struct {
	ID            string `json:"id"`
	Address       string `json:"address"`  // Raft address ("" when known only to gossip and without meta)
	Suffrage      string `json:"suffrage"` // "voter", "nonvoter", or "" when not in the Raft configuration
	Leader        bool   `json:"leader"`
	Gossip        string `json:"gossip"` // GossipAlive, GossipDead, GossipLeft, or "" without gossip
	GossipAddress string `json:"gossip_address,omitempty"`
	// The member's last observed-state report this node accepted (counted or
	// not: it may have expired), or for this node its own last published one.
	// Zero when there is none.
	LastReport     time.Time `json:"last_report,omitempty"`
	ReportSeq      uint64    `json:"report_seq,omitempty"`
	ReportBackends int       `json:"report_backends,omitempty"`
}

// Node is this process's member of the Raft cluster. Its methods are safe for
// concurrent use.
type Node struct {
	id          string
	opts        Options
	raft        *raft.Raft
	fsm         *fsm
	trans       raft.Transport
	closer      []io.Closer // stores to close after raft shuts down
	stable      raft.StableStore
	recorded    uint64 // the applied index last written to stable (recordLoop, then Close)
	log         *slog.Logger
	mux         *mux          // nil with test stores
	rpcSrv      *rpcServer    // nil without mux
	rpc         *rpcClient    // nil without mux
	gossip      gossiper      // nil without GossipBind
	obs         *observer     // nil without GossipBind
	hasState    atomic.Bool   // raft state existed at Open or was bootstrapped
	noBootstrap atomic.Bool   // bootstrap_expect decided: bootstrapped, or found a cluster
	joining     atomic.Bool   // a background gossip join is running
	nudge       chan struct{} // wakes the background loop (gossip events); 1-buffered
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	maxVoters   int

	// For Metrics: leaders learned of, and the latency of committed writes.
	leaderChanges atomic.Uint64
	applyLatency  latency.Histogram

	mu    sync.Mutex
	tombs map[string]time.Time // members removed by Remove, not re-added for a while

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

// Open starts the node. With Bootstrap (or BootstrapExpect 1) and no existing
// state it bootstraps a cluster of itself alone; with BootstrapExpect > 1 it
// bootstraps, in the background, together with the others once they see each
// other; a node with state never bootstraps again, and a node that joins but
// finds a cluster waits to be added by its leader. The node replays its
// snapshot and log before Open returns (raft restores the snapshot
// synchronously; later entries apply shortly after).
func Open(ctx context.Context, o Options) (*Node, error) {
	if o.NodeID == "" {
		return nil, errors.New("open cluster node: empty node id")
	}
	if err := checkOptions(&o); err != nil {
		return nil, fmt.Errorf("open cluster node: %w", err)
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	hl := newHclog(lg.With("component", "raft"))
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open cluster node: %w", err)
	}

	st := o.stores
	var closers []io.Closer
	var mx *mux
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i].Close()
		}
	}
	if st == nil {
		var err error
		st, mx, closers, err = openStores(o, hl, lg)
		if err != nil {
			return nil, err
		}
	}

	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(o.NodeID)
	cfg.Logger = hl
	cfg.HeartbeatTimeout = heartbeatTimeout
	cfg.ElectionTimeout = electionTimeout
	cfg.LeaderLeaseTimeout = leaderLeaseTimeout
	cfg.CommitTimeout = commitTimeout
	cfg.SnapshotInterval = 30 * time.Second
	cfg.SnapshotThreshold = 1024
	cfg.TrailingLogs = 2048
	// A removed node keeps running (and serving its last state) until told to stop.
	cfg.ShutdownOnRemove = false

	has, err := raft.HasExistingState(st.logs, st.stable, st.snaps)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("open cluster node: check existing state: %w", err)
	}
	if (o.Bootstrap || o.BootstrapExpect == 1) && !has {
		conf := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: cfg.LocalID, Address: st.trans.LocalAddr(),
		}}}
		if err := raft.BootstrapCluster(cfg, st.logs, st.stable, st.snaps, st.trans, conf); err != nil {
			closeAll()
			return nil, fmt.Errorf("open cluster node: bootstrap: %w", err)
		}
		has = true
		lg.Info("bootstrapped a new single-voter cluster", "node_id", o.NodeID, "raft", st.trans.LocalAddr())
	}

	f := newFSM()
	r, err := raft.NewRaft(cfg, f, st.logs, st.stable, st.snaps, st.trans)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("open cluster node: %w", err)
	}
	// Raft has restored the latest snapshot; what this node applied after it
	// is applied again from its own log now, so that the node serves its last
	// state before any leader is heard from.
	if replayed, err := replayLocal(f, st.logs, st.stable); err != nil {
		lg.Warn("the local log was not replayed: the state is the latest snapshot's until a leader is heard from", "err", err, "replayed", replayed)
	} else if replayed > 0 {
		lg.Info("replayed the local log", "entries", replayed, "revision", f.State().Revision)
	}
	n := &Node{
		id: o.NodeID, opts: o, raft: r, fsm: f, trans: st.trans, closer: closers, log: lg, mux: mx, stable: st.stable,
		nudge: make(chan struct{}, 1), tombs: map[string]time.Time{},
		closed: make(chan struct{}),
	}
	n.hasState.Store(has)
	n.countLeaderChanges()
	if mx != nil {
		n.rpc = &rpcClient{dial: func(ctx context.Context, addr string, t time.Duration) (net.Conn, error) {
			return mx.dial(ctx, addr, muxRPC, t)
		}, idle: map[string][]*rpcConn{}}
		n.rpcSrv = &rpcServer{ln: mx.subs[muxRPC], handle: n.handleRPC, conns: map[net.Conn]struct{}{}}
		n.rpcSrv.wg.Add(1)
		go n.rpcSrv.serve()
	}
	if o.GossipBind != "" {
		n.obs = newObserver(o.NodeID, o.ReportInterval, lg.With("component", "observed"))
		g, err := newGossip(gossipOptions{
			Name: o.NodeID, Bind: o.GossipBind, Advertise: o.GossipAdvertise, Key: o.EncryptKey,
			Meta:   nodeMeta{ID: o.NodeID, Raft: n.Addr(), Version: metaVersion, Command: CommandVersion, Expect: o.BootstrapExpect},
			Logger: lg, OnChange: n.wake, Reports: n.obs,
		})
		if err != nil {
			_ = n.Close()
			return nil, fmt.Errorf("open cluster node: %w", err)
		}
		n.gossip = g
		n.obs.g = g
	}
	bg, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(1)
	go n.run(bg)
	n.wg.Add(1)
	go n.recordLoop(bg)
	if n.obs != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.obs.run(bg)
		}()
	}
	return n, nil
}

func checkOptions(o *Options) error {
	if o.MaxVoters == 0 {
		o.MaxVoters = DefaultMaxVoters
	}
	if o.MaxVoters < 1 {
		return fmt.Errorf("max voters %d: want at least 1", o.MaxVoters)
	}
	if o.BootstrapExpect < 0 {
		return fmt.Errorf("bootstrap expect %d: want 0 or more", o.BootstrapExpect)
	}
	if o.BootstrapExpect > 1 && o.GossipBind == "" {
		return errors.New("bootstrap expect needs a gossip bind address to see the other nodes")
	}
	if o.Bootstrap && o.BootstrapExpect > 1 {
		return errors.New("bootstrap (a single node) and bootstrap expect > 1 exclude each other")
	}
	if o.ReportInterval == 0 {
		o.ReportInterval = DefaultReportInterval
	}
	if o.ReportInterval < observeInterval {
		return fmt.Errorf("report interval %s: want at least %s", o.ReportInterval, observeInterval)
	}
	if k := len(o.EncryptKey); k != 0 && k != 16 && k != 24 && k != 32 {
		return fmt.Errorf("encrypt key of %d bytes: want 16, 24 or 32", k)
	}
	return nil
}

// openStores opens raft.db, the snapshot store, the cluster port and the Raft
// transport on it. The returned closers are in opening order.
func openStores(o Options, hl hclog.Logger, lg *slog.Logger) (*stores, *mux, []io.Closer, error) {
	if o.DataDir == "" {
		return nil, nil, nil, errors.New("open cluster node: empty data dir")
	}
	if o.RaftBind == "" {
		return nil, nil, nil, errors.New("open cluster node: empty raft bind address")
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, nil, nil, fmt.Errorf("open cluster node: %w", err)
	}
	// The open timeout makes a second process on the same directory fail instead
	// of blocking forever on bolt's file lock.
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(o.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open cluster node: open %s: %w", filepath.Join(o.DataDir, "raft.db"), err)
	}
	logs, err := raft.NewLogCache(512, bolt)
	if err != nil {
		_ = bolt.Close()
		return nil, nil, nil, fmt.Errorf("open cluster node: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(o.DataDir, 2, hl)
	if err != nil {
		_ = bolt.Close()
		return nil, nil, nil, fmt.Errorf("open cluster node: snapshot store: %w", err)
	}
	mx, err := newMux(o.RaftBind, o.Advertise, o.TLS, lg.With("component", "cluster-port"))
	if err != nil {
		_ = bolt.Close()
		return nil, nil, nil, fmt.Errorf("open cluster node: cluster port %s: %w", o.RaftBind, err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: raftLayer{mx.subs[muxRaft]}, MaxPool: 3, Timeout: 10 * time.Second, Logger: hl,
	})
	return &stores{logs: logs, stable: bolt, snaps: snaps, trans: trans}, mx, []io.Closer{bolt, mx, trans}, nil
}

// ID returns this node's ID.
func (n *Node) ID() string { return n.id }

// Addr returns the Raft address other nodes use to reach this node.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// State returns the applied desired state. It is immutable; do not modify it.
func (n *Node) State() *State { return n.fsm.State() }

// Subscribe returns a channel that receives a value after the applied state
// changes (coalesced: re-read State on each value) and a cancel function.
func (n *Node) Subscribe() (<-chan struct{}, func()) { return n.fsm.Subscribe() }

// Leader returns the ID and Raft address of the leader this node knows, or "", "".
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// WaitForLeader returns once this node knows a leader, or with ctx's error.
func (n *Node) WaitForLeader(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for leader: %w: %w", ErrNoLeader, ctx.Err())
		case <-n.closed:
			return fmt.Errorf("wait for leader: %w", ErrClosed)
		case <-t.C:
		}
	}
}

// Close stops the background loop and the observed-state publisher (the
// SubscribeObserved channels receive nothing more), shuts gossip down without
// leaving (peers see the node as dead, and it stays a Raft member: a restart
// keeps the membership; call Leave first to leave for good), stops the cluster
// port and raft, and closes the stores. It does not wait for peers: raft's RPCs
// in progress are cut off, so a lost peer does not hold it up. A leader does
// not hand its leadership over here: Leave does. Idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.closed)
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		var errs []error
		if n.gossip != nil {
			errs = append(errs, n.gossip.shutdown())
		}
		if n.obs != nil {
			n.obs.close()
		}
		if n.rpcSrv != nil {
			n.rpcSrv.close()
		}
		if n.rpc != nil {
			n.rpc.close()
		}
		// raft.Shutdown waits for its replication and vote goroutines, which
		// wait for their RPCs: to a peer whose host is gone, that is the
		// transport's 10 s timeout. Once raft is told to stop, its connections
		// are closed and its dials cancelled, so those RPCs fail at once; raft
		// drops a failed RPC's result and, stopping, sends none again. The
		// stores close only after Shutdown has returned.
		fut := n.raft.Shutdown()
		if n.mux != nil {
			n.mux.closeRaft()
		}
		errs = append(errs, fut.Error())
		if _, err := recordApplied(n.fsm, n.stable, n.recorded); err != nil {
			errs = append(errs, err)
		}
		for i := len(n.closer) - 1; i >= 0; i-- {
			errs = append(errs, n.closer[i].Close())
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("close cluster node: %w", err)
		}
	})
	return n.closeErr
}

func (n *Node) leaderOnly() error {
	select {
	case <-n.closed:
		return ErrClosed
	default:
	}
	if n.IsLeader() {
		return nil
	}
	if id, _ := n.Leader(); id != "" {
		return ErrNotLeader
	}
	return ErrNoLeader
}

// wait waits for fut in a goroutine: raft's own timeout covers only enqueueing,
// and a future can stay pending for long after a leadership change.
func (n *Node) wait(ctx context.Context, fut raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- fut.Error() }()
	select {
	case err := <-done:
		return mapRaftErr(err)
	case <-ctx.Done():
		return fmt.Errorf("%w: no answer before the deadline (the write may still commit): %w", ErrUnavailable, ctx.Err())
	case <-n.closed:
		return ErrClosed
	}
}

func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: the write may still commit: %w", ErrUnavailable, err)
	default:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, DefaultApplyTimeout)
}

// timeoutOf is the time left before ctx's deadline, for raft's enqueue timeout.
func timeoutOf(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return DefaultApplyTimeout
	}
	if left := time.Until(d); left > 0 {
		return left
	}
	return time.Millisecond
}

// Barrier waits until every entry committed before it has been applied to this
// node's state. Leader only (ErrNotLeader otherwise): after a restart a node
// leads before it has replayed its log, and a caller that reads State to decide
// on a write (such as pruning config servers) must see the whole log first.
func (n *Node) Barrier(ctx context.Context) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	return n.raft.Barrier(timeoutOf(ctx)).Error()
}

// recordInterval is how often the applied index is written down for the
// replay at the next start. A crash loses at most this much of it: the node
// then replays a little less and catches up from the leader.
const recordInterval = 250 * time.Millisecond

// recordLoop writes the applied index to the stable store while the node runs
// (Close writes the last one). Writing it in Apply would add a disk sync to
// every commit.
func (n *Node) recordLoop(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(recordInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rec, err := recordApplied(n.fsm, n.stable, n.recorded)
		if err != nil {
			n.log.Warn("recording the applied index", "err", err)
		}
		n.recorded = rec
	}
}
