package e2e

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// binPath is the gobetween binary under test, built once by TestMain (or taken from
// GOBETWEEN_BIN).
var binPath string

// TestMain builds ./cmd/gobetween once for every test. GOBETWEEN_BIN=/path uses a
// prebuilt binary instead; GOBETWEEN_E2E_RACE=1 builds it with -race. The tests
// spend most of their time waiting on timers, so unless -parallel is given they
// run eight at a time rather than GOMAXPROCS.
func TestMain(m *testing.M) {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.parallel" {
			parallelSet = true
		}
	})
	if !parallelSet {
		_ = flag.Set("test.parallel", "8")
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if p := os.Getenv("GOBETWEEN_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: GOBETWEEN_BIN:", err)
			return 1
		}
		binPath = abs
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "gobetween-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "gobetween")
	args := []string{"build", "-o", binPath}
	if os.Getenv("GOBETWEEN_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/gobetween")
	cmd := exec.Command("go", args...)
	cmd.Dir = ".." // the module root: tests run in e2e/
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/gobetween: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// syncBuffer is an io.Writer safe for the exec copy goroutine and readers.
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

// node is one gobetween process started by a test. It is stopped in t.Cleanup
// (SIGTERM, then SIGKILL after a grace period); its output is logged when the
// test failed.
type node struct {
	t       testing.TB
	dir     string
	cfgPath string
	cmd     *exec.Cmd
	stdout  syncBuffer
	stderr  syncBuffer
	done    chan struct{} // closed when the process has exited
	state   *os.ProcessState
	started time.Time
	stopped atomic.Bool // the test asked it to stop (signal or cleanup)
}

// nodeOptions tune startNode.
type nodeOptions struct {
	format string   // "toml" (default) or "json": the file extension and -f
	args   []string // extra flags after -c FILE
	env    []string // extra environment, KEY=VALUE
	useSub bool     // start as `from-file FILE` instead of `-c FILE`
	dir    string   // run in this directory (a restart keeps its data directory); "" = a new one
}

// startNode writes cfg to a file in a fresh directory and starts gobetween on it.
// It does not wait for readiness: use waitServing or waitAPI.
func startNode(t testing.TB, cfg string) *node {
	t.Helper()
	return startNodeWith(t, cfg, nodeOptions{})
}

func startNodeWith(t testing.TB, cfg string, o nodeOptions) *node {
	t.Helper()
	if o.format == "" {
		o.format = "toml"
	}
	dir := o.dir
	if dir == "" {
		dir = t.TempDir()
	}
	n := &node{t: t, dir: dir, done: make(chan struct{})}
	n.cfgPath = filepath.Join(n.dir, "gobetween."+o.format)
	writeFile(t, n.cfgPath, cfg)
	var args []string
	if o.useSub {
		args = []string{"from-file", n.cfgPath}
	} else {
		args = []string{"-c", n.cfgPath}
	}
	if o.format != "toml" {
		args = append(args, "-f", o.format)
	}
	args = append(args, o.args...)
	n.launch(args, o.env)
	return n
}

// launch starts the binary with args in n.dir; it is stopped, and checked for
// races and panics, in t.Cleanup.
func (n *node) launch(args, env []string) {
	t := n.t
	t.Helper()
	n.cmd = exec.Command(binPath, args...)
	n.cmd.Dir = n.dir
	n.cmd.Env = append(os.Environ(), env...)
	n.cmd.Stdout = &n.stdout
	n.cmd.Stderr = &n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start gobetween: %v", err)
	}
	n.started = time.Now()
	go func() {
		_ = n.cmd.Wait()
		n.state = n.cmd.ProcessState
		close(n.done)
	}()
	t.Cleanup(func() {
		if n.exited() && !n.stopped.Load() {
			t.Errorf("gobetween exited on its own: %v", n.state)
		}
		n.stop()
		// A binary built with -race reports races on stderr; a panic in any
		// goroutine prints its trace. Either is a bug whatever the test checked.
		if out := n.stderr.String(); strings.Contains(out, "WARNING: DATA RACE") || strings.Contains(out, "panic:") {
			t.Errorf("gobetween reported a data race or a panic")
		}
		if t.Failed() {
			t.Logf("gobetween %v", args)
			n.dump()
		}
	})
}

func (n *node) pid() int { return n.cmd.Process.Pid }

// dump logs the config and the output of the process (tail).
func (n *node) dump() {
	n.t.Helper()
	cfg, _ := os.ReadFile(n.cfgPath)
	n.t.Logf("gobetween pid %d, config %s:\n%s", n.pid(), n.cfgPath, cfg)
	max := 12000
	if os.Getenv("GOBETWEEN_E2E_FULL_LOG") == "1" {
		max = 1 << 30
	}
	n.t.Logf("gobetween stdout (tail):\n%s", tail(n.stdout.String(), max))
	n.t.Logf("gobetween stderr (tail):\n%s", tail(n.stderr.String(), max))
	if n.exited() {
		n.t.Logf("gobetween exit: %v", n.state)
	}
}

