package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
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

// Health: the data plane serves its last applied state, with or without quorum.
func (c clusterAPI) Health() error {
	if c.stopping != nil && c.stopping.Load() {
		return errors.New("shutting down: draining open connections")
	}
	select {
	case <-c.serving:
		return nil
	default:
		return errors.New("the data plane has not applied its state yet")
	}
}

// Ready: a leader is known and this node serves.
func (c clusterAPI) Ready() error {
	if err := c.Health(); err != nil {
		return err
	}
	if id, _ := c.node.Leader(); id == "" {
		return errors.New("no cluster leader")
	}
	return nil
}
