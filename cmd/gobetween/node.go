package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gobetween/gobetween/api"
	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/config"
)

// clustered reports whether cfg asks for a multi-node cluster: gossip, joins or
// an expected size. Without it the node is a one-voter cluster of its own.
func clustered(cfg *config.Config) bool {
	c := cfg.Cluster
	return c != nil && (c.Bind != "" || len(c.Join) > 0 || c.BootstrapExpect > 1)
}

// nodeOptions turns [cluster] and the command line into cluster.Options.
func nodeOptions(opts options, cfg *config.Config, logger *slog.Logger) (cluster.Options, error) {
	o := cluster.Options{DataDir: "gobetween-data", RaftBind: "127.0.0.1:0", Bootstrap: true, Logger: logger}
	if c := cfg.Cluster; c != nil {
		o.NodeID = c.NodeID
		if c.DataDir != "" {
			o.DataDir = c.DataDir
		}
		if c.RaftBind != "" {
			o.RaftBind = c.RaftBind
		}
		if clustered(cfg) {
			o.GossipBind, o.Join, o.MaxVoters = c.Bind, c.Join, c.MaxVoters
			o.BootstrapExpect = c.BootstrapExpect
			o.ReportInterval = c.ReportInterval.D
			// A node with peers to join or an expected size never bootstraps alone:
			// a failed join must not fall back to a cluster of one.
			o.Bootstrap = len(c.Join) == 0 && c.BootstrapExpect <= 1
			if c.RaftBind == "" {
				rb, err := nextPort(c.Bind)
				if err != nil {
					return o, fmt.Errorf("cluster.raft_bind: %w", err)
				}
				o.RaftBind = rb
			}
			if c.Advertise != "" {
				o.GossipAdvertise = c.Advertise
				host, _, _ := net.SplitHostPort(c.Advertise)
				_, rport, _ := net.SplitHostPort(o.RaftBind)
				o.Advertise = net.JoinHostPort(host, rport)
			}
			if c.EncryptKey != "" {
				key, err := base64.StdEncoding.DecodeString(c.EncryptKey)
				if err != nil {
					return o, fmt.Errorf("cluster.encrypt_key: %w", err)
				}
				o.EncryptKey = key
			}
			if c.Tls != nil {
				tc, err := clusterTLS(c.Tls)
				if err != nil {
					return o, fmt.Errorf("cluster.tls: %w", err)
				}
				o.TLS = tc
			}
		}
	}
	if opts.dataDir != "" {
		o.DataDir = opts.dataDir
	}
	if o.NodeID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "gobetween"
		}
		o.NodeID = host
	}
	return o, nil
}

