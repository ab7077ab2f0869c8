package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// mlGossip is the memberlist membership layer.
//
// memberlist v0.7.0 tells NotifyLeave apart neither for dead and left members
// (the exported Node.State is never set) nor reports suspicion, so a leaving
// node first gossips meta with Leaving set (UpdateNode), then leaves: a member
// whose last meta said Leaving is "left", any other lost member "dead".
type mlGossip struct {
	ml   *memberlist.Memberlist
	del  *mlDelegate
	name string
}

type mlDelegate struct {
	onChange func()

	mu    sync.Mutex
	meta  []byte
	known map[string]gossipMember
}

func newGossip(o gossipOptions) (gossiper, error) {
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = o.Name
	host, port, err := splitHostPort(o.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip bind: %w", err)
	}
	cfg.BindAddr, cfg.BindPort = host, port
	if o.Advertise != "" {
		h, p, err := splitHostPort(o.Advertise)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise: %w", err)
		}
		cfg.AdvertiseAddr, cfg.AdvertisePort = h, p
	}
	// The LAN preset with the changes CLUSTER-NOTES §4 recommends for small
	// clusters: faster gossip, anti-entropy every 10 s, a dead name reusable
	// after 30 s.
	cfg.GossipInterval = 100 * time.Millisecond
	cfg.PushPullInterval = 10 * time.Second
	cfg.DeadNodeReclaimTime = 30 * time.Second
	cfg.Label = "gobetween"
	if len(o.Key) > 0 {
		cfg.SecretKey = o.Key
	}
	// memberlist logs routine probe failures as warnings: debug level here.
	cfg.Logger = log.New(slogWriter{o.Logger.With("component", "memberlist")}, "", 0)
	meta, err := json.Marshal(o.Meta)
	if err != nil {
		return nil, fmt.Errorf("gossip meta: %w", err)
	}
	d := &mlDelegate{onChange: o.OnChange, meta: meta, known: map[string]gossipMember{}}
	cfg.Delegate = d
	cfg.Events = d
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", o.Bind, err)
	}
	return &mlGossip{ml: ml, del: d, name: o.Name}, nil
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", hp)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, port, nil
}

func (g *mlGossip) join(addrs []string) (int, error) { return g.ml.Join(addrs) }

func (g *mlGossip) localAddr() string { return g.ml.LocalNode().Address() }

func (g *mlGossip) members() []gossipMember {
	g.del.mu.Lock()
	defer g.del.mu.Unlock()
	out := make([]gossipMember, 0, len(g.del.known))
	for _, m := range g.del.known {
		out = append(out, m)
	}
	return out
}

// leave announces the intent, then leaves. The node keeps answering gossip
// until shutdown.
func (g *mlGossip) leave(timeout time.Duration) error {
	g.del.mu.Lock()
	var m nodeMeta
	_ = json.Unmarshal(g.del.meta, &m)
	m.Leaving = true
	g.del.meta, _ = json.Marshal(m)
	g.del.mu.Unlock()
	if err := g.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip leave: announce: %w", err)
	}
	if err := g.ml.Leave(timeout); err != nil {
		return fmt.Errorf("gossip leave: %w", err)
	}
	return nil
}

func (g *mlGossip) shutdown() error { return g.ml.Shutdown() }

// NodeMeta implements memberlist.Delegate.
func (d *mlDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return bytes.Clone(d.meta)
}

func (d *mlDelegate) NotifyMsg([]byte)                           {}
func (d *mlDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *mlDelegate) LocalState(join bool) []byte                { return nil }
func (d *mlDelegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyJoin, NotifyUpdate and NotifyLeave implement memberlist.EventDelegate;
// memberlist never calls them concurrently.
func (d *mlDelegate) NotifyJoin(n *memberlist.Node)   { d.record(n, GossipAlive) }
func (d *mlDelegate) NotifyUpdate(n *memberlist.Node) { d.record(n, GossipAlive) }
func (d *mlDelegate) NotifyLeave(n *memberlist.Node) {
	state := GossipDead
	if m, ok := decodeMeta(n.Meta); ok && m.Leaving {
		state = GossipLeft
	}
	d.mu.Lock()
	if prev, ok := d.known[n.Name]; ok && prev.Meta.Leaving {
		state = GossipLeft
	}
	d.mu.Unlock()
	d.record(n, state)
}

func (d *mlDelegate) record(n *memberlist.Node, state string) {
	meta, _ := decodeMeta(n.Meta)
	d.mu.Lock()
	if prev, ok := d.known[n.Name]; ok && meta.ID == "" {
		meta = prev.Meta
	}
	d.known[n.Name] = gossipMember{Name: n.Name, Addr: n.Address(), Meta: meta, State: state}
	d.mu.Unlock()
	if d.onChange != nil {
		d.onChange()
	}
}