func tail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return "…" + s[len(s)-max:]
}

// output is stdout and stderr together, for checks on what was logged.
func (n *node) output() string { return n.stdout.String() + n.stderr.String() }

func (n *node) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (n *node) signal(sig syscall.Signal) {
	n.t.Helper()
	if sig != syscall.SIGHUP {
		n.stopped.Store(true)
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("signal %v: %v", sig, err)
	}
}

// reload rewrites the config file and sends SIGHUP.
func (n *node) reload(cfg string) {
	n.t.Helper()
	writeFile(n.t, n.cfgPath, cfg)
	n.signal(syscall.SIGHUP)
}

// waitExit waits up to d for the process to exit and returns its exit code. It
// fails the test when the process is still running after d.
func (n *node) waitExit(d time.Duration) int {
	n.t.Helper()
	select {
	case <-n.done:
		return n.state.ExitCode()
	case <-time.After(d):
		n.t.Fatalf("gobetween (pid %d) still running %v after it was asked to stop", n.pid(), d)
		return -1
	}
}

// stop ends the process if it still runs: SIGTERM, then SIGKILL after 5 s.
func (n *node) stop() {
	n.stopped.Store(true)
	if n.exited() {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return
	case <-time.After(5 * time.Second):
	}
	n.t.Logf("gobetween (pid %d) ignored SIGTERM for 5s; killing it", n.pid())
	_ = n.cmd.Process.Kill()
	<-n.done
}

// requireRunning fails the test at once when the process has exited.
func (n *node) requireRunning() {
	n.t.Helper()
	if n.exited() {
		n.t.Fatalf("gobetween exited unexpectedly: %v", n.state)
	}
}

// runGobetween runs the binary to completion (validate, -v, a bad config) with a
// deadline, returning stdout, stderr and the exit code.
func runGobetween(t testing.TB, timeout time.Duration, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start gobetween: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("gobetween %v: %v", args, err)
		}
		return stdout.String(), stderr.String(), code
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("gobetween %v still running after %v; stdout:\n%s\nstderr:\n%s", args, timeout, stdout.String(), stderr.String())
		return "", "", -1
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	// rename: the process never reads a half-written file on SIGHUP.
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Ports. Tests never use fixed ports, and they avoid the kernel's ephemeral
// range: a port picked there and released could be handed out again at once to
// another test's listener on :0 or to the local end of an outgoing connection
// (gobetween dialling a backend) before gobetween binds it. So ports come from
// just below the ephemeral range, at random, each handed out once per process,
// and are checked free when handed out.
var ports struct {
	once   sync.Once
	lo, hi int // [lo, hi) to pick from; hi == 0: use :0
	mu     sync.Mutex
	used   map[int]bool
}

func portRange() (int, int) {
	ports.once.Do(func() {
		ports.used = map[int]bool{}
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		if err != nil {
			return
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			return
		}
		ephemeralLo, err := strconv.Atoi(f[0])
		if err != nil || ephemeralLo < 12000 {
			return
		}
		ports.lo, ports.hi = ephemeralLo-10000, ephemeralLo
	})
	return ports.lo, ports.hi
}

// listenFree listens on a loopback port outside the ephemeral range.
func listenFree(t testing.TB) net.Listener {
	t.Helper()
	lo, hi := portRange()
	if hi == 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	ports.mu.Lock()
	defer ports.mu.Unlock()
	for i := 0; i < 1000; i++ {
		p := lo + mrand.IntN(hi-lo)
		if ports.used[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ports.used[p] = true
		return ln
	}
	t.Fatalf("no free port in [%d, %d)", lo, hi)
	return nil
}

// freePort returns a loopback port that is free and handed out to no one else
// in this process.
func freePort(t testing.TB) int {
	t.Helper()
	ln := listenFree(t)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freeAddr is "127.0.0.1:<free port>".
func freeAddr(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// eventually polls cond every interval until it returns nil or timeout passes,
// then fails the test with the last error.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 20 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %v", what, timeout, err)
		}
		time.Sleep(interval)
		if interval < 200*time.Millisecond {
			interval *= 2
		}
	}
}

// waitServing waits until a client gets an answer from a backend through addr.
func (n *node) waitServing(addr string) {
	n.t.Helper()
	eventually(n.t, 15*time.Second, "gobetween serving on "+addr, func() error {
		n.requireRunning()
		_, err := who(addr)
		return err
	})
}

// waitListening waits until addr accepts TCP connections (for servers whose
// clients are refused by design).
func (n *node) waitListening(addr string) {
	n.t.Helper()
	eventually(n.t, 15*time.Second, "gobetween listening on "+addr, func() error {
		n.requireRunning()
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// tomlList renders a TOML array of strings.
func tomlList(items ...string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
