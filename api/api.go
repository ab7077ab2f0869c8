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
	Dump   func() *config.Config
	Info   Info
	Logger *slog.Logger
	Clock  func() time.Time
}

// maxBodyBytes bounds a request body; a server definition is a few KiB.
const maxBodyBytes = 1 << 20

// NewHandler returns the REST API router. Middlewares, outermost first: panic
// recovery (so that even a panic in another middleware answers 500), CORS (a
// preflight carries no credentials, so it must be answered before authentication),
// then basic authentication for every route except GET /ping.
func NewHandler(opts Options) http.Handler {
	h := newHandlers(opts)
	r := chi.NewRouter()
	r.Use(recoverer(h.logger))
	if opts.Config.Cors {
		r.Use(cors)
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	})

	r.Get("/ping", h.ping)
	r.Group(func(r chi.Router) {
		if opts.Config.BasicAuth != nil {
			r.Use(basicAuth(*opts.Config.BasicAuth))
		}
		r.Get("/", h.root)
		r.Get("/dump", h.dump)
		r.Get("/servers", h.listServers)
		r.Get("/servers/{name}", h.getServer)
		r.Post("/servers/{name}", h.createServer)
		r.Delete("/servers/{name}", h.deleteServer)
		r.Get("/servers/{name}/stats", h.serverStats)
	})
	return r
}
