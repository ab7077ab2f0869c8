package proxy

import (
	"time"

	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/internal/latency"
)

// ServerStats is GET /servers/{name}/stats, in gobetween 0.8's shape. rx is bytes
// received from backends (sent to clients), tx bytes sent to backends.
type ServerStats struct {
	ActiveConnections  int64          `json:"active_connections"`
	TotalConnections   int64          `json:"total_connections"`
	RefusedConnections int64          `json:"refused_connections"`
	RxTotal            uint64         `json:"rx_total"`
	TxTotal            uint64         `json:"tx_total"`
	RxSecond           uint64         `json:"rx_second"`
	TxSecond           uint64         `json:"tx_second"`
	Backends           []BackendStats `json:"backends"`
	// Bind is the address the server listens on (after Options.ServersHost),
	// empty when it is not listening.
	Bind string `json:"bind,omitempty"`
	// Discovery is how the last fetch of the server's discovery went; absent
	// when its discovery cannot say.
	Discovery *DiscoveryStats `json:"discovery,omitempty"`
	// Refusals splits RefusedConnections by reason and counts the clients the
	// access rules denied. For metrics; not in the 0.8 JSON.
	Refusals Refusals `json:"-"`
	// CheckLatency is the duration of the server's active health checks, of
	// every backend. For metrics.
	CheckLatency Histogram `json:"-"`
	// UDP counts what a udp server lost; nil for a tcp or tls server. For
	// metrics.
	UDP *UDPStats `json:"-"`
}

// UDPStats counts what a UDP server's relay lost since the server started.
type UDPStats struct {
	// Dropped datagrams: a send that would block, a session still dialing its
	// backend, a reply that could not be sent.
	Dropped uint64
	// Evicted sessions: ended to make room in a full session table.
	Evicted uint64
}

// Refusals counts a server's refused clients by reason. Every reason but
// Access adds to ServerStats.RefusedConnections, which is their sum.
type Refusals struct {
	MaxConnections int64 // the server's max_connections was reached (tcp)
	NoBackend      int64 // no healthy backend in rotation
	BackendsFull   int64 // every backend at its own max_connections
	SNI            int64 // no backend for the client's server name
	DialsFailed    int64 // every backend tried failed to connect
	Other          int64 // this host ran out of ports or descriptors, and the like
	// Access counts the clients the access rules denied: tcp connections,
	// and for udp the datagrams of denied clients (they never get a session).
	Access int64
}

// Histogram is a snapshot of a latency histogram in seconds (cumulative
// buckets, as Prometheus wants them).
type Histogram = latency.Snapshot

// DiscoveryStats is the last fetch of a server's discovery. A zero Fetched
// means no fetch has completed yet.
type DiscoveryStats struct {
	Fetched  time.Time `json:"fetched,omitzero"`
	OK       bool      `json:"ok"`
	Backends int       `json:"backends"` // what the fetch returned, before the fail policy
	Error    string    `json:"error,omitempty"`
	// Fetches and Errors count this node's fetches since the server started,
	// and of those the failed ones. A cluster-scope discovery fetches on the
	// leader only and reports 0 here.
	Fetches uint64 `json:"fetches"`
	Errors  uint64 `json:"errors"`
}

// BackendStats is one backend of ServerStats.
type BackendStats struct {
	config.Backend
	Stats BackendCounters `json:"stats"`
}

// BackendCounters are one backend's live state and counters.
type BackendCounters struct {
	// Live is the cluster verdict (Cluster.Healthy): whether this node routes
	// to the backend, drain and disable aside.
	Live               bool   `json:"live"`
	Discovered         bool   `json:"discovered"`
	TotalConnections   int64  `json:"total_connections"`
	ActiveConnections  int64  `json:"active_connections"`
	RefusedConnections int64  `json:"refused_connections"`
	Rx                 uint64 `json:"rx"`
	Tx                 uint64 `json:"tx"`
	RxSecond           uint64 `json:"rx_second"`
	TxSecond           uint64 `json:"tx_second"`
	// State is the administrative state: BackendDrain, BackendDisable, or
	// empty when the backend is in rotation.
	State string `json:"state,omitempty"`
	// Cluster is the backend as the cluster sees it. Live above is the same
	// cluster verdict: what this node routes by.
	Cluster BackendCluster `json:"cluster"`
	// DialFailures counts the failed attempts to connect to the backend,
	// those that failed for a reason of this host (no free port) included,
	// which RefusedConnections leaves out. For metrics.
	DialFailures int64 `json:"-"`
	// ChecksPassed and ChecksFailed count this node's active health checks
	// of the backend. For metrics.
	ChecksPassed int64 `json:"-"`
	ChecksFailed int64 `json:"-"`
}

// BackendCluster is one backend across the live nodes of the cluster, from this
// node's own state and the other nodes' last reports.
type BackendCluster struct {
	// ActiveConnections is this node's open and in-flight connections to the
	// backend plus the other live nodes' last reports.
	ActiveConnections int64 `json:"active_connections"`
	// RxSecond and TxSecond are this node's bytes per second received from
	// and sent to the backend plus the other live nodes' last reports.
	RxSecond uint64 `json:"rx_second"`
	TxSecond uint64 `json:"tx_second"`
	// Healthy is the cluster verdict under Policy.
	Healthy bool `json:"healthy"`
	// Policy is the server's healthcheck.cluster_verdict.
	Policy string `json:"policy"`
	// Nodes is each reporting node's own verdict, this node (Options.NodeID)
	// included.
	Nodes map[string]bool `json:"nodes"`
}
