package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// netnsLab is three hosts in network namespaces on one bridge, after
// /work/shared/TESTING.md: host i is 169.254.X.i inside namespace gbt-<tag>-n<i>;
// the test's own side is 169.254.X.254, linked to the bridge. Every name
// carries a random tag so that concurrent test binaries never collide.
type netnsLab struct {
	t      *testing.T
	tag    string
	subnet int
	ns     [3]string
}

// ipRun runs `ip args...` and returns its combined output on failure.
func ipRun(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the partition test needs `ip` (iproute2, installed by the Makefile: apt-get install -y iproute2): %v", err)
	}
	tagb := make([]byte, 2)
	if _, err := rand.Read(tagb); err != nil {
		t.Fatal(err)
	}
	l := &netnsLab{t: t, tag: hex.EncodeToString(tagb)}
	// A /24 of 169.254.0.0/16 that no interface of this machine uses yet.
	for range 50 {
		x := 1 + mrand.IntN(250)
		out, err := exec.Command("ip", "-4", "-o", "addr", "show", "to", fmt.Sprintf("169.254.%d.0/24", x)).Output()
		if err == nil && len(strings.TrimSpace(string(out))) == 0 {
			l.subnet = x
			break
		}
	}
	if l.subnet == 0 {
		t.Fatal("no free 169.254.X.0/24 for the test's namespaces")
	}
	sw, up := l.switchNS(), l.uplink()
	// Registered before anything exists, so that a failure half-way still
	// removes what was made. The nodes' own cleanups, registered later, run
	// first: no process is left in a namespace when it is deleted. Deleting a
	// namespace deletes its veth ends and so their peers.
	t.Cleanup(func() {
		for i := range 3 {
			_ = ipRun("netns", "del", l.nsName(i))
		}
		_ = ipRun("netns", "del", sw)
		_ = ipRun("link", "del", up)
	})
	// The bridge lives in a namespace of its own: in the test's namespace,
	// br_netfilter would pass bridged traffic through the machine's iptables
	// FORWARD chain, whose policy is DROP where Docker runs, and the nodes would
	// not reach each other. The test's side is a veth into that bridge.
	setup := [][]string{
		{"netns", "add", sw},
		{"-n", sw, "link", "add", "br0", "type", "bridge"},
		{"-n", sw, "link", "set", "br0", "up"},
		{"link", "add", up, "type", "veth", "peer", "name", "up0", "netns", sw},
		{"-n", sw, "link", "set", "up0", "master", "br0", "up"},
		{"addr", "add", l.bridge() + "/24", "dev", up},
		{"link", "set", up, "up"},
	}
	for i := range 3 {
		ns, port := l.nsName(i), fmt.Sprintf("p%d", i+1)
		l.ns[i] = ns
		setup = append(setup,
			[]string{"netns", "add", ns},
			[]string{"-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", sw, "link", "set", port, "master", "br0", "up"},
			[]string{"-n", ns, "addr", "add", l.host(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, args := range setup {
		if err := ipRun(args...); err != nil {
			t.Fatalf("network namespaces are needed for the partition test and could not be set up "+
				"(root and iproute2 required; the Makefile installs iproute2): %v", err)
		}
	}
	return l
}

func (l *netnsLab) nsName(i int) string     { return fmt.Sprintf("gbt-%s-n%d", l.tag, i+1) }
func (l *netnsLab) switchNS() string        { return "gbt-" + l.tag + "-sw" }
func (l *netnsLab) uplink() string          { return "gbt-" + l.tag + "-up" }
func (l *netnsLab) host(i int) string       { return fmt.Sprintf("169.254.%d.%d", l.subnet, i+1) }
func (l *netnsLab) bridge() string          { return fmt.Sprintf("169.254.%d.254", l.subnet) }
func (l *netnsLab) addr(i, port int) string { return l.host(i) + ":" + strconv.Itoa(port) }

// cut blackholes the traffic between host k and its peers, both ways; the
// bridge address still reaches every host. heal undoes it.
func (l *netnsLab) cut(k int) error  { return l.routes(k, "add") }
func (l *netnsLab) heal(k int) error { return l.routes(k, "del") }

func (l *netnsLab) routes(k int, op string) error {
	for j := range 3 {
		if j == k {
			continue
		}
		if err := ipRun("netns", "exec", l.ns[k], "ip", "route", op, "blackhole", l.host(j)+"/32"); err != nil {
			return err
		}
		if err := ipRun("netns", "exec", l.ns[j], "ip", "route", op, "blackhole", l.host(k)+"/32"); err != nil {
			return err
		}
	}
	return nil
}

// startBackendOn is startBackend listening on host, so that the namespaces
// reach it over the bridge.
func startBackendOn(t testing.TB, name, host string) *backend {
	t.Helper()
	b := &backend{t: t, name: name, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("backend on %s: %v", host, err)
	}
	b.addr = ln.Addr().String()
	b.serve(ln)
	t.Cleanup(func() { b.Kill() })
	return b
}

// startNodeInNetns is startNodeWith for a process inside namespace ns
// (`ip netns exec` replaces itself with gobetween, so the PID is gobetween's).
func startNodeInNetns(t testing.TB, ns, cfg, dir string, args ...string) *node {
	t.Helper()
	n := &node{t: t, dir: dir, done: make(chan struct{})}
	n.cfgPath = filepath.Join(dir, "gobetween.toml")
	writeFile(t, n.cfgPath, cfg)
	n.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, binPath, "-c", n.cfgPath}, args...)...)
	n.cmd.Dir = dir
	n.cmd.Env = os.Environ()
	n.cmd.Stdout = &n.stdout
	n.cmd.Stderr = &n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start gobetween in %s: %v", ns, err)
	}
	n.started = time.Now()
	go func() {
		_ = n.cmd.Wait()
		n.state = n.cmd.ProcessState
		close(n.done)
	}()
	t.Cleanup(func() {
		if n.exited() && !n.stopped.Load() {
			t.Errorf("gobetween in %s exited on its own: %v", ns, n.state)
		}
		n.stop()
		if out := n.stderr.String(); strings.Contains(out, "WARNING: DATA RACE") || strings.Contains(out, "panic:") {
			t.Errorf("gobetween in %s reported a data race or a panic", ns)
		}
		if t.Failed() {
			n.dump()
		}
	})
	return n
}

