// Package api serves gobetween's REST API (gobetween 0.8 paths and JSON shapes, with
// correct status codes), the Prometheus /metrics endpoint and the pprof profiler,
// each on its own listener and its own router.
//
// The API reads and writes the desired state through Store and reads live counters
// through StatsSource; both are declared here, where they are consumed, and
// implemented by the wiring in cmd (locally now, through the replicated log later).
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

// Store is the desired state the API reads and writes. On a single node it is local;
// once writes go through a replicated log they may be forwarded, fail for lack of a
// leader, or become visible to reads only after they are applied. The API therefore
// keeps every write behind this seam, turns every returned error into a response,
// and assumes no effect of a write beyond what a method documents.
//
// Implementations must be safe for concurrent use: handlers call them from many
// goroutines at once.
type Store interface {
	// Servers returns the normalised server definitions by name. The caller may
	// read but not modify the values.
	Servers() map[string]config.Server
	// Server returns one normalised server definition.
	Server(name string) (config.Server, bool)
	// CreateServer adds a server that was decoded and normalised by the caller.
	// It returns an error wrapping ErrExists if the name is taken and an error
	// wrapping ErrConflict if the definition clashes with running state (a port in
	// use, for example).
	CreateServer(ctx context.Context, name string, s config.Server) error
	// DeleteServer removes a server; it returns an error wrapping ErrNotFound if
	// the name is unknown.
	DeleteServer(ctx context.Context, name string) error
	// ServerInfo returns one server's definition with its origin and revision,
	// read together so that an ETag always describes the body it comes with.
	ServerInfo(name string) (ServerInfo, bool)
	// UpdateServer replaces a server's definition, decoded and normalised by the
	// caller, and returns the revision of the change. ifRevision 0 means
	// unconditional; otherwise the write happens only if the server's revision is
	// still ifRevision, else the error wraps ErrConflict. An unknown name wraps
	// ErrNotFound; a definition that clashes with running state wraps ErrConflict.
	UpdateServer(ctx context.Context, name string, s config.Server, ifRevision uint64) (revision uint64, err error)
	// SetBackendState sets a backend's administrative state (action is
	// BackendDrain, BackendDisable or BackendEnable; enable clears the override)
	// and returns the revision of the change. backend is host:port as
	// net.JoinHostPort writes it. An unknown server wraps ErrNotFound. A backend
	// the server does not currently list is accepted: discovery may bring it back.
	SetBackendState(ctx context.Context, server, backend, action string) (revision uint64, err error)
	// BackendStates returns a server's backend overrides, host:port -> BackendDrain
	// or BackendDisable; enabled backends are absent. The caller owns the map.
	BackendStates(server string) map[string]string
}

// ServerInfo is a server's definition with its place in the log.
type ServerInfo struct {
	Server config.Server
	// Origin is OriginAPI or the node's config source: OriginConfig (a file),
	// "url" or "consul".
	Origin string
	// Revision is the log index of the server's last change; 0 if unknown.
	Revision uint64
	// Updated is when the last change was proposed; zero if unknown.
	Updated time.Time
}

// Origins of a server definition.
const (
	OriginConfig = "config" // a node's config source
	OriginAPI    = "api"    // the REST API
)

// Backend administrative actions; drain and disable are also the stored states.
const (
	BackendDrain   = "drain"   // no new connections, open ones finish
	BackendDisable = "disable" // no new connections; open ones are the proxy's business
	BackendEnable  = "enable"  // back in rotation: clears the override
)

// Cluster is this node's view of the cluster and its membership operations. It
// must be safe for concurrent use. Errors wrap ErrUnavailable when the operation
// needs a leader or peers that cannot be reached now (503), ErrNotFound for an
// unknown member (404).
type Cluster interface {
	Status() ClusterStatus
	// Join asks the cluster reachable at any of addrs (gossip host:port) to let
	// this node in, or this node's cluster to take in the nodes at addrs.
	Join(ctx context.Context, addrs []string) error
	// RemoveMember removes a member from Raft and the gossip layer.
	RemoveMember(ctx context.Context, id string) error
	// Health is nil while this node's data plane serves. A node without quorum
	// still serves its last applied state, so it is healthy: keepalived must not
	// move a virtual IP away from it for that.
	Health() error
	// Ready is nil when this node knows a leader and has applied the log up to the
	// leader's commit index as known to it: an orchestrator may route API writes
	// and reads to it.
	Ready() error
}

// ClusterStatus is GET /cluster.
type ClusterStatus struct {
	NodeID   string `json:"node_id"`
	LeaderID string `json:"leader_id"` // empty without a leader
	// Revision is the last log index this node has applied.
	Revision uint64          `json:"revision"`
	Members  []ClusterMember `json:"members"`
	// Gossip is this node's traffic on the gossip layer; absent on a node
	// without one.
	Gossip *GossipStatus `json:"gossip,omitempty"`
}

