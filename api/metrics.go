package api

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

// BuildInfo labels gobetween_build_info. An empty GoVersion is runtime.Version().
type BuildInfo struct {
	Version   string
	Revision  string
	Branch    string
	GoVersion string
}

// NewMetricsHandler serves GET /metrics from its own registry (never the global
// one): gobetween's metrics, read from stats and node at scrape time, plus the Go
// runtime and process collectors. Nothing on the connection path updates a
// metric; the collectors copy the proxy's atomic counters and the node's Raft
// and gossip state when Prometheus asks, so the series of a removed server or
// backend disappear with it. A nil node exports no gobetween_cluster_* metrics.
//
// The text format 0.0.4 is served, not OpenMetrics: gobetween 0.8's counter
// names (gobetween_backend_total_connections) would gain a _total suffix there.
func NewMetricsHandler(stats StatsSource, node ClusterMetricsSource, build BuildInfo) http.Handler {
	if build.GoVersion == "" {
		build.GoVersion = runtime.Version()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newStatsCollector(stats, build),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if node != nil {
		reg.MustRegister(newClusterCollector(node))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A failing collector (the process collector on an unusual OS) must not
		// hide the balancer's own metrics.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return mux
}

// reasonCount is one series of gobetween_server_connections_refused_total.
type reasonCount struct {
	reason string
	n      int64
}

// refusalReasons pairs each reason label with its count.
func refusalReasons(r proxy.Refusals) []reasonCount {
	return []reasonCount{
		{"max_connections", r.MaxConnections},
		{"no_backend", r.NoBackend},
		{"backends_full", r.BackendsFull},
		{"sni", r.SNI},
		{"dials_failed", r.DialsFailed},
		{"other", r.Other},
		{"access", r.Access},
	}
}

// statsCollector exposes gobetween 0.8's metric names with the right types: totals
// are counters and current values gauges (0.8 made everything a gauge). New
// metrics follow the Prometheus conventions (counters end in _total, durations
// are histograms in seconds).
//
// gobetween_server_count keeps 0.8's name and meaning, the number of backends of
// the server (a misnomer), so existing dashboards keep working;
// gobetween_server_backends carries the same value under a correct name.
// gobetween_backend_live is exported for every backend (0.8 set it only on a health
// change, and never without a health check).
//
// The health check duration is a histogram per server, not per backend: with
// thousands of discovered backends, 15 series each would dwarf everything else,
// while the per-backend pass and fail counters (2 series each) say which backend
// fails.
type statsCollector struct {
	stats StatsSource
	build BuildInfo

	buildInfo *prometheus.Desc

	serverCount              *prometheus.Desc
	serverBackends           *prometheus.Desc
	serverActiveConnections  *prometheus.Desc
	serverTotalConnections   *prometheus.Desc
	serverRefusedConnections *prometheus.Desc
	serverRxTotal            *prometheus.Desc
	serverTxTotal            *prometheus.Desc
	serverRxSecond           *prometheus.Desc
	serverTxSecond           *prometheus.Desc
	serverRefusedByReason    *prometheus.Desc
	serverCheckDuration      *prometheus.Desc

	discoveryFetches     *prometheus.Desc
	discoveryFetchErrors *prometheus.Desc
	discoveryLastSuccess *prometheus.Desc
	discoveryLastFetch   *prometheus.Desc
	discoveryBackends    *prometheus.Desc

	backendActiveConnections  *prometheus.Desc
	backendRefusedConnections *prometheus.Desc
	backendTotalConnections   *prometheus.Desc
	backendRxBytes            *prometheus.Desc
	backendTxBytes            *prometheus.Desc
	backendRxSecond           *prometheus.Desc
	backendTxSecond           *prometheus.Desc
	backendLive               *prometheus.Desc
	backendDialFailures       *prometheus.Desc
	backendChecks             *prometheus.Desc
	backendClusterHealthy     *prometheus.Desc
	backendClusterActive      *prometheus.Desc
	backendClusterRxSecond    *prometheus.Desc
	backendClusterTxSecond    *prometheus.Desc
	backendAdminState         *prometheus.Desc
	serverUDPDropped          *prometheus.Desc
	serverUDPEvicted          *prometheus.Desc
}

func newStatsCollector(stats StatsSource, build BuildInfo) *statsCollector {
	server := []string{"server"}
	backend := []string{"server", "host", "port"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("gobetween_"+name, help, labels, nil)
	}
	return &statsCollector{
		stats: stats,
		build: build,

		buildInfo: d("build_info", "Build of gobetween; constant 1.", []string{"version", "revision", "branch", "goversion"}),

		serverCount:              d("server_count", "Number of backends of the server (gobetween 0.8 name; same as gobetween_server_backends).", server),
		serverBackends:           d("server_backends", "Number of backends of the server.", server),
		serverActiveConnections:  d("server_active_connections", "Client connections open now.", server),
		serverTotalConnections:   d("server_total_connections", "Client connections proxied to a backend since the server started.", server),
		serverRefusedConnections: d("server_refused_connections", "Client connections refused: over max_connections, no backend, or every dial failed (access denials not included).", server),
		serverRxTotal:            d("server_rx_total", "Bytes received from backends (sent to clients).", server),
		serverTxTotal:            d("server_tx_total", "Bytes sent to backends (received from clients).", server),
		serverRxSecond:           d("server_rx_second", "Bytes per second received from backends.", server),
		serverTxSecond:           d("server_tx_second", "Bytes per second sent to backends.", server),
		serverRefusedByReason: d("server_connections_refused_total",
			"Clients refused, by reason; every reason but access adds to gobetween_server_refused_connections. For udp, access counts the datagrams of denied clients.",
			[]string{"server", "reason"}),
		serverCheckDuration: d("server_health_check_duration_seconds", "Duration of the server's active health checks, every backend together.", server),

		discoveryFetches:     d("discovery_fetches_total", "Discovery fetches made by this node (a cluster-scope discovery fetches on the leader only and is not counted).", server),
		discoveryFetchErrors: d("discovery_fetch_errors_total", "Discovery fetches made by this node that failed.", server),
		discoveryLastSuccess: d("discovery_last_fetch_success", "1 if the last discovery fetch succeeded, else 0; absent before the first.", server),
		discoveryLastFetch:   d("discovery_last_fetch_timestamp_seconds", "Unix time the last discovery fetch ended; absent before the first.", server),
		discoveryBackends:    d("discovery_backends", "Backends the last discovery fetch returned, before the fail policy.", server),

		backendActiveConnections:  d("backend_active_connections", "Connections to the backend open now.", backend),
		backendRefusedConnections: d("backend_refused_connections", "Failed dials to the backend (those failing for a reason of this host not included).", backend),
		backendTotalConnections:   d("backend_total_connections", "Successful dials to the backend.", backend),
		backendRxBytes:            d("backend_rx_bytes", "Bytes received from the backend.", backend),
		backendTxBytes:            d("backend_tx_bytes", "Bytes sent to the backend.", backend),
		backendRxSecond:           d("backend_rx_second", "Bytes per second received from the backend.", backend),
		backendTxSecond:           d("backend_tx_second", "Bytes per second sent to the backend.", backend),
		backendLive:               d("backend_live", "1 if the backend is healthy by the cluster verdict, else 0; a drained or disabled backend keeps its verdict (see the server stats state).", backend),
		backendAdminState: d("backend_admin_state", "1 for the backend's administrative state (enabled, draining, disabled; set through the API or the client), 0 for the others.",
			append(append([]string{}, backend...), "state")),
		serverUDPDropped:    d("server_udp_dropped_datagrams_total", "Datagrams a udp server dropped: a send that would block, a session still dialing its backend, a reply that could not be sent.", server),
		serverUDPEvicted:    d("server_udp_evicted_sessions_total", "Sessions a udp server ended to make room in its full session table.", server),
		backendDialFailures: d("backend_dial_failures_total", "Failed attempts to connect to the backend, also those failing for a reason of this host (no free port).", backend),
		backendChecks: d("backend_health_checks_total", "Active health checks of the backend by this node, by result (pass or fail).",
			[]string{"server", "host", "port", "result"}),
		backendClusterHealthy:  d("backend_cluster_healthy", "1 if the cluster verdict (healthcheck.cluster_verdict over the live nodes' checks) finds the backend healthy, else 0.", backend),
		backendClusterActive:   d("backend_cluster_active_connections", "Connections to the backend open now from every live node of the cluster.", backend),
		backendClusterRxSecond: d("backend_cluster_rx_second", "Bytes per second received from the backend by every live node of the cluster.", backend),
		backendClusterTxSecond: d("backend_cluster_tx_second", "Bytes per second sent to the backend by every live node of the cluster.", backend),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo,
		c.serverCount, c.serverBackends, c.serverActiveConnections, c.serverTotalConnections,
		c.serverRefusedConnections, c.serverRxTotal, c.serverTxTotal, c.serverRxSecond, c.serverTxSecond,
		c.serverRefusedByReason, c.serverCheckDuration,
		c.discoveryFetches, c.discoveryFetchErrors, c.discoveryLastSuccess, c.discoveryLastFetch, c.discoveryBackends,
		c.backendActiveConnections, c.backendRefusedConnections, c.backendTotalConnections,
		c.backendRxBytes, c.backendTxBytes, c.backendRxSecond, c.backendTxSecond, c.backendLive,
		c.backendDialFailures, c.backendChecks, c.backendAdminState, c.serverUDPDropped, c.serverUDPEvicted,
		c.backendClusterHealthy, c.backendClusterActive, c.backendClusterRxSecond, c.backendClusterTxSecond,
	} {
		ch <- d
	}
}

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

// emitter sends const metrics; one that cannot be built is sent as invalid,
// which fails only that series.
type emitter chan<- prometheus.Metric

func (ch emitter) emit(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

func (ch emitter) histogram(d *prometheus.Desc, count uint64, sum float64, buckets map[float64]uint64, labels ...string) {
	m, err := prometheus.NewConstHistogram(d, count, sum, buckets, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect reads every server's stats once per scrape. Duplicates (a name listed
// twice, a backend reported twice) are skipped: the registry rejects a series seen
// twice in one scrape.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	e := emitter(ch)
	e.emit(c.buildInfo, gauge, 1, c.build.Version, c.build.Revision, c.build.Branch, c.build.GoVersion)
	if c.stats == nil {
		return
	}

	seenServer := make(map[string]bool)
	for _, name := range c.stats.Names() {
		if seenServer[name] {
			continue
		}
		seenServer[name] = true
		st, ok := c.stats.Stats(name)
		if !ok {
			continue
		}
		c.collectServer(e, name, st)
	}
}

func (c *statsCollector) collectServer(e emitter, name string, st proxy.ServerStats) {
	e.emit(c.serverCount, gauge, float64(len(st.Backends)), name)
	e.emit(c.serverBackends, gauge, float64(len(st.Backends)), name)
	e.emit(c.serverActiveConnections, gauge, float64(st.ActiveConnections), name)
	e.emit(c.serverTotalConnections, counter, float64(st.TotalConnections), name)
	e.emit(c.serverRefusedConnections, counter, float64(st.RefusedConnections), name)
	e.emit(c.serverRxTotal, counter, float64(st.RxTotal), name)
	e.emit(c.serverTxTotal, counter, float64(st.TxTotal), name)
	e.emit(c.serverRxSecond, gauge, float64(st.RxSecond), name)
	e.emit(c.serverTxSecond, gauge, float64(st.TxSecond), name)
	for _, r := range refusalReasons(st.Refusals) {
		e.emit(c.serverRefusedByReason, counter, float64(r.n), name, r.reason)
	}
	if u := st.UDP; u != nil {
		e.emit(c.serverUDPDropped, counter, float64(u.Dropped), name)
		e.emit(c.serverUDPEvicted, counter, float64(u.Evicted), name)
	}
	h := st.CheckLatency
	if h.Buckets != nil {
		e.histogram(c.serverCheckDuration, h.Count, h.Sum, h.Buckets, name)
	}
	if d := st.Discovery; d != nil {
		e.emit(c.discoveryFetches, counter, float64(d.Fetches), name)
		e.emit(c.discoveryFetchErrors, counter, float64(d.Errors), name)
		if !d.Fetched.IsZero() {
			e.emit(c.discoveryLastSuccess, gauge, boolValue(d.OK), name)
			e.emit(c.discoveryLastFetch, gauge, float64(d.Fetched.UnixNano())/1e9, name)
			e.emit(c.discoveryBackends, gauge, float64(d.Backends), name)
		}
	}

	seenBackend := make(map[config.Target]bool, len(st.Backends))
	for _, b := range st.Backends {
		if seenBackend[b.Target] {
			continue
		}
		seenBackend[b.Target] = true
		s := b.Stats
		host, port := b.Host, b.Port
		e.emit(c.backendActiveConnections, gauge, float64(s.ActiveConnections), name, host, port)
		e.emit(c.backendRefusedConnections, counter, float64(s.RefusedConnections), name, host, port)
		e.emit(c.backendTotalConnections, counter, float64(s.TotalConnections), name, host, port)
		e.emit(c.backendRxBytes, counter, float64(s.Rx), name, host, port)
		e.emit(c.backendTxBytes, counter, float64(s.Tx), name, host, port)
		e.emit(c.backendRxSecond, gauge, float64(s.RxSecond), name, host, port)
		e.emit(c.backendTxSecond, gauge, float64(s.TxSecond), name, host, port)
		e.emit(c.backendLive, gauge, boolValue(s.Live), name, host, port)
		e.emit(c.backendDialFailures, counter, float64(s.DialFailures), name, host, port)
		e.emit(c.backendChecks, counter, float64(s.ChecksPassed), name, host, port, "pass")
		e.emit(c.backendChecks, counter, float64(s.ChecksFailed), name, host, port, "fail")
		e.emit(c.backendClusterHealthy, gauge, boolValue(s.Cluster.Healthy), name, host, port)
		e.emit(c.backendClusterActive, gauge, float64(s.Cluster.ActiveConnections), name, host, port)
		e.emit(c.backendClusterRxSecond, gauge, float64(s.Cluster.RxSecond), name, host, port)
		e.emit(c.backendClusterTxSecond, gauge, float64(s.Cluster.TxSecond), name, host, port)
		for _, st := range adminStates {
			e.emit(c.backendAdminState, gauge, boolValue(s.State == st.api), name, host, port, st.label)
		}
	}
}

// adminStates are the values of gobetween_backend_admin_state's state label,
// from the stats' state (the API's action names; "" is in rotation).
var adminStates = []struct{ api, label string }{
	{"", "enabled"},
	{BackendDrain, "draining"},
	{BackendDisable, "disabled"},
}
