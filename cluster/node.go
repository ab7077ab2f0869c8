package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
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
	NodeID    string       // stable forever; the Raft server ID
	DataDir   string       // raft.db (log and stable store) and snapshots/
	RaftBind  string       // host:port of the Raft TCP transport; port 0 picks one
	Advertise string       // address other nodes dial, when RaftBind is a wildcard; default: the bound address
	Bootstrap bool         // make this node a one-voter cluster if, and only if, DataDir holds no Raft state
	Logger    *slog.Logger // nil discards

	// stores replaces the bolt stores, snapshot store and TCP transport (tests).
	stores *stores
}

type stores struct {
	logs   raft.LogStore
	stable raft.StableStore
	snaps  raft.SnapshotStore
	trans  raft.Transport
}

// Member is one server of the Raft configuration.
type Member struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"` // "voter" or "nonvoter"
	Leader   bool   `json:"leader"`
}

// Node is this process's member of the Raft cluster. Its methods are safe for
// concurrent use.
type Node struct {
	id     string
	raft   *raft.Raft
	fsm    *fsm
	trans  raft.Transport
	closer []io.Closer // stores to close after raft shuts down
	log    *slog.Logger

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

// Open starts the Raft node. With Bootstrap and no existing state it bootstraps a
// cluster of itself alone; a node with state never bootstraps again, whatever
// Bootstrap says. The node replays its snapshot and log before Open returns
// (raft restores the snapshot synchronously; later entries apply shortly after).
func Open(ctx context.Context, o Options) (*Node, error) {
	if o.NodeID == "" {
		return nil, errors.New("open cluster node: empty node id")
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
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i].Close()
		}
	}
	if st == nil {
		var err error
		st, closers, err = openStores(o, hl)
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

	if o.Bootstrap {
		has, err := raft.HasExistingState(st.logs, st.stable, st.snaps)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open cluster node: check existing state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: cfg.LocalID, Address: st.trans.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(cfg, st.logs, st.stable, st.snaps, st.trans, conf); err != nil {
				closeAll()
				return nil, fmt.Errorf("open cluster node: bootstrap: %w", err)
			}
			lg.Info("bootstrapped a new single-voter cluster", "node_id", o.NodeID, "raft", st.trans.LocalAddr())
		}
	}

	f := newFSM()
	r, err := raft.NewRaft(cfg, f, st.logs, st.stable, st.snaps, st.trans)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("open cluster node: %w", err)
	}
	return &Node{
		id: o.NodeID, raft: r, fsm: f, trans: st.trans, closer: closers, log: lg,
		closed: make(chan struct{}),
	}, nil
}

