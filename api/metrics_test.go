package api

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/proxy"
)

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return families
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, families map[string]*dto.MetricFamily, name string, typ dto.MetricType, want map[string]string) float64 {
	t.Helper()
	mf, ok := families[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	if mf.GetType() != typ {
		t.Fatalf("metric %s is %v, want %v", name, mf.GetType(), typ)
	}
next:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch typ {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		default:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s has no series with %v", name, want)
	return 0
}

func TestMetrics(t *testing.T) {
	stats := &memStats{stats: map[string]proxy.ServerStats{"web": webStats()}}
	h := NewMetricsHandler(stats, nil, BuildInfo{Version: "1.0.0", Revision: "abc123", Branch: "main"})
	families := scrape(t, h)

	counter, gauge := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	web := map[string]string{"server": "web"}
	b1 := map[string]string{"server": "web", "host": "127.0.0.1", "port": "8001"}
	b2 := map[string]string{"server": "web", "host": "::1", "port": "8002"}
	tests := []struct {
		name   string
		typ    dto.MetricType
		labels map[string]string
		want   float64
	}{
		{"gobetween_build_info", gauge, map[string]string{"version": "1.0.0", "revision": "abc123", "branch": "main"}, 1},
		{"gobetween_server_count", gauge, web, 2}, // 0.8's name: the number of backends
		{"gobetween_server_backends", gauge, web, 2},
		{"gobetween_server_active_connections", gauge, web, 3},
		{"gobetween_server_total_connections", counter, web, 40},
		{"gobetween_server_refused_connections", counter, web, 2},
		{"gobetween_server_rx_total", counter, web, 1000},
		{"gobetween_server_tx_total", counter, web, 500},
		{"gobetween_server_rx_second", gauge, web, 10},
		{"gobetween_server_tx_second", gauge, web, 5},
		{"gobetween_backend_active_connections", gauge, b1, 2},
		{"gobetween_backend_refused_connections", counter, b1, 1},
		{"gobetween_backend_total_connections", counter, b1, 30},
		{"gobetween_backend_rx_bytes", counter, b1, 700},
		{"gobetween_backend_tx_bytes", counter, b1, 300},
		{"gobetween_backend_rx_second", gauge, b1, 7},
		{"gobetween_backend_tx_second", gauge, b1, 3},
		{"gobetween_backend_live", gauge, b1, 1},
		{"gobetween_backend_live", gauge, b2, 0},
		{"gobetween_backend_total_connections", counter, b2, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := value(t, families, tt.name, tt.typ, tt.labels); got != tt.want {
				t.Fatalf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
			}
		})
	}

	t.Run("go and process collectors", func(t *testing.T) {
		for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
			if _, ok := families[name]; !ok {
				t.Errorf("%s missing", name)
			}
		}
	})

	t.Run("read at scrape time", func(t *testing.T) {
		st := webStats()
		st.RxTotal = 5000
		st.Backends[0].Stats.Live = false
		stats.mu.Lock()
		stats.stats["web"] = st
		stats.stats["api"] = proxy.ServerStats{}
		stats.mu.Unlock()
		families := scrape(t, h)
		if got := value(t, families, "gobetween_server_rx_total", counter, web); got != 5000 {
			t.Fatalf("rx_total = %v after the stats changed, want 5000", got)
		}
		if got := value(t, families, "gobetween_backend_live", gauge, b1); got != 0 {
			t.Fatalf("backend_live = %v after the backend went down, want 0", got)
		}
		if got := value(t, families, "gobetween_server_count", gauge, map[string]string{"server": "api"}); got != 0 {
			t.Fatalf("server_count{api} = %v, want 0", got)
		}
	})

	t.Run("removed server disappears", func(t *testing.T) {
		stats.mu.Lock()
		delete(stats.stats, "web")
		stats.mu.Unlock()
		families := scrape(t, h)
		for _, m := range families["gobetween_server_rx_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "server" && l.GetValue() == "web" {
					t.Fatal("series of a removed server still exported")
				}
			}
		}
	})
}

