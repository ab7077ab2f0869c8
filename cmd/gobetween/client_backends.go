package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Waiting for a drain.
const (
	drainWaitDefault = 5 * time.Minute
	drainPoll        = 250 * time.Millisecond
	// drainRequestTimeout bounds one poll's request, so that one lost answer
	// does not use up the whole wait.
	drainRequestTimeout = 10 * time.Second
	// drainReports is how many observed-state reports every live member must
	// publish after the drain is acknowledged: the first may have been
	// assembled before the member applied the drain, the second counts every
	// connection it let in until then.
	drainReports = 2
	// drainProgressEvery repeats an unchanged progress line this often.
	drainProgressEvery = 10 * time.Second
)

// clusterView is the part of GET /cluster the client uses.
type clusterView struct {
	NodeID   string          `json:"node_id"`
	LeaderID string          `json:"leader_id"`
	Revision uint64          `json:"revision"`
	Members  []clusterMember `json:"members"`
}

type clusterMember struct {
	ID             string     `json:"id"`
	Address        string     `json:"address"`
	Raft           string     `json:"raft"`
	Gossip         string     `json:"gossip"`
	LastReport     *time.Time `json:"last_report"`
	ReportSeq      uint64     `json:"report_seq"`
	ReportBackends int        `json:"report_backends"`
}

func runBackends(action string, args []string, cio clientIO) error {
	c := newCommand("backends "+action, cio, 30*time.Second)
	var wait bool
	c.fs.BoolVar(&wait, "wait", false, "")
	api, ctx, cancel, err := c.connect(args, 2, 2, "SERVER and BACKEND (host:port)")
	if err != nil {
		return err
	}
	defer cancel()
	if wait && action == "enable" {
		return usagef("--wait goes with drain and disable")
	}
	timeoutSet := false
	c.fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })
	if wait && !timeoutSet {
		cancel()
		ctx, cancel = context.WithTimeout(context.Background(), drainWaitDefault)
		defer cancel()
	}
	server, backend := c.args[0], c.args[1]
	if _, _, err := net.SplitHostPort(backend); err != nil {
		return usagef("BACKEND must be host:port as the server's stats name it (e.g. 10.0.0.1:80, [::1]:80), not %q", backend)
	}
	// The API keeps a state for a backend the server does not list now
	// (discovery may bring it back), so a mistyped address is accepted: say
	// so on stderr. An unknown server is the POST's 404 to report.
	if listed, err := backendListed(ctx, api, server, backend); err == nil && !listed {
		fmt.Fprintf(cio.stderr, "warning: server %q does not list %s now: the state is kept for when its discovery lists it (a typo? see gobetween servers show %s)\n", server, backend, server)
	}
	resp, err := api.do(ctx, http.MethodPost, serverPath(server, "backends", backend, action), nil, nil)
	if err != nil {
		return err
	}
	var ack struct {
		Server   string `json:"server"`
		Backend  string `json:"backend"`
		State    string `json:"state"`
		Revision uint64 `json:"revision"`
	}
	if err := json.Unmarshal(resp.body, &ack); err != nil {
		return fmt.Errorf("POST %s: answer is not the JSON expected: %w", serverPath(server, "backends", backend, action), err)
	}
	if ack.Backend == "" {
		ack.Backend = backend
	}
	if !c.json() {
		fmt.Fprintf(cio.stdout, "backend %s of server %q: %s (revision %d)\n", ack.Backend, server, action, ack.Revision)
	}
	if !wait {
		if c.json() {
			return writeRawJSON(cio.stdout, resp.body)
		}
		return nil
	}
	start := time.Now()
	res, err := waitDrained(ctx, api, server, ack.Backend, cio.stderr, drainPoll)
	if err != nil {
		return err
	}
	took := time.Since(start)
	if c.json() {
		var out map[string]any
		if err := json.Unmarshal(resp.body, &out); err != nil {
			return err
		}
		out["wait"] = map[string]any{
			"active_connections": res.conns,
			"seconds":            took.Seconds(),
			"members":            res.members,
		}
		return writeJSONOut(cio.stdout, out)
	}
	msg := fmt.Sprintf("drained: no connections left to %s in the cluster after %s", ack.Backend, took.Round(10*time.Millisecond))
	if !res.listed {
		msg = fmt.Sprintf("done after %s: server %q does not list %s, so none of its connections is counted", took.Round(10*time.Millisecond), server, ack.Backend)
	}
	_, err = fmt.Fprintln(cio.stdout, msg)
	return err
}