func netnsNodeConfig(l *netnsLab, i, apiPort, gossip, raftPort int) string {
	return clusterNodeConfig([3]string{l.host(0), l.host(1), l.host(2)}, i, apiPort, gossip, raftPort, "")
}

// A node cut off from its peers (the bridge side still reaching it) keeps
// serving its servers and answers writes with 503; the other two keep a leader
// and take writes; once healed, the cut-off node applies what it missed.
func TestClusterPartitionedNodeServesAndRefusesWrites(t *testing.T) {
	t.Parallel()
	l := newNetnsLab(t)
	b1 := startBackendOn(t, "b1", l.bridge())
	b2 := startBackendOn(t, "b2", l.bridge())
	apiPort, gossip, raftPort := freePort(t), freePort(t), freePort(t)
	var nodes [3]*node
	apis := map[string]apiClient{}
	byID := map[string]*node{}
	for i := range 3 {
		nodes[i] = startNodeInNetns(t, l.ns[i], netnsNodeConfig(l, i, apiPort, gossip, raftPort), t.TempDir())
		id := "n" + strconv.Itoa(i+1)
		apis[id] = newAPI(l.addr(i, apiPort))
		byID[id] = nodes[i]
	}
	leaderID := leaderOf(t, 20*time.Second, 3, apis, byID)
	leader, _ := strconv.Atoi(strings.TrimPrefix(leaderID, "n"))
	leader--
	// The cut-off node is a follower; the majority keeps the leader.
	cut := (leader + 1) % 3
	other := (leader + 2) % 3
	api := func(i int) apiClient { return apis["n"+strconv.Itoa(i+1)] }

	port := freePort(t)
	if code, b := api(cut).mustDo(t, "POST", "/servers/web", postBody(":"+strconv.Itoa(port), b1.line())); code != 200 {
		t.Fatalf("POST /servers/web: %d %s", code, b)
	}
	for i := range 3 {
		eventually(t, 5*time.Second, "web serving on "+l.addr(i, port), func() error {
			_, err := who(l.addr(i, port))
			return err
		})
	}

	// Clients hammer the cut-off node from the bridge side throughout.
	ld := startLiveLoad(l.addr(cut, port))
	stopLoad := ld.Stop
	defer stopLoad()

	cutAt := time.Now()
	if err := l.cut(cut); err != nil {
		t.Fatalf("partition n%d: %v", cut+1, err)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			_ = l.heal(cut)
		}
	})

	// The cut-off node answers writes with 503 within a few seconds. The first
	// one, sent while it still takes the old leader for alive, is forwarded and
	// gets no answer: its 503 may say the outcome is unknown. Once the node knows
	// it has no leader, a write is refused outright, and must never be applied.
	write := func(name string) (int, string, time.Duration) {
		t.Helper()
		start := time.Now()
		code, b, _, err := api(cut).doWith(slowClient, "POST", "/servers/"+name, postBody(":"+strconv.Itoa(freePort(t)), b1.line()), nil)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("POST /servers/%s on the cut-off node: %v after %v", name, err, took)
		}
		if code == 200 {
			t.Fatalf("a node cut off from its peers acknowledged a write: %s", b)
		}
		if code != 503 {
			t.Fatalf("POST /servers/%s on the cut-off node: want 503, got %d in %v: %s", name, code, took, b)
		}
		if took > 6*time.Second {
			t.Fatalf("POST /servers/%s on the cut-off node: the 503 took %v", name, took)
		}
		decodeAPIError(t, b)
		return code, b, took
	}
	_, b, took := write("inflight")
	first503 := time.Since(cutAt)
	t.Logf("first write after the partition: 503 in %v: %s", took, strings.Join(strings.Fields(b), " "))
	var toNoLeader time.Duration
	eventually(t, 10*time.Second, fmt.Sprintf("n%d refuses writes for want of a leader", cut+1), func() error {
		code, b, _ := write("refused")
		if !strings.Contains(strings.ToLower(b), "no leader") {
			return fmt.Errorf("503 without saying there is no leader: %s", b)
		}
		requireNoLeaderError(t, code, b)
		toNoLeader = time.Since(cutAt)
		return nil
	})
	t.Logf("partition -> first 503: %v; partition -> 503 \"no leader\": %v", first503, toNoLeader)

	// The majority keeps a leader and takes writes, served on both its nodes.
	port2 := freePort(t)
	majority := map[string]apiClient{"n" + strconv.Itoa(leader+1): api(leader), "n" + strconv.Itoa(other+1): api(other)}
	leaderOf(t, 10*time.Second, 2, majority, byID)
	eventually(t, 10*time.Second, "a write on the majority", func() error {
		code, b, err := api(other).do("POST", "/servers/during", postBody(":"+strconv.Itoa(port2), b2.line()))
		if err != nil {
			return err
		}
		if code != 200 && code != 409 {
			return fmt.Errorf("POST /servers/during: %d %s", code, b)
		}
		return nil
	})
	for _, i := range []int{leader, other} {
		eventually(t, 5*time.Second, "during serving on "+l.addr(i, port2), func() error {
			_, err := who(l.addr(i, port2))
			return err
		})
	}
	// The cut-off node does not see it, and still serves what it had.
	if _, err := who(l.addr(cut, port2)); err == nil {
		t.Fatalf("the cut-off node serves a server written after the partition")
	}
	if f := ld.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests through the cut-off node failed during the partition (last: %v)", f, ld.requests.Load(), ld.lastErr.Load())
	}

	healAt := time.Now()
	if err := l.heal(cut); err != nil {
		t.Fatalf("heal n%d: %v", cut+1, err)
	}
	healed = true
	eventually(t, 30*time.Second, fmt.Sprintf("n%d serves the server written during the partition", cut+1), func() error {
		nodes[cut].requireRunning()
		_, err := who(l.addr(cut, port2))
		return err
	})
	t.Logf("heal -> cut-off node serves the partition's write: %v", time.Since(healAt))
	stopLoad()
	if f := ld.failures.Load(); f != 0 {
		t.Fatalf("%d of %d requests through the cut-off node failed (last: %v)", f, ld.requests.Load(), ld.lastErr.Load())
	}

	// One cluster again, and the refused write was never applied anywhere.
	leaderOf(t, 20*time.Second, 3, apis, byID)
	for i := range 3 {
		if code, b := api(i).mustDo(t, "GET", "/servers/refused", ""); code != 404 {
			t.Fatalf("a write refused for want of a leader exists on n%d: %d %s", i+1, code, b)
		}
	}
	// The write in flight at the partition had an unknown outcome: either is right.
	code, _ := api(cut).mustDo(t, "GET", "/servers/inflight", "")
	t.Logf("the write in flight at the partition (503, outcome unknown): GET after the heal %d", code)
	if code, b := api(cut).mustDo(t, "POST", "/servers/after", postBody(":"+strconv.Itoa(freePort(t)), b2.line())); code != 200 {
		t.Fatalf("POST on the healed node: %d %s", code, b)
	}
}
