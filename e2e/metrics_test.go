package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// prometheusBin is the Prometheus server of the Debian package `prometheus`.
const prometheusBin = "/usr/bin/prometheus"

// metricsScrape fetches and parses GET /metrics of addr.
func metricsScrape(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// metricsSample is one expected sample of a scrape: for a histogram, value is
// its count; min means "at least value".
type metricsSample struct {
	name   string
	typ    dto.MetricType
	labels map[string]string
	value  float64
	min    bool
}

// metricsFind returns the value of the first series of name whose labels
// include want.
func metricsFind(families map[string]*dto.MetricFamily, name string, typ dto.MetricType, want map[string]string) (float64, error) {
	mf, ok := families[name]
	if !ok {
		return 0, fmt.Errorf("%s missing", name)
	}
	if mf.GetType() != typ {
		return 0, fmt.Errorf("%s is a %v, want a %v", name, mf.GetType(), typ)
	}
next:
	for _, m := range mf.GetMetric() {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				found = found || (l.GetName() == k && l.GetValue() == v)
			}
			if !found {
				continue next
			}
		}
		switch typ {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), nil
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount()), nil
		default:
			return m.GetGauge().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("%s has no series with %v", name, want)
}

// metricsCheck compares a scrape with the expected samples.
func metricsCheck(families map[string]*dto.MetricFamily, samples []metricsSample) error {
	for _, s := range samples {
		got, err := metricsFind(families, s.name, s.typ, s.labels)
		if err != nil {
			return err
		}
		if (s.min && got < s.value) || (!s.min && got != s.value) {
			if s.min {
				return fmt.Errorf("%s%v = %v, want >= %v", s.name, s.labels, got, s.value)
			}
			return fmt.Errorf("%s%v = %v, want %v", s.name, s.labels, got, s.value)
		}
	}
	return nil
}

// metricsHasServer reports whether any series of the scrape has server=name.
func metricsHasServer(families map[string]*dto.MetricFamily, name string) bool {
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "server" && l.GetValue() == name {
					return true
				}
			}
		}
	}
	return false
}

// metricsPrometheus is a real Prometheus server scraping targets every second,
// killed in t.Cleanup.
type metricsPrometheus struct {
	base string // http://127.0.0.1:PORT
	out  syncBuffer
}