// drainResult is how a wait ended.
type drainResult struct {
	conns   int64
	listed  bool     // the server lists the backend
	members []string // the members whose fresh reports were counted
}

// waitDrained polls the API until the backend's cluster-wide active
// connections are 0 and every live member has published drainReports
// observed-state reports since the call (see drainReports), so that
// connections that members let in before they applied the drain have been
// reported. Progress goes to progress; ctx bounds the wait.
func waitDrained(ctx context.Context, api *apiClient, server, backend string, progress io.Writer, poll time.Duration) (drainResult, error) {
	base := map[string]uint64{} // member -> report_seq when first seen alive
	clustered := true
	var last string
	var lastPrinted time.Time
	var lastErr error
	var res drainResult
	for {
		state, err := drainState(ctx, api, server, backend, base, &clustered)
		switch {
		case err == nil:
			lastErr = nil
			res = drainResult{conns: state.conns, listed: state.listed, members: state.fresh}
			if state.conns == 0 && len(state.pending) == 0 {
				return res, nil
			}
			line := fmt.Sprintf("waiting for %s of %q: %d connection(s) left in the cluster", backend, server, state.conns)
			if len(state.pending) > 0 {
				line += "; waiting for fresh reports from " + strings.Join(state.pending, ", ")
			}
			if line != last || time.Since(lastPrinted) >= drainProgressEvery {
				fmt.Fprintln(progress, line)
				last, lastPrinted = line, time.Now()
			}
		case isNotFound(err) && !strings.HasPrefix(errPath(err), "/cluster"):
			return res, err
		case ctx.Err() == nil:
			// The node may be restarting or without a leader for a moment:
			// say so and keep polling until the deadline.
			if lastErr == nil || lastErr.Error() != err.Error() {
				fmt.Fprintf(progress, "warning: %s (still waiting)\n", err)
			}
			lastErr = err
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("timed out (--timeout) waiting for %s of %q to drain: %d connection(s) left", backend, server, res.conns)
			if lastErr != nil {
				msg += "; last error: " + lastErr.Error()
			}
			return res, errors.New(msg)
		case <-time.After(poll):
		}
	}
}

type drainSnapshot struct {
	conns   int64
	listed  bool
	pending []string // live members that have not yet published enough reports
	fresh   []string // live members that have
}

// drainState reads the backend's cluster-wide connections and the members'
// report sequence numbers once. base records each live member's sequence
// number when first seen; clustered turns false for good on a node that is not
// clustered (its own counts are all there is).
func drainState(ctx context.Context, api *apiClient, server, backend string, base map[string]uint64, clustered *bool) (drainSnapshot, error) {
	var s drainSnapshot
	rctx, cancel := context.WithTimeout(ctx, drainRequestTimeout)
	defer cancel()
	// The members' reports are read before the counts: a report that arrives
	// in between then only makes the counts newer than needed, never older.
	if *clustered {
		var cv clusterView
		_, err := api.getJSON(rctx, "/cluster", &cv)
		switch {
		case isNotFound(err):
			*clustered = false
		case err != nil:
			return s, err
		default:
			for _, m := range cv.Members {
				if m.Gossip != "alive" {
					continue
				}
				b, seen := base[m.ID]
				if !seen || m.ReportSeq < b {
					// First sighting, or the member restarted and counts anew.
					base[m.ID], b = m.ReportSeq, m.ReportSeq
				}
				if m.ReportSeq >= b+drainReports {
					s.fresh = append(s.fresh, m.ID)
				} else {
					s.pending = append(s.pending, m.ID)
				}
			}
			sort.Strings(s.pending)
			sort.Strings(s.fresh)
		}
	}
	var st statsView
	if _, err := api.getJSON(rctx, serverPath(server, "stats"), &st); err != nil {
		return s, err
	}
	for _, b := range st.Backends {
		if b.address() == backend {
			s.listed = true
			s.conns = b.Stats.Cluster.ActiveConnections
			if !*clustered && b.Stats.ActiveConnections > s.conns {
				s.conns = b.Stats.ActiveConnections
			}
		}
	}
	return s, nil
}

// backendListed reports whether the server's stats list backend now.
func backendListed(ctx context.Context, api *apiClient, server, backend string) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, drainRequestTimeout)
	defer cancel()
	var st statsView
	if _, err := api.getJSON(rctx, serverPath(server, "stats"), &st); err != nil {
		return false, err
	}
	for _, b := range st.Backends {
		if b.address() == backend {
			return true, nil
		}
	}
	return false, nil
}

func errPath(err error) string {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.path
	}
	return ""
}

