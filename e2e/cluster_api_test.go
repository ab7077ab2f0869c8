package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serverMetaOf is GET /servers/{name}/meta.
type serverMetaOf struct {
	Name          string            `json:"name"`
	Origin        string            `json:"origin"`
	Revision      uint64            `json:"revision"`
	BackendStates map[string]string `json:"backend_states"`
}

func (a apiClient) meta(name string) (serverMetaOf, http.Header, error) {
	var m serverMetaOf
	code, body, hdr, err := a.doHeaders("GET", "/servers/"+name+"/meta", "", nil)
	if err != nil {
		return m, nil, err
	}
	if code != http.StatusOK {
		return m, nil, fmt.Errorf("GET /servers/%s/meta: %d %s", name, code, body)
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return m, nil, fmt.Errorf("GET /servers/%s/meta: %w: %s", name, err, body)
	}
	return m, hdr, nil
}

// revisionOf reads the revision from an ETag ("12").
func revisionOf(t testing.TB, etag string) uint64 {
	t.Helper()
	rev, err := strconv.ParseUint(strings.Trim(etag, `"`), 10, 64)
	if err != nil || !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) {
		t.Fatalf("ETag %q is not a quoted revision", etag)
	}
	return rev
}

// Writes through a follower: PUT with If-Match (a new ETag; a stale one is 409),
// backend drain and enable applied on every node, and the server's meta.
func TestClusterAPIThroughFollower(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	c := newTestCluster(t, "")
	for i := range 3 {
		c.start(i)
	}
	leader := c.waitFormed(20*time.Second, 0, 1, 2)
	f := (leader + 1) % 3
	api := c.api(f)

	port := freePort(t)
	body := strings.Replace(postBody(":"+strconv.Itoa(port), bs[0].line(), bs[1].line()), "leastconn", "roundrobin", 1)
	if code, b := api.mustDo(t, "POST", "/servers/web", body); code != 200 {
		t.Fatalf("POST /servers/web on follower n%d: %d %s", f+1, code, b)
	}
	c.waitServingEverywhere(port, 5*time.Second, 0, 1, 2)

	m, hdr, err := api.meta("web")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "web" || m.Origin != "api" || m.Revision == 0 {
		t.Fatalf("meta after POST: %+v", m)
	}
	if got := revisionOf(t, hdr.Get("ETag")); got != m.Revision {
		t.Fatalf("meta ETag %d, revision %d", got, m.Revision)
	}
	posted := m.Revision

	// An open connection through every node survives the in-place update.
	var open []*client
	for i := range 3 {
		cl := mustDial(t, c.host(i)+":"+strconv.Itoa(port))
		if err := cl.echo("before"); err != nil {
			t.Fatalf("n%d: %v", i+1, err)
		}
		open = append(open, cl)
	}

	// PUT with the current revision: 200 and a new ETag, seen at once on this node.
	updated := strings.Replace(body, `"client_idle_timeout":"10m"`, `"client_idle_timeout":"9m"`, 1)
	code, b, hdr, err := api.doHeaders("PUT", "/servers/web", updated, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, posted)})
	if err != nil || code != 200 {
		t.Fatalf("PUT /servers/web If-Match %d on follower: %d %s %v", posted, code, b, err)
	}
	putRev := revisionOf(t, hdr.Get("ETag"))
	if putRev <= posted {
		t.Fatalf("PUT ETag %d, not after the POST's revision %d", putRev, posted)
	}
	if m, _, err := api.meta("web"); err != nil || m.Revision != putRev || m.Origin != "api" {
		t.Fatalf("meta on the follower right after PUT: %+v %v (want revision %d)", m, err, putRev)
	}
	for i := range 3 {
		eventually(t, 5*time.Second, fmt.Sprintf("n%d sees the PUT", i+1), func() error {
			code, b, err := c.api(i).do("GET", "/servers/web", "")
			if err != nil {
				return err
			}
			if code != 200 || !strings.Contains(b, `"9m0s"`) && !strings.Contains(b, `"9m"`) {
				return fmt.Errorf("GET /servers/web: %d %s", code, b)
			}
			return nil
		})
	}
	for i, cl := range open {
		if err := cl.echo("after PUT"); err != nil {
			t.Fatalf("connection through n%d broken by an in-place PUT: %v", i+1, err)
		}
	}

	// A stale If-Match is refused, on a follower as on the leader, and changes nothing.
	for _, i := range []int{f, leader} {
		stale := strings.Replace(body, `"client_idle_timeout":"10m"`, `"client_idle_timeout":"8m"`, 1)
		code, b, _, err := c.api(i).doHeaders("PUT", "/servers/web", stale, map[string]string{"If-Match": fmt.Sprintf(`"%d"`, posted)})
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusConflict {
			t.Fatalf("PUT with stale If-Match %d on n%d: want 409, got %d %s", posted, i+1, code, b)
		}
		decodeAPIError(t, b)
	}
	if m, _, err := api.meta("web"); err != nil || m.Revision != putRev {
		t.Fatalf("meta after a refused PUT: %+v %v (want revision %d)", m, err, putRev)
	}

	// Drain b1 through the follower: no new connection goes to it on any node.
	drain := "/servers/web/backends/" + bs[0].addr + "/drain"
	if code, b := api.mustDo(t, "POST", drain, ""); code != 200 {
		t.Fatalf("POST %s on follower: %d %s", drain, code, b)
	}
	if m, _, err := api.meta("web"); err != nil || m.BackendStates[bs[0].addr] != "drain" || m.Origin != "api" {
		t.Fatalf("meta on the follower after drain: %+v %v", m, err)
	}
	for i := range 3 {
		addr := c.host(i) + ":" + strconv.Itoa(port)
		eventually(t, 5*time.Second, fmt.Sprintf("n%d stops sending new connections to b1", i+1), func() error {
			for range 6 {
				name, err := who(addr)
				if err != nil {
					return err
				}
				if name != "b2" {
					return fmt.Errorf("a new connection went to %s", name)
				}
			}
			return nil
		})
		onlyGoesTo(t, addr, bs[1], 10)
	}

	// Enable puts it back everywhere.
	enable := "/servers/web/backends/" + bs[0].addr + "/enable"
	if code, b := api.mustDo(t, "POST", enable, ""); code != 200 {
		t.Fatalf("POST %s on follower: %d %s", enable, code, b)
	}
	for i := range 3 {
		addr := c.host(i) + ":" + strconv.Itoa(port)
		eventually(t, 5*time.Second, fmt.Sprintf("n%d sends to b1 again", i+1), func() error {
			seen := map[string]int{}
			for range 6 {
				name, err := who(addr)
				if err != nil {
					return err
				}
				seen[name]++
			}
			if seen["b1"] == 0 || seen["b2"] == 0 {
				return fmt.Errorf("roundrobin over both backends: got %v", seen)
			}
			return nil
		})
	}
	for i := range 3 {
		m, _, err := c.api(i).meta("web")
		if err != nil {
			t.Fatal(err)
		}
		if m.Origin != "api" || m.Revision < putRev || m.BackendStates[bs[0].addr] == "drain" {
			t.Fatalf("meta on n%d after enable: %+v (PUT revision %d)", i+1, m, putRev)
		}
	}
}

