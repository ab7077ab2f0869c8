package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// viewStats is GET /servers/{name}/stats with the cluster view of every backend.
type viewStats struct {
	ActiveConnections int64         `json:"active_connections"`
	Backends          []viewBackend `json:"backends"`
}

type viewBackend struct {
	Host           string `json:"host"`
	Port           string `json:"port"`
	MaxConnections int    `json:"max_connections"`
	Stats          struct {
		Live              bool   `json:"live"` // the cluster verdict this node routes by
		ActiveConnections int64  `json:"active_connections"`
		State             string `json:"state"` // drain, disable or ""
		Cluster           struct {
			ActiveConnections int64           `json:"active_connections"`
			Healthy           bool            `json:"healthy"`
			Policy            string          `json:"policy"`
			Nodes             map[string]bool `json:"nodes"`
		} `json:"cluster"`
	} `json:"stats"`
}

func (a apiClient) viewStats(name string) (viewStats, error) {
	var s viewStats
	return s, a.getJSON("/servers/"+name+"/stats", &s)
}

// backend is the entry of b in s, nil when s does not list it.
func (s viewStats) backend(b *backend) *viewBackend {
	for i := range s.Backends {
		if net.JoinHostPort(s.Backends[i].Host, s.Backends[i].Port) == b.addr {
			return &s.Backends[i]
		}
	}
	return nil
}

// viewMember is a member of GET /cluster with what this node last heard of its
// gossip reports.
type viewMember struct {
	ID             string    `json:"id"`
	Raft           string    `json:"raft"`
	Gossip         string    `json:"gossip"`
	LastReport     time.Time `json:"last_report"`
	ReportSeq      uint64    `json:"report_seq"`
	ReportBackends int       `json:"report_backends"`
}

func clusterViewOf(a apiClient) ([]viewMember, error) {
	var s struct {
		Members []viewMember `json:"members"`
	}
	err := a.getJSON("/cluster", &s)
	return s.Members, err
}

func memberOf(ms []viewMember, id string) (viewMember, bool) {
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return viewMember{}, false
}

// viewServer is the JSON body of POST and PUT /servers/{name}: a static list and,
// when hc is set, a health check (the JSON keys of [servers.X.healthcheck]).
func viewServer(bind, balance string, hc map[string]any, backends ...string) string {
	s := map[string]any{
		"bind":      bind,
		"protocol":  "tcp",
		"balance":   balance,
		"discovery": map[string]any{"kind": "static", "static_list": backends},
	}
	if hc != nil {
		s["healthcheck"] = hc
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // maps of strings and slices always marshal
	}
	return string(b)
}

// viewPing is a ping (TCP connect) health check every interval, one failure or
// success flipping the node's own verdict.
func viewPing(interval string) map[string]any {
	return map[string]any{"kind": "ping", "interval": interval, "timeout": "250ms", "fails": 1, "passes": 1}
}

// nodeIDs are the node ids of a three-node test cluster, in order.
var nodeIDs = [3]string{"n1", "n2", "n3"}

// waitViews polls GET /servers/{name}/stats on every api until cond holds for
// each (cond gets the node's index), and returns how long that took.
func waitViews(t testing.TB, apis []apiClient, name string, timeout time.Duration, what string, cond func(i int, s viewStats) error) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, what, func() error {
		for i, a := range apis {
			s, err := a.viewStats(name)
			if err != nil {
				return fmt.Errorf("n%d: %w", i+1, err)
			}
			if err := cond(i, s); err != nil {
				return fmt.Errorf("n%d: %w", i+1, err)
			}
		}
		return nil
	})
	return time.Since(start)
}