func runCluster(sub string, args []string, cio clientIO) error {
	switch sub {
	case "show":
		return clusterShow(args, cio)
	case "join":
		return clusterJoin(args, cio)
	case "remove":
		return clusterRemove(args, cio)
	}
	return usagef("unknown subcommand %q", sub)
}

func clusterShow(args []string, cio clientIO) error {
	c := newCommand("cluster show", cio, 30*time.Second)
	api, ctx, cancel, err := c.connect(args, 0, 0, "")
	if err != nil {
		return err
	}
	defer cancel()
	var cv clusterView
	resp, err := api.getJSON(ctx, "/cluster", &cv)
	if err != nil {
		return err
	}
	if c.json() {
		return writeRawJSON(cio.stdout, resp.body)
	}
	return printCluster(cio.stdout, cv, time.Now())
}

func printCluster(w io.Writer, cv clusterView, now time.Time) error {
	leader := cv.LeaderID
	if leader == "" {
		leader = "none (writes fail until one is elected)"
	}
	tw := newTable(w)
	fmt.Fprintf(tw, "Node:\t%s\n", cv.NodeID)
	fmt.Fprintf(tw, "Leader:\t%s\n", leader)
	fmt.Fprintf(tw, "Revision:\t%d\n", cv.Revision)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "ID\tADDRESS\tRAFT\tGOSSIP\tLAST REPORT")
	for _, m := range cv.Members {
		report := "-"
		if m.LastReport != nil {
			report = fmt.Sprintf("%s ago (seq %d, %d backends)", ago(now, *m.LastReport), m.ReportSeq, m.ReportBackends)
		}
		id := m.ID
		if m.ID == cv.NodeID {
			id += " (this node)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, m.Address, m.Raft, m.Gossip, report)
	}
	return tw.Flush()
}

func clusterJoin(args []string, cio clientIO) error {
	c := newCommand("cluster join", cio, 30*time.Second)
	api, ctx, cancel, err := c.connect(args, 1, -1, "ADDR (a member's gossip host:port)")
	if err != nil {
		return err
	}
	defer cancel()
	body, err := json.Marshal(map[string][]string{"addrs": c.args})
	if err != nil {
		return err
	}
	resp, err := api.do(ctx, http.MethodPost, "/cluster/join", body, nil)
	if err != nil {
		return fmt.Errorf("%w\n(join takes a member's gossip address, its [cluster] bind, default port 7946; the ADDRESS that gobetween cluster shows is its Raft address)", err)
	}
	if c.json() {
		return writeRawJSON(cio.stdout, resp.body)
	}
	var ans struct {
		Joined []string `json:"joined"`
	}
	_ = json.Unmarshal(resp.body, &ans)
	if len(ans.Joined) == 0 {
		ans.Joined = c.args
	}
	_, err = fmt.Fprintf(cio.stdout, "joined %s\n", strings.Join(ans.Joined, ", "))
	return err
}

func clusterRemove(args []string, cio clientIO) error {
	c := newCommand("cluster remove", cio, 30*time.Second)
	api, ctx, cancel, err := c.connect(args, 1, 1, "member ID")
	if err != nil {
		return err
	}
	defer cancel()
	id := c.args[0]
	resp, err := api.do(ctx, http.MethodDelete, "/cluster/members/"+url.PathEscape(id), nil, nil)
	if err != nil {
		return err
	}
	if c.json() {
		return writeRawJSON(cio.stdout, resp.body)
	}
	_, err = fmt.Fprintf(cio.stdout, "member %s removed\n", id)
	return err
}

// healthTimeout is short: a health check that hangs is a failed one, and
// Docker's HEALTHCHECK and keepalived run it every few seconds.
const healthTimeout = 2 * time.Second

// runHealth is GET /health: the body on stdout, exit 0 on 200, else 1. It
// needs nothing but this binary, so an image FROM scratch can use it as its
// HEALTHCHECK.
func runHealth(args []string, cio clientIO) error {
	c := newCommand("health", cio, healthTimeout)
	api, ctx, cancel, err := c.connect(args, 0, 0, "")
	if err != nil {
		return err
	}
	defer cancel()
	resp, err := api.do(ctx, http.MethodGet, "/health", nil, nil)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && len(ae.body) > 0 {
			_ = writeRawJSON(cio.stdout, ae.body)
			fmt.Fprintf(cio.stderr, "gobetween health: %d %s\n", ae.status, http.StatusText(ae.status))
			return errSilentFail
		}
		return err
	}
	return writeRawJSON(cio.stdout, resp.body)
}
