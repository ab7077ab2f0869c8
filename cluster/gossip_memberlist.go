package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
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
	tr   *meteredTransport
}

type mlDelegate struct {
	onChange func()
	reports  reportHandler // nil: user messages are ignored
	queue    *memberlist.TransmitLimitedQueue
	alive    atomic.Int64 // members alive in known, this node included
	// relayAbove: with more members than this, a round of the origin's gossip
	// does not reach every other member, so receivers relay reports too.
	relayAbove int

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
	d := &mlDelegate{
		onChange: o.OnChange, reports: o.Reports, meta: meta, known: map[string]gossipMember{},
		relayAbove: cfg.GossipNodes + 1,
	}
	d.queue = &memberlist.TransmitLimitedQueue{NumNodes: d.numMembers, RetransmitMult: cfg.RetransmitMult}
	cfg.Delegate = d
	cfg.Events = d
	// The transport counts the traffic (GossipStats). memberlist adopts the
	// bound port as it does for its own transport.
	tr, err := newMeteredTransport(host, port, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", o.Bind, err)
	}
	cfg.Transport = tr
	if port == 0 {
		cfg.BindPort = tr.port()
		if o.Advertise == "" || cfg.AdvertisePort == 0 {
			cfg.AdvertisePort = cfg.BindPort
		}
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		_ = tr.Shutdown()
		return nil, fmt.Errorf("gossip on %s: %w", o.Bind, err)
	}
	return &mlGossip{ml: ml, del: d, name: o.Name, tr: tr}, nil
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

func (g *mlGossip) broadcast(name string, msg []byte) {
	g.del.queue.QueueBroadcast(namedBroadcast{name: name, msg: msg})
}

func (g *mlGossip) sendReliable(to string, msg []byte) error {
	return g.sendTo(to, msg, g.ml.SendReliable)
}

func (g *mlGossip) sendBestEffort(to string, msg []byte) error {
	return g.sendTo(to, msg, g.ml.SendBestEffort)
}

func (g *mlGossip) sendTo(to string, msg []byte, send func(*memberlist.Node, []byte) error) error {
	for _, m := range g.ml.Members() {
		if m.Name == to {
			if err := send(m, msg); err != nil {
				return fmt.Errorf("gossip send to %s: %w", to, err)
			}
			return nil
		}
	}
	return fmt.Errorf("gossip send to %s: not an alive member", to)
}

func (g *mlGossip) aliveOthers() []string {
	var out []string
	for _, m := range g.ml.Members() {
		if m.Name != g.name {
			out = append(out, m.Name)
		}
	}
	return out
}

func (g *mlGossip) traffic() (sent, received uint64) {
	return g.tr.sent.Load(), g.tr.received.Load()
}

// namedBroadcast is a memberlist broadcast that replaces a queued one of the
// same name, so at most one version per name is ever queued.
type namedBroadcast struct {
	name string
	msg  []byte
}

func (b namedBroadcast) Name() string    { return b.name }
func (b namedBroadcast) Message() []byte { return b.msg }
func (b namedBroadcast) Finished()       {}
func (b namedBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}

// NodeMeta implements memberlist.Delegate.
func (d *mlDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil
	}
	return bytes.Clone(d.meta)
}

// NotifyMsg implements memberlist.Delegate. It runs in memberlist's receive
// loops: the handler decodes (copying what it keeps) and merges without
// blocking. An accepted report small enough for a broadcast is relayed in a
// cluster larger than one gossip round's fan-out.
func (d *mlDelegate) NotifyMsg(b []byte) {
	if d.reports == nil || len(b) == 0 {
		return
	}
	origin := d.reports.receive(b)
	if origin != "" && len(b) <= maxBroadcastReport && d.numMembers() > d.relayAbove {
		d.queue.QueueBroadcast(namedBroadcast{name: reportBroadcastName(origin), msg: bytes.Clone(b)})
	}
}

// GetBroadcasts implements memberlist.Delegate.
func (d *mlDelegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate: every report this node holds, so
// a joiner gets all of them in one exchange.
func (d *mlDelegate) LocalState(join bool) []byte {
	if d.reports == nil {
		return nil
	}
	return d.reports.localState()
}

// MergeRemoteState implements memberlist.Delegate.
func (d *mlDelegate) MergeRemoteState(buf []byte, join bool) {
	if d.reports == nil || len(buf) == 0 {
		return
	}
	d.reports.mergeState(buf)
}

// numMembers counts the alive members from the events, not from memberlist,
// whose lock may be held where the queue asks.
func (d *mlDelegate) numMembers() int { return max(int(d.alive.Load()), 1) }

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
	var alive int64
	for _, m := range d.known {
		if m.State == GossipAlive {
			alive++
		}
	}
	d.alive.Store(alive)
	d.mu.Unlock()
	if d.reports != nil {
		d.reports.memberState(n.Name, state == GossipAlive)
	}
	if d.onChange != nil {
		d.onChange()
	}
}
