package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

// memStore is the in-memory twin of the desired state, with a log-like revision
// counter: every write takes the next revision. busyBinds simulates ports in use;
// failWith makes every write fail with that error.
type memStore struct {
	mu        sync.Mutex
	servers   map[string]ServerInfo
	states    map[string]map[string]string // server -> backend -> state
	revision  uint64
	now       time.Time
	busyBinds map[string]bool
	failWith  error
	// afterCreate, when set, runs (locked) after a successful create: a
	// concurrent writer changing the server before the API reads it back.
	afterCreate func(name string)
}

// memStoreTime is when the fake's writes happen; each write is a second later.
var memStoreTime = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// newMemStore holds servers as if loaded from the config file, in name order,
// at revisions 1, 2, ...
func newMemStore(servers map[string]config.Server) *memStore {
	m := &memStore{servers: map[string]ServerInfo{}, states: map[string]map[string]string{},
		busyBinds: map[string]bool{}, now: memStoreTime}
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		m.put(name, servers[name], OriginConfig)
	}
	return m
}

// put stores s at the next revision; m.mu must be held (or m not yet shared).
func (m *memStore) put(name string, s config.Server, origin string) uint64 {
	m.revision++
	m.now = m.now.Add(time.Second)
	m.servers[name] = ServerInfo{Server: s, Origin: origin, Revision: m.revision, Updated: m.now}
	return m.revision
}

func (m *memStore) Servers() map[string]config.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]config.Server, len(m.servers))
	for name, info := range m.servers {
		out[name] = info.Server
	}
	return out
}

func (m *memStore) Server(name string) (config.Server, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	info, ok := m.servers[name]
	return info.Server, ok
}

func (m *memStore) ServerInfo(name string) (ServerInfo, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	info, ok := m.servers[name]
	return info, ok
}

func (m *memStore) CreateServer(_ context.Context, name string, s config.Server) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWith != nil {
		return m.failWith
	}
	if _, ok := m.servers[name]; ok {
		return fmt.Errorf("server %q: %w", name, ErrExists)
	}
	if m.busyBinds[s.Bind] {
		return fmt.Errorf("%w: listen on %s: address already in use", ErrConflict, s.Bind)
	}
	m.put(name, s, OriginAPI)
	if m.afterCreate != nil {
		m.afterCreate(name)
	}
	return nil
}

func (m *memStore) UpdateServer(_ context.Context, name string, s config.Server, ifRevision uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWith != nil {
		return 0, m.failWith
	}
	cur, ok := m.servers[name]
	if !ok {
		return 0, fmt.Errorf("server %q: %w", name, ErrNotFound)
	}
	if ifRevision != 0 && ifRevision != cur.Revision {
		return 0, fmt.Errorf("%w: server %q is at revision %d, not %d", ErrConflict, name, cur.Revision, ifRevision)
	}
	if m.busyBinds[s.Bind] && s.Bind != cur.Server.Bind {
		return 0, fmt.Errorf("%w: listen on %s: address already in use", ErrConflict, s.Bind)
	}
	return m.put(name, s, OriginAPI), nil
}

func (m *memStore) DeleteServer(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWith != nil {
		return m.failWith
	}
	if _, ok := m.servers[name]; !ok {
		return fmt.Errorf("server %q: %w", name, ErrNotFound)
	}
	delete(m.servers, name)
	delete(m.states, name)
	m.revision++
	return nil
}

func (m *memStore) SetBackendState(_ context.Context, server, backend, action string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWith != nil {
		return 0, m.failWith
	}
	if _, ok := m.servers[server]; !ok {
		return 0, fmt.Errorf("server %q: %w", server, ErrNotFound)
	}
	switch action {
	case BackendEnable:
		delete(m.states[server], backend)
	case BackendDrain, BackendDisable:
		if m.states[server] == nil {
			m.states[server] = map[string]string{}
		}
		m.states[server][backend] = action
	default:
		return 0, fmt.Errorf("unknown action %q", action)
	}
	m.revision++
	return m.revision, nil
}

func (m *memStore) BackendStates(server string) map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.states[server])
}

// panicStore panics in every read, as a buggy store would.
type panicStore struct{ *memStore }

func (panicStore) Servers() map[string]config.Server { panic("store exploded") }

// memStats is the in-memory twin of the proxy's counters.
type memStats struct {
	mu    sync.Mutex
	stats map[string]proxy.ServerStats
	order []string // Names() in this order when set, so duplicates can be tested
}

func (m *memStats) Stats(name string) (proxy.ServerStats, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.stats[name]
	return s, ok
}

func (m *memStats) Names() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.order != nil {
		return slices.Clone(m.order)
	}
	return slices.Sorted(maps.Keys(m.stats))
}

func backend(host, port string, c proxy.BackendCounters) proxy.BackendStats {
	return proxy.BackendStats{
		Backend: config.Backend{Target: config.Target{Host: host, Port: port}, Priority: 1, Weight: 1},
		Stats:   c,
	}
}

