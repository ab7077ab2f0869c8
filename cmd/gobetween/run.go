package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobetween/gobetween/api"
	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/discovery"
	"github.com/gobetween/gobetween/healthcheck"
	"github.com/gobetween/gobetween/proxy"
)

// loadConfig reads and checks the config file named by opts. Warnings (unknown
// keys) are printed to stderr; with --strict they are errors.
func loadConfig(opts options, stderr io.Writer) (*config.Config, error) {
	data, err := os.ReadFile(opts.configPath)
	if err != nil {
		return nil, err
	}
	return decodeConfig(data, opts, stderr)
}

// decodeConfig checks config text read from any source, as loadConfig does.
func decodeConfig(data []byte, opts options, stderr io.Writer) (*config.Config, error) {
	cfg, warnings, err := config.Load(data, config.LoadOptions{
		Format: opts.format,
		Env:    opts.env,
		Getenv: os.Getenv,
		Strict: opts.strict,
	})
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w.Error())
	}
	return cfg, err
}

// problemLines flattens a joined error into one line per problem.
func problemLines(err error) []string {
	var lines []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		lines = append(lines, e.Error())
	}
	walk(err)
	return lines
}

func printProblems(w io.Writer, path string, err error) {
	lines := problemLines(err)
	fmt.Fprintf(w, "%s: %d problem(s):\n", path, len(lines))
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// validate is `gobetween validate`: check the config, start nothing.
func validate(opts options, stdout, stderr io.Writer) int {
	if _, err := loadConfig(opts, stderr); err != nil {
		printProblems(stderr, opts.configPath, err)
		return 1
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return 0
}

// newLogger builds the process logger from [logging].
func newLogger(l config.Logging) (*slog.Logger, io.Closer, error) {
	var out io.Writer
	var closer io.Closer = io.NopCloser(nil)
	switch l.Output {
	case "", "stdout":
		out = os.Stdout
	case "stderr":
		out = os.Stderr
	default:
		f, err := os.OpenFile(l.Output, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("logging.output: %w", err)
		}
		out, closer = f, f
	}
	hopts := &slog.HandlerOptions{Level: slogLevel(l.Level)}
	var h slog.Handler
	if l.Format == "json" {
		h = slog.NewJSONHandler(out, hopts)
	} else {
		h = slog.NewTextHandler(out, hopts)
	}
	return slog.New(h), closer, nil
}

// slogLevel maps gobetween 0.8's logrus level names onto slog levels.
func slogLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error", "fatal", "panic":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// run is the balancer process. It returns the exit code.
func run(opts options) int {
	// Signals are caught before anything starts: a SIGHUP during start-up would
	// otherwise kill the process with Go's default action. They are acted on once
	// the node is up.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	src, err := newSource(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobetween:", err)
		return 1
	}
	data, err := src.Read(context.Background())
	if err != nil {
		printProblems(os.Stderr, src.String(), err)
		return 1
	}
	cfg, err := decodeConfig(data, opts, os.Stderr)
	if err != nil {
		printProblems(os.Stderr, src.String(), err)
		return 1
	}
	logger, logCloser, err := newLogger(cfg.Logging)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gobetween:", err)
		return 1
	}
	defer logCloser.Close()
	logger.Info("starting", "version", version, "config", src.String(), "pid", os.Getpid())

	if opts.pidfile != "" {
		if err := writePidfile(opts.pidfile); err != nil {
			logger.Error("pid file", "err", err)
			return 1
		}
		defer os.Remove(opts.pidfile)
	}

	// The desired state lives in the Raft log in the data directory: servers
	// created through the API survive a restart. A single node is a one-voter
	// cluster, bootstrapped on its first start only.
	node, err := openNode(opts, cfg, logger.With("component", "cluster"))
	if err != nil {
		logger.Error("cluster", "err", err)
		return 1
	}
	defer func() {
		if err := node.Close(); err != nil {
			logger.Warn("cluster close", "err", err)
		}
	}()
	serversHost := ""
	if cfg.Cluster != nil {
		serversHost = cfg.Cluster.ServersHost
	}
	// Certificates of tls.acme_hosts: one node of a cluster obtains them, every
	// node serves them (see acmeCerts).
	var certs proxy.CertSource
	var acmeSvc *acmeCerts
	if cfg.Acme != nil {
		acmeSvc = newACME(cfg.Acme, node, clustered(cfg), serversHost, logger.With("component", "acme"))
		certs = acmeSvc
	}
	registry := discovery.NewRegistry()
	fetched := newFetchCounts() // cluster-scope fetches this node made as leader
	runtime := proxy.New(proxy.Options{
		ACME:         certs,
		NodeID:       node.ID(),
		ServersHost:  serversHost,
		Logger:       logger.With("component", "proxy"),
		NewDiscovery: newDiscovery(logger, registry, node, clustered(cfg), fetched),
		NewMonitor:   newMonitor(logger),
		NewBalancer:  balance.New,
	})
	ctx := context.Background()
	// Cluster-scope discoveries run on the leader, their results go through
	// the log.
	leadCtx, stopLeading := context.WithCancel(ctx)
	leadDone := make(chan struct{})
	go func() {
		defer close(leadDone)
		if clustered(cfg) {
			(&leaderDiscovery{node: node, registry: registry, log: logger.With("component", "discovery"), counts: fetched}).run(leadCtx)
		}
	}()
	// Observed state (health, connections, bytes/s) flows both ways between the
	// data path and the gossip until the data path has drained.
	shareCtx, stopSharing := context.WithCancel(ctx)
	shareDone := make(chan struct{})
	go func() { defer close(shareDone); shareObserved(shareCtx, node, runtime) }()
	followCtx, stopFollowing := context.WithCancel(ctx)
	follower := newFollower(node, runtime, logger.With("component", "store"))
	followDone := make(chan struct{})
	go func() { defer close(followDone); follower.run(followCtx) }()
	store := &store{node: node, rt: runtime, follower: follower, logger: logger.With("component", "store"), origin: originOf(opts)}

	// The config file's servers enter the log. A single node has a leader by now
	// and does it before serving the API; it also prunes the file servers that
	// left the file while it was down. A cluster node may be waiting for its
	// peers: it keeps trying in the background, and never prunes at start (a
	// node with an older file must not delete what the others serve).
	isCluster := clustered(cfg)
	loadCtx, stopLoading := context.WithCancel(ctx)
	defer stopLoading()
	if !isCluster {
		if err := store.LoadFile(ctx, cfg.Servers, pruneMissing(cfg.Servers)); err != nil {
			for _, l := range problemLines(err) {
				logger.Error("config servers", "err", l)
			}
		}
	} else {
		go store.LoadFileRetrying(loadCtx, cfg.Servers)
	}
	fileServers := cfg.Servers

	// The HTTP side (API, metrics, profiler) lives until the data path has drained,
	// so operators can watch a drain through the API.
	httpCtx, stopHTTP := context.WithCancel(ctx)
	var httpWG sync.WaitGroup
	var cfgMu sync.Mutex // guards cfg (globals) for /dump across reloads
	start := time.Now()
	var stopping atomic.Bool
	if cfg.Api.Enabled {
		srv := api.NewServer(api.Options{
			Config:  cfg.Api,
			Store:   store,
			Stats:   runtime,
			Cluster: clusterAPI{node: node, serving: follower.served, stopping: &stopping, follower: follower},
			Defaults: func() config.ConnectionOptions {
				cfgMu.Lock()
				defer cfgMu.Unlock()
				return cfg.Defaults
			},
			Dump: func() *config.Config {
				cfgMu.Lock()
				c := cfg.Clone()
				cfgMu.Unlock()
				c.Servers = store.Servers()
				return c
			},
			Info:   api.Info{Pid: os.Getpid(), Version: version, StartTime: start, Source: src.Info()},
			Logger: logger,
		})
		serveHTTP(httpCtx, &httpWG, logger, "api", srv.Run)
	}
	if cfg.Metrics.Enabled {
		h := api.NewMetricsHandler(runtime, node, api.BuildInfo{Version: version, Revision: revision, Branch: branch})
		bind := cfg.Metrics.Bind
		serveHTTP(httpCtx, &httpWG, logger, "metrics", func(ctx context.Context) error {
			return api.Serve(ctx, bind, h, nil, logger.With("component", "metrics"))
		})
	}
	if acmeSvc != nil {
		serveHTTP(httpCtx, &httpWG, logger, "acme http-01", acmeSvc.Serve)
		httpWG.Add(1)
		go func() { defer httpWG.Done(); acmeSvc.Run(httpCtx) }()
	}
	if cfg.Profiler.Enabled {
		h := api.NewProfilerHandler()
		bind := cfg.Profiler.Bind
		serveHTTP(httpCtx, &httpWG, logger, "profiler", func(ctx context.Context) error {
			return api.Serve(ctx, bind, h, nil, logger.With("component", "profiler"))
		})
	}

	// With --watch the source is read every interval; a changed text is
	// applied as a SIGHUP would.
	watchCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	watched := make(chan []byte)
	if opts.watch > 0 {
		go watchSource(watchCtx, src, opts.watch, data, watched, logger.With("component", "config"))
	}
	// reload applies a new config text; a source that fails or a config with
	// problems keeps the running config.
	reload := func(next *config.Config) {
		cfgMu.Lock()
		warnRestartOnly(logger, cfg, next)
		// Only servers and [defaults] take effect on reload; see warnRestartOnly.
		cfg.Defaults = next.Defaults
		cfgMu.Unlock()
		prune := pruneMissing(next.Servers)
		if isCluster {
			prune = pruneRemoved(fileServers, next.Servers)
		}
		fileServers = next.Servers
		if err := store.LoadFile(ctx, next.Servers, prune); err != nil {
			for _, l := range problemLines(err) {
				logger.Error("reload: config servers", "err", l)
			}
		}
		// Certificates renewed on disk are read again even where the
		// config did not change.
		if err := runtime.ReloadCertificates(); err != nil {
			for _, l := range problemLines(err) {
				logger.Error("reload: certificates kept", "err", l)
			}
		}
		logger.Info("reloaded", "config", src.String(), "servers", len(next.Servers))
	}
	decode := func(data []byte) *config.Config {
		next, err := decodeConfig(data, opts, os.Stderr)
		if err != nil {
			logger.Error("reload refused: the config has problems; the running config is kept", "config", src.String(), "problems", problemLines(err))
			return nil
		}
		return next
	}

wait:
	for {
		select {
		case data := <-watched:
			logger.Info("watch: the config changed", "config", src.String())
			if next := decode(data); next != nil {
				reload(next)
			}
		case sig := <-signals:
			if sig != syscall.SIGHUP {
				logger.Info("shutting down: stop accepting, drain open connections", "signal", sig.String())
				break wait
			}
			data, err := src.Read(ctx)
			if err != nil {
				logger.Error("reload refused: the config source failed; the running config is kept", "config", src.String(), "err", err)
				continue
			}
			if next := decode(data); next != nil {
				reload(next)
			}
		}
	}
	stopWatching()
	// /health fails from now on: a VIP in front moves to another node while
	// this one drains.
	stopping.Store(true)
	// With --stop-grace the listeners keep accepting for a while with /health
	// failing, so that keepalived (fall x interval) or an outside balancer has
	// moved the traffic away before new connections would be refused. A second
	// signal ends the grace at once.
	if opts.stopGrace > 0 {
		logger.Info("stop grace: /health fails, still accepting", "for", opts.stopGrace.String())
		grace := time.NewTimer(opts.stopGrace)
		select {
		case <-grace.C:
		case sig := <-signals:
			grace.Stop()
			logger.Warn("second signal: grace cut short", "signal", sig.String())
		}
	}

	// Shutdown order: the data path first (stop accepting, drain up to each
	// server's drain_timeout), a second signal cuts the drain short; then the HTTP
	// listeners; then the pid file (deferred) and the log.
	drainCtx, cancelDrain := context.WithCancel(ctx)
	go func() {
		if sig, ok := <-signals; ok {
			logger.Warn("second signal: closing open connections now", "signal", sig.String())
			cancelDrain()
		}
	}()
	stopLoading()
	stopLeading()
	<-leadDone
	// Not node.Leave: that removes the node from the cluster for good, while a
	// stopped node is usually restarted; the others treat it as failed until it
	// is back (removal is DELETE /cluster/members/{id}).
	stopFollowing()
	<-followDone
	if err := runtime.Shutdown(drainCtx); err != nil {
		logger.Warn("shutdown", "err", err)
	}
	cancelDrain()
	stopSharing()
	<-shareDone
	signal.Stop(signals)
	stopHTTP()
	httpWG.Wait()
	logger.Info("stopped")
	return 0
}

