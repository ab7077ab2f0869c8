package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/gobetween/gobetween/config"
)

// statusOK is the body of a passing /health or /ready.
type statusOK struct {
	Status string `json:"status"`
}

// HealthCheck is one named condition of GET /health.
type HealthCheck struct {
	Name string `json:"-"`
	OK   bool   `json:"ok"`
	// Detail says what was found: why the check fails, or what passed.
	Detail string `json:"detail,omitempty"`
}

// HealthReporter is an optional capability of a Cluster: the checks behind
// Health, so that GET /health names each one, failing or not. Health must fail
// exactly when one of the checks does.
type HealthReporter interface {
	HealthChecks() []HealthCheck
}

// healthBody is GET /health from a HealthReporter. A failing one is also an
// ErrorBody: error joins the failing checks and details lists each, its path
// the check's name.
type healthBody struct {
	Status  string                 `json:"status"` // "ok" or "failing"
	Error   string                 `json:"error,omitempty"`
	Details []config.Problem       `json:"details,omitempty"`
	Checks  map[string]HealthCheck `json:"checks"`
}

// health is GET /health, open without credentials for keepalived: 200 when
// every check passes, else 503 naming each failing one. Without a Cluster the
// process answering is all there is to check.
func (h *handlers) health(w http.ResponseWriter, _ *http.Request) {
	hr, ok := h.opts.Cluster.(HealthReporter)
	if !ok {
		h.probe(w, func(c Cluster) error { return c.Health() })
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	body := healthBody{Status: "ok", Checks: map[string]HealthCheck{}}
	var failing []string
	for _, c := range hr.HealthChecks() {
		body.Checks[c.Name] = c
		if !c.OK {
			body.Details = append(body.Details, config.Problem{Path: c.Name, Msg: c.Detail})
			failing = append(failing, c.Name+": "+c.Detail)
		}
	}
	if len(failing) > 0 {
		body.Status = "failing"
		body.Error = "unhealthy: " + strings.Join(failing, "; ")
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// ready is GET /ready, for orchestrators.
func (h *handlers) ready(w http.ResponseWriter, _ *http.Request) {
	h.probe(w, func(c Cluster) error { return c.Ready() })
}

func (h *handlers) probe(w http.ResponseWriter, check func(Cluster) error) {
	// A probe must see the state now, not a cached answer.
	w.Header().Set("Cache-Control", "no-store")
	if h.opts.Cluster != nil {
		if err := check(h.opts.Cluster); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, statusOK{Status: "ok"})
}

// cluster returns the Cluster, or answers 404 when the node is not clustered.
func (h *handlers) cluster(w http.ResponseWriter) (Cluster, bool) {
	if h.opts.Cluster == nil {
		writeError(w, http.StatusNotFound, "not clustered")
		return nil, false
	}
	return h.opts.Cluster, true
}

func (h *handlers) clusterStatus(w http.ResponseWriter, _ *http.Request) {
	c, ok := h.cluster(w)
	if !ok {
		return
	}
	st := c.Status()
	if st.Members == nil {
		st.Members = []ClusterMember{}
	}
	writeJSON(w, http.StatusOK, st)
}

// joinRequest is POST /cluster/join: {"addrs": [...]}, {"addr": "..."} or both.
type joinRequest struct {
	Addrs []string `json:"addrs"`
	Addr  string   `json:"addr"`
}

type joinAnswer struct {
	Joined []string `json:"joined"`
}

// clusterJoin answers 400 for a body it cannot use (every bad address listed),
// 503 when the join fails: joining is about reaching other nodes, so a failure
// that wraps no sentinel is taken as unavailability, not as this node's bug.
func (h *handlers) clusterJoin(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cluster(w)
	if !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var req joinRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad json: "+err.Error())
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad json: data after the object")
		return
	}
	addrs := slices.Clone(req.Addrs)
	if req.Addr != "" {
		addrs = append(addrs, req.Addr)
	}
	var problems []config.Problem
	var valid []string
	for i, a := range addrs {
		path := "addrs[" + strconv.Itoa(i) + "]"
		if i == len(req.Addrs) {
			path = "addr"
		}
		if err := checkJoinAddr(a); err != nil {
			problems = append(problems, config.Problem{Path: path, Msg: err.Error()})
			continue
		}
		if !slices.Contains(valid, a) {
			valid = append(valid, a)
		}
	}
	if len(problems) > 0 {
		writeError(w, http.StatusBadRequest, "bad join addresses", problems...)
		return
	}
	if len(valid) == 0 {
		writeError(w, http.StatusBadRequest, `nothing to join: give "addrs" or "addr" (host:port)`)
		return
	}
	if err := c.Join(r.Context(), valid); err != nil {
		h.logger.Warn("cluster join failed", "addrs", valid, "err", err, "remote", r.RemoteAddr)
		if status, known := statusOf(err); known {
			writeError(w, status, "join: "+err.Error())
			return
		}
		writeError(w, http.StatusServiceUnavailable, "join: "+err.Error())
		return
	}
	h.logger.Info("cluster join", "addrs", valid, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, joinAnswer{Joined: valid})
}

func checkJoinAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host:port", a)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", a)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: port is not 1-65535", a)
	}
	return nil
}

type removeAnswer struct {
	Removed string `json:"removed"`
}

func (h *handlers) clusterRemove(w http.ResponseWriter, r *http.Request) {
	c, ok := h.cluster(w)
	if !ok {
		return
	}
	id, ok := pathParam(r, "id")
	if !ok || id == "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("bad member id %q", chi.URLParam(r, "id")))
		return
	}
	if err := c.RemoveMember(r.Context(), id); err != nil {
		if status, known := statusOf(err); known {
			writeError(w, status, fmt.Sprintf("remove member %q: %v", id, err))
			return
		}
		h.logger.Error("cluster remove failed", "member", id, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("remove member %q: %v", id, err))
		return
	}
	h.logger.Info("cluster member removed", "member", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, removeAnswer{Removed: id})
}

// statusOf maps the sentinels to status codes; known is false for any other
// error, whose status depends on the operation.
func statusOf(err error) (status int, known bool) {
	switch {
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, true
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, true
	case errors.Is(err, ErrUnsupported):
		return http.StatusUnprocessableEntity, true
	case errors.Is(err, ErrExists), errors.Is(err, ErrConflict):
		return http.StatusConflict, true
	}
	return 0, false
}
