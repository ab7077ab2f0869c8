package api

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gobetween/gobetween/cluster"
)

// ClusterMetricsSource gives this node's Raft and gossip state at scrape time
// (*cluster.Node). It must be safe for concurrent use.
type ClusterMetricsSource interface {
	Metrics() cluster.NodeMetrics
}

// clusterCollector exposes the node's Raft and gossip state. A single node
// (no [cluster] section) is a one-voter Raft cluster: it exports the Raft
// metrics, and no gossip ones.
//
// The Raft state is one gauge per state, 1 for the current one, so that a
// query needs no magic numbers (gobetween_cluster_raft_state{state="leader"} == 1).
type clusterCollector struct {
	node ClusterMetricsSource

	raftState     *prometheus.Desc
	term          *prometheus.Desc
	lastLogIndex  *prometheus.Desc
	commitIndex   *prometheus.Desc
	appliedIndex  *prometheus.Desc
	lastContact   *prometheus.Desc
	hasLeader     *prometheus.Desc
	leaderChanges *prometheus.Desc
	servers       *prometheus.Desc
	apply         *prometheus.Desc

	gossipMembers  *prometheus.Desc
	gossipSent     *prometheus.Desc
	gossipReceived *prometheus.Desc
	reportsSent    *prometheus.Desc
	reportsRecv    *prometheus.Desc
}

func newClusterCollector(node ClusterMetricsSource) *clusterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("gobetween_cluster_"+name, help, labels, nil)
	}
	return &clusterCollector{
		node: node,

		raftState:     d("raft_state", "1 for this node's current Raft state, 0 for the others.", "state"),
		term:          d("raft_term", "Current Raft term."),
		lastLogIndex:  d("raft_last_log_index", "Index of the last entry in this node's Raft log."),
		commitIndex:   d("raft_commit_index", "Index of the last committed Raft entry this node knows."),
		appliedIndex:  d("raft_applied_index", "Index of the last Raft entry applied to this node's desired state."),
		lastContact:   d("raft_last_contact_seconds", "Seconds since this follower last heard from its leader; absent on the leader and before any contact."),
		hasLeader:     d("raft_has_leader", "1 if this node knows a leader, else 0."),
		leaderChanges: d("raft_leader_changes_total", "Leaders this node learned of since it started: the first one and every election after it."),
		servers:       d("raft_servers", "Servers in the Raft configuration, by suffrage.", "suffrage"),
		apply:         d("raft_apply_duration_seconds", "Time committed writes took to apply: on the leader from proposal, on a follower from forwarding the write."),

		gossipMembers:  d("gossip_members", "Gossip members this node knows, itself included, by state (suspect stays 0: memberlist does not expose it).", "state"),
		gossipSent:     d("gossip_sent_bytes_total", "Bytes this node sent on the gossip port, UDP and TCP."),
		gossipReceived: d("gossip_received_bytes_total", "Bytes this node received on the gossip port, UDP and TCP."),
		reportsSent:    d("observed_reports_sent_total", "Observed-state reports (health, connections, bytes/s) this node published."),
		reportsRecv:    d("observed_reports_received_total", "Observed-state reports of other nodes this node accepted."),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.raftState, c.term, c.lastLogIndex, c.commitIndex, c.appliedIndex, c.lastContact,
		c.hasLeader, c.leaderChanges, c.servers, c.apply,
		c.gossipMembers, c.gossipSent, c.gossipReceived, c.reportsSent, c.reportsRecv,
	} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	e := emitter(ch)
	m := c.node.Metrics()
	for _, s := range cluster.RaftStates {
		e.emit(c.raftState, gauge, boolValue(m.State == s), s)
	}
	e.emit(c.term, gauge, float64(m.Term))
	e.emit(c.lastLogIndex, gauge, float64(m.LastLogIndex))
	e.emit(c.commitIndex, gauge, float64(m.CommitIndex))
	e.emit(c.appliedIndex, gauge, float64(m.AppliedIndex))
	if !m.LastContact.IsZero() {
		e.emit(c.lastContact, gauge, max(time.Since(m.LastContact).Seconds(), 0))
	}
	e.emit(c.hasLeader, gauge, boolValue(m.Leader != ""))
	e.emit(c.leaderChanges, counter, float64(m.LeaderChanges))
	e.emit(c.servers, gauge, float64(m.Voters), "voter")
	e.emit(c.servers, gauge, float64(m.Nonvoters), "nonvoter")
	if m.Apply.Buckets != nil {
		e.histogram(c.apply, m.Apply.Count, m.Apply.Sum, m.Apply.Buckets)
	}
	if m.Gossip == nil {
		return
	}
	for _, s := range cluster.GossipStates {
		e.emit(c.gossipMembers, gauge, float64(m.Gossip[s]), s)
	}
	e.emit(c.gossipSent, counter, float64(m.Traffic.BytesSent))
	e.emit(c.gossipReceived, counter, float64(m.Traffic.BytesReceived))
	e.emit(c.reportsSent, counter, float64(m.Traffic.ReportsSent))
	e.emit(c.reportsRecv, counter, float64(m.Traffic.ReportsReceived))
}