func TestMetricsDuplicatesDoNotBreakTheScrape(t *testing.T) {
	st := webStats()
	st.Backends = append(st.Backends, st.Backends[0])
	stats := &memStats{stats: map[string]proxy.ServerStats{"web": st}, order: []string{"web", "web", "ghost"}}
	families := scrape(t, NewMetricsHandler(stats, nil, BuildInfo{}))
	if got := value(t, families, "gobetween_backend_rx_bytes", dto.MetricType_COUNTER,
		map[string]string{"server": "web", "host": "127.0.0.1", "port": "8001"}); got != 700 {
		t.Fatalf("rx_bytes = %v", got)
	}
	if n := len(families["gobetween_server_rx_total"].GetMetric()); n != 1 {
		t.Fatalf("%d series for one server", n)
	}
	// An empty GoVersion is filled in.
	for _, m := range families["gobetween_build_info"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "goversion" && !strings.HasPrefix(l.GetValue(), "go") {
				t.Fatalf("goversion = %q", l.GetValue())
			}
		}
	}
}

// The three listeners are separate: nothing is served from the default mux, so
// metrics and pprof do not leak onto each other's ports (gobetween 0.8 did).
func TestMetricsAndProfilerMuxesAreSeparate(t *testing.T) {
	metrics := NewMetricsHandler(&memStats{}, nil, BuildInfo{})
	profiler := NewProfilerHandler()
	tests := []struct {
		name   string
		h      http.Handler
		path   string
		status int
		body   string
	}{
		{"metrics serves /metrics", metrics, "/metrics", http.StatusOK, "gobetween_build_info"},
		{"metrics has no pprof", metrics, "/debug/pprof/", http.StatusNotFound, ""},
		{"profiler index", profiler, "/debug/pprof/", http.StatusOK, "goroutine"},
		{"profiler named profile", profiler, "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile"},
		{"profiler cmdline", profiler, "/debug/pprof/cmdline", http.StatusOK, ""},
		{"profiler has no metrics", profiler, "/metrics", http.StatusNotFound, ""},
		{"api has neither", newFixture(t).handler, "/debug/pprof/", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tt.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("GET %s = %d, want %d", tt.path, rec.Code, tt.status)
			}
			if !strings.Contains(rec.Body.String(), tt.body) {
				t.Fatalf("GET %s body lacks %q", tt.path, tt.body)
			}
		})
	}
}

// fullStats is a server with every counter the new metrics read set.
func fullStats() proxy.ServerStats {
	st := webStats()
	st.Refusals = proxy.Refusals{MaxConnections: 4, NoBackend: 3, BackendsFull: 2, SNI: 1, DialsFailed: 5, Other: 6, Access: 7}
	st.RefusedConnections = 21
	st.CheckLatency = proxy.Histogram{Count: 3, Sum: 0.5, Buckets: map[float64]uint64{0.01: 1, 0.1: 2, 1: 3}}
	st.Discovery = &proxy.DiscoveryStats{Fetched: time.Unix(1700000000, 0), OK: false, Backends: 2, Error: "502", Fetches: 9, Errors: 4}
	b := &st.Backends[0].Stats
	b.DialFailures, b.ChecksPassed, b.ChecksFailed = 8, 11, 2
	b.Cluster = proxy.BackendCluster{ActiveConnections: 12, RxSecond: 70, TxSecond: 30, Healthy: true, Policy: "majority"}
	st.Backends[1].Stats.State = BackendDrain
	st.UDP = &proxy.UDPStats{Dropped: 13, Evicted: 14}
	return st
}