// GossipStatus counts this node's gossip traffic since it started.
type GossipStatus struct {
	BytesSent       uint64 `json:"bytes_sent"`
	BytesReceived   uint64 `json:"bytes_received"`
	ReportsSent     uint64 `json:"reports_sent"`     // observed-state reports published
	ReportsReceived uint64 `json:"reports_received"` // other nodes' reports accepted
}

// ClusterMember is one node as Raft and gossip see it.
type ClusterMember struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Raft    string `json:"raft"`   // "leader", "voter", "nonvoter" or "none"
	Gossip  string `json:"gossip"` // "alive", "suspect", "dead", "left" or "none"
	// LastReport is when this node last received the member's observed-state
	// report (for this node itself: when it last published one); ReportSeq is
	// that report's sequence number and ReportBackends how many backends it
	// covered.
	LastReport     *time.Time `json:"last_report,omitempty"`
	ReportSeq      uint64     `json:"report_seq,omitempty"`
	ReportBackends int        `json:"report_backends,omitempty"`
}

// Sentinels a Store wraps so that the API can answer with the right status code.
var (
	ErrExists   = errors.New("server already exists") // 409
	ErrNotFound = errors.New("server not found")      // 404
	ErrConflict = errors.New("conflict")              // 409, e.g. a port in use
	// ErrUnsupported: a valid definition this node cannot run (422), e.g. a
	// feature whose runtime is not built in.
	ErrUnsupported = errors.New("unsupported")
	// ErrUnavailable: the write cannot be committed now, e.g. no Raft leader (503).
	ErrUnavailable = errors.New("unavailable")
)

// StatsSource gives the live counters of the servers running on this node. It must be
// safe for concurrent use; the metrics collector calls it at scrape time.
type StatsSource interface {
	// Stats returns a snapshot of one server's counters; the caller owns it.
	Stats(name string) (proxy.ServerStats, bool)
	// Names lists the servers that have counters.
	Names() []string
}

// Info is what GET / reports besides the clock.
type Info struct {
	Pid       int
	StartTime time.Time
	Version   string
	Source    ConfigSource
}

// ConfigSource names where the configuration came from, in gobetween 0.8's shape:
// {"kind":"file","path":...}, {"kind":"url","url":...} or
// {"kind":"consul","host":...,"key":...}.
type ConfigSource struct {
	Kind string `json:"kind"`
	Path string `json:"path,omitempty"`
	URL  string `json:"url,omitempty"`
	Host string `json:"host,omitempty"`
	Key  string `json:"key,omitempty"`
}

// Options configure the REST API. Store, Stats and Dump are required; a nil Defaults
// means empty defaults, a nil Logger discards, a nil Clock is time.Now.
type Options struct {
	Config config.Api
	Store  Store
	Stats  StatsSource
	// Defaults returns the [defaults] section that POSTed servers are normalised
	// with, read at every request so that a reload is seen.
	Defaults func() config.ConnectionOptions
	// Dump returns the effective configuration (globals and current servers) for
	// GET /dump. The API redacts it; the function need not.
	Dump func() *config.Config
	// Cluster serves the cluster endpoints, /health and /ready. Nil: the cluster
	// endpoints answer 404 "not clustered", /health and /ready answer 200.
	Cluster Cluster
	Info    Info
	Logger  *slog.Logger
	Clock   func() time.Time
}

// maxBodyBytes bounds a request body; a server definition is a few KiB.
const maxBodyBytes = 1 << 20

// NewHandler returns the REST API router. Middlewares, outermost first: panic
// recovery (so that even a panic in another middleware answers 500), CORS (a
// preflight carries no credentials, so it must be answered before authentication)
// or, without CORS, the refusal of cross-origin browser writes,
// then basic authentication for every route except GET /ping and GET /health
// (keepalived's check script carries no credentials).
func NewHandler(opts Options) http.Handler {
	h := newHandlers(opts)
	r := chi.NewRouter()
	r.Use(recoverer(h.logger))
	if opts.Config.Cors {
		r.Use(cors)
	} else {
		r.Use(sameOriginWrites)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})

	r.Get("/ping", h.ping)
	r.Get("/health", h.health)
	r.Group(func(r chi.Router) {
		if opts.Config.BasicAuth != nil {
			r.Use(basicAuth(*opts.Config.BasicAuth))
		}
		r.Get("/", h.root)
		r.Get("/dump", h.dump)
		r.Get("/servers", h.listServers)
		r.Get("/servers/{name}", h.getServer)
		r.Post("/servers/{name}", h.createServer)
		r.Put("/servers/{name}", h.updateServer)
		r.Delete("/servers/{name}", h.deleteServer)
		r.Get("/servers/{name}/meta", h.serverMeta)
		r.Get("/servers/{name}/stats", h.serverStats)
		r.Post("/servers/{name}/backends/{backend}/{action}", h.backendAction)
		r.Get("/ready", h.ready)
		r.Get("/cluster", h.clusterStatus)
		r.Post("/cluster/join", h.clusterJoin)
		r.Delete("/cluster/members/{id}", h.clusterRemove)
		// The dashboard: /ui (redirects to /ui/), its files and GET /ui/events.
		mountUI(r, h)
	})
	return r
}
