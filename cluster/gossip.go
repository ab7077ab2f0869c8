package cluster

import (
	"encoding/json"
	"log/slog"
	"time"
)

// Gossip states of a member, as Members reports them.
const (
	GossipAlive   = "alive"
	GossipSuspect = "suspect"
	GossipDead    = "dead"
	GossipLeft    = "left"
)

// metaVersion is the version of the node metadata carried in gossip.
const metaVersion = 1

// nodeMeta is the memberlist node metadata (well under memberlist's 512 B).
type nodeMeta struct {
	ID      string `json:"id"`
	Raft    string `json:"raft"`
	Version int    `json:"ver"`    // metaVersion
	Command int    `json:"cmd"`    // the newest CommandVersion the node understands
	Expect  int    `json:"expect"` // its bootstrap_expect; only nodes that agree bootstrap together
	Leaving bool   `json:"leaving,omitempty"`
}

// gossipMember is one member as the gossip layer knows it, dead and left ones
// included.
type gossipMember struct {
	Name  string // memberlist name == node id
	Addr  string // gossip host:port
	Meta  nodeMeta
	State string // GossipAlive, …
}

// gossipOptions configures the gossip layer.
type gossipOptions struct {
	Name      string
	Bind      string // host:port
	Advertise string // host:port or ""
	Key       []byte
	Meta      nodeMeta
	Logger    *slog.Logger
	OnChange  func()        // called (never blocking) on join, update and leave events
	Reports   reportHandler // observed-state messages; nil: none
}

// reportHandler is the observed-state side of the gossip delegate
// (observer.go). memberlist calls it from its receive loops: no method blocks.
type reportHandler interface {
	// receive handles one user message, from a broadcast or a reliable send;
	// buf is valid only during the call. It returns the origin of a report
	// that was accepted and fits a broadcast, for relaying, or "".
	receive(buf []byte) (relay string)
	// localState is every report this node holds, for push/pull.
	localState() []byte
	// mergeState merges a peer's localState; buf is valid only during the call.
	mergeState(buf []byte)
	// memberState tells that a member became alive (join, update) or was lost
	// (dead or left).
	memberState(name string, alive bool)
}

// gossiper is the membership layer: memberlist (gossip_memberlist.go).
// Methods are safe for concurrent use.
type gossiper interface {
	join(addrs []string) (int, error)
	members() []gossipMember
	localAddr() string
	leave(timeout time.Duration) error
	shutdown() error
	// broadcast queues msg for gossip under name; it replaces a queued
	// message of the same name.
	broadcast(name string, msg []byte)
	// sendReliable sends msg over TCP to the member named to.
	sendReliable(to string, msg []byte) error
	// sendBestEffort sends msg in one UDP packet to the member named to.
	sendBestEffort(to string, msg []byte) error
	// aliveOthers returns the names of the other members memberlist holds alive
	// (or suspect).
	aliveOthers() []string
	// traffic returns the bytes sent and received on the gossip port, UDP and TCP.
	traffic() (sent, received uint64)
}

func decodeMeta(b []byte) (nodeMeta, bool) {
	var m nodeMeta
	if len(b) == 0 || json.Unmarshal(b, &m) != nil || m.ID == "" || m.Raft == "" {
		return nodeMeta{}, false
	}
	return m, true
}