// openStores opens raft.db, the snapshot store and the TCP transport. The
// returned closers are in opening order.
func openStores(o Options, hl hclog.Logger) (*stores, []io.Closer, error) {
	if o.DataDir == "" {
		return nil, nil, errors.New("open cluster node: empty data dir")
	}
	if o.RaftBind == "" {
		return nil, nil, errors.New("open cluster node: empty raft bind address")
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("open cluster node: %w", err)
	}
	var adv net.Addr
	if o.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", o.Advertise)
		if err != nil {
			return nil, nil, fmt.Errorf("open cluster node: advertise address: %w", err)
		}
		adv = a
	}
	// The open timeout makes a second process on the same directory fail instead
	// of blocking forever on bolt's file lock.
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(o.DataDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open cluster node: open %s: %w", filepath.Join(o.DataDir, "raft.db"), err)
	}
	logs, err := raft.NewLogCache(512, bolt)
	if err != nil {
		_ = bolt.Close()
		return nil, nil, fmt.Errorf("open cluster node: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(o.DataDir, 2, hl)
	if err != nil {
		_ = bolt.Close()
		return nil, nil, fmt.Errorf("open cluster node: snapshot store: %w", err)
	}
	trans, err := raft.NewTCPTransportWithConfig(o.RaftBind, adv, &raft.NetworkTransportConfig{
		MaxPool: 3, Timeout: 10 * time.Second, Logger: hl,
	})
	if err != nil {
		_ = bolt.Close()
		return nil, nil, fmt.Errorf("open cluster node: raft transport on %s: %w", o.RaftBind, err)
	}
	return &stores{logs: logs, stable: bolt, snaps: snaps, trans: trans}, []io.Closer{bolt, trans}, nil
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

// Apply proposes c and waits until it is committed and applied on this node. It
// returns the revision the command produced (or, for a no-op, the current
// revision of the object it names). Only the leader accepts writes: a follower
// returns ErrNotLeader, a node without a known leader ErrNoLeader. A refused
// command returns ErrExists, ErrNotFound, ErrStale, ErrOriginConflict or
// ErrInvalidCommand, wrapped. ErrUnavailable means the outcome is unknown (the
// leadership was lost or the wait timed out after proposing): commands are
// idempotent, so retrying is safe.
//
// A zero Version is set to CommandVersion and a zero Time to now.
func (n *Node) Apply(ctx context.Context, c Command) (uint64, error) {
	if c.Version == 0 {
		c.Version = CommandVersion
	}
	if c.Time.IsZero() {
		c.Time = time.Now().UTC()
	}
	if err := c.Validate(); err != nil {
		return 0, fmt.Errorf("%s %q: %w", c.Type, c.Name, err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("%s %q: encode: %w: %w", c.Type, c.Name, ErrInvalidCommand, err)
	}
	if err := n.leaderOnly(); err != nil {
		return 0, fmt.Errorf("%s %q: %w", c.Type, c.Name, err)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	fut := n.raft.Apply(data, timeoutOf(ctx))
	if err := n.wait(ctx, fut); err != nil {
		return 0, fmt.Errorf("%s %q: %w", c.Type, c.Name, err)
	}
	res, ok := fut.Response().(applyResult)
	if !ok {
		return 0, fmt.Errorf("%s %q: %w: unexpected apply response %T", c.Type, c.Name, ErrUnavailable, fut.Response())
	}
	if res.Err != nil {
		return res.Revision, fmt.Errorf("%s %q: %w", c.Type, c.Name, res.Err)
	}
	return res.Revision, nil
}

// AddVoter adds (or re-addresses) a voting member. Leader only. Prefer AddNonvoter
// then Promote: AddVoter raises the quorum before the new node has caught up.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	return n.membership(ctx, "add voter "+id, func(t time.Duration) raft.Future {
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// AddNonvoter adds a member that receives and applies the log but does not vote.
// Leader only.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	return n.membership(ctx, "add nonvoter "+id, func(t time.Duration) raft.Future {
		return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// Promote makes an existing member a voter at its current address. Leader only.
func (n *Node) Promote(ctx context.Context, id string) error {
	var addr string
	for _, m := range n.Members() {
		if m.ID == id {
			addr = m.Address
		}
	}
	if addr == "" {
		return fmt.Errorf("promote %s: %w", id, errors.New("not a member"))
	}
	return n.membership(ctx, "promote "+id, func(t time.Duration) raft.Future {
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// Remove removes a member from the Raft configuration. Leader only.
func (n *Node) Remove(ctx context.Context, id string) error {
	return n.membership(ctx, "remove "+id, func(t time.Duration) raft.Future {
		return n.raft.RemoveServer(raft.ServerID(id), 0, t)
	})
}

func (n *Node) membership(ctx context.Context, what string, change func(time.Duration) raft.Future) error {
	if err := n.leaderOnly(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if err := n.wait(ctx, change(timeoutOf(ctx))); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Members returns the current Raft configuration, sorted as raft keeps it.
func (n *Node) Members() []Member {
	fut := n.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil
	}
	leaderID, _ := n.Leader()
	var out []Member
	for _, s := range fut.Configuration().Servers {
		suf := "nonvoter"
		if s.Suffrage == raft.Voter {
			suf = "voter"
		}
		out = append(out, Member{ID: string(s.ID), Address: string(s.Address), Suffrage: suf, Leader: string(s.ID) == leaderID})
	}
	return out
}

// Close shuts raft down and closes the stores and transport. It does not hand
// leadership over (a clean shutdown that does comes with the join step) and it
// does not leave the cluster. Idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.closed)
		errs := []error{n.raft.Shutdown().Error()}
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
