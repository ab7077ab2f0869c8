package api

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gobetween/gobetween/proxy"
)

// The dashboard is plain HTML, CSS and JavaScript compiled into the binary: no
// build step, nothing fetched from elsewhere, the same page on every node.
//
//go:embed ui/index.html ui/app.js ui/style.css
var uiFiles embed.FS

// Dashboard limits. A tick builds at most one snapshot whatever the number of
// open pages (they share it), and the number of pages is bounded, so an open
// dashboard costs the node a small, fixed amount of work.
const (
	uiTick = time.Second
	// uiMaxStreams bounds the open event streams of one API; one more is
	// answered 503 rather than holding another goroutine.
	uiMaxStreams = 64
	// uiWriteTimeout drops a stream whose client stopped reading.
	uiWriteTimeout = 10 * time.Second
	// uiRetryMillis is how soon a browser reconnects a dropped stream.
	uiRetryMillis = 2000
)

// uiContentSecurityPolicy allows the page nothing but its own files and its own
// API: a value that slipped past escaping still could not load or send anything.
const uiContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type uiAsset struct {
	body        []byte
	contentType string
	etag        string
}

// dashboard serves /ui: the static page and its event stream.
type dashboard struct {
	h       *handlers
	assets  map[string]uiAsset // by path below /ui/; "" is the page
	streams chan struct{}      // one token per open event stream
	tick    time.Duration

	mu       sync.Mutex
	last     []byte // the latest snapshot, shared by every stream
	lastAt   time.Time
	shutdown sync.Map // *http.Server -> chan struct{}, closed when it shuts down
}

// mountUI registers the dashboard's routes on r, which must be the
// authenticated group: the page, its files and its stream all need the API's
// credentials, and the page's actions are the API's own POSTs.
func mountUI(r chi.Router, h *handlers) {
	d := newDashboard(h, uiTick)
	r.Get("/ui", d.redirect)
	r.Get("/ui/events", d.events)
	r.Get("/ui/*", d.asset)
}