func serveHTTP(ctx context.Context, wg *sync.WaitGroup, logger *slog.Logger, name string, run func(context.Context) error) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			logger.Error(name+" listener failed; the balancer keeps serving", "err", err)
		}
	}()
}

// warnRestartOnly logs the sections a reload does not apply.
func warnRestartOnly(logger *slog.Logger, cur, next *config.Config) {
	a, b := cur.Clone(), next.Clone()
	a.Servers, b.Servers = nil, nil
	a.Defaults, b.Defaults = config.ConnectionOptions{}, config.ConnectionOptions{}
	ja, _ := config.Encode(a, "json")
	jb, _ := config.Encode(b, "json")
	if string(ja) != string(jb) {
		logger.Warn("reload: changes outside [servers] and [defaults] (logging, api, metrics, profiler, acme, cluster) take effect at the next restart")
	}
}

// monitor adapts healthcheck.Monitor to proxy.HealthMonitor: proxy reconfigures
// with a config, the monitor with a config and its checker. Through the
// Monitor's OnCheck it is also a proxy.CheckObserver: the proxy counts every
// check for the metrics, so healthcheck knows nothing of Prometheus.
type monitor struct{ *healthcheck.Monitor }

var _ proxy.CheckObserver = monitor{}

func (m monitor) Reconfigure(cfg config.Healthcheck) error {
	c, err := healthcheck.NewChecker(cfg)
	if err != nil {
		return err
	}
	m.Monitor.Reconfigure(cfg, c)
	return nil
}

func newMonitor(logger *slog.Logger) func(string, config.Healthcheck, func(config.Target, bool)) (proxy.HealthMonitor, error) {
	return func(server string, cfg config.Healthcheck, onChange func(config.Target, bool)) (proxy.HealthMonitor, error) {
		c, err := healthcheck.NewChecker(cfg)
		if err != nil {
			return nil, err
		}
		l := logger.With("component", "healthcheck", "server", server)
		return monitor{healthcheck.NewMonitor(cfg, c, l, onChange)}, nil
	}
}

// writePidfile writes the pid, refusing when the file names a live process.
func writePidfile(path string) error {
	if b, err := os.ReadFile(path); err == nil {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &pid); err == nil && pid > 0 && pid != os.Getpid() {
			if syscall.Kill(pid, 0) == nil {
				return fmt.Errorf("%s names process %d, which is running", path, pid)
			}
		}
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(path, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
}
