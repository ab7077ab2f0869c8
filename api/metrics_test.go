package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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
		default:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s has no series with %v", name, want)
	return 0
}

func TestMetrics(t *testing.T) {
	stats := &memStats{stats: map[string]proxy.ServerStats{"web": webStats()}}
	h := NewMetricsHandler(stats, BuildInfo{Version: "1.0.0", Revision: "abc123", Branch: "main"})
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
	families := scrape(t, NewMetricsHandler(stats, BuildInfo{}))
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
	metrics := NewMetricsHandler(&memStats{}, BuildInfo{})
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
