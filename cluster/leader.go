package cluster

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// reconciler brings the Raft configuration in line with gossip on the leader,
// one change per round, as Nomad's and Consul's leaders do: an alive member not
// in the configuration is added as a non-voter; a non-voter that has been a
// member for promoteAfter and has caught up is promoted while the voters are
// fewer than MaxVoters; a member that left gossip gracefully is removed; a dead
// member is kept (no autopilot). After a promotion nothing else changes until
// the promoted node itself reports that it votes (or promoteAckTimeout passes):
// otherwise a leader lost right after the next change could leave the cluster
// waiting on a vote the promoted node does not know it has.
//
// It is used only from the node's background loop.
type reconciler struct {
	n     *Node
	since map[string]time.Time // first seen as a non-voter by this leader

	pending     string // promoted, not yet acknowledged
	pendingAddr string
	pendingAt   time.Time
}

func (r *reconciler) reset() {
	clear(r.since)
	r.pending = ""
}

func (r *reconciler) reconcile(ctx context.Context) {
	n := r.n
	servers := n.raftServers()
	if servers == nil {
		return
	}
	inCfg := map[string]raft.Server{}
	for _, s := range servers {
		inCfg[string(s.ID)] = s
	}
	if r.pending != "" {
		_, still := inCfg[r.pending]
		st, err := n.peerStatus(ctx, r.pendingAddr, statusTimeout)
		if still && (err != nil || !st.Voter) && time.Since(r.pendingAt) < promoteAckTimeout {
			return
		}
		r.pending = ""
	}

	members := n.gossip.members()
	slices.SortFunc(members, func(a, b gossipMember) int { return cmp.Compare(a.Name, b.Name) })
	byID := map[string]gossipMember{}
	for _, g := range members {
		byID[g.Name] = g
	}

	// A member that left gracefully is removed.
	for _, s := range servers {
		id := string(s.ID)
		if g, ok := byID[id]; ok && id != n.id && g.State == GossipLeft {
			r.change(ctx, "remove left member", id, func(t time.Duration) raft.Future {
				return n.raft.RemoveServer(s.ID, 0, t)
			})
			return
		}
	}

	// An alive member not in the configuration (or at a new address) is added.
	n.mu.Lock()
	for id, at := range n.tombs {
		if time.Since(at) > tombstoneFor {
			delete(n.tombs, id)
		}
	}
	tombs := make(map[string]bool, len(n.tombs))
	for id := range n.tombs {
		tombs[id] = true
	}
	n.mu.Unlock()
	for _, g := range members {
		if g.State != GossipAlive || g.Name == n.id || g.Meta.ID != g.Name || g.Meta.Raft == "" || tombs[g.Name] || g.Meta.Leaving {
			continue
		}
		id, addr := raft.ServerID(g.Name), raft.ServerAddress(g.Meta.Raft)
		if s, ok := inCfg[g.Name]; ok {
			if s.Address == addr {
				continue
			}
			// Same ID, new address: re-adding with the same suffrage updates it.
			r.change(ctx, "update member address", g.Name, func(t time.Duration) raft.Future {
				if s.Suffrage == raft.Voter {
					return n.raft.AddVoter(id, addr, 0, t)
				}
				return n.raft.AddNonvoter(id, addr, 0, t)
			})
			return
		}
		// Same address, new ID: the old entry goes first (never our own).
		for _, s := range servers {
			if s.Address == addr && s.ID != id && string(s.ID) != n.id {
				r.change(ctx, "remove member replaced at its address", string(s.ID), func(t time.Duration) raft.Future {
					return n.raft.RemoveServer(s.ID, 0, t)
				})
				return
			}
		}
		if r.change(ctx, "add non-voter", g.Name, func(t time.Duration) raft.Future {
			return n.raft.AddNonvoter(id, addr, 0, t)
		}) {
			r.since[g.Name] = time.Now()
		}
		return
	}

	// Promote a caught-up non-voter while under the voter cap.
	voters := 0
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters >= n.opts.MaxVoters {
		return
	}
	for _, s := range servers {
		id := string(s.ID)
		if s.Suffrage == raft.Voter {
			continue
		}
		if g, ok := byID[id]; !ok || g.State != GossipAlive {
			continue
		}
		first, ok := r.since[id]
		if !ok {
			r.since[id] = time.Now()
			continue
		}
		if time.Since(first) < promoteAfter {
			continue
		}
		st, err := n.peerStatus(ctx, string(s.Address), statusTimeout)
		if err != nil {
			continue
		}
		if last := n.raft.LastIndex(); last > st.AppliedIndex && last-st.AppliedIndex > maxPromoteLag {
			continue
		}
		if r.change(ctx, "promote to voter", id, func(t time.Duration) raft.Future {
			return n.raft.AddVoter(s.ID, s.Address, 0, t)
		}) {
			r.pending, r.pendingAddr, r.pendingAt = id, string(s.Address), time.Now()
			delete(r.since, id)
		}
		return
	}
}

// change runs one configuration change and waits for its commit.
func (r *reconciler) change(ctx context.Context, what, id string, f func(time.Duration) raft.Future) bool {
	ctx, cancel := context.WithTimeout(ctx, DefaultApplyTimeout)
	defer cancel()
	if err := r.n.wait(ctx, f(timeoutOf(ctx))); err != nil {
		r.n.log.Warn("cluster membership change failed", "change", what, "id", id, "err", err)
		return false
	}
	r.n.log.Info("cluster membership changed", "change", what, "id", id)
	return true
}
