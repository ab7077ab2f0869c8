// Command bench compares gobetween's TCP, TLS and UDP relays with HAProxy (mode
// tcp), nginx (stream), a minimal Go io.Copy proxy and no proxy at all, on
// loopback, in one run.
//
//	go run ./e2e/bench [-bin bin/gobetween] [-duration 5s] [-warmup 1s] [-reps 3] [-out FILE]
//
// Every contender relays to the same backend processes (e2e/bench/backend, one
// for TCP, one for UDP) and is measured with the same load generator, which runs
// in this process. The TLS workloads make each proxy terminate TLS with the same
// certificate (generated per run) and relay plain TCP; HAProxy has no UDP proxy,
// so the UDP workloads' ratios are against nginx alone. Repetitions are
// interleaved — each repetition runs every workload against every contender, in
// an order rotated per repetition — so that drift of the machine (other load,
// thermal state) spreads over all contenders instead of favouring one; the tables
// report medians. Ratios divide by the best of HAProxy and nginx per workload.
//
// Every process the harness starts is stopped by its PID when it ends, including
// on Ctrl-C. A contender that cannot run (HAProxy or nginx not installed, gobetween
// not building) is reported and the rest are still measured; `make bench` installs
// the Debian packages first.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/gobetween", "gobetween binary (built into the work directory if missing)")
	flag.DurationVar(&o.p.duration, "duration", 5*time.Second, "measured time of each run")
	flag.DurationVar(&o.p.warmup, "warmup", time.Second, "unmeasured load before each run")
	flag.IntVar(&o.reps, "reps", 3, "repetitions; tables show medians")
	flag.IntVar(&o.p.conns, "conns", 50, "keep-alive connections")
	flag.IntVar(&o.p.workers, "workers", 50, "new-connection workers")
	flag.IntVar(&o.p.streams, "streams", 4, "bulk connections")
	flag.StringVar(&o.workloads, "workloads", defaultWorkloads,
		"comma-separated workloads: keepalive, connect, bulk, bulk-up, tls-handshake, tls-handshake-rsa, udp-flow, udp-sessions")
	flag.StringVar(&o.tlsVersion, "tls-version", "1.3", "the TLS version of the TLS workloads: 1.2 or 1.3")
	flag.IntVar(&o.p.window, "udp-window", 32, "datagrams in flight on the one UDP flow")
	flag.StringVar(&o.contenders, "contenders", strings.Join(allContenders, ","), "comma-separated contenders")
	flag.BoolVar(&o.splice, "haproxy-splice", false, "give HAProxy `option splice-auto` (off: its defaults)")
	flag.DurationVar(&o.pause, "pause", 300*time.Millisecond, "idle time between runs, for closed connections to settle")
	flag.StringVar(&o.out, "out", "", "write the results as JSON to this file")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, o)
	stop()
	os.Exit(code)
}

type options struct {
	bin        string
	p          params
	reps       int
	workloads  string
	contenders string
	tlsVersion string
	splice     bool
	pause      time.Duration
	out        string
	keep       bool
}

