package api

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gobetween/gobetween/config"
)

// BuildInfo labels gobetween_build_info. An empty GoVersion is runtime.Version().
type BuildInfo struct {
	Version   string
	Revision  string
	Branch    string
	GoVersion string
}

// NewMetricsHandler serves GET /metrics from its own registry (never the global
// one): gobetween's metrics, read from stats at scrape time, plus the Go runtime and
// process collectors. Nothing on the connection path updates a metric; the
// collector copies the proxy's atomic counters when Prometheus asks.
func NewMetricsHandler(stats StatsSource, build BuildInfo) http.Handler {
	if build.GoVersion == "" {
		build.GoVersion = runtime.Version()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newStatsCollector(stats, build),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A failing collector (the process collector on an unusual OS) must not
		// hide the balancer's own metrics.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return mux
}

// statsCollector exposes gobetween 0.8's metric names with the right types: totals
// are counters and current values gauges (0.8 made everything a gauge).
//
// gobetween_server_count keeps 0.8's name and meaning, the number of backends of
// the server (a misnomer), so existing dashboards keep working;
// gobetween_server_backends carries the same value under a correct name.
// gobetween_backend_live is exported for every backend (0.8 set it only on a health
// change, and never without a health check).
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

	backendActiveConnections  *prometheus.Desc
	backendRefusedConnections *prometheus.Desc
	backendTotalConnections   *prometheus.Desc
	backendRxBytes            *prometheus.Desc
	backendTxBytes            *prometheus.Desc
	backendRxSecond           *prometheus.Desc
	backendTxSecond           *prometheus.Desc
	backendLive               *prometheus.Desc
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
		serverRefusedConnections: d("server_refused_connections", "Client connections that found no backend or whose dials all failed.", server),
		serverRxTotal:            d("server_rx_total", "Bytes received from backends (sent to clients).", server),
		serverTxTotal:            d("server_tx_total", "Bytes sent to backends (received from clients).", server),
		serverRxSecond:           d("server_rx_second", "Bytes per second received from backends.", server),
		serverTxSecond:           d("server_tx_second", "Bytes per second sent to backends.", server),

		backendActiveConnections:  d("backend_active_connections", "Connections to the backend open now.", backend),
		backendRefusedConnections: d("backend_refused_connections", "Failed dials to the backend.", backend),
		backendTotalConnections:   d("backend_total_connections", "Successful dials to the backend.", backend),
		backendRxBytes:            d("backend_rx_bytes", "Bytes received from the backend.", backend),
		backendTxBytes:            d("backend_tx_bytes", "Bytes sent to the backend.", backend),
		backendRxSecond:           d("backend_rx_second", "Bytes per second received from the backend.", backend),
		backendTxSecond:           d("backend_tx_second", "Bytes per second sent to the backend.", backend),
		backendLive:               d("backend_live", "1 if the backend is live (healthy), else 0.", backend),
	}
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo,
		c.serverCount, c.serverBackends, c.serverActiveConnections, c.serverTotalConnections,
		c.serverRefusedConnections, c.serverRxTotal, c.serverTxTotal, c.serverRxSecond, c.serverTxSecond,
		c.backendActiveConnections, c.backendRefusedConnections, c.backendTotalConnections,
		c.backendRxBytes, c.backendTxBytes, c.backendRxSecond, c.backendTxSecond, c.backendLive,
	} {
		ch <- d
	}
}

// Collect reads every server's stats once per scrape. Duplicates (a name listed
// twice, a backend reported twice) are skipped: the registry rejects a series seen
// twice in one scrape.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, t, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err)
		}
		ch <- m
	}
	const (
		counter = prometheus.CounterValue
		gauge   = prometheus.GaugeValue
	)
	emit(c.buildInfo, gauge, 1, c.build.Version, c.build.Revision, c.build.Branch, c.build.GoVersion)
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
		emit(c.serverCount, gauge, float64(len(st.Backends)), name)
		emit(c.serverBackends, gauge, float64(len(st.Backends)), name)
		emit(c.serverActiveConnections, gauge, float64(st.ActiveConnections), name)
		emit(c.serverTotalConnections, counter, float64(st.TotalConnections), name)
		emit(c.serverRefusedConnections, counter, float64(st.RefusedConnections), name)
		emit(c.serverRxTotal, counter, float64(st.RxTotal), name)
		emit(c.serverTxTotal, counter, float64(st.TxTotal), name)
		emit(c.serverRxSecond, gauge, float64(st.RxSecond), name)
		emit(c.serverTxSecond, gauge, float64(st.TxSecond), name)

		seenBackend := make(map[config.Target]bool, len(st.Backends))
		for _, b := range st.Backends {
			if seenBackend[b.Target] {
				continue
			}
			seenBackend[b.Target] = true
			s := b.Stats
			host, port := b.Host, b.Port
			emit(c.backendActiveConnections, gauge, float64(s.ActiveConnections), name, host, port)
			emit(c.backendRefusedConnections, counter, float64(s.RefusedConnections), name, host, port)
			emit(c.backendTotalConnections, counter, float64(s.TotalConnections), name, host, port)
			emit(c.backendRxBytes, counter, float64(s.Rx), name, host, port)
			emit(c.backendTxBytes, counter, float64(s.Tx), name, host, port)
			emit(c.backendRxSecond, gauge, float64(s.RxSecond), name, host, port)
			emit(c.backendTxSecond, gauge, float64(s.TxSecond), name, host, port)
			live := 0.0
			if s.Live {
				live = 1
			}
			emit(c.backendLive, gauge, live, name, host, port)
		}
	}
}
