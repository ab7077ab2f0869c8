package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The files deploy/keepalived/ ships, used as they are: the test fills in the
// per-host parameters of keepalived.conf and runs the check script.
const (
	vipShippedConf  = "../deploy/keepalived/keepalived.conf"
	vipShippedCheck = "../deploy/keepalived/gobetween-check.sh"
)

// vipRender sets keepalived parameters ($NAME=value definition lines) in conf.
// Each name must be defined exactly once, so that a renamed parameter in the
// shipped file fails the test instead of being silently left at its example.
func vipRender(conf string, params map[string]string) (string, error) {
	for name, value := range params {
		re := regexp.MustCompile(`(?m)^\$` + regexp.QuoteMeta(name) + `=.*$`)
		if n := len(re.FindAllStringIndex(conf, -1)); n != 1 {
			return "", fmt.Errorf("keepalived.conf defines $%s %d times, want once", name, n)
		}
		conf = re.ReplaceAllLiteralString(conf, "$"+name+"="+value)
	}
	return conf, nil
}

// vipParam is the value of keepalived parameter name in conf, "" when unset.
func vipParam(conf, name string) string {
	m := regexp.MustCompile(`(?m)^\$` + regexp.QuoteMeta(name) + `=(.*)$`).FindStringSubmatch(conf)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// vipKeepalivedPath is the keepalived binary; the test fails without it.
func vipKeepalivedPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("keepalived")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/keepalived"); serr == nil {
			return "/usr/sbin/keepalived"
		}
		t.Fatalf("the VIP test needs keepalived (Debian package keepalived; `make test` installs it): %v", err)
	}
	return p
}

// vipScriptDir is a directory for the check script that keepalived accepts
// with enable_script_security and that user nobody (script_user) can enter:
// t.TempDir() is mode 0700.
func vipScriptDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gbt-vip-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// vipKeepalived is one keepalived (parent and VRRP child) in a namespace,
// started with -n (foreground) so its PID is the one the test holds.
type vipKeepalived struct {
	t        *testing.T
	ns       string
	conf     string
	vrrpPid  string // the VRRP child's pid file
	cmd      *exec.Cmd
	out      syncBuffer
	done     chan struct{}
	stopping atomic.Bool
}

func startVIPKeepalived(t *testing.T, bin, ns, dir, conf string) *vipKeepalived {
	t.Helper()
	k := &vipKeepalived{t: t, ns: ns, conf: filepath.Join(dir, "keepalived.conf"), done: make(chan struct{})}
	k.vrrpPid = filepath.Join(dir, "vrrp.pid")
	writeFile(t, k.conf, conf)
	// -P: VRRP only; -l -D -G: detailed log on the console, none to syslog.
	k.cmd = exec.Command("ip", "netns", "exec", ns, bin, "-n", "-P", "-l", "-D", "-G",
		"-f", k.conf, "-p", filepath.Join(dir, "keepalived.pid"), "-r", k.vrrpPid)
	k.cmd.Stdout, k.cmd.Stderr = &k.out, &k.out
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start keepalived in %s: %v", ns, err)
	}
	go func() { _ = k.cmd.Wait(); close(k.done) }()
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			t.Logf("keepalived in %s, config %s; log (tail):\n%s", ns, k.conf, tail(k.out.String(), 6000))
		}
	})
	return k
}

// vrrpChild is the PID of the VRRP child process, 0 when unknown.
func (k *vipKeepalived) vrrpChild() int {
	b, err := os.ReadFile(k.vrrpPid)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (k *vipKeepalived) exited() bool {
	select {
	case <-k.done:
		return true
	default:
		return false
	}
}

// kill ends both processes at once, as a host that vanishes: the VRRP child
// first, so that the parent cannot respawn it.
func (k *vipKeepalived) kill() {
	k.stopping.Store(true)
	if pid := k.vrrpChild(); pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = k.cmd.Process.Kill()
	<-k.done
}

// stop is a clean stop (SIGTERM: keepalived gives the VIP up), then SIGKILL.
func (k *vipKeepalived) stop() {
	k.stopping.Store(true)
	if k.exited() {
		if pid := k.vrrpChild(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL) // exits with its parent; this is in case it did not
		}
		return
	}
	child := k.vrrpChild()
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.done:
		return
	case <-time.After(5 * time.Second):
	}
	k.t.Logf("keepalived in %s ignored SIGTERM for 5s; killing it", k.ns)
	if child > 0 {
		_ = syscall.Kill(child, syscall.SIGKILL)
	}
	_ = k.cmd.Process.Kill()
	<-k.done
}

// count is how often the log has a line containing s.
func (k *vipKeepalived) count(s string) int { return strings.Count(k.out.String(), s) }

// requireRunning fails the test when keepalived exited without being asked.
func (k *vipKeepalived) requireRunning() {
	k.t.Helper()
	if k.exited() && !k.stopping.Load() {
		k.t.Fatalf("keepalived in %s exited: %v", k.ns, k.cmd.ProcessState)
	}
}

// vipHasAddr reports whether namespace ns has ip on eth0.
func vipHasAddr(ns, ip string) (bool, error) {
	out, err := exec.Command("ip", "-n", ns, "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("ip -n %s addr: %w: %s", ns, err, out)
	}
	return strings.Contains(string(out), " "+ip+"/"), nil
}