func TestMetricsAdditions(t *testing.T) {
	stats := &memStats{stats: map[string]proxy.ServerStats{"web": fullStats(), "api": webStats()}}
	families := scrape(t, NewMetricsHandler(stats, nil, BuildInfo{}))

	counter, gauge, histogram := dto.MetricType_COUNTER, dto.MetricType_GAUGE, dto.MetricType_HISTOGRAM
	web := map[string]string{"server": "web"}
	reason := func(r string) map[string]string { return map[string]string{"server": "web", "reason": r} }
	b1 := map[string]string{"server": "web", "host": "127.0.0.1", "port": "8001"}
	b2 := map[string]string{"server": "web", "host": "::1", "port": "8002"}
	check := func(b map[string]string, result string) map[string]string {
		return map[string]string{"server": b["server"], "host": b["host"], "port": b["port"], "result": result}
	}
	state := func(b map[string]string, st string) map[string]string {
		return map[string]string{"server": b["server"], "host": b["host"], "port": b["port"], "state": st}
	}
	tests := []struct {
		name   string
		typ    dto.MetricType
		labels map[string]string
		want   float64
	}{
		{"gobetween_server_connections_refused_total", counter, reason("max_connections"), 4},
		{"gobetween_server_connections_refused_total", counter, reason("no_backend"), 3},
		{"gobetween_server_connections_refused_total", counter, reason("backends_full"), 2},
		{"gobetween_server_connections_refused_total", counter, reason("sni"), 1},
		{"gobetween_server_connections_refused_total", counter, reason("dials_failed"), 5},
		{"gobetween_server_connections_refused_total", counter, reason("other"), 6},
		{"gobetween_server_connections_refused_total", counter, reason("access"), 7},
		{"gobetween_server_health_check_duration_seconds", histogram, web, 3},
		{"gobetween_discovery_fetches_total", counter, web, 9},
		{"gobetween_discovery_fetch_errors_total", counter, web, 4},
		{"gobetween_discovery_last_fetch_success", gauge, web, 0},
		{"gobetween_discovery_last_fetch_timestamp_seconds", gauge, web, 1700000000},
		{"gobetween_discovery_backends", gauge, web, 2},
		{"gobetween_backend_dial_failures_total", counter, b1, 8},
		{"gobetween_backend_health_checks_total", counter, check(b1, "pass"), 11},
		{"gobetween_backend_health_checks_total", counter, check(b1, "fail"), 2},
		{"gobetween_backend_health_checks_total", counter, check(b2, "pass"), 0},
		{"gobetween_backend_cluster_healthy", gauge, b1, 1},
		{"gobetween_backend_cluster_healthy", gauge, b2, 0},
		{"gobetween_backend_cluster_active_connections", gauge, b1, 12},
		{"gobetween_backend_cluster_rx_second", gauge, b1, 70},
		{"gobetween_backend_cluster_tx_second", gauge, b1, 30},
		{"gobetween_backend_admin_state", gauge, state(b1, "enabled"), 1},
		{"gobetween_backend_admin_state", gauge, state(b1, "draining"), 0},
		{"gobetween_backend_admin_state", gauge, state(b2, "draining"), 1},
		{"gobetween_backend_admin_state", gauge, state(b2, "enabled"), 0},
		{"gobetween_backend_admin_state", gauge, state(b2, "disabled"), 0},
		{"gobetween_server_udp_dropped_datagrams_total", counter, web, 13},
		{"gobetween_server_udp_evicted_sessions_total", counter, web, 14},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := value(t, families, tt.name, tt.typ, tt.labels); got != tt.want {
				t.Fatalf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
			}
		})
	}

	t.Run("histogram buckets and sum", func(t *testing.T) {
		h := series(t, families, "gobetween_server_health_check_duration_seconds", web).GetHistogram()
		if h.GetSampleSum() != 0.5 {
			t.Fatalf("sum %v, want 0.5", h.GetSampleSum())
		}
		want := map[float64]uint64{0.01: 1, 0.1: 2, 1: 3}
		for _, b := range h.GetBucket() {
			if math.IsInf(b.GetUpperBound(), 1) {
				continue // the parser adds +Inf, which is the count
			}
			if b.GetCumulativeCount() != want[b.GetUpperBound()] {
				t.Fatalf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want[b.GetUpperBound()])
			}
		}
	})
	t.Run("reasons but access add up to refused_connections", func(t *testing.T) {
		var sum float64
		for _, m := range families["gobetween_server_connections_refused_total"].GetMetric() {
			labels := labelsOf(m)
			if labels["server"] == "web" && labels["reason"] != "access" {
				sum += m.GetCounter().GetValue()
			}
		}
		if refused := value(t, families, "gobetween_server_refused_connections", counter, web); sum != refused {
			t.Fatalf("reasons sum to %v, refused_connections %v", sum, refused)
		}
	})
	t.Run("no udp series for a tcp server", func(t *testing.T) {
		if m := findSeries(families, "gobetween_server_udp_dropped_datagrams_total", map[string]string{"server": "api"}); m != nil {
			t.Fatalf("udp series for a tcp server: %v", m)
		}
	})
	t.Run("no discovery series without a discovery that reports", func(t *testing.T) {
		if m := findSeries(families, "gobetween_discovery_fetches_total", map[string]string{"server": "api"}); m != nil {
			t.Fatalf("discovery series for a server without one: %v", m)
		}
	})
	t.Run("no cluster series without a node", func(t *testing.T) {
		for name := range families {
			if strings.HasPrefix(name, "gobetween_cluster_") {
				t.Fatalf("%s exported without a node", name)
			}
		}
	})
}

