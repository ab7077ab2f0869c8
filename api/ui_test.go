package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gobetween/gobetween/proxy"
)

func authHeader(login, password string) map[string]string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(login, password)
	return map[string]string{"Authorization": r.Header.Get("Authorization")}
}

func TestUIAssets(t *testing.T) {
	f := newFixture(t, withAuth)
	auth := authHeader("admin", apiPassword)
	for _, c := range []struct {
		path, file, contentType string
	}{
		{"/ui/", "ui/index.html", "text/html; charset=utf-8"},
		{"/ui/index.html", "ui/index.html", "text/html; charset=utf-8"},
		{"/ui/app.js", "ui/app.js", "text/javascript; charset=utf-8"},
		{"/ui/style.css", "ui/style.css", "text/css; charset=utf-8"},
	} {
		t.Run(c.path, func(t *testing.T) {
			rec := f.do(t, request{path: c.path, header: auth})
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d %s", c.path, rec.Code, rec.Body)
			}
			if got := rec.Header().Get("Content-Type"); got != c.contentType {
				t.Errorf("Content-Type = %q, want %q", got, c.contentType)
			}
			want, err := uiFiles.ReadFile(c.file)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Body.String() != string(want) {
				t.Errorf("body is not the embedded %s", c.file)
			}
			for _, h := range []string{"Content-Security-Policy", "ETag", "X-Content-Type-Options"} {
				if rec.Header().Get(h) == "" {
					t.Errorf("no %s header", h)
				}
			}
			// The ETag saves the body on the next load.
			again := f.do(t, request{path: c.path, header: map[string]string{
				"Authorization": auth["Authorization"], "If-None-Match": rec.Header().Get("ETag")}})
			if again.Code != http.StatusNotModified {
				t.Errorf("GET with If-None-Match = %d, want 304", again.Code)
			}
		})
	}
	t.Run("unknown file", func(t *testing.T) {
		errorBody(t, f.do(t, request{path: "/ui/nope.js", header: auth}), http.StatusNotFound)
	})
	t.Run("redirect", func(t *testing.T) {
		for path, want := range map[string]string{"/ui": "/ui/", "/ui?x=1": "/ui/?x=1"} {
			rec := f.do(t, request{path: path, header: auth})
			if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != want {
				t.Errorf("GET %s = %d Location %q, want 301 %s", path, rec.Code, rec.Header().Get("Location"), want)
			}
		}
	})
}