// nextPort is host:port+1, the default Raft address next to the gossip one.
func nextPort(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p >= 65535 {
		return "", fmt.Errorf("no port after %q", hostport)
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}

// clusterTLS is mutual TLS between nodes: each presents its certificate and
// accepts only peers signed by the cluster's CA.
func clusterTLS(t *config.ClusterTls) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertPath, t.KeyPath)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(t.CaPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate found", t.CaPath)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// openNode opens this node's member of the Raft log. A single node waits until
// it leads (about a second); a cluster node does not wait: it serves its last
// applied state at once and takes part in the cluster as peers appear.
func openNode(opts options, cfg *config.Config, logger *slog.Logger) (*cluster.Node, error) {
	o, err := nodeOptions(opts, cfg, logger)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	node, err := cluster.Open(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("data directory %s: %w", o.DataDir, err)
	}
	if !clustered(cfg) {
		if err := node.WaitForLeader(ctx); err != nil {
			node.Close()
			return nil, fmt.Errorf("no leader: %w", err)
		}
		// Leading comes before replaying the log after a restart.
		if err := node.Barrier(ctx); err != nil {
			node.Close()
			return nil, fmt.Errorf("replaying the log: %w", err)
		}
	}
	st := node.State()
	logger.Info("desired state loaded", "data_dir", o.DataDir, "node_id", o.NodeID, "revision", st.Revision, "servers", len(st.Servers))
	return node, nil
}

// clusterAPI adapts cluster.Node to api.Cluster.
type clusterAPI struct {
	node *cluster.Node
	// serving is closed once the node's data plane has applied its state.
	serving <-chan struct{}
	// stopping is set when a stop signal arrives, before the drain begins, so
	// that keepalived moves the virtual IP away while open connections finish.
	stopping *atomic.Bool
	// follower is the data plane's side of the log: the runtime whose
	// listeners /health checks and the revision it has applied. Nil leaves the
	// listening check out of /health.
	follower *follower
}

func (c clusterAPI) Status() api.ClusterStatus {
	leader, _ := c.node.Leader()
	st := api.ClusterStatus{NodeID: c.node.ID(), LeaderID: leader, Revision: c.node.State().Revision}
	for _, m := range c.node.Members() {
		raft := m.Suffrage
		switch {
		case m.Leader:
			raft = "leader"
		case raft == "":
			raft = "none"
		}
		gossip := m.Gossip
		if gossip == "" {
			gossip = "none"
		}
		cm := api.ClusterMember{ID: m.ID, Address: m.Address, Raft: raft, Gossip: gossip,
			ReportSeq: m.ReportSeq, ReportBackends: m.ReportBackends}
		if !m.LastReport.IsZero() {
			t := m.LastReport
			cm.LastReport = &t
		}
		st.Members = append(st.Members, cm)
	}
	if c.node.GossipAddr() != "" {
		g := c.node.GossipStats()
		st.Gossip = &api.GossipStatus{
			BytesSent: g.BytesSent, BytesReceived: g.BytesReceived,
			ReportsSent: g.ReportsSent, ReportsReceived: g.ReportsReceived,
		}
	}
	return st
}

func (c clusterAPI) Join(ctx context.Context, addrs []string) error {
	if err := c.node.Join(ctx, addrs); err != nil {
		return fmt.Errorf("%w: %w", api.ErrUnavailable, err)
	}
	return nil
}

func (c clusterAPI) RemoveMember(ctx context.Context, id string) error {
	known := false
	for _, m := range c.node.Members() {
		if m.ID == id {
			known = true
		}
	}
	if !known {
		return fmt.Errorf("member %q: %w", id, api.ErrNotFound)
	}
	if err := c.node.Remove(ctx, id); err != nil {
		return storeError(err)
	}
	return nil
}

// Health is nil when every check of HealthChecks passes (see healthChecks).
func (c clusterAPI) Health() error {
	var errs []error
	for _, ch := range c.HealthChecks() {
		if !ch.OK {
			errs = append(errs, fmt.Errorf("%s: %s", ch.Name, ch.Detail))
		}
	}
	return errors.Join(errs...)
}

// HealthChecks implements api.HealthReporter for GET /health. A server found
// not listening is judged a second time on a fresh read: a server removed or
// rebound between reading the state and asking the runtime (which applies
// under its own lock) is then no longer due, and a single probe that raced a
// write does not move the virtual IP.
func (c clusterAPI) HealthChecks() []api.HealthCheck {
	checks := healthChecks(c.healthFacts())
	for _, ch := range checks {
		if ch.Name == checkListening && !ch.OK {
			return healthChecks(c.healthFacts())
		}
	}
	return checks
}

// healthFacts reads what healthChecks judges. The applied revision is read
// before the state, so the state is at least as new as what the runtime applied.
func (c clusterAPI) healthFacts() healthFacts {
	f := healthFacts{
		stopping: c.stopping != nil && c.stopping.Load(),
		nodeID:   c.node.ID(),
		gossip:   c.node.GossipAddr() != "",
	}
	select {
	case <-c.serving:
		f.served = true
	default:
	}
	if c.follower != nil {
		c.follower.mu.Lock()
		f.applied = c.follower.applied
		c.follower.mu.Unlock()
		rt := c.follower.rt
		f.listening = func(name string) (string, bool) {
			st, ok := rt.Stats(name)
			return st.Bind, ok
		}
	}
	f.servers = c.node.State().Servers
	f.members = c.node.Members()
	return f
}

// Names of the /health checks.
const (
	checkApplied    = "applied"
	checkStopping   = "stopping"
	checkListening  = "listening"
	checkMembership = "membership"
)

// healthFacts is one reading of the node for /health.
type healthFacts struct {
	served   bool // the data plane has applied the replicated state once
	stopping bool // a stop signal arrived
	// applied is the revision the data plane has applied; servers is the
	// desired state, read after applied.
	applied uint64
	servers map[string]cluster.ServerEntry
	// listening reports the address server name listens on ("" when it does
	// not) and whether the runtime runs it at all. Nil: not checked.
	listening func(name string) (bind string, running bool)
	nodeID    string
	gossip    bool // the node has a gossip layer (a multi-node cluster)
	members   []cluster.Member
}

// healthChecks judges f. All of them must pass for /health to answer 200:
//
//   - applied: the data plane has applied the replicated state at least once
//     (at start it serves nothing until then).
//   - stopping: no stop signal has arrived; from SIGTERM on the node drains
//     and a virtual IP must move away.
//   - listening: every server of the desired state that the data plane has
//     applied listens on this node, on its bind's port. A server whose bind
//     failed here (port taken, address missing) may be served by the other
//     nodes, so the virtual IP should be there. A server written after the
//     applied revision is not due yet.
//   - membership: the node is in the Raft configuration (a voter or a
//     non-voter; not removed, not a fresh node that never joined) and, with a
//     gossip layer, it has not left it (a removed member is told to leave).
//
// Quorum and a known leader are not required: a node cut off from the others
// keeps serving its last applied state, which is what clients behind a
// virtual IP need. If /health required quorum, losing two nodes of three (or
// a partition into three) would fail every node and the virtual IP would
// vanish everywhere while each data plane could still serve. /ready is the
// probe that requires a leader.
func healthChecks(f healthFacts) []api.HealthCheck {
	applied := api.HealthCheck{Name: checkApplied, OK: f.served,
		Detail: "the data plane has not applied the replicated state yet"}
	if f.served {
		applied.Detail = "the replicated state is applied"
		if f.listening != nil {
			applied.Detail = fmt.Sprintf("revision %d applied", f.applied)
		}
	}

	stopping := api.HealthCheck{Name: checkStopping, OK: !f.stopping, Detail: "running"}
	if f.stopping {
		stopping.Detail = "shutting down: draining open connections"
	}

	checks := []api.HealthCheck{applied, stopping}
	if f.listening != nil {
		checks = append(checks, listeningCheck(f))
	}
	return append(checks, membershipCheck(f))
}

func listeningCheck(f healthFacts) api.HealthCheck {
	var problems []string
	due := 0
	for _, name := range slices.Sorted(maps.Keys(f.servers)) {
		e := f.servers[name]
		if e.Revision > f.applied {
			continue
		}
		due++
		bind, running := f.listening(name)
		switch {
		case !running:
			problems = append(problems, fmt.Sprintf("server %q (bind %s) did not start", name, e.Server.Bind))
		case bind == "":
			problems = append(problems, fmt.Sprintf("server %q (bind %s) is not listening", name, e.Server.Bind))
		case !samePort(bind, e.Server.Bind):
			problems = append(problems, fmt.Sprintf("server %q listens on %s, not on its bind %s", name, bind, e.Server.Bind))
		}
	}
	if len(problems) > 0 {
		return api.HealthCheck{Name: checkListening, Detail: strings.Join(problems, "; ")}
	}
	return api.HealthCheck{Name: checkListening, OK: true, Detail: fmt.Sprintf("%d servers listening", due)}
}

// samePort reports whether the address a server listens on has the port of its
// bind. Only the port is compared: servers_host and wildcard binds change the
// host. A bind without a usable port is not compared.
func samePort(listening, bind string) bool {
	_, want, err := net.SplitHostPort(bind)
	if err != nil || want == "" || want == "0" {
		return true
	}
	_, got, err := net.SplitHostPort(listening)
	return err == nil && got == want
}

func membershipCheck(f healthFacts) api.HealthCheck {
	var self *cluster.Member
	for i := range f.members {
		if f.members[i].ID == f.nodeID {
			self = &f.members[i]
		}
	}
	c := api.HealthCheck{Name: checkMembership}
	switch {
	case self == nil || self.Suffrage == "":
		c.Detail = fmt.Sprintf("node %q is not in the Raft configuration (removed, or not joined yet)", f.nodeID)
	case !f.gossip:
		c.OK, c.Detail = true, self.Suffrage
	case self.Gossip == cluster.GossipLeft:
		c.Detail = fmt.Sprintf("node %q has left the gossip layer", f.nodeID)
	case self.Gossip != cluster.GossipAlive && self.Gossip != cluster.GossipSuspect:
		c.Detail = fmt.Sprintf("node %q is not alive in its own gossip layer (gossip %q)", f.nodeID, self.Gossip)
	default:
		c.OK, c.Detail = true, self.Suffrage+", gossip "+self.Gossip
	}
	return c
}

// Ready is nil while this node serves and knows a leader: the data plane has
// applied the state once, no stop signal has arrived, and a leader is known.
// Unlike Health it needs a leader, and it does not look at listeners.
func (c clusterAPI) Ready() error {
	if c.stopping != nil && c.stopping.Load() {
		return errors.New("shutting down: draining open connections")
	}
	select {
	case <-c.serving:
	default:
		return errors.New("the data plane has not applied its state yet")
	}
	if id, _ := c.node.Leader(); id == "" {
		return errors.New("no cluster leader")
	}
	return nil
}
