package api

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

type handlers struct {
	opts   Options
	logger *slog.Logger
	now    func() time.Time
}

func newHandlers(opts Options) *handlers {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := opts.Clock
	if now == nil {
		now = time.Now
	}
	return &handlers{opts: opts, logger: logger.With("component", "api"), now: now}
}

func (h *handlers) ping(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "text/plain; charset=utf-8", []byte("OK"))
}

// rootInfo is GET /, in gobetween 0.8's shape.
type rootInfo struct {
	Pid           int          `json:"pid"`
	Time          time.Time    `json:"time"`
	StartTime     time.Time    `json:"startTime"`
	Uptime        string       `json:"uptime"`
	Version       string       `json:"version"`
	Configuration ConfigSource `json:"configuration"`
}

func (h *handlers) root(w http.ResponseWriter, _ *http.Request) {
	now := h.now()
	info := h.opts.Info
	writeJSON(w, http.StatusOK, rootInfo{
		Pid:           info.Pid,
		Time:          now,
		StartTime:     info.StartTime,
		Uptime:        now.Sub(info.StartTime).String(),
		Version:       info.Version,
		Configuration: info.Source,
	})
}

// dump answers with the effective configuration, secrets redacted (gobetween 0.8
// leaked them). An unknown format is the client's mistake: 400, where 0.8 said 500.
func (h *handlers) dump(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "toml"
	}
	var contentType string
	switch format {
	case "toml":
		contentType = "application/toml; charset=utf-8"
	case "json":
		contentType = "application/json; charset=utf-8"
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown format %q: want toml or json", format))
		return
	}
	if h.opts.Dump == nil {
		writeError(w, http.StatusInternalServerError, "no configuration to dump")
		return
	}
	c := h.opts.Dump()
	if c == nil {
		writeError(w, http.StatusInternalServerError, "no configuration to dump")
		return
	}
	body, err := config.Encode(c.Redacted(), format)
	if err != nil {
		h.logger.Error("dump config", "format", format, "err", err)
		writeError(w, http.StatusInternalServerError, "encode config: "+err.Error())
		return
	}
	writeText(w, http.StatusOK, contentType, body)
}

func (h *handlers) listServers(w http.ResponseWriter, _ *http.Request) {
	servers := h.opts.Store.Servers()
	out := make(map[string]config.Server, len(servers))
	for name, s := range servers {
		out[name] = s.Redacted()
	}
	writeJSON(w, http.StatusOK, out)
}

// lookupServer reads the {name} route parameter and the server's entry; it has
// answered the request (400, 404) when ok is false.
func (h *handlers) lookupServer(w http.ResponseWriter, r *http.Request) (name string, info ServerInfo, ok bool) {
	name, ok = serverName(w, r)
	if !ok {
		return "", ServerInfo{}, false
	}
	info, found := h.opts.Store.ServerInfo(name)
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("server %q not found", name))
		return "", ServerInfo{}, false
	}
	return name, info, true
}

// getServer answers with the server in gobetween 0.8's shape; its origin and
// revision travel as headers (see setServerHeaders) so that the body can be
// POSTed or PUT back unchanged.
func (h *handlers) getServer(w http.ResponseWriter, r *http.Request) {
	_, info, ok := h.lookupServer(w, r)
	if !ok {
		return
	}
	setServerHeaders(w, info)
	writeJSON(w, http.StatusOK, info.Server.Redacted())
}

// serverMeta is GET /servers/{name}/meta: what the log knows about a server
// besides its definition, including overrides of backends not currently listed.
type serverMeta struct {
	Name          string            `json:"name"`
	Origin        string            `json:"origin"`
	Revision      uint64            `json:"revision"`
	Updated       *time.Time        `json:"updated"` // null when unknown
	BackendStates map[string]string `json:"backend_states"`
}