// Without quorum a node answers writes with 503 within seconds and keeps
// serving its last applied state; /health stays 200 while /ready is 503.
func TestClusterNoLeaderAnswers503(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 1)
	c := newTestCluster(t, "")
	for i := range 3 {
		c.start(i)
	}
	leader := c.waitFormed(20*time.Second, 0, 1, 2)
	port := freePort(t)
	if code, b := c.api((leader+1)%3).mustDo(t, "POST", "/servers/web", postBody(":"+strconv.Itoa(port), bs[0].line())); code != 200 {
		t.Fatalf("POST /servers/web: %d %s", code, b)
	}
	c.waitServingEverywhere(port, 5*time.Second, 0, 1, 2)

	// The survivor is the leader: it has to notice that it lost its quorum.
	survivor := leader
	addr := c.host(survivor) + ":" + strconv.Itoa(port)
	ld := startLiveLoad(addr)
	defer ld.Stop()

	stopped := time.Now()
	for _, i := range []int{(survivor + 1) % 3, (survivor + 2) % 3} {
		c.nodes[i].signal(syscall.SIGTERM)
	}
	for _, i := range []int{(survivor + 1) % 3, (survivor + 2) % 3} {
		if code := c.nodes[i].waitExit(15 * time.Second); code != 0 {
			t.Fatalf("n%d exit code %d", i+1, code)
		}
	}
	api := c.api(survivor)
	start := time.Now()
	code, b, err := api.do("POST", "/servers/web2", postBody(":"+strconv.Itoa(freePort(t)), bs[0].line()))
	if err != nil {
		t.Fatalf("write without quorum: %v", err)
	}
	took := time.Since(start)
	t.Logf("peers stopped -> 503: %v (the write itself: %v)", time.Since(stopped), took)
	requireNoLeaderError(t, code, b)
	if took > 6*time.Second {
		t.Fatalf("the 503 took %v: want it within a few seconds", took)
	}
	if code, b := api.mustDo(t, "GET", "/servers/web2", ""); code != 404 {
		t.Fatalf("a write answered 503 was applied: GET /servers/web2: %d %s", code, b)
	}

	if code, b := api.mustDo(t, "GET", "/health", ""); code != 200 {
		t.Fatalf("GET /health on the survivor: %d %s", code, b)
	}
	if code, b := api.mustDo(t, "GET", "/ready", ""); code != 503 {
		t.Fatalf("GET /ready on the survivor without a leader: %d %s", code, b)
	} else {
		decodeAPIError(t, b)
	}
	// The data plane keeps serving the last applied state.
	countWho(t, addr, 10)
	if f := ld.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests through the survivor failed after it lost its peers (last: %v)", f, ld.requests.Load(), ld.lastErr.Load())
	}
	if ld.requests.Load() == 0 {
		t.Fatal("no request went through the survivor")
	}
}