func webStats() proxy.ServerStats {
	return proxy.ServerStats{
		ActiveConnections: 3, TotalConnections: 40, RefusedConnections: 2,
		RxTotal: 1000, TxTotal: 500, RxSecond: 10, TxSecond: 5,
		Backends: []proxy.BackendStats{
			backend("127.0.0.1", "8001", proxy.BackendCounters{Live: true, Discovered: true, TotalConnections: 30,
				ActiveConnections: 2, RefusedConnections: 1, Rx: 700, Tx: 300, RxSecond: 7, TxSecond: 3}),
			backend("::1", "8002", proxy.BackendCounters{Live: false, Discovered: true, TotalConnections: 10,
				ActiveConnections: 1, RefusedConnections: 1, Rx: 300, Tx: 200, RxSecond: 3, TxSecond: 2}),
		},
	}
}

// Secrets that must never leave the API.
const (
	apiPassword    = "api-s3cret-pw"
	consulToken    = "consul-s3cret-token"
	consulPassword = "consul-s3cret-pw"
)

// normalized decodes and normalises a server the way the API does, failing the
// test on any problem.
func normalized(t *testing.T, name, js string) config.Server {
	t.Helper()
	s, unknown, err := config.DecodeServerJSON(name, []byte(js))
	if err != nil || len(unknown) > 0 {
		t.Fatalf("decode %s: %v %v", name, err, unknown)
	}
	if err := config.NormalizeServer(name, &s, config.ConnectionOptions{}); err != nil {
		t.Fatalf("normalize %s: %v", name, err)
	}
	return s
}

const webJSON = `{"bind":"127.0.0.1:3000","balance":"roundrobin",
	"discovery":{"kind":"static","static_list":["127.0.0.1:8001","[::1]:8002"]},
	"healthcheck":{"kind":"ping","interval":"2s","timeout":"1s"}}`

const consulJSON = `{"bind":"127.0.0.1:3001",
	"discovery":{"kind":"consul","interval":"5s","timeout":"2s","consul_host":"127.0.0.1:8500","consul_service_name":"web",
		"consul_acl_token":"` + consulToken + `","consul_auth_username":"u","consul_auth_password":"` + consulPassword + `"}}`

// fixture is a handler over two servers, one of them carrying Consul secrets.
type fixture struct {
	store   *memStore
	stats   *memStats
	handler http.Handler
	logs    *syncBuffer
	dumped  *config.Config
}

type fixtureOption func(*Options)

func newFixture(t *testing.T, opts ...fixtureOption) *fixture {
	t.Helper()
	store := newMemStore(map[string]config.Server{
		"web":    normalized(t, "web", webJSON),
		"consul": normalized(t, "consul", consulJSON),
	})
	stats := &memStats{stats: map[string]proxy.ServerStats{"web": webStats()}}
	logs := &syncBuffer{}
	f := &fixture{store: store, stats: stats, logs: logs}
	maxConns := 7
	o := Options{
		Store: store,
		Stats: stats,
		Defaults: func() config.ConnectionOptions {
			return config.ConnectionOptions{MaxConnections: &maxConns}
		},
		Dump: func() *config.Config {
			// The same pointer every time: the API must not mutate it while redacting.
			return f.dumped
		},
		Info: Info{
			Pid:       4242,
			StartTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
			Version:   "1.0.0-test",
			Source:    ConfigSource{Kind: "file", Path: "/etc/gobetween/gobetween.toml"},
		},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Clock:  func() time.Time { return time.Date(2026, 1, 2, 4, 4, 5, 500_000_000, time.UTC) },
	}
	for _, opt := range opts {
		opt(&o)
	}
	f.dumped = &config.Config{
		Api:     config.Api{Enabled: true, Bind: ":8888", BasicAuth: &config.ApiBasicAuth{Login: "admin", Password: apiPassword}},
		Servers: store.Servers(),
	}
	f.handler = NewHandler(o)
	return f
}

func withAuth(o *Options) {
	o.Config.BasicAuth = &config.ApiBasicAuth{Login: "admin", Password: apiPassword}
}

func withCors(o *Options) { o.Config.Cors = true }

// syncBuffer is a log sink safe for the handler's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type request struct {
	method string
	path   string
	body   string
	header map[string]string
	values map[string][]string // added one by one, for repeated headers
}

func (f *fixture) do(t *testing.T, r request) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	req := httptest.NewRequest(method, r.path, body)
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	for k, vs := range r.values {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return rec
}

// errorBody checks that a response is a JSON error with the given status.
func errorBody(t *testing.T, rec *httptest.ResponseRecorder, status int) ErrorBody {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	var e ErrorBody
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body is not {error, details}: %v", err)
	}
	if e.Error == "" || e.Details == nil {
		t.Fatalf("error body lacks error or details: %+v", e)
	}
	return e
}

func decodeJSON(t *testing.T, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decode %s: %v", rec.Body, err)
	}
}

// fakeCluster records the membership calls and answers with the configured errors.
type fakeCluster struct {
	mu        sync.Mutex
	status    ClusterStatus
	joinErr   error
	removeErr error
	healthErr error
	readyErr  error
	joined    [][]string
	removed   []string
}

func (c *fakeCluster) Status() ClusterStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *fakeCluster) Join(_ context.Context, addrs []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joined = append(c.joined, addrs)
	return c.joinErr
}

func (c *fakeCluster) RemoveMember(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removeErr != nil {
		return c.removeErr
	}
	c.removed = append(c.removed, id)
	return nil
}

func (c *fakeCluster) Health() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.healthErr
}

func (c *fakeCluster) Ready() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readyErr
}

func withCluster(c *fakeCluster) fixtureOption {
	return func(o *Options) { o.Cluster = c }
}