func newDashboard(h *handlers, tick time.Duration) *dashboard {
	d := &dashboard{h: h, assets: map[string]uiAsset{}, streams: make(chan struct{}, uiMaxStreams), tick: tick}
	for path, ct := range map[string]string{
		"index.html": "text/html; charset=utf-8",
		"app.js":     "text/javascript; charset=utf-8",
		"style.css":  "text/css; charset=utf-8",
	} {
		body, err := uiFiles.ReadFile("ui/" + path)
		if err != nil {
			panic("api: dashboard file missing from the embed: " + path) // the go:embed line lists it
		}
		sum := sha256.Sum256(body)
		d.assets[path] = uiAsset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	d.assets[""] = d.assets["index.html"]
	return d
}

// redirect sends /ui to /ui/, so that the page's relative links resolve below it.
func (d *dashboard) redirect(w http.ResponseWriter, r *http.Request) {
	target := "/ui/"
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	http.Redirect(w, r, target, http.StatusMovedPermanently)
}

// asset serves one embedded file. Its ETag is a digest of its contents, and
// Cache-Control: no-cache makes the browser revalidate, so an upgraded node's
// page is picked up at the next load and an unchanged one costs a 304.
func (d *dashboard) asset(w http.ResponseWriter, r *http.Request) {
	a, ok := d.assets[chi.URLParam(r, "*")]
	if !ok {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", uiContentSecurityPolicy)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// events is GET /ui/events, a text/event-stream of "snapshot" events: one at
// once, then one per tick until the client goes away or the API shuts down.
// Each snapshot is the heartbeat too: a page that hears nothing for a few ticks
// knows its stream is dead, and EventSource reconnects by itself.
func (d *dashboard) events(w http.ResponseWriter, r *http.Request) {
	select {
	case d.streams <- struct{}{}:
		defer func() { <-d.streams }()
	default:
		writeError(w, http.StatusServiceUnavailable, "too many dashboard streams open on this node; close one or retry later")
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// A reverse proxy in front (nginx) would otherwise buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	send := func(prefix string) bool {
		var buf bytes.Buffer
		buf.WriteString(prefix)
		buf.WriteString("event: snapshot\ndata: ")
		buf.Write(d.snapshot()) // json.Marshal writes no newline, so one data line
		buf.WriteString("\n\n")
		// A deadline per write: a client that stops reading must not pin this
		// goroutine and its stream token. Recorders in tests cannot set one.
		_ = rc.SetWriteDeadline(time.Now().Add(uiWriteTimeout))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("retry: " + strconv.Itoa(uiRetryMillis) + "\n") {
		return
	}
	stop := d.shutdownOf(r)
	tick := time.NewTicker(d.tick)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-stop:
			return
		case <-tick.C:
			if !send("") {
				return
			}
		}
	}
}

// shutdownOf is closed when the http.Server serving r shuts down. Shutdown
// waits for requests in flight, and an event stream never ends by itself, so
// without this an open page would hold up every stop of the node by the full
// shutdown grace period. Nil (never closed) outside an http.Server.
func (d *dashboard) shutdownOf(r *http.Request) <-chan struct{} {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok || srv == nil {
		return nil
	}
	ch, loaded := d.shutdown.LoadOrStore(srv, make(chan struct{}))
	done := ch.(chan struct{})
	if !loaded {
		srv.RegisterOnShutdown(func() { close(done) })
	}
	return done
}

// uiSnapshot is one "snapshot" event: everything the page shows.
type uiSnapshot struct {
	Time    time.Time `json:"time"` // this node's clock: the page ages reports by it
	Version string    `json:"version"`
	// Cluster is GET /cluster; null on a node that is not clustered.
	Cluster *ClusterStatus `json:"cluster"`
	// Health and Ready are "ok" or why not (/health and /ready).
	Health  string     `json:"health"`
	Ready   string     `json:"ready"`
	Servers []uiServer `json:"servers"` // by name
}

// uiServer is a server's definition, summed up (no secrets), with its stats as
// GET /servers/{name}/stats gives them.
type uiServer struct {
	Name        string          `json:"name"`
	Bind        string          `json:"bind"`
	Protocol    string          `json:"protocol"`
	Balance     string          `json:"balance"`
	Discovery   string          `json:"discovery"`
	Healthcheck string          `json:"healthcheck"`
	Origin      string          `json:"origin"`
	Revision    uint64          `json:"revision"`
	Stats       serverStatsJSON `json:"stats"`
}

// snapshot returns the latest snapshot as JSON, building a new one when the
// shared one is older than half a tick: streams that tick at nearly the same
// time share one build.
func (d *dashboard) snapshot() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last != nil && time.Since(d.lastAt) < d.tick/2 {
		return d.last
	}
	b, err := json.Marshal(d.build())
	if err != nil {
		// Only strings, numbers and maps of them: a failure is a bug here.
		d.h.logger.Error("encode dashboard snapshot", "err", err)
		b, _ = json.Marshal(map[string]string{"error": "encode snapshot: " + err.Error()})
	}
	d.last, d.lastAt = b, time.Now()
	return b
}

func (d *dashboard) build() uiSnapshot {
	o := d.h.opts
	s := uiSnapshot{Time: d.h.now().UTC(), Version: o.Info.Version, Health: "ok", Ready: "ok", Servers: []uiServer{}}
	if c := o.Cluster; c != nil {
		st := c.Status()
		if st.Members == nil {
			st.Members = []ClusterMember{}
		}
		s.Cluster = &st
		if err := c.Health(); err != nil {
			s.Health = err.Error()
		}
		if err := c.Ready(); err != nil {
			s.Ready = err.Error()
		}
	}
	servers := o.Store.Servers()
	names := make([]string, 0, len(servers))
	for name := range servers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		def := servers[name]
		u := uiServer{Name: name, Bind: def.Bind, Protocol: def.Protocol, Balance: def.Balance}
		if def.Discovery != nil {
			u.Discovery = def.Discovery.Kind
		}
		if def.Healthcheck != nil {
			u.Healthcheck = def.Healthcheck.Kind
		}
		if info, ok := o.Store.ServerInfo(name); ok {
			u.Origin, u.Revision = info.Origin, info.Revision
		}
		var st proxy.ServerStats
		if o.Stats != nil {
			st, _ = o.Stats.Stats(name)
		}
		u.Stats = withStates(st, o.Store.BackendStates(name))
		s.Servers = append(s.Servers, u)
	}
	return s
}