func metricsStartPrometheus(t *testing.T, targets ...string) *metricsPrometheus {
	t.Helper()
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Fatalf("%s: %v (the Debian package prometheus; `make test` installs it)", prometheusBin, err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: gobetween
    static_configs:
      - targets: [%s]
`, strings.Join(targets, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfgPath, cfg)
	p := &metricsPrometheus{}
	addr := freeAddr(t)
	p.base = "http://" + addr
	cmd := exec.Command(prometheusBin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prometheusBin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("prometheus output:\n%s", tail(p.out.String(), 4000))
		}
	})
	return p
}

// promResponse is the envelope of Prometheus' HTTP API.
type promResponse struct {
	Status string          `json:"status"`
	Error  string          `json:"error"`
	Data   json.RawMessage `json:"data"`
}

func (p *metricsPrometheus) get(path string, q url.Values) (json.RawMessage, error) {
	resp, err := httpClient.Get(p.base + path + "?" + q.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r promResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", path, r.Error)
	}
	return r.Data, nil
}

// targetsUp checks /api/v1/targets: every active target up.
func (p *metricsPrometheus) targetsUp(want int) error {
	data, err := p.get("/api/v1/targets", url.Values{"state": {"active"}})
	if err != nil {
		return err
	}
	var d struct {
		ActiveTargets []struct {
			ScrapeURL string `json:"scrapeUrl"`
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return err
	}
	if len(d.ActiveTargets) != want {
		return fmt.Errorf("%d active targets, want %d", len(d.ActiveTargets), want)
	}
	for _, tg := range d.ActiveTargets {
		if tg.Health != "up" {
			return fmt.Errorf("target %s is %q: %s", tg.ScrapeURL, tg.Health, tg.LastError)
		}
	}
	return nil
}

// query runs an instant query and returns its vector, one value per series
// (keyed by its labels, sorted, without __name__).
func (p *metricsPrometheus) query(expr string) (map[string]float64, error) {
	data, err := p.get("/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	var d struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	if d.ResultType != "vector" {
		return nil, fmt.Errorf("%s: result type %s", expr, d.ResultType)
	}
	out := map[string]float64{}
	for _, r := range d.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: value %v: %w", expr, r.Value[1], err)
		}
		delete(r.Metric, "__name__")
		out[metricsLabelSet(r.Metric).String()] = v
	}
	return out, nil
}

func metricsLabelSet(m map[string]string) model.LabelSet {
	ls := model.LabelSet{}
	for k, v := range m {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}

// expectOne checks that expr returns exactly one series, of value want.
func (p *metricsPrometheus) expectOne(expr string, want float64) error {
	res, err := p.query(expr)
	if err != nil {
		return err
	}
	if len(res) != 1 {
		return fmt.Errorf("%s: %d series %v, want one", expr, len(res), res)
	}
	for _, v := range res {
		if v != want {
			return fmt.Errorf("%s = %v, want %v", expr, v, want)
		}
	}
	return nil
}

// A single node serving three servers, scraped by the test and by a real
// Prometheus: the 0.8 names with counter types, a max_connections refusal, an
// access denial and a dial failure under their reasons, health checks, the
// one-voter Raft cluster; and the series of a server removed by a reload
// disappear, from the exposition and from Prometheus.
func TestMetricsPrometheus(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	dead := freeAddr(t) // nobody listens: every dial fails
	webAddr, deniedAddr, deadAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	servers := []server{
		{name: "web", bind: webAddr, lines: lines(b), options: []string{"max_connections = 1"}, hc: pingHC},
		{name: "dead", bind: deadAddr, lines: []string{dead}},
		{name: "denied", bind: deniedAddr, lines: lines(b), access: []string{`default = "deny"`}},
	}
	metricsSection := fmt.Sprintf("[metrics]\nenabled = true\nbind = %q\n\n", metricsAddr)
	n := startNode(t, metricsSection+config("", servers...))
	n.waitServing(webAddr)
	prom := metricsStartPrometheus(t, metricsAddr)

	counter, gauge, histogram := dto.MetricType_COUNTER, dto.MetricType_GAUGE, dto.MetricType_HISTOGRAM
	web := map[string]string{"server": "web"}
	reason := func(server, r string) map[string]string { return map[string]string{"server": server, "reason": r} }
	webB1 := map[string]string{"server": "web", "host": "127.0.0.1", "port": b.port()}
	deadHost, deadPort, _ := net.SplitHostPort(dead)
	deadB := map[string]string{"server": "dead", "host": deadHost, "port": deadPort}

	// The clients of waitServing have ended (their slots are free) before
	// the counters are read as a baseline: a client refused while the node
	// started counts in it, not in what this test causes.
	var base map[string]*dto.MetricFamily
	eventually(t, 10*time.Second, "web has no client left", func() error {
		var err error
		if base, err = metricsScrape(metricsAddr); err != nil {
			return err
		}
		if v, err := metricsFind(base, "gobetween_server_active_connections", gauge, web); err != nil || v != 0 {
			return fmt.Errorf("active connections %v, %v", v, err)
		}
		return nil
	})
	plus := func(name string, labels map[string]string, delta float64) metricsSample {
		v, err := metricsFind(base, name, counter, labels)
		if err != nil {
			t.Fatalf("baseline: %v", err)
		}
		return metricsSample{name: name, typ: counter, labels: labels, value: v + delta}
	}
	refusedWeb := plus("gobetween_server_connections_refused_total", reason("web", "max_connections"), 1)
	refusedAccess := plus("gobetween_server_connections_refused_total", reason("denied", "access"), 1)
	refusedDead := plus("gobetween_server_connections_refused_total", reason("dead", "dials_failed"), 1)
	dialFailures := plus("gobetween_backend_dial_failures_total", deadB, 1)

	// One client holds web's only slot: the next is refused by max_connections.
	held := mustDial(t, webAddr)
	if got, err := held.cmd("WHO"); err != nil || got != "b1" {
		t.Fatalf("first client of web: %q, %v", got, err)
	}
	if err := closedWithoutData("", webAddr); err != nil {
		t.Fatalf("second client of web, over max_connections: %v", err)
	}
	if err := closedWithoutData("", deniedAddr); err != nil {
		t.Fatalf("client of denied: %v", err)
	}
	if err := closedWithoutData("", deadAddr); err != nil {
		t.Fatalf("client of dead: %v", err)
	}

	samples := []metricsSample{
		refusedWeb, refusedAccess, refusedDead, dialFailures,
		plus("gobetween_server_refused_connections", web, 1),
		plus("gobetween_server_refused_connections", map[string]string{"server": "denied"}, 0),
		plus("gobetween_backend_refused_connections", deadB, 1),
		{name: "gobetween_build_info", typ: gauge, value: 1},
		{name: "gobetween_server_count", typ: gauge, labels: web, value: 1},
		{name: "gobetween_server_active_connections", typ: gauge, labels: web, value: 1},
		{name: "gobetween_server_rx_total", typ: counter, labels: web, value: 1, min: true},
		{name: "gobetween_server_tx_total", typ: counter, labels: web, value: 1, min: true},
		{name: "gobetween_server_rx_second", typ: gauge, labels: web, value: 0, min: true},
		{name: "gobetween_backend_active_connections", typ: gauge, labels: webB1, value: 1},
		{name: "gobetween_backend_total_connections", typ: counter, labels: webB1, value: 2, min: true},
		{name: "gobetween_backend_rx_bytes", typ: counter, labels: webB1, value: 1, min: true},
		{name: "gobetween_backend_live", typ: gauge, labels: webB1, value: 1},
		{name: "gobetween_backend_health_checks_total", typ: counter, labels: map[string]string{"server": "web", "port": b.port(), "result": "pass"}, value: 1, min: true},
		{name: "gobetween_server_health_check_duration_seconds", typ: histogram, labels: web, value: 1, min: true},
		{name: "gobetween_discovery_fetches_total", typ: counter, labels: web, value: 1, min: true},
		{name: "gobetween_discovery_fetch_errors_total", typ: counter, labels: web, value: 0},
		{name: "gobetween_backend_cluster_healthy", typ: gauge, labels: webB1, value: 1},
		{name: "gobetween_backend_cluster_active_connections", typ: gauge, labels: webB1, value: 1},
		{name: "gobetween_cluster_raft_state", typ: gauge, labels: map[string]string{"state": "leader"}, value: 1},
		{name: "gobetween_cluster_raft_state", typ: gauge, labels: map[string]string{"state": "follower"}, value: 0},
		{name: "gobetween_cluster_raft_leader_changes_total", typ: counter, value: 1, min: true},
		{name: "gobetween_cluster_raft_servers", typ: gauge, labels: map[string]string{"suffrage": "voter"}, value: 1},
		{name: "gobetween_cluster_raft_applied_index", typ: gauge, value: 1, min: true},
		{name: "gobetween_cluster_raft_apply_duration_seconds", typ: histogram, value: 1, min: true},
		{name: "go_goroutines", typ: gauge, value: 1, min: true},
	}
	eventually(t, 10*time.Second, "the exposition has every expected sample", func() error {
		families, err := metricsScrape(metricsAddr)
		if err != nil {
			return err
		}
		if _, ok := families["gobetween_cluster_gossip_members"]; ok {
			return fmt.Errorf("gossip members exported by a node without gossip")
		}
		return metricsCheck(families, samples)
	})

	eventually(t, 20*time.Second, "prometheus scrapes the node", func() error { return prom.targetsUp(1) })
	queries := []struct {
		expr string
		want float64
	}{
		{`gobetween_server_connections_refused_total{server="web",reason="max_connections"}`, refusedWeb.value},
		{`gobetween_server_connections_refused_total{server="denied",reason="access"}`, refusedAccess.value},
		{`gobetween_server_connections_refused_total{server="dead",reason="dials_failed"}`, refusedDead.value},
		{`gobetween_backend_dial_failures_total{server="dead"}`, dialFailures.value},
		{`gobetween_server_active_connections{server="web"}`, 1},
		{`gobetween_cluster_raft_state{state="leader"}`, 1},
		{`sum(gobetween_server_connections_refused_total{server="web",reason!="access"}) - sum(gobetween_server_refused_connections{server="web"})`, 0},
		{`count(gobetween_server_count)`, 3},
		{`gobetween_server_health_check_duration_seconds_count{server="web"} > bool 0`, 1},
		{`gobetween_backend_health_checks_total{server="web",result="pass"} > bool 0`, 1},
	}
	for _, q := range queries {
		eventually(t, 15*time.Second, "prometheus answers "+q.expr, func() error { return prom.expectOne(q.expr, q.want) })
	}

	// A reload without "denied": its series leave the exposition, and
	// Prometheus marks them stale at the next scrape.
	n.reload(metricsSection + config("", servers[0], servers[1]))
	eventually(t, 10*time.Second, "the removed server's series leave the exposition", func() error {
		families, err := metricsScrape(metricsAddr)
		if err != nil {
			return err
		}
		if metricsHasServer(families, "denied") {
			return fmt.Errorf("series of server denied still exported")
		}
		if !metricsHasServer(families, "web") {
			return fmt.Errorf("series of server web gone too")
		}
		return nil
	})
	eventually(t, 10*time.Second, "prometheus no longer has the removed server", func() error {
		res, err := prom.query(`gobetween_server_count{server="denied"}`)
		if err != nil {
			return err
		}
		if len(res) != 0 {
			return fmt.Errorf("still %v", res)
		}
		return prom.expectOne(`count(gobetween_server_count)`, 2)
	})
	n.requireRunning()
}

// metricsStream opens a client through addr that receives chunks KiB, one
// every 100 µs (several MB/s: the proxy counts bytes per MiB spliced); it is
// closed in t.Cleanup.
func metricsStream(t *testing.T, addr string, chunks int) {
	t.Helper()
	c := mustDial(t, addr)
	if _, err := io.WriteString(c.c, "STREAM "+strconv.Itoa(chunks)+" 100us\n"); err != nil {
		t.Fatalf("stream through %s: %v", addr, err)
	}
	go io.Copy(io.Discard, c.c)
}

// A three-node cluster, each node scraped by a real Prometheus: one leader,
// every node sees three members alive in gossip, and a backend's cluster-wide
// connections and bytes per second add up the nodes'.
func TestMetricsCluster(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	port := freePort(t)
	c := newTestCluster(t, server{name: "web", bind: ":" + strconv.Itoa(port), lines: lines(b), hc: pingHC}.toml())
	metricsPort := strconv.Itoa(freePort(t))
	var targets []string
	for i := range c.nodes {
		addr := c.host(i) + ":" + metricsPort
		targets = append(targets, addr)
		cfg := c.config(i) + fmt.Sprintf("\n[metrics]\nenabled = true\nbind = %q\n", addr)
		c.nodes[i] = startNodeWith(t, cfg, nodeOptions{dir: c.dirs[i]})
	}
	prom := metricsStartPrometheus(t, targets...)
	c.waitFormed(20*time.Second, 0, 1, 2)
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	for i := range c.nodes {
		metricsStream(t, c.host(i)+":"+strconv.Itoa(port), 200000)
	}

	gauge := dto.MetricType_GAUGE
	webB1 := map[string]string{"server": "web", "host": "127.0.0.1", "port": b.port()}
	for i, addr := range targets {
		eventually(t, 15*time.Second, fmt.Sprintf("n%d's exposition shows the cluster", i+1), func() error {
			families, err := metricsScrape(addr)
			if err != nil {
				return err
			}
			err = metricsCheck(families, []metricsSample{
				{name: "gobetween_cluster_gossip_members", typ: gauge, labels: map[string]string{"state": "alive"}, value: 3},
				{name: "gobetween_cluster_gossip_members", typ: gauge, labels: map[string]string{"state": "dead"}, value: 0},
				{name: "gobetween_cluster_raft_servers", typ: gauge, labels: map[string]string{"suffrage": "voter"}, value: 3},
				{name: "gobetween_cluster_raft_has_leader", typ: gauge, value: 1},
				{name: "gobetween_cluster_observed_reports_received_total", typ: dto.MetricType_COUNTER, value: 1, min: true},
				{name: "gobetween_backend_active_connections", typ: gauge, labels: webB1, value: 1},
				{name: "gobetween_backend_cluster_active_connections", typ: gauge, labels: webB1, value: 3},
				{name: "gobetween_backend_cluster_healthy", typ: gauge, labels: webB1, value: 1},
			})
			if err != nil {
				return err
			}
			// The peers' bytes per second add to this node's.
			own, err := metricsFind(families, "gobetween_backend_rx_second", gauge, webB1)
			if err != nil {
				return err
			}
			all, err := metricsFind(families, "gobetween_backend_cluster_rx_second", gauge, webB1)
			if err != nil {
				return err
			}
			if own <= 0 || all-own < 1<<20 {
				return fmt.Errorf("rx_second %v, cluster rx_second %v: want the peers' MB/s on top", own, all)
			}
			return nil
		})
	}

	eventually(t, 20*time.Second, "prometheus scrapes the three nodes", func() error { return prom.targetsUp(3) })
	queries := []struct {
		expr string
		want float64
	}{
		{`sum(gobetween_cluster_raft_state{state="leader"})`, 1},
		{`sum(gobetween_cluster_raft_state{state="follower"})`, 2},
		{`count(gobetween_cluster_gossip_members{state="alive"} == 3)`, 3},
		{`count(count by (__name__) (gobetween_cluster_raft_term))`, 1},
		{`min(gobetween_backend_cluster_active_connections{server="web"})`, 3},
		{`sum(gobetween_backend_active_connections{server="web"})`, 3},
	}
	for _, q := range queries {
		eventually(t, 15*time.Second, "prometheus answers "+q.expr, func() error { return prom.expectOne(q.expr, q.want) })
	}
}

// The shipped Prometheus config (deploy/prometheus) is valid for the Prometheus
// the tests run, and scrapes the metrics binds of the shipped demo cluster.
func TestMetricsShippedPrometheusConfig(t *testing.T) {
	t.Parallel()
	const cfg = "../deploy/prometheus/prometheus.yml"
	out, err := exec.Command("promtool", "check", "config", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config %s (Debian prometheus, installed by make test): %v\n%s", cfg, err, out)
	}
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		node, err := os.ReadFile(fmt.Sprintf("../deploy/examples/cluster/n%d.toml", i))
		if err != nil {
			t.Fatal(err)
		}
		bind := fmt.Sprintf("127.0.0.%d:9284", i)
		if !strings.Contains(string(node), `bind = "`+bind+`"`) || !strings.Contains(string(text), `"`+bind+`"`) {
			t.Errorf("n%d: [metrics] bind %s should be in both n%d.toml and %s", i, bind, i, cfg)
		}
	}
}