// clusterHealthy is a waitViews condition: each of bs is live and healthy in the
// cluster verdict, with a healthy own verdict from every one of nodes.
func clusterHealthy(nodes []string, bs ...*backend) func(int, viewStats) error {
	return func(_ int, s viewStats) error {
		for _, b := range bs {
			v := s.backend(b)
			if v == nil {
				return fmt.Errorf("%s not in stats", b.name)
			}
			if !v.Stats.Live || !v.Stats.Cluster.Healthy {
				return fmt.Errorf("%s live=%v cluster.healthy=%v", b.name, v.Stats.Live, v.Stats.Cluster.Healthy)
			}
			for _, id := range nodes {
				if ok, reported := v.Stats.Cluster.Nodes[id]; !ok || !reported {
					return fmt.Errorf("%s: cluster.nodes = %v, want %s healthy", b.name, v.Stats.Cluster.Nodes, id)
				}
			}
		}
		return nil
	}
}

// clusterConns is a waitViews condition: backend b's cluster-wide
// active_connections is want.
func clusterConns(b *backend, want int64) func(int, viewStats) error {
	return func(_ int, s viewStats) error {
		v := s.backend(b)
		if v == nil {
			return fmt.Errorf("%s not in stats", b.name)
		}
		if got := v.Stats.Cluster.ActiveConnections; got != want {
			return fmt.Errorf("%s cluster.active_connections=%d, want %d", b.name, got, want)
		}
		return nil
	}
}

// backendState is a waitViews condition: backend b's stats.state is want.
func backendState(b *backend, want string) func(int, viewStats) error {
	return func(_ int, s viewStats) error {
		v := s.backend(b)
		if v == nil {
			return fmt.Errorf("%s not in stats", b.name)
		}
		if v.Stats.State != want {
			return fmt.Errorf("%s stats.state=%q, want %q", b.name, v.Stats.State, want)
		}
		return nil
	}
}

// clusterAPIs are the API clients of nodes idx of c.
func clusterAPIs(c *testCluster, idx ...int) []apiClient {
	out := make([]apiClient, len(idx))
	for k, i := range idx {
		out[k] = c.api(i)
	}
	return out
}

// serverAddr is the address server port listens on at node i.
func serverAddr(c *testCluster, i, port int) string { return c.host(i) + ":" + strconv.Itoa(port) }

// heldConns are long-lived client connections, each answered by a backend,
// closed in t.Cleanup unless closed before.
type heldConns struct {
	mu    sync.Mutex
	conns map[string][]*client // backend name -> connections
}

func newHeld(t testing.TB) *heldConns {
	h := &heldConns{conns: map[string][]*client{}}
	t.Cleanup(h.closeAll)
	return h
}

// open connects from src to addr, asks WHO and keeps the connection.
func (h *heldConns) open(src, addr string) (string, error) {
	c, err := dialFrom(src, addr)
	if err != nil {
		return "", err
	}
	name, err := c.cmd("WHO")
	if err != nil {
		c.Close()
		return "", err
	}
	h.mu.Lock()
	h.conns[name] = append(h.conns[name], c)
	h.mu.Unlock()
	return name, nil
}

func (h *heldConns) count(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns[name])
}

func (h *heldConns) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, cs := range h.conns {
		n += len(cs)
	}
	return n
}

// echoAll checks that every held connection still relays.
func (h *heldConns) echoAll(text string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, cs := range h.conns {
		for _, c := range cs {
			if err := c.echo(text); err != nil {
				return fmt.Errorf("connection held on %s: %w", name, err)
			}
		}
	}
	return nil
}

func (h *heldConns) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, cs := range h.conns {
		for _, c := range cs {
			c.Close()
		}
	}
	h.conns = map[string][]*client{}
}

// peakSampler records the highest number of connections a backend held at once,
// sampling every millisecond until stop.
type peakSampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func samplePeak(b *backend) *peakSampler {
	p := &peakSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if n := int64(b.active()); n > p.peak.Load() {
				p.peak.Store(n)
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// Stop ends the sampling and returns the peak.
func (p *peakSampler) Stop() int {
	close(p.stop)
	<-p.done
	return int(p.peak.Load())
}