// vipNodeConfig is node i of the three: the API on every address of its
// namespace (so on the VIP too, and on 127.0.0.1 for the check script), the
// cluster on the node's own address.
func vipNodeConfig(l *netnsLab, i, apiPort, gossip, raftPort int) string {
	var join []string
	for k := range 3 {
		join = append(join, l.host(k)+":"+strconv.Itoa(gossip))
	}
	return fmt.Sprintf(`[logging]
level = "info"
output = "stdout"

[api]
enabled = true
bind = "0.0.0.0:%[2]d"

[cluster]
node_id = "n%[3]d"
data_dir = "data"
bind = "%[1]s:%[4]d"
raft_bind = "%[1]s:%[5]d"
join = %[6]s
bootstrap_expect = 3

[defaults]
drain_timeout = "1s"
`, l.host(i), apiPort, i+1, gossip, raftPort, tomlList(join...))
}

// vipWhoBackend answers every connection with the address it came from and
// closes it: through gobetween, that is the address of the node that relayed.
func vipWhoBackend(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("backend on %s: %v", host, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			c.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(c, ip+"\n")
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// vipAnswer is one client attempt through the VIP: which node relayed it
// (-1: the attempt failed).
type vipAnswer struct {
	at   time.Time
	node int
	err  string
}

// vipTraffic opens a new connection through addr every 20 ms and records
// which node answered.
type vipTraffic struct {
	mu      sync.Mutex
	answers []vipAnswer
	stop    chan struct{}
	done    chan struct{}
	Stop    func() // idempotent: stops the client and waits for it
}

func startVIPTraffic(addr string, nodeOf map[string]int) *vipTraffic {
	v := &vipTraffic{stop: make(chan struct{}), done: make(chan struct{})}
	v.Stop = sync.OnceFunc(func() { close(v.stop); <-v.done })
	go func() {
		defer close(v.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			a := vipAnswer{at: time.Now(), node: -1}
			c, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
			if err == nil {
				c.SetDeadline(time.Now().Add(500 * time.Millisecond))
				line, rerr := bufio.NewReader(c).ReadString('\n')
				c.Close()
				if n, ok := nodeOf[strings.TrimSpace(line)]; ok && rerr == nil {
					a.node = n
				} else {
					err = fmt.Errorf("answer %q: %v", line, rerr)
				}
			}
			if err != nil {
				a.err = err.Error()
			}
			v.mu.Lock()
			v.answers = append(v.answers, a)
			v.mu.Unlock()
			select {
			case <-v.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return v
}

// firstAnswerAfter is the first successful attempt started after t0 that a
// node other than not relayed.
func (v *vipTraffic) firstAnswerAfter(t0 time.Time, not int) (vipAnswer, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, a := range v.answers {
		if !a.at.Before(t0) && a.node >= 0 && a.node != not {
			return a, true
		}
	}
	return vipAnswer{}, false
}

// failuresBetween lists the failed attempts started in [from, to).
func (v *vipTraffic) failuresBetween(from, to time.Time) []vipAnswer {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []vipAnswer
	for _, a := range v.answers {
		if !a.at.Before(from) && a.at.Before(to) && a.node < 0 {
			out = append(out, a)
		}
	}
	return out
}

// refusedBetween lists the attempts started in [from, to) that the other end
// refused (a node without a listener), as opposed to ones that timed out.
func (v *vipTraffic) refusedBetween(from, to time.Time) []vipAnswer {
	var out []vipAnswer
	for _, a := range v.failuresBetween(from, to) {
		if strings.Contains(a.err, "connection refused") {
			out = append(out, a)
		}
	}
	return out
}

// vipWrites creates servers w1, w2, … through the API on the VIP, one after
// the other, a write every 50 ms, remembering which were acknowledged (2xx).
// Each gets its own port on every node, so the writes also exercise the
// listening check of /health while it runs.
type vipWrites struct {
	mu       sync.Mutex
	acked    []string
	sentAt   []time.Time // when each acknowledged write was sent
	ackedAt  []time.Time
	attempts int
	stop     chan struct{}
	done     chan struct{}
	Stop     func() // idempotent: stops the writer and waits for it
}

// vipWritePortBase is far below the ephemeral ports of the namespaces, where
// nothing else of the test listens.
const vipWritePortBase = 12000

func startVIPWrites(api, backendAddr string) *vipWrites {
	w := &vipWrites{stop: make(chan struct{}), done: make(chan struct{})}
	w.Stop = sync.OnceFunc(func() { close(w.stop); <-w.done })
	// A new connection per write: a kept-alive one would stay with a dead holder.
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(w.done)
		for i := 1; ; i++ {
			name := "w" + strconv.Itoa(i)
			body := viewServer(":"+strconv.Itoa(vipWritePortBase+i), "roundrobin", nil, backendAddr)
			sent := time.Now()
			code, _, _, err := apiClient{base: "http://" + api}.doWith(hc, http.MethodPost, "/servers/"+name, body, nil)
			w.mu.Lock()
			w.attempts++
			if err == nil && code/100 == 2 {
				w.acked = append(w.acked, name)
				w.sentAt = append(w.sentAt, sent)
				w.ackedAt = append(w.ackedAt, time.Now())
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// firstAckAfter is when the first write sent after t0 was acknowledged.
func (w *vipWrites) firstAckAfter(t0 time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, sent := range w.sentAt {
		if sent.After(t0) {
			return w.ackedAt[i], true
		}
	}
	return time.Time{}, false
}

func (w *vipWrites) result() (acked []string, attempts int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked), w.attempts
}

// vipMissing is the acknowledged writes that api does not list.
func vipMissing(api apiClient, acked []string) ([]string, error) {
	names, err := api.serverNames()
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, a := range acked {
		if _, found := slices.BinarySearch(names, a); !found {
			missing = append(missing, a)
		}
	}
	return missing, nil
}

// vipStats are the median and the maximum of ds.
func vipStats(ds []time.Duration) (median, maximum time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	median = s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return median, s[len(s)-1]
}