func (h *handlers) serverMeta(w http.ResponseWriter, r *http.Request) {
	name, info, ok := h.lookupServer(w, r)
	if !ok {
		return
	}
	meta := serverMeta{Name: name, Origin: info.Origin, Revision: info.Revision, BackendStates: h.opts.Store.BackendStates(name)}
	if !info.Updated.IsZero() {
		updated := info.Updated.UTC()
		meta.Updated = &updated
	}
	if meta.BackendStates == nil {
		meta.BackendStates = map[string]string{}
	}
	setServerHeaders(w, info)
	writeJSON(w, http.StatusOK, meta)
}

// createServer validates a POSTed server exactly like one from the config file
// (same decoder, same defaults, same validation), with one difference: in a file an
// unknown key is a warning unless --strict, but here it is an error, because a
// client that sends a misspelt key would otherwise get 200 for a server that
// silently lacks the setting. Unknown keys and validation problems are answered
// together in one 422 so that a client fixes the definition in one pass.
//
// On success it answers 200 with the server as normalised and redacted; gobetween
// 0.8 answered 200 null. The body is what was submitted, not a read-back: with a
// replicated store the write may not yet be visible to reads on this node.
func (h *handlers) createServer(w http.ResponseWriter, r *http.Request) {
	name, ok := serverName(w, r)
	if !ok {
		return
	}
	s, ok := h.decodeServer(w, r, name)
	if !ok {
		return
	}
	if problems := keepSecrets(name, &s, nil); len(problems) > 0 {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("invalid server %q", name), problems...)
		return
	}
	if err := h.opts.Store.CreateServer(r.Context(), name, s); err != nil {
		h.writeStoreError(w, "create", name, err)
		return
	}
	// CreateServer returns no revision; read it back, and only vouch for it if
	// the definition read is the one created: after a concurrent change the ETag
	// would describe a server the client has not seen, and an If-Match with it
	// would overwrite that change.
	if info, found := h.opts.Store.ServerInfo(name); found && info.Server.Equal(s) {
		setServerHeaders(w, info)
	}
	h.logger.Info("server created", "server", name, "bind", s.Bind, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, s.Redacted())
}

// updateServer is PUT /servers/{name}: the body and its validation are POST's
// (a secret sent as "<redacted>" keeps the stored value, so a GET body can be
// edited and PUT back);
// the server must exist (404) and, with If-Match, still be at that revision
// (409). Validation comes before the existence check, which is the store's: on a
// follower a server just created elsewhere may not be applied here yet, so a
// local pre-check could answer a false 404.
func (h *handlers) updateServer(w http.ResponseWriter, r *http.Request) {
	name, ok := serverName(w, r)
	if !ok {
		return
	}
	ifRevision, err := parseIfMatch(r.Header.Values("If-Match"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s, ok := h.decodeServer(w, r, name)
	if !ok {
		return
	}
	if hasRedacted(s) {
		// The body came from a GET: keep the stored secrets. Conditioning the
		// write on the revision they were read at keeps a concurrent change of a
		// secret from being reverted; the client sees 409 and retries.
		var cur *config.Server
		info, found := h.opts.Store.ServerInfo(name)
		if found {
			cur = &info.Server
			if ifRevision == 0 {
				ifRevision = info.Revision
			}
		}
		if problems := keepSecrets(name, &s, cur); len(problems) > 0 {
			writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("invalid server %q", name), problems...)
			return
		}
	}
	rev, err := h.opts.Store.UpdateServer(r.Context(), name, s, ifRevision)
	if err != nil {
		h.writeStoreError(w, "update", name, err)
		return
	}
	setRevisionHeaders(w, rev)
	h.logger.Info("server updated", "server", name, "bind", s.Bind, "revision", rev, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, s.Redacted())
}

// decodeServer reads and validates a server definition for POST and PUT. It
// answers 400, 413 or 422 itself and reports whether the caller may go on.
func (h *handlers) decodeServer(w http.ResponseWriter, r *http.Request, name string) (config.Server, bool) {
	body, ok := readBody(w, r)
	if !ok {
		return config.Server{}, false
	}
	s, unknown, err := config.DecodeServerJSON(name, body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad json: "+err.Error())
		return config.Server{}, false
	}
	problems := unknown
	var defaults config.ConnectionOptions
	if h.opts.Defaults != nil {
		defaults = h.opts.Defaults()
	}
	problems = append(problems, config.Problems(config.NormalizeServer(name, &s, defaults))...)
	if len(problems) > 0 {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("invalid server %q", name), problems...)
		return config.Server{}, false
	}
	return s, true
}