func run(ctx context.Context, o options) int {
	if o.reps < 1 || o.p.duration <= 0 || o.p.warmup < 0 || o.p.conns < 1 || o.p.workers < 1 || o.p.streams < 1 || o.p.window < 1 {
		fmt.Fprintln(os.Stderr, "bench: -reps, -duration, -conns, -workers, -streams and -udp-window must be positive")
		return 2
	}
	switch o.tlsVersion {
	case "1.2":
		o.p.tlsVersion = tls.VersionTLS12
	case "1.3":
		o.p.tlsVersion = tls.VersionTLS13
	default:
		fmt.Fprintf(os.Stderr, "bench: -tls-version %q: want 1.2 or 1.3\n", o.tlsVersion)
		return 2
	}
	wls, err := pickWorkloads(o.workloads, o.p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	names, err := pickContenders(o.contenders)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}

	dir, err := os.MkdirTemp("", "gobetween-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if o.keep {
		defer fmt.Printf("work directory kept: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	ps := &procs{}
	// Registered after the directory removal, so it runs first: no child outlives
	// the harness, and none writes into a removed directory.
	defer ps.stopAll(3 * time.Second)

	var kinds []string
	for _, w := range wls {
		if !slices.Contains(kinds, w.Listener) {
			kinds = append(kinds, w.Listener)
		}
	}
	s := &stage{ctx: ctx, dir: dir, procs: ps, gobinary: o.bin, splice: o.splice, tlsVersion: o.p.tlsVersion}
	if err := s.writeCerts(kinds); err != nil {
		fmt.Fprintln(os.Stderr, "bench: certificates:", err)
		return 1
	}
	if err := s.startBackends(kinds); err != nil {
		fmt.Fprintln(os.Stderr, "bench: backend:", err)
		return 1
	}
	rep := &report{
		Started: time.Now().UTC(),
		Settings: settings{
			Duration: o.p.duration.String(), Warmup: o.p.warmup.String(), Repetitions: o.reps,
			Conns: o.p.conns, Workers: o.p.workers, Streams: o.p.streams, HAProxySplice: o.splice,
			TLSVersion: tlsName(o.p.tlsVersion), UDPWindow: o.p.window,
		},
		Host: host{CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
			Kernel: output(ctx, "uname", "-r"), LoadAvg: loadAvg()},
	}
	fmt.Printf("backend on tcp %s, udp %s; work directory %s\n", orNone(s.backend), orNone(s.udpBackend), dir)
	if l := rep.Host.LoadAvg; l > float64(runtime.NumCPU())/2 {
		fmt.Printf("warning: load average %.1f on %d CPUs: other work on this machine will skew the results\n", l, runtime.NumCPU())
	}
	if ct, ok := readConntrack(); ok {
		rep.Host.Conntrack = &ct
		if ct.Count > ct.Max/2 {
			fmt.Printf("warning: netfilter's connection-tracking table is %d/%d full: new connections will be dropped once it fills\n", ct.Count, ct.Max)
		}
	}

	var live []contender
	for _, name := range names {
		c := s.startContender(name, kinds)
		rep.Contenders = append(rep.Contenders, c)
		for _, kind := range kinds {
			if a, ok := c.Addrs[kind]; ok {
				fmt.Printf("%-10s %-9s %-22s %s\n", name, kind, a, c.Version)
			} else if why, ok := c.Skip[kind]; ok {
				fmt.Printf("%-10s %-9s not measured: %s\n", name, kind, why)
			}
		}
		if len(c.Addrs) > 0 {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		fmt.Fprintln(os.Stderr, "bench: no contender could be started")
		return 1
	}

	total := 0
	for _, w := range wls {
		wr := workloadResult{workload: w}
		for _, c := range rep.Contenders {
			if why := lacks[c.Name][w.Listener]; why != "" {
				wr.notApplicable(c.Name, why)
			}
		}
		rep.Workloads = append(rep.Workloads, wr)
		for _, c := range live {
			if _, ok := c.Addrs[w.Listener]; ok {
				total += o.reps
			}
		}
	}
	fmt.Printf("%d runs of %v (+%v warm-up): about %v\n", total, o.p.duration, o.p.warmup,
		(time.Duration(total) * (o.p.duration + o.p.warmup + o.pause)).Round(time.Second))

	interrupted := false
runs:
	for r := range o.reps {
		for i, w := range wls {
			for k := range live {
				// Rotate the order per repetition so no contender always runs first.
				c := live[(k+r)%len(live)]
				addr, ok := c.Addrs[w.Listener]
				if !ok {
					continue
				}
				if !sleep(ctx, o.pause) {
					interrupted = true
					break runs
				}
				m := w.run(ctx, addr, o.p)
				if ctx.Err() != nil {
					interrupted = true
					break runs
				}
				full := ""
				if ct, ok := readConntrack(); ok && ct.full() {
					m.ConntrackFull, full = true, "  conntrack full"
				}
				rep.Workloads[i].add(c.Name, m)
				fmt.Printf("rep %d/%d  %-17s  %-9s  %12s %-7s  errors %d%s\n", r+1, o.reps, w.Name, c.Name, format(m.Value), w.Unit, m.Errors, full)
			}
		}
	}
	for i := range rep.Workloads {
		rep.Workloads[i].summarize()
	}
	rep.Complete = !interrupted
	if interrupted {
		fmt.Println("\ninterrupted: partial results")
	}
	rep.print(os.Stdout)
	if o.out != "" {
		if err := rep.write(o.out); err != nil {
			fmt.Fprintln(os.Stderr, "bench: write results:", err)
			return 1
		}
		fmt.Printf("\nresults written to %s\n", o.out)
	}
	if interrupted {
		return 130
	}
	return 0
}

func pickWorkloads(list string, p params) ([]workload, error) {
	all := workloads(p)
	var out []workload
	for _, name := range splitList(list) {
		i := slices.IndexFunc(all, func(w workload) bool { return w.Name == name })
		if i < 0 {
			known := make([]string, len(all))
			for k, w := range all {
				known[k] = w.Name
			}
			return nil, fmt.Errorf("unknown workload %q (known: %s)", name, strings.Join(known, ", "))
		}
		out = append(out, all[i])
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no workload selected")
	}
	return out, nil
}

func pickContenders(list string) ([]string, error) {
	var out []string
	for _, name := range splitList(list) {
		if !slices.Contains(allContenders, name) {
			return nil, fmt.Errorf("unknown contender %q (known: %s)", name, strings.Join(allContenders, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no contender selected")
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func orNone(addr string) string {
	if addr == "" {
		return "none"
	}
	return addr
}
