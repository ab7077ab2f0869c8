package api

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
)

// backendAction is the answer to POST /servers/{name}/backends/{backend}/{action}.
// State repeats the action ("drain", "disable" or "enable"), so the vocabulary is
// the one the client used.
type backendAction struct {
	Server   string `json:"server"`
	Backend  string `json:"backend"`
	State    string `json:"state"`
	Revision uint64 `json:"revision"`
}

// backendAction drains, disables or enables one backend through the log, so that
// every node applies it and it survives restarts. The backend is host:port,
// escaped or not: "10.0.0.1:80", "[::1]:80", "%5B%3A%3A1%5D%3A80".
func (h *handlers) backendAction(w http.ResponseWriter, r *http.Request) {
	action := chi.URLParam(r, "action")
	switch action {
	case BackendDrain, BackendDisable, BackendEnable:
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown backend action %q: want drain, disable or enable", action))
		return
	}
	name, ok := serverName(w, r)
	if !ok {
		return
	}
	raw, ok := pathParam(r, "backend")
	if !ok {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad backend %q: not a valid escape", chi.URLParam(r, "backend")))
		return
	}
	backend, err := canonicalHostPort(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad backend %q: %v", raw, err))
		return
	}
	rev, err := h.opts.Store.SetBackendState(r.Context(), name, backend, action)
	if err != nil {
		h.writeStoreError(w, action+" backend "+backend+" of", name, err)
		return
	}
	h.logger.Info("backend state set", "server", name, "backend", backend, "action", action, "revision", rev, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, backendAction{Server: name, Backend: backend, State: action, Revision: rev})
}

// canonicalHostPort checks host:port and writes it the way config.Target.Address
// does, which is how the proxy's stats name a backend: IPv6 in brackets, the port
// in decimal without leading zeros. The host is kept as written otherwise (not
// resolved, IPv6 not re-spelt), because overrides are matched to discovered
// backends by that string.
func canonicalHostPort(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("want host:port, e.g. 10.0.0.1:80 or [::1]:80")
	}
	if host == "" {
		return "", fmt.Errorf("empty host")
	}
	if strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' }) {
		return "", fmt.Errorf("host %q contains a space, a control character or a slash", host)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return "", fmt.Errorf("port %q is not 1-65535", port)
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), nil
}