// Every series of a server, or of a backend, disappears with it.
func TestMetricsRemovedSeriesDisappear(t *testing.T) {
	stats := &memStats{stats: map[string]proxy.ServerStats{"web": fullStats(), "api": fullStats()}}
	h := NewMetricsHandler(stats, nil, BuildInfo{})
	countFor := func(families map[string]*dto.MetricFamily, match map[string]string) int {
		n := 0
		for _, mf := range families {
			for _, m := range mf.GetMetric() {
				if hasLabels(labelsOf(m), match) {
					n++
				}
			}
		}
		return n
	}
	b2 := map[string]string{"server": "web", "host": "::1", "port": "8002"}
	families := scrape(t, h)
	if countFor(families, map[string]string{"server": "web"}) == 0 || countFor(families, b2) == 0 {
		t.Fatal("no series before the removal")
	}

	st := fullStats()
	st.Backends = st.Backends[:1]
	stats.mu.Lock()
	stats.stats["web"] = st
	delete(stats.stats, "api")
	stats.mu.Unlock()
	families = scrape(t, h)
	tests := []struct {
		name  string
		match map[string]string
		want  bool
	}{
		{"removed backend", b2, false},
		{"kept backend", map[string]string{"server": "web", "host": "127.0.0.1", "port": "8001"}, true},
		{"removed server", map[string]string{"server": "api"}, false},
		{"kept server", map[string]string{"server": "web"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := countFor(families, tt.match) > 0; got != tt.want {
				t.Fatalf("series with %v present = %v, want %v", tt.match, got, tt.want)
			}
		})
	}
}

// metricCheck is one expected sample: for a histogram, want is its count.
type metricCheck struct {
	name   string
	typ    dto.MetricType
	labels map[string]string
	want   float64
}

// memNode is the in-memory twin of a cluster node's metrics.
type memNode struct {
	mu sync.Mutex
	m  cluster.NodeMetrics
}

func (n *memNode) Metrics() cluster.NodeMetrics {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m
}

