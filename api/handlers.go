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

func (h *handlers) getServer(w http.ResponseWriter, r *http.Request) {
	name, ok := serverName(w, r)
	if !ok {
		return
	}
	s, found := h.opts.Store.Server(name)
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("server %q not found", name))
		return
	}
	writeJSON(w, http.StatusOK, s.Redacted())
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
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	s, unknown, err := config.DecodeServerJSON(name, body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad json: "+err.Error())
		return
	}
	problems := unknown
	var defaults config.ConnectionOptions
	if h.opts.Defaults != nil {
		defaults = h.opts.Defaults()
	}
	problems = append(problems, config.Problems(config.NormalizeServer(name, &s, defaults))...)
	if len(problems) > 0 {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("invalid server %q", name), problems...)
		return
	}

	if err := h.opts.Store.CreateServer(r.Context(), name, s); err != nil {
		h.writeStoreError(w, "create", name, err)
		return
	}
	h.logger.Info("server created", "server", name, "bind", s.Bind, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, s.Redacted())
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
	if st.Backends == nil {
		st.Backends = []proxy.BackendStats{}
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handlers) writeStoreError(w http.ResponseWriter, op, name string, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ErrUnsupported):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, ErrExists), errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		h.logger.Error("store write failed", "op", op, "server", name, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("%s server %q: %v", op, name, err))
	}
}

// serverName is the {name} route parameter, unescaped: chi matches on the raw path
// when the request has escapes, so "a%2Fb" arrives escaped.
func serverName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name, err := url.PathUnescape(chi.URLParam(r, "name"))
	if err != nil || name == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad server name %q", chi.URLParam(r, "name")))
		return "", false
	}
	return name, true
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
