package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// doHeaders is apiClient.do with request headers, returning the response
// headers too (ETag, X-Gobetween-Revision).
func (a apiClient) doHeaders(method, path, body string, hdr map[string]string) (int, string, http.Header, error) {
	return a.doWith(httpClient, method, path, body, hdr)
}

// slowClient waits long enough to see how long an answer really takes.
var slowClient = &http.Client{Timeout: 30 * time.Second}

func (a apiClient) doWith(hc *http.Client, method, path, body string, hdr map[string]string) (int, string, http.Header, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		return 0, "", nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, err
}

// leaderOf polls GET /cluster on every given API until all of them name the same
// leader and each sees at least voters voters; it returns the leader's ID.
func leaderOf(t testing.TB, timeout time.Duration, voters int, apis map[string]apiClient, nodes map[string]*node) string {
	t.Helper()
	var leader string
	eventually(t, timeout, "one leader agreed on", func() error {
		ids := map[string]bool{}
		for id, a := range apis {
			if n := nodes[id]; n != nil {
				n.requireRunning()
			}
			s, err := clusterStatusOf(a)
			if err != nil {
				return fmt.Errorf("%s: %w", id, err)
			}
			if s.LeaderID == "" {
				return fmt.Errorf("%s: no leader", id)
			}
			ids[s.LeaderID] = true
			if v := countVoters(s); v < voters {
				return fmt.Errorf("%s sees %d voters: %+v", id, v, s.Members)
			}
		}
		if len(ids) != 1 {
			return fmt.Errorf("nodes disagree on the leader: %v", ids)
		}
		for id := range ids {
			leader = id
		}
		return nil
	})
	return leader
}

func clusterStatusOf(a apiClient) (clusterStatus, error) {
	var s clusterStatus
	return s, a.getJSON("/cluster", &s)
}

func countVoters(s clusterStatus) int {
	n := 0
	for _, m := range s.Members {
		if m.Raft == "leader" || m.Raft == "voter" {
			n++
		}
	}
	return n
}

// raftRole is the "raft" field of member id in s, "" when it is not listed.
func raftRole(s clusterStatus, id string) string {
	for _, m := range s.Members {
		if m.ID == id {
			return m.Raft
		}
	}
	return ""
}

// requireNoLeaderError checks that a failed write is a JSON error that says the
// cluster has no leader.
func requireNoLeaderError(t testing.TB, code int, body string) {
	t.Helper()
	if code != http.StatusServiceUnavailable {
		t.Fatalf("write without quorum: want 503, got %d %s", code, body)
	}
	var e apiError
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == "" {
		t.Fatalf("503 body is not a JSON error: %v: %s", err, body)
	}
	if !strings.Contains(strings.ToLower(e.Error), "leader") {
		t.Fatalf("503 error does not say there is no leader: %q", e.Error)
	}
}

// liveLoad sends requests through some addresses in a loop (one client per
// address, a request every 5 ms) and counts the ones that fail, until Stop.
// Unlike startLoad (signal_test.go), its counters can be read while it runs,
// which the cluster tests need to check a phase (a partition) mid-way.
type liveLoad struct {
	failures, requests atomic.Int64
	lastErr            atomic.Value // string
	stop               chan struct{}
	wg                 sync.WaitGroup
	Stop               func() // idempotent: stops the clients and waits for them
}

func startLiveLoad(addrs ...string) *liveLoad {
	l := &liveLoad{stop: make(chan struct{})}
	l.Stop = sync.OnceFunc(func() { close(l.stop); l.wg.Wait() })
	for _, addr := range addrs {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if _, err := who(addr); err != nil {
					l.failures.Add(1)
					l.lastErr.Store(err.Error())
				}
				l.requests.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

// clusterNodeConfig is the config of node i (0-based) of a three-node test
// cluster whose node j runs on hosts[j], all with the same ports; extra is
// appended (server sections).
func clusterNodeConfig(hosts [3]string, i, apiPort, gossip, raftPort int, extra string) string {
	var join []string
	for _, h := range hosts {
		join = append(join, h+":"+strconv.Itoa(gossip))
	}
	return fmt.Sprintf(`[logging]
level = "debug"
output = "stdout"

[api]
enabled = true
bind = "%[1]s:%[2]d"

[cluster]
node_id = "n%[3]d"
data_dir = "data"
bind = "%[1]s:%[4]d"
raft_bind = "%[1]s:%[5]d"
join = %[6]s
bootstrap_expect = 3
servers_host = "%[1]s"

[defaults]
drain_timeout = "1s"

%[7]s`, hosts[i], apiPort, i+1, gossip, raftPort, tomlList(join...), extra)
}
