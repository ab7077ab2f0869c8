package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
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
	w.add(haproxy, measurement{Value: 10})
	w.add(gobetween, measurement{Value: 9})
	w.summarize()
	r := report{Settings: settings{Repetitions: 1}, Workloads: []workloadResult{w},
		Contenders: []contender{{Name: nginx, Skip: "nginx is not installed"}}}
	var out bytes.Buffer
	r.print(&out)
	for _, want := range []string{"median Gbit/s", "0.90", "best peer: haproxy", "not measured: nginx: nginx is not installed", "gobetween / best"} {
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

// serve runs the benchmark backend protocol on a loopback listener.
func serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go wire.Serve(ln)
	return ln.Addr().String()
}

// garbler answers every 64-byte request with bytes that are not the request.
func garbler(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
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
	}()
	return ln.Addr().String()
}

// closedAddr is a loopback address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestWorkloads(t *testing.T) {
	p := params{warmup: 100 * time.Millisecond, duration: 300 * time.Millisecond, conns: 4, workers: 4, streams: 2}
	good, bad, closed := serve(t), garbler(t), closedAddr(t)
	for _, w := range workloads(p) {
		t.Run(w.Name+"/backend", func(t *testing.T) {
			m := w.run(context.Background(), good, p)
			if m.Value <= 0 || m.Errors != 0 || m.Err != "" {
				t.Fatalf("against the backend: %+v", m)
			}
		})
		t.Run(w.Name+"/refused", func(t *testing.T) {
			m := w.run(context.Background(), closed, p)
			if m.Value != 0 || m.Errors == 0 {
				t.Fatalf("against a closed port: %+v", m)
			}
		})
	}
	for _, name := range []string{"keepalive", "connect"} {
		t.Run(name+"/wrong reply", func(t *testing.T) {
			w, err := pickWorkloads(name, p)
			if err != nil {
				t.Fatal(err)
			}
			if m := w[0].run(context.Background(), bad, p); m.Value != 0 || m.Errors == 0 {
				t.Fatalf("a wrong reply must count as an error, not a request: %+v", m)
			}
		})
	}
}

func TestWorkloadStopsOnCancel(t *testing.T) {
	p := params{warmup: time.Hour, duration: time.Hour, conns: 2, workers: 2, streams: 2}
	addr := serve(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	m := runKeepalive(ctx, addr, p)
	if m.Err == "" {
		t.Fatalf("a cancelled run must say so: %+v", m)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancelled run took %v", d)
	}
}

// TestStopKillsGroup starts a child that ignores SIGTERM and has a child of its
// own; stop must end both, through the process group the harness created.
func TestStopKillsGroup(t *testing.T) {
	dir := t.TempDir()
	ps := &procs{}
	first := make(chan string, 1)
	p, err := ps.start("stubborn", dir, filepath.Join(dir, "log"), first,
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