// The page's script must never turn data into markup: backend names, node ids
// and error messages all come from elsewhere.
func TestUIScriptWritesNoMarkup(t *testing.T) {
	js, err := uiFiles.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`).Find(js); m != nil {
		t.Fatalf("app.js uses %s", m)
	}
}

func TestUIRequiresAuth(t *testing.T) {
	f := newFixture(t, withAuth)
	for _, path := range []string{"/ui", "/ui/", "/ui/app.js", "/ui/style.css", "/ui/events"} {
		for _, c := range []struct {
			name   string
			header map[string]string
		}{
			{"no credentials", nil},
			{"wrong password", authHeader("admin", "guess")},
		} {
			t.Run(path+" "+c.name, func(t *testing.T) {
				rec := f.do(t, request{path: path, header: c.header})
				errorBody(t, rec, http.StatusUnauthorized)
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Fatal("no WWW-Authenticate challenge: the browser would not ask for credentials")
				}
			})
		}
	}
}

// sseReader reads the events of a text/event-stream.
type sseReader struct{ r *bufio.Reader }

// next returns the next event's name and data; "retry:" and comment lines are
// skipped.
func (s sseReader) next() (event, data string, err error) {
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", "", err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if event != "" || data != "" {
				return event, data, nil
			}
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

type testSnapshot struct {
	Time    time.Time      `json:"time"`
	Version string         `json:"version"`
	Cluster *ClusterStatus `json:"cluster"`
	Health  string         `json:"health"`
	Ready   string         `json:"ready"`
	Servers []struct {
		Name        string `json:"name"`
		Bind        string `json:"bind"`
		Protocol    string `json:"protocol"`
		Balance     string `json:"balance"`
		Discovery   string `json:"discovery"`
		Healthcheck string `json:"healthcheck"`
		Origin      string `json:"origin"`
		Revision    uint64 `json:"revision"`
		Stats       struct {
			ActiveConnections int64 `json:"active_connections"`
			Backends          []struct {
				Host  string `json:"host"`
				Port  string `json:"port"`
				State string `json:"state"`
				Stats struct {
					ActiveConnections int64 `json:"active_connections"`
				} `json:"stats"`
			} `json:"backends"`
		} `json:"stats"`
	} `json:"servers"`
}

func readSnapshot(t *testing.T, s sseReader) testSnapshot {
	t.Helper()
	event, data, err := s.next()
	if err != nil {
		t.Fatalf("read event: %v", err)
	}
	if event != "snapshot" {
		t.Fatalf("event %q, want snapshot", event)
	}
	var snap testSnapshot
	if err := json.Unmarshal([]byte(data), &snap); err != nil {
		t.Fatalf("snapshot %s: %v", data, err)
	}
	return snap
}

// streamServer serves h over real HTTP and reports each /ui/events request's
// end on the returned channel, so a test can see the stream stop.
func streamServer(t *testing.T, h http.Handler) (*httptest.Server, chan struct{}) {
	t.Helper()
	ended := make(chan struct{}, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.URL.Path == "/ui/events" {
			ended <- struct{}{}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, ended
}

func openStream(t *testing.T, ctx context.Context, url string) (*http.Response, sseReader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/ui/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", apiPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /ui/events: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /ui/events = %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Fatalf("Content-Type = %q", ct)
	}
	return resp, sseReader{bufio.NewReader(resp.Body)}
}

func waitEnded(t *testing.T, ended chan struct{}, why string) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatalf("the event stream still runs 5 s after %s", why)
	}
}

func TestUIEvents(t *testing.T) {
	cl := &fakeCluster{status: ClusterStatus{NodeID: "n1", LeaderID: "n2", Revision: 9, Members: []ClusterMember{
		{ID: "n1", Address: "10.0.0.1:7946", Raft: "voter", Gossip: "alive"},
		{ID: "n2", Address: "10.0.0.2:7946", Raft: "leader", Gossip: "alive"},
	}}, readyErr: fmt.Errorf("no leader known: %w", ErrUnavailable)}
	f := newFixture(t, withAuth, withCluster(cl))
	if _, err := f.store.SetBackendState(context.Background(), "web", "127.0.0.1:8001", BackendDrain); err != nil {
		t.Fatal(err)
	}
	srv, ended := streamServer(t, f.handler)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, events := openStream(t, ctx, srv.URL)

	snap := readSnapshot(t, events)
	if snap.Cluster == nil || snap.Cluster.NodeID != "n1" || snap.Cluster.LeaderID != "n2" || len(snap.Cluster.Members) != 2 {
		t.Errorf("cluster = %+v", snap.Cluster)
	}
	if snap.Health != "ok" || !strings.Contains(snap.Ready, "no leader") {
		t.Errorf("health %q ready %q, want ok and the /ready error", snap.Health, snap.Ready)
	}
	if snap.Version != "1.0.0-test" || snap.Time.IsZero() {
		t.Errorf("version %q time %v", snap.Version, snap.Time)
	}
	if len(snap.Servers) != 2 || snap.Servers[0].Name != "consul" || snap.Servers[1].Name != "web" {
		t.Fatalf("servers = %+v, want consul and web in name order", snap.Servers)
	}
	web := snap.Servers[1]
	if web.Bind != "127.0.0.1:3000" || web.Protocol != "tcp" || web.Balance != "roundrobin" ||
		web.Discovery != "static" || web.Healthcheck != "ping" || web.Origin != OriginConfig || web.Revision == 0 {
		t.Errorf("web summary = %+v", web)
	}
	if n := len(web.Stats.Backends); n != 2 {
		t.Fatalf("web has %d backends, want 2", n)
	}
	if b := web.Stats.Backends[0]; b.Host != "127.0.0.1" || b.State != BackendDrain || b.Stats.ActiveConnections != 2 {
		t.Errorf("first backend = %+v, want 127.0.0.1 draining with 2 active", b)
	}
	// A server without counters here (consul) still shows, with none.
	if c := snap.Servers[0]; c.Stats.Backends == nil || len(c.Stats.Backends) != 0 {
		t.Errorf("consul backends = %v, want []", c.Stats.Backends)
	}
	// No secret of the consul server's definition travels.
	if data, _ := json.Marshal(snap); strings.Contains(string(data), consulToken) {
		t.Error("a snapshot carries the consul token")
	}

	// The next tick shows what changed.
	f.stats.mu.Lock()
	st := f.stats.stats["web"]
	st.Backends = append([]proxy.BackendStats(nil), st.Backends...)
	st.Backends[0].Stats.ActiveConnections = 5
	f.stats.stats["web"] = st
	f.stats.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap = readSnapshot(t, events)
		if snap.Servers[1].Stats.Backends[0].Stats.ActiveConnections == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot with the new active count within 5 s")
		}
	}

	cancel()
	waitEnded(t, ended, "the client went away")
}

func TestUIEventsStandalone(t *testing.T) {
	h := NewHandler(Options{Store: newMemStore(nil), Stats: &memStats{}})
	rec := httptest.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the first snapshot goes out, then the stream sees the client gone
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/events", nil).WithContext(ctx))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /ui/events = %d %s", rec.Code, rec.Body)
	}
	if !strings.HasPrefix(rec.Body.String(), "retry: ") {
		t.Errorf("stream does not start with a retry interval: %q", rec.Body)
	}
	snap := readSnapshot(t, sseReader{bufio.NewReader(rec.Body)})
	if snap.Cluster != nil || snap.Servers == nil || len(snap.Servers) != 0 || snap.Health != "ok" {
		t.Errorf("standalone snapshot without servers = %+v, want cluster null, servers [], health ok", snap)
	}
}

// An open page must not hold up the API's shutdown for its whole grace period.
func TestUIEventsEndOnShutdown(t *testing.T) {
	f := newFixture(t, withAuth)
	srv, ended := streamServer(t, f.handler)
	_, events := openStream(t, context.Background(), srv.URL)
	readSnapshot(t, events)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an open stream: %v after %v", err, time.Since(start))
	}
	waitEnded(t, ended, "shutdown")
}

func TestUIEventsLimit(t *testing.T) {
	f := newFixture(t)
	d := newDashboard(newHandlers(Options{Store: f.store, Stats: f.stats}), time.Second)
	for range cap(d.streams) {
		d.streams <- struct{}{}
	}
	rec := httptest.NewRecorder()
	d.events(rec, httptest.NewRequest(http.MethodGet, "/ui/events", nil))
	e := errorBody(t, rec, http.StatusServiceUnavailable)
	if !strings.Contains(e.Error, "too many dashboard streams") {
		t.Errorf("error %q", e.Error)
	}
	// A stream that ends gives its place back.
	<-d.streams
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec = httptest.NewRecorder()
	d.events(rec, httptest.NewRequest(http.MethodGet, "/ui/events", nil).WithContext(ctx))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /ui/events after a place freed = %d", rec.Code)
	}
	if n := len(d.streams); n != cap(d.streams)-1 {
		t.Fatalf("%d stream tokens held after the stream ended, want %d", n, cap(d.streams)-1)
	}
}

// Many pages share one snapshot per tick rather than each building its own.
func TestUISnapshotShared(t *testing.T) {
	f := newFixture(t)
	d := newDashboard(newHandlers(Options{Store: f.store, Stats: f.stats}), time.Hour)
	first := d.snapshot()
	f.stats.mu.Lock()
	delete(f.stats.stats, "web")
	f.stats.mu.Unlock()
	if second := d.snapshot(); &second[0] != &first[0] {
		t.Fatal("a second page within the tick built its own snapshot")
	}
}
