package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobetween/gobetween/e2e/bench/wire"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"none", nil, 0},
		{"one", []float64{7}, 7},
		{"odd", []float64{9, 1, 5}, 5},
		{"even", []float64{4, 1, 3, 2}, 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Fatalf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	w := workloadResult{workload: workload{Name: "keepalive"}}
	for _, r := range []struct {
		name string
		vals []float64
	}{
		{gobetween, []float64{90, 80, 100}},
		{haproxy, []float64{100, 100, 100}},
		{nginx, []float64{200, 190, 210}},
		{mincopy, []float64{100, 300, 200}},
	} {
		for _, v := range r.vals {
			w.add(r.name, measurement{Value: v})
		}
	}
	w.add(gobetween, measurement{Err: "context canceled"}) // excluded from the median
	w.summarize()

	if w.BestPeer != nginx {
		t.Fatalf("best peer = %q, want nginx", w.BestPeer)
	}
	for name, want := range map[string]float64{gobetween: 0.45, haproxy: 0.5, nginx: 1, mincopy: 1} {
		if got := w.Ratios[name]; got != want {
			t.Errorf("ratio %s = %v, want %v", name, got, want)
		}
	}
}

func TestSummarizeWithoutPeers(t *testing.T) {
	w := workloadResult{}
	w.add(gobetween, measurement{Value: 5})
	w.summarize()
	if w.BestPeer != "" || w.Ratios != nil {
		t.Fatalf("without a peer there is no ratio, got %q %v", w.BestPeer, w.Ratios)
	}
}

func TestPrint(t *testing.T) {
	w := workloadResult{workload: workload{Name: "bulk", Title: "bulk", Unit: "Gbit/s"}}
	w.add(haproxy, measurement{Value: 10, ConntrackFull: true})
	w.add(gobetween, measurement{Value: 9})
	w.summarize()
	u := workloadResult{workload: workload{Name: "udp-flow", Title: "udp", Unit: "dgram/s", Listener: kindUDPFlow}}
	u.notApplicable(haproxy, lacks[haproxy][kindUDPFlow])
	u.add(nginx, measurement{Value: 100})
	u.add(gobetween, measurement{Value: 125})
	u.summarize()
	r := report{Settings: settings{Repetitions: 1}, Workloads: []workloadResult{w, u},
		Contenders: []contender{{Name: gobetween}, {Name: haproxy}, {Name: nginx, Skip: map[string]string{kindTCP: "nginx is not installed"}}}}
	var out bytes.Buffer
	r.print(&out)
	for _, want := range []string{"median Gbit/s", "0.90", "best peer: haproxy", "not measured: nginx tcp: nginx is not installed", "gobetween / best",
		"n/a: haproxy: HAProxy has no UDP proxy", "best peer: nginx", "1.25", "connection-tracking table was full"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 1.234: "1.23", 12.34: "12.3", 1234567: "1,234,567", 999: "999.0"} {
		if got := format(in); got != want {
			t.Errorf("format(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestPickLists(t *testing.T) {
	p := params{conns: 1, workers: 1, streams: 1}
	if _, err := pickWorkloads("keepalive, bulk-up", p); err != nil {
		t.Fatal(err)
	}
	if _, err := pickWorkloads("keepalive,udp", p); err == nil || !strings.Contains(err.Error(), `"udp"`) {
		t.Fatalf("unknown workload: err = %v", err)
	}
	got, err := pickContenders("nginx,direct,nginx")
	if err != nil || strings.Join(got, ",") != "nginx,direct" {
		t.Fatalf("pickContenders = %v, %v", got, err)
	}
	if _, err := pickContenders("envoy"); err == nil {
		t.Fatal("unknown contender accepted")
	}
}

// listenTCP is a loopback listener closed when the test ends.
func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// withTLS wraps ln in TLS with a new certificate of the given algorithm.
func withTLS(t *testing.T, ln net.Listener, alg string) net.Listener {
	t.Helper()
	f, err := writeCert(t.TempDir(), "test", alg)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(f.Combined, f.Combined); err != nil {
		t.Fatalf("the combined PEM HAProxy reads: %v", err)
	}
	return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, SessionTicketsDisabled: true})
}

// garble answers every 64-byte request on ln with bytes that are not the request.
func garble(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, wire.Size)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				buf[1] ^= 0xff
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
}

