package cluster

import (
	"time"

	"github.com/hashicorp/raft"

	"github.com/gobetween/gobetween/internal/latency"
)

// NodeMetrics is a snapshot of this node's Raft and gossip state, for metrics.
// A single node (no gossip) is a one-voter Raft cluster: its Raft fields are
// filled, its gossip fields empty.
type NodeMetrics struct {
	ID string
	// State is the Raft state: "leader", "follower", "candidate" or
	// "shutdown" (RaftStates lists them).
	State string
	// Term is the current Raft term; LastLogIndex the last entry in the
	// log, CommitIndex the last committed one, AppliedIndex the last one
	// applied to the desired state.
	Term, LastLogIndex, CommitIndex, AppliedIndex uint64
	// LastContact is when this follower last heard from its leader; zero on
	// the leader and before any contact.
	LastContact time.Time
	// Leader is the ID of the leader this node knows, "" when none.
	Leader string
	// LeaderChanges counts the leaders this node learned of since Open: the
	// first one, and every change of leader (an election) after it.
	LeaderChanges uint64
	// Voters and Nonvoters count the servers of the latest Raft configuration.
	Voters, Nonvoters int
	// Apply is the time committed writes took: on the leader from being
	// proposed to being applied (the writes forwarded to it included); on a
	// follower, for the writes it forwarded, from forwarding to being applied
	// here. A write the state refused (ErrExists, …) was committed and counts.
	Apply Histogram
	// Gossip counts the gossip members by state (GossipAlive, GossipSuspect,
	// GossipDead, GossipLeft; this node included); nil without gossip. Every
	// state is present. memberlist v0.7 does not expose suspicion: a suspect
	// member counts as alive until it is declared dead, so GossipSuspect is 0.
	Gossip map[string]int
	// Traffic is the gossip traffic and reports (GossipStats); zero without
	// gossip.
	Traffic GossipStats
}

// RaftStates are the values of NodeMetrics.State.
var RaftStates = []string{"leader", "follower", "candidate", "shutdown"}

// GossipStates are the keys of NodeMetrics.Gossip.
var GossipStates = []string{GossipAlive, GossipSuspect, GossipDead, GossipLeft}

// Histogram is a snapshot of a latency histogram in seconds (cumulative
// buckets, as Prometheus wants them).
type Histogram = latency.Snapshot

// Metrics returns a snapshot of this node's Raft and gossip state. It takes
// no lock a write waits for; safe for concurrent use, also after Close.
func (n *Node) Metrics() NodeMetrics {
	leader, _ := n.Leader()
	m := NodeMetrics{
		ID:            n.id,
		State:         raftStateName(n.raft.State()),
		Term:          n.raft.CurrentTerm(),
		LastLogIndex:  n.raft.LastIndex(),
		CommitIndex:   n.raft.CommitIndex(),
		AppliedIndex:  n.raft.AppliedIndex(),
		Leader:        leader,
		LeaderChanges: n.leaderChanges.Load(),
		Apply:         n.applyLatency.Snapshot(),
	}
	if m.State != "leader" {
		m.LastContact = n.raft.LastContact()
	}
	for _, s := range n.raftServers() {
		if s.Suffrage == raft.Voter {
			m.Voters++
		} else {
			m.Nonvoters++
		}
	}
	if n.gossip != nil {
		m.Gossip = make(map[string]int, len(GossipStates))
		for _, s := range GossipStates {
			m.Gossip[s] = 0
		}
		for _, g := range n.gossip.members() {
			m.Gossip[g.State]++
		}
		m.Traffic = n.GossipStats()
	}
	return m
}

func raftStateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Candidate:
		return "candidate"
	case raft.Shutdown:
		return "shutdown"
	}
	return "follower"
}

// countLeaderChanges registers a Raft observer that counts the leaders this
// node learns of. The count happens in the filter, on raft's goroutine: an
// atomic add, nothing queued, nothing to drain.
func (n *Node) countLeaderChanges() {
	n.raft.RegisterObserver(raft.NewObserver(nil, false, func(o *raft.Observation) bool {
		if l, ok := o.Data.(raft.LeaderObservation); ok && l.LeaderID != "" {
			n.leaderChanges.Add(1)
		}
		return false
	}))
}