func TestMetricsCluster(t *testing.T) {
	apply := cluster.Histogram{Count: 4, Sum: 0.02, Buckets: map[float64]uint64{0.001: 1, 0.01: 4}}
	tests := []struct {
		name   string
		m      cluster.NodeMetrics
		checks []metricCheck
		absent []string
	}{
		{
			name: "follower in a gossip cluster",
			m: cluster.NodeMetrics{
				ID: "n2", State: "follower", Term: 7, LastLogIndex: 40, CommitIndex: 39, AppliedIndex: 38,
				LastContact: time.Now().Add(-2 * time.Second), Leader: "n1", LeaderChanges: 3, Voters: 3, Nonvoters: 1,
				Apply:   apply,
				Gossip:  map[string]int{cluster.GossipAlive: 3, cluster.GossipSuspect: 0, cluster.GossipDead: 1, cluster.GossipLeft: 0},
				Traffic: cluster.GossipStats{BytesSent: 100, BytesReceived: 200, ReportsSent: 5, ReportsReceived: 6},
			},
			checks: []metricCheck{
				{"gobetween_cluster_raft_state", dto.MetricType_GAUGE, map[string]string{"state": "follower"}, 1},
				{"gobetween_cluster_raft_state", dto.MetricType_GAUGE, map[string]string{"state": "leader"}, 0},
				{"gobetween_cluster_raft_state", dto.MetricType_GAUGE, map[string]string{"state": "candidate"}, 0},
				{"gobetween_cluster_raft_term", dto.MetricType_GAUGE, nil, 7},
				{"gobetween_cluster_raft_last_log_index", dto.MetricType_GAUGE, nil, 40},
				{"gobetween_cluster_raft_commit_index", dto.MetricType_GAUGE, nil, 39},
				{"gobetween_cluster_raft_applied_index", dto.MetricType_GAUGE, nil, 38},
				{"gobetween_cluster_raft_has_leader", dto.MetricType_GAUGE, nil, 1},
				{"gobetween_cluster_raft_leader_changes_total", dto.MetricType_COUNTER, nil, 3},
				{"gobetween_cluster_raft_servers", dto.MetricType_GAUGE, map[string]string{"suffrage": "voter"}, 3},
				{"gobetween_cluster_raft_servers", dto.MetricType_GAUGE, map[string]string{"suffrage": "nonvoter"}, 1},
				{"gobetween_cluster_raft_apply_duration_seconds", dto.MetricType_HISTOGRAM, nil, 4},
				{"gobetween_cluster_gossip_members", dto.MetricType_GAUGE, map[string]string{"state": "alive"}, 3},
				{"gobetween_cluster_gossip_members", dto.MetricType_GAUGE, map[string]string{"state": "dead"}, 1},
				{"gobetween_cluster_gossip_members", dto.MetricType_GAUGE, map[string]string{"state": "suspect"}, 0},
				{"gobetween_cluster_gossip_members", dto.MetricType_GAUGE, map[string]string{"state": "left"}, 0},
				{"gobetween_cluster_gossip_sent_bytes_total", dto.MetricType_COUNTER, nil, 100},
				{"gobetween_cluster_gossip_received_bytes_total", dto.MetricType_COUNTER, nil, 200},
				{"gobetween_cluster_observed_reports_sent_total", dto.MetricType_COUNTER, nil, 5},
				{"gobetween_cluster_observed_reports_received_total", dto.MetricType_COUNTER, nil, 6},
			},
		},
		{
			name: "single node leader",
			m:    cluster.NodeMetrics{ID: "n1", State: "leader", Term: 2, Leader: "n1", LeaderChanges: 1, Voters: 1, Apply: apply},
			checks: []metricCheck{
				{"gobetween_cluster_raft_state", dto.MetricType_GAUGE, map[string]string{"state": "leader"}, 1},
				{"gobetween_cluster_raft_servers", dto.MetricType_GAUGE, map[string]string{"suffrage": "voter"}, 1},
				{"gobetween_cluster_raft_leader_changes_total", dto.MetricType_COUNTER, nil, 1},
			},
			absent: []string{"gobetween_cluster_raft_last_contact_seconds", "gobetween_cluster_gossip_members", "gobetween_cluster_gossip_sent_bytes_total"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			families := scrape(t, NewMetricsHandler(&memStats{}, &memNode{m: tt.m}, BuildInfo{}))
			for _, c := range tt.checks {
				if got := value(t, families, c.name, c.typ, c.labels); got != c.want {
					t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
				}
			}
			for _, name := range tt.absent {
				if _, ok := families[name]; ok {
					t.Errorf("%s exported", name)
				}
			}
			if !tt.m.LastContact.IsZero() {
				if got := value(t, families, "gobetween_cluster_raft_last_contact_seconds", dto.MetricType_GAUGE, nil); got < 2 || got > 60 {
					t.Errorf("last contact %v s, want about 2", got)
				}
			}
		})
	}
}

func labelsOf(m *dto.Metric) map[string]string {
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	return labels
}

func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func findSeries(families map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	for _, m := range families[name].GetMetric() {
		if hasLabels(labelsOf(m), want) {
			return m
		}
	}
	return nil
}

func series(t *testing.T, families map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	m := findSeries(families, name, want)
	if m == nil {
		t.Fatalf("%s has no series with %v", name, want)
	}
	return m
}
