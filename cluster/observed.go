package cluster

import (
	"slices"
	"time"
)

// Observation is what this node reports about one backend of one of its
// servers. The observer passed to SetObserver returns one per (Server,
// Backend); a pair given twice is reported once (the first).
type Observation struct {
	Server  string // server name
	Backend string // "host:port"
	Healthy bool   // this node's own health verdict
	Conns   int64  // open plus in-flight connections from this node
	RxBps   uint64
	TxBps   uint64
	// Capped marks a backend with max_connections: a change of its Conns is
	// published at once (within the fast check interval), not at the next report.
	Capped bool
}

// PeerReport is one other node's last report about one backend.
type PeerReport struct {
	NodeID       string
	Healthy      bool
	Conns        int64
	RxBps, TxBps uint64
}

// ObservedSum sums the counted peers' reports about one backend.
type ObservedSum struct {
	Nodes        int // peers that reported the backend (they run its server and check it)
	Healthy      int // of those, how many report it healthy
	Conns        int64
	RxBps, TxBps uint64
}

// OriginReport describes the last report counted from one peer.
type OriginReport struct {
	NodeID   string
	Seq      uint64
	Received time.Time
	Backends int
}

// GossipStats counts this node's gossip traffic and reports.
type GossipStats struct {
	BytesSent, BytesReceived     uint64 // all memberlist traffic of this node, UDP and TCP
	ReportsSent, ReportsReceived uint64 // reports published / accepted
	Seq                          uint64 // last published sequence number
	LastReport                   time.Time
}

// ObservedView is an immutable snapshot of the other members' last reports
// that count: the member is alive in gossip and its report arrived within
// three of its own report intervals. Its methods are safe for concurrent use;
// the zero value and a nil view are empty.
type ObservedView struct {
	sums    map[uint64]ObservedSum
	reports map[uint64][]PeerReport // sorted by NodeID
	origins []OriginReport          // sorted by NodeID
}

var emptyView = &ObservedView{}

// Sum returns the sum of the counted peers' reports about backend of server.
// It does not allocate.
func (v *ObservedView) Sum(server, backend string) ObservedSum {
	if v == nil {
		return ObservedSum{}
	}
	return v.sums[backendKey(server, backend)]
}

// Reports returns the counted peers' reports about backend of server, sorted by
// NodeID. The slice is the caller's.
func (v *ObservedView) Reports(server, backend string) []PeerReport {
	if v == nil {
		return nil
	}
	return slices.Clone(v.reports[backendKey(server, backend)])
}

// Origins returns the counted peers and their last reports, sorted by NodeID.
// The slice is the caller's.
func (v *ObservedView) Origins() []OriginReport {
	if v == nil {
		return nil
	}
	return slices.Clone(v.origins)
}

// backendKey is FNV-1a 64 of server+"\x00"+backend: the key of a backend in
// reports, the same in every process. Computed in place, without allocating.
func backendKey(server, backend string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(server); i++ {
		h ^= uint64(server[i])
		h *= prime
	}
	h *= prime // the zero separator: h ^= 0 is a no-op
	for i := 0; i < len(backend); i++ {
		h ^= uint64(backend[i])
		h *= prime
	}
	return h
}

// buildView sums the counted reports. reps must be sorted by origin.
func buildView(reps []countedReport) *ObservedView {
	if len(reps) == 0 {
		return emptyView
	}
	n := 0
	for _, r := range reps {
		n = max(n, len(r.rep.entries))
	}
	v := &ObservedView{
		sums:    make(map[uint64]ObservedSum, n),
		reports: make(map[uint64][]PeerReport, n),
		origins: make([]OriginReport, 0, len(reps)),
	}
	for _, r := range reps {
		v.origins = append(v.origins, OriginReport{
			NodeID: r.rep.origin, Seq: r.rep.seq, Received: r.received, Backends: len(r.rep.entries),
		})
		for _, e := range r.rep.entries {
			s := v.sums[e.key]
			s.Nodes++
			if e.healthy {
				s.Healthy++
			}
			s.Conns += e.conns
			s.RxBps += e.rx
			s.TxBps += e.tx
			v.sums[e.key] = s
			v.reports[e.key] = append(v.reports[e.key], PeerReport{
				NodeID: r.rep.origin, Healthy: e.healthy, Conns: e.conns, RxBps: e.rx, TxBps: e.tx,
			})
		}
	}
	return v
}

// countedReport is a report that counts in the view, with its arrival time.
type countedReport struct {
	rep      *report
	received time.Time
}
