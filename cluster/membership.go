package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// ErrNotMember is returned for a member ID the cluster does not know.
var ErrNotMember = errors.New("no such cluster member")

// Timing of the background loop.
const (
	loopInterval      = 250 * time.Millisecond // leader reconcile and bootstrap checks
	rejoinInterval    = 10 * time.Second       // retry joining missing members (memberlist never heals a partition alone)
	promoteAfter      = time.Second            // a non-voter must be a member this long before promotion
	maxPromoteLag     = 250                    // … and have applied to within this many entries of the leader's last index
	promoteAckTimeout = 10 * time.Second       // longest wait for a promoted node to learn it votes
	tombstoneFor      = time.Minute            // a removed member is not re-added from gossip for this long
	statusTimeout     = time.Second
)

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
	for _, s := range n.raftServers() {
		if string(s.ID) == id {
			addr = string(s.Address)
		}
	}
	if addr == "" {
		return fmt.Errorf("promote %s: %w", id, ErrNotMember)
	}
	return n.membership(ctx, "promote "+id, func(t time.Duration) raft.Future {
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// Remove removes a member from the Raft configuration. On a follower the
// request is forwarded to the leader. The leader then asks the removed member,
// best effort, to leave gossip, and does not re-add it from gossip for a
// minute; a removed member that restarts and joins again comes back as a
// non-voter.
func (n *Node) Remove(ctx context.Context, id string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	if n.IsLeader() || n.rpc == nil {
		return n.removeLocal(ctx, id)
	}
	hold := time.Now().Add(noLeaderHold)
	var last error = ErrNoLeader
	for {
		if lid, addr := n.Leader(); lid != "" {
			resp, err := n.rpc.call(ctx, addr, &rpcRequest{Op: opRemove, ID: id, From: n.id})
			switch {
			case err == nil:
				rerr := errFromResponse(resp)
				if !errors.Is(rerr, ErrNotLeader) {
					if rerr != nil {
						return fmt.Errorf("remove %s: %w", id, rerr)
					}
					return nil
				}
				last = rerr
			case errors.Is(err, errNotSent):
				last = err
			default:
				return fmt.Errorf("remove %s: %w: %w", id, ErrUnavailable, err)
			}
		} else if n.IsLeader() {
			return n.removeLocal(ctx, id)
		}
		if time.Now().After(hold) || ctx.Err() != nil {
			return fmt.Errorf("remove %s: %w", id, noLeaderErr(last))
		}
		select {
		case <-ctx.Done():
		case <-n.closed:
			return ErrClosed
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (n *Node) removeLocal(ctx context.Context, id string) error {
	var addr string
	for _, s := range n.raftServers() {
		if string(s.ID) == id {
			addr = string(s.Address)
		}
	}
	if addr == "" && n.IsLeader() {
		return fmt.Errorf("remove %s: %w", id, ErrNotMember)
	}
	n.mu.Lock()
	n.tombs[id] = time.Now()
	n.mu.Unlock()
	err := n.membership(ctx, "remove "+id, func(t time.Duration) raft.Future {
		return n.raft.RemoveServer(raft.ServerID(id), 0, t)
	})
	if err != nil {
		return err
	}
	n.log.Info("removed a cluster member", "id", id)
	if id != n.id && n.rpc != nil {
		lctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
		defer cancel()
		if _, err := n.rpc.call(lctx, addr, &rpcRequest{Op: opLeave, From: n.id}); err != nil {
			n.log.Debug("removed member not told to leave gossip", "id", id, "err", err)
		}
	}
	return nil
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

// raftServers is the latest Raft configuration (possibly not yet committed).
func (n *Node) raftServers() []raft.Server {
	fut := n.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil
	}
	return fut.Configuration().Servers
}

// Members merges the Raft configuration and the gossip view, sorted by ID.
func (n *Node) Members() []Member {
	leaderID, _ := n.Leader()
	byID := map[string]*Member{}
	var out []*Member
	for _, s := range n.raftServers() {
		suf := "nonvoter"
		if s.Suffrage == raft.Voter {
			suf = "voter"
		}
		m := &Member{ID: string(s.ID), Address: string(s.Address), Suffrage: suf, Leader: string(s.ID) == leaderID}
		byID[m.ID] = m
		out = append(out, m)
	}
	if n.gossip != nil {
		for _, g := range n.gossip.members() {
			m, ok := byID[g.Name]
			if !ok {
				m = &Member{ID: g.Name, Address: g.Meta.Raft}
				byID[g.Name] = m
				out = append(out, m)
			}
			m.Gossip, m.GossipAddress = g.State, g.Addr
		}
	}
	if n.obs != nil {
		for id, r := range n.obs.reportInfo() {
			if m, ok := byID[id]; ok {
				m.LastReport, m.ReportSeq, m.ReportBackends = r.Received, r.Seq, r.Backends
			}
		}
	}
	slices.SortFunc(out, func(a, b *Member) int { return cmp.Compare(a.ID, b.ID) })
	res := make([]Member, len(out))
	for i, m := range out {
		res[i] = *m
	}
	return res
}

// GossipAddr returns the gossip address other nodes join, or "" without gossip.
func (n *Node) GossipAddr() string {
	if n.gossip == nil {
		return ""
	}
	return n.gossip.localAddr()
}

// Join contacts the gossip layer of the members at addrs (any one is enough;
// the own address is allowed). It returns an error when none answered. The
// leader then adds this node (or, when this node leads, the others) as a
// non-voter. Joining never bootstraps.
func (n *Node) Join(ctx context.Context, addrs []string) error {
	if n.gossip == nil {
		return errors.New("join: this node has no gossip layer (no gossip bind address)")
	}
	if len(addrs) == 0 {
		return errors.New("join: no addresses")
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := n.gossip.join(addrs)
		done <- result{k, err}
	}()
	select {
	case r := <-done:
		if r.n == 0 {
			return fmt.Errorf("join %v: no member answered: %w", addrs, r.err)
		}
		n.wake()
		return nil
	case <-ctx.Done():
		return fmt.Errorf("join %v: %w", addrs, ctx.Err())
	}
}

// Leave prepares a graceful shutdown: the leader hands its leadership to
// another voter first (an election costs about a second, a transfer a few
// milliseconds), then the node leaves gossip, which makes the leader remove it
// from the Raft configuration. Call Close afterwards. A node that restarts
// later comes back through join as a non-voter and is promoted again.
// For a restart that keeps the membership, call Close alone.
func (n *Node) Leave() error {
	var errs []error
	if n.IsLeader() && n.otherVoters() > 0 {
		fut := n.raft.LeadershipTransfer()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.wait(ctx, fut); err != nil {
			errs = append(errs, fmt.Errorf("leadership transfer: %w", err))
		}
		cancel()
	}
	if n.gossip != nil {
		if err := n.gossip.leave(2 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("leave cluster: %w", err)
	}
	return nil
}

func (n *Node) otherVoters() int {
	k := 0
	for _, s := range n.raftServers() {
		if s.Suffrage == raft.Voter && string(s.ID) != n.id {
			k++
		}
	}
	return k
}

func (n *Node) wake() {
	select {
	case n.nudge <- struct{}{}:
	default:
	}
}

func (n *Node) isClosed() bool {
	select {
	case <-n.closed:
		return true
	default:
		return false
	}
}

// run is the node's background loop: initial join and rejoin, bootstrap_expect,
// and the leader's reconcile of gossip members into the Raft configuration.
// It exits when ctx is cancelled (Close).
func (n *Node) run(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(loopInterval)
	defer t.Stop()
	rec := &reconciler{n: n, since: map[string]time.Time{}}
	var nextJoin time.Time
	for {
		if n.gossip != nil && time.Now().After(nextJoin) {
			// Retry each second until another member answers, then now and
			// then while a Raft member is missing from gossip.
			wait := time.Second
			if addrs := n.rejoinAddrs(); len(addrs) > 0 {
				joined := n.aliveOthers() > 0
				if !joined || n.missingMembers() {
					n.joinInBackground(addrs)
				}
				if joined {
					wait = rejoinInterval/2 + rand.N(rejoinInterval)
				}
			}
			nextJoin = time.Now().Add(wait)
		}
		if n.gossip != nil {
			if !n.hasState.Load() && !n.noBootstrap.Load() {
				n.maybeBootstrap(ctx)
			}
			if n.IsLeader() {
				rec.reconcile(ctx)
			} else {
				rec.reset()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.nudge:
		}
	}
}

// rejoinAddrs is what the loop joins: the configured join addresses and the
// last gossip addresses of Raft members that gossip holds dead (not left), so
// a node started without join addresses (the one that bootstrapped) heals a
// partition too: memberlist stops probing dead members and never rejoins them
// by itself.
func (n *Node) rejoinAddrs() []string {
	addrs := slices.Clone(n.opts.Join)
	raftIDs := map[string]bool{}
	for _, s := range n.raftServers() {
		raftIDs[string(s.ID)] = true
	}
	for _, g := range n.gossip.members() {
		if g.State == GossipDead && g.Name != n.id && raftIDs[g.Name] && g.Addr != "" && !slices.Contains(addrs, g.Addr) {
			addrs = append(addrs, g.Addr)
		}
	}
	return addrs
}

// missingMembers reports whether a Raft member is not alive in gossip (or
// nobody else is), so the join addresses are worth contacting again.
func (n *Node) missingMembers() bool {
	alive := map[string]bool{}
	for _, g := range n.gossip.members() {
		if g.State == GossipAlive {
			alive[g.Name] = true
		}
	}
	if n.aliveOthers() == 0 {
		return true
	}
	for _, s := range n.raftServers() {
		if !alive[string(s.ID)] {
			return true
		}
	}
	return false
}

// maybeBootstrap implements bootstrap_expect as Consul and Nomad do: once
// BootstrapExpect alive members with the same setting see each other and none
// of them has Raft state (asked over the cluster port), every one of them
// bootstraps the same configuration: all of them as voters, sorted by ID. A
// node that finds state anywhere never bootstraps; it waits to be added.
func (n *Node) maybeBootstrap(ctx context.Context) {
	if n.raft.LastIndex() > 0 {
		n.hasState.Store(true)
		return
	}
	if n.opts.BootstrapExpect < 2 {
		return
	}
	var peers []gossipMember
	for _, g := range n.gossip.members() {
		if g.State != GossipAlive || g.Meta.ID == "" {
			continue
		}
		if g.Meta.Expect != n.opts.BootstrapExpect {
			if g.Name != n.id && g.Meta.Expect > 0 {
				n.log.Warn("member has a different bootstrap_expect; not bootstrapping with it", "id", g.Name, "its", g.Meta.Expect, "ours", n.opts.BootstrapExpect)
			}
			continue
		}
		peers = append(peers, g)
	}
	if len(peers) < n.opts.BootstrapExpect {
		return
	}
	var conf raft.Configuration
	for _, p := range peers {
		if p.Name != n.id {
			st, err := n.peerStatus(ctx, p.Meta.Raft, statusTimeout)
			if err != nil {
				n.log.Debug("bootstrap: peer status", "id", p.Name, "err", err)
				return
			}
			if st.HasState {
				n.log.Info("bootstrap: a member already has cluster state; waiting to be added", "id", p.Name)
				n.noBootstrap.Store(true)
				return
			}
		}
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: raft.Voter, ID: raft.ServerID(p.Name), Address: raft.ServerAddress(p.Meta.Raft),
		})
	}
	slices.SortFunc(conf.Servers, func(a, b raft.Server) int { return cmp.Compare(a.ID, b.ID) })
	if n.raft.LastIndex() > 0 {
		n.hasState.Store(true)
		return
	}
	err := n.raft.BootstrapCluster(conf).Error()
	n.noBootstrap.Store(true)
	if err != nil {
		n.log.Info("bootstrap: not bootstrapping", "err", err)
		return
	}
	ids := make([]string, len(conf.Servers))
	for i, s := range conf.Servers {
		ids[i] = string(s.ID)
	}
	n.log.Info("bootstrapped a new cluster", "voters", ids)
}

func (n *Node) aliveOthers() int {
	k := 0
	for _, g := range n.gossip.members() {
		if g.State == GossipAlive && g.Name != n.id {
			k++
		}
	}
	return k
}

// joinInBackground joins addrs without holding up the loop or Close: a
// blackholed address takes memberlist's TCP timeout. At most one join runs at
// a time.
func (n *Node) joinInBackground(addrs []string) {
	if !n.joining.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer n.joining.Store(false)
		if _, err := n.gossip.join(addrs); err != nil && !n.isClosed() {
			n.log.Debug("join: some addresses did not answer", "join", addrs, "err", err)
		}
		n.wake()
	}()
}