// listenUDP is a loopback UDP socket closed when the test ends.
func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// garbleUDP answers every datagram on c with one that differs from it.
func garbleUDP(c *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		buf[1] ^= 0xff
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

// closedAddr is a loopback address of network where nothing listens.
func closedAddr(t *testing.T, network string) string {
	t.Helper()
	port, err := freePort(network)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// targets are, per listener kind, an address serving the benchmark protocol
// correctly, one answering wrongly, and one refusing.
type targets struct{ good, bad, closed string }

func testTargets(t *testing.T) map[string]targets {
	t.Helper()
	tcp := func(wrap func(net.Listener) net.Listener) targets {
		good, bad := wrap(listenTCP(t)), wrap(listenTCP(t))
		go wire.Serve(good)
		go garble(bad)
		return targets{good.Addr().String(), bad.Addr().String(), closedAddr(t, "tcp")}
	}
	udp := func() targets {
		good, bad := listenUDP(t), listenUDP(t)
		go wire.ServeUDP(good)
		go garbleUDP(bad)
		return targets{good.LocalAddr().String(), bad.LocalAddr().String(), closedAddr(t, "udp")}
	}
	flow := udp()
	return map[string]targets{
		kindTCP:      tcp(func(ln net.Listener) net.Listener { return ln }),
		kindTLSECDSA: tcp(func(ln net.Listener) net.Listener { return withTLS(t, ln, "ecdsa") }),
		kindTLSRSA:   tcp(func(ln net.Listener) net.Listener { return withTLS(t, ln, "rsa") }),
		kindUDPFlow:  flow,
		kindUDPOnce:  flow,
	}
}

func testParams() params {
	return params{warmup: 100 * time.Millisecond, duration: 300 * time.Millisecond, conns: 4, workers: 4, streams: 2,
		tlsVersion: tls.VersionTLS13, window: 8}
}

func TestWorkloads(t *testing.T) {
	p := testParams()
	ts := testTargets(t)
	for _, w := range workloads(p) {
		tg, ok := ts[w.Listener]
		if !ok {
			t.Fatalf("%s: no test target for listener kind %q", w.Name, w.Listener)
		}
		t.Run(w.Name+"/backend", func(t *testing.T) {
			m := w.run(context.Background(), tg.good, p)
			if m.Value <= 0 || m.Errors != 0 || m.Err != "" {
				t.Fatalf("against the backend: %+v", m)
			}
		})
		t.Run(w.Name+"/refused", func(t *testing.T) {
			m := w.run(context.Background(), tg.closed, p)
			if m.Value != 0 || m.Errors == 0 {
				t.Fatalf("against a closed port: %+v", m)
			}
		})
		if strings.HasPrefix(w.Name, "bulk") {
			continue // bulk checks no content
		}
		t.Run(w.Name+"/wrong reply", func(t *testing.T) {
			if m := w.run(context.Background(), tg.bad, p); m.Value != 0 || m.Errors == 0 {
				t.Fatalf("a wrong reply must count as an error, not a request: %+v", m)
			}
		})
	}
}

// TestUDPFlowLoss: a flow whose datagrams are all dropped counts them as lost
// and keeps sending, instead of waiting for ever on an empty window.
func TestUDPFlowLoss(t *testing.T) {
	sink := listenUDP(t) // reads nothing, answers nothing
	p := testParams()
	p.duration = 3 * lossTimeout
	m := runUDPFlow(context.Background(), sink.LocalAddr().String(), p)
	if m.Value != 0 || m.Errors < int64(p.window) {
		t.Fatalf("want no replies and at least one window lost: %+v", m)
	}
}

func TestWorkloadStopsOnCancel(t *testing.T) {
	p := testParams()
	p.warmup, p.duration = time.Hour, time.Hour
	ts := testTargets(t)
	for _, w := range workloads(p) {
		t.Run(w.Name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			start := time.Now()
			m := w.run(ctx, ts[w.Listener].good, p)
			if m.Err == "" {
				t.Fatalf("a cancelled run must say so: %+v", m)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("cancelled run took %v", d)
			}
		})
	}
}

// TestContenders starts every contender as a run does, each listener it has,
// and runs every workload briefly through it: the proof that the generated
// configs work and each contender relays each workload correctly. HAProxy and
// nginx are run when installed (`make bench` installs them); gobetween is built
// from this tree and must serve every workload.
func TestContenders(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	ps := &procs{}
	t.Cleanup(func() { ps.stopAll(3 * time.Second) })
	p := testParams()
	all := workloads(p)
	var kinds []string
	for _, w := range all {
		if !slices.Contains(kinds, w.Listener) {
			kinds = append(kinds, w.Listener)
		}
	}
	s := &stage{ctx: ctx, dir: dir, procs: ps, gobinary: filepath.Join(dir, "not-built-yet"), tlsVersion: p.tlsVersion}
	if err := s.writeCerts(kinds); err != nil {
		t.Fatal(err)
	}
	if err := s.startBackends(kinds); err != nil {
		t.Fatal(err)
	}
	for _, name := range allContenders {
		if tool := map[string]string{haproxy: "haproxy", nginx: "nginx"}[name]; tool != "" {
			if _, err := lookTool(tool, tool); err != nil {
				t.Logf("%s not run: %v", name, err)
				continue
			}
		}
		c := s.startContender(name, kinds)
		for _, w := range all {
			if lacks[name][w.Listener] != "" {
				continue
			}
			versions := []uint16{p.tlsVersion}
			if isTLS(w.Listener) {
				versions = append(versions, tls.VersionTLS12)
			}
			for _, v := range versions {
				sub := name + "/" + w.Name
				if isTLS(w.Listener) {
					sub += "/" + tlsName(v)
				}
				t.Run(sub, func(t *testing.T) {
					addr, ok := c.Addrs[w.Listener]
					if !ok {
						t.Fatalf("%s listener not started: %s", w.Listener, c.Skip[w.Listener])
					}
					p := p
					p.tlsVersion = v
					if isTLS(w.Listener) {
						if err := checkTLS(v)(addr, 5*time.Second); err != nil {
							t.Fatal(err)
						}
					}
					m := w.run(ctx, addr, p)
					if m.Value <= 0 || m.Err != "" {
						t.Fatalf("nothing relayed: %+v", m)
					}
					// A few lost datagrams or connections are the machine's (a full
					// conntrack table drops them, see conntrackAdvice), not the
					// contender's; TestWorkloads checks strictly that a wrong reply
					// is never counted.
					if done := m.Value * p.duration.Seconds(); !strings.HasPrefix(w.Name, "bulk") && float64(m.Errors) > done/100 {
						t.Fatalf("more than 1%% errors: %+v", m)
					}
					if m.Errors > 0 {
						t.Logf("%d errors: %+v", m.Errors, m)
					}
				})
			}
		}
	}
}

// TestStopKillsGroup starts a child that ignores SIGTERM and has a child of its
// own; stop must end both, through the process group the harness created.
func TestStopKillsGroup(t *testing.T) {
	dir := t.TempDir()
	ps := &procs{}
	first := make(chan string, 1)
	p, err := ps.start("stubborn", dir, filepath.Join(dir, "log"), nil, first,
		"bash", "-c", `trap "" TERM; sleep 60 & echo $!; wait`)
	if err != nil {
		t.Fatal(err)
	}
	line, err := firstLine(context.Background(), p, first)
	if err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("child pid %q: %v", line, err)
	}
	start := time.Now()
	ps.stopAll(200 * time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stop took %v", d)
	}
	if done, _ := p.exited(); !done {
		t.Fatal("process still running after stop")
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d outlived stop", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestLookToolMissing(t *testing.T) {
	_, err := lookTool("gobetween-bench-no-such-tool", "no-such-package")
	if err == nil || !strings.Contains(err.Error(), "make bench") || !strings.Contains(err.Error(), "apt-get install -y no-such-package") {
		t.Fatalf("a missing tool must say how to install it, got %v", err)
	}
}