// deleteServer answers 200 null like gobetween 0.8, or 404 for an unknown server
// (0.8 said 200).
func (h *handlers) deleteServer(w http.ResponseWriter, r *http.Request) {
	name, ok := serverName(w, r)
	if !ok {
		return
	}
	if err := h.opts.Store.DeleteServer(r.Context(), name); err != nil {
		h.writeStoreError(w, "delete", name, err)
		return
	}
	h.logger.Info("server deleted", "server", name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, nil)
}

// serverStats answers with the server's counters. A server that is defined but has
// no counters on this node yet (its listener is starting or could not bind) gets
// zero counters rather than 404: 404 means the server does not exist.
//
// Each backend gains "state" (drain or disable; absent when enabled): the
// override stored in the log, the same on every node. The proxy's own
// "stats.state" is what this node applies, which may lag behind it briefly.
func (h *handlers) serverStats(w http.ResponseWriter, r *http.Request) {
	name, ok := serverName(w, r)
	if !ok {
		return
	}
	var st proxy.ServerStats
	found := false
	if h.opts.Stats != nil {
		st, found = h.opts.Stats.Stats(name)
	}
	if !found {
		if _, defined := h.opts.Store.Server(name); !defined {
			writeError(w, http.StatusNotFound, fmt.Sprintf("server %q not found", name))
			return
		}
	}
	writeJSON(w, http.StatusOK, withStates(st, h.opts.Store.BackendStates(name)))
}

// serverStatsJSON is proxy.ServerStats with backendStatsJSON backends: the outer
// Backends field hides the embedded one in encoding/json.
type serverStatsJSON struct {
	proxy.ServerStats
	Backends []backendStatsJSON `json:"backends"`
}

type backendStatsJSON struct {
	proxy.BackendStats
	State string `json:"state,omitempty"`
}

func withStates(st proxy.ServerStats, states map[string]string) serverStatsJSON {
	out := serverStatsJSON{ServerStats: st, Backends: make([]backendStatsJSON, len(st.Backends))}
	for i, b := range st.Backends {
		out.Backends[i] = backendStatsJSON{BackendStats: b, State: states[b.Address()]}
	}
	return out
}

func (h *handlers) writeStoreError(w http.ResponseWriter, op, name string, err error) {
	if status, known := statusOf(err); known {
		writeError(w, status, err.Error())
		return
	}
	h.logger.Error("store write failed", "op", op, "server", name, "err", err)
	writeError(w, http.StatusInternalServerError, fmt.Sprintf("%s server %q: %v", op, name, err))
}

// serverName is the {name} route parameter, unescaped.
func serverName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name, ok := pathParam(r, "name")
	if !ok || name == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad server name %q", chi.URLParam(r, "name")))
		return "", false
	}
	return name, true
}

// pathParam is a route parameter, unescaped. chi matches on r.URL.RawPath when
// it is set (the request's escaping differs from the default one, e.g. "a%2Fb"
// or "%3A") and on the decoded r.URL.Path otherwise, so a parameter needs
// unescaping exactly in the first case; unescaping in the second would misread
// a literal "%" (an IPv6 zone sent as "%25").
func pathParam(r *http.Request, key string) (string, bool) {
	v := chi.URLParam(r, key)
	if r.URL.RawPath == "" {
		return v, true
	}
	u, err := url.PathUnescape(v)
	if err != nil {
		return "", false
	}
	return u, true
}

// readBody reads at most maxBodyBytes; a larger body is answered with 413.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if r.ContentLength > maxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBodyBytes))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", maxBodyBytes))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "read request body: "+err.Error())
		return nil, false
	}
	return body, true
}
