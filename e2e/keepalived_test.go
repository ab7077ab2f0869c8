package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A VIP in front of a three-node cluster, with the files deploy/keepalived/
// ships: three hosts in network namespaces, each running gobetween and
// keepalived (the shipped keepalived.conf with this host's addresses, the
// shipped check script against its /health). A client opens a connection
// through the VIP every 20 ms and an API client creates a server through the
// VIP every 50 ms. Three times the holder's gobetween is SIGKILLed (its check
// fails, keepalived enters FAULT, a backup takes the VIP) and restarted; once
// it is stopped with SIGTERM (/health fails at once, --stop-grace keeps it
// serving until the VIP has moved: no client refused); once
// the holder's keepalived is stopped (a planned handover: no connection
// refused); then the holder host is lost whole (its link down, keepalived and
// gobetween killed: the backups' advert timer runs out). Each time the VIP
// answers again from another node, and in the end every acknowledged write is
// on every surviving node. The timings are the shipped ones; the test logs
// each failover time.
func TestKeepalivedVIPFailover(t *testing.T) {
	kaBin := vipKeepalivedPath(t)
	shipped, err := os.ReadFile(vipShippedConf)
	if err != nil {
		t.Fatalf("the shipped keepalived config: %v", err)
	}
	l := newNetnsLab(t)
	vip := fmt.Sprintf("169.254.%d.100", l.subnet)
	backend := vipWhoBackend(t, l.bridge())
	nodeOf := map[string]int{}
	for i := range 3 {
		nodeOf[l.host(i)] = i
	}

	// The check script where keepalived accepts it (see vipScriptDir).
	scriptDir := vipScriptDir(t)
	check := filepath.Join(scriptDir, "gobetween-check.sh")
	src, err := os.ReadFile(vipShippedCheck)
	if err != nil {
		t.Fatalf("the shipped check script: %v", err)
	}
	if err := os.WriteFile(check, src, 0o755); err != nil {
		t.Fatal(err)
	}

	apiPort, gossip, raftPort, port := freePort(t), freePort(t), freePort(t), freePort(t)
	var nodes [3]*node
	dirs := [3]string{t.TempDir(), t.TempDir(), t.TempDir()}
	apis := map[string]apiClient{}
	byID := map[string]*node{}
	// --stop-grace longer than keepalived needs to see /health fail (fall 2 x
	// interval 1s) and hand the VIP over: a stopped node keeps serving until
	// the VIP has left it.
	const stopGrace = "3500ms"
	start := func(i int) {
		nodes[i] = startNodeInNetns(t, l.ns[i], vipNodeConfig(l, i, apiPort, gossip, raftPort), dirs[i], "--stop-grace", stopGrace)
		byID[nodeIDs[i]] = nodes[i]
	}
	// Stop the nodes at the end without the grace: a second signal ends it.
	t.Cleanup(func() {
		for _, n := range nodes {
			if n != nil && !n.exited() {
				_ = n.cmd.Process.Signal(syscall.SIGTERM)
				time.Sleep(20 * time.Millisecond)
				_ = n.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
	})
	for i := range 3 {
		start(i)
		apis[nodeIDs[i]] = newAPI(l.addr(i, apiPort))
	}
	leaderOf(t, 20*time.Second, 3, apis, byID)
	if code, b := apis["n1"].mustDo(t, "POST", "/servers/front", viewServer(":"+strconv.Itoa(port), "roundrobin", nil, backend)); code != 200 {
		t.Fatalf("POST /servers/front: %d %s", code, b)
	}
	healthy := func(i int) error {
		code, body, err := apis[nodeIDs[i]].do("GET", "/health", "")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("GET /health on n%d: %d %s", i+1, code, body)
		}
		return nil
	}
	for i := range 3 {
		eventually(t, 10*time.Second, fmt.Sprintf("n%d healthy", i+1), func() error { return healthy(i) })
	}
	// The body names every check.
	_, body, _ := apis["n1"].do("GET", "/health", "")
	var hb struct {
		Status string                     `json:"status"`
		Checks map[string]json.RawMessage `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &hb); err != nil || hb.Status != "ok" || len(hb.Checks) != 4 {
		t.Fatalf("GET /health: %v %s: want status ok and four checks", err, body)
	}

	var kas [3]*vipKeepalived
	var confs [3]string
	for i := range 3 {
		var peers []string
		for k := range 3 {
			if k != i {
				peers = append(peers, l.host(k))
			}
		}
		conf, err := vipRender(string(shipped), map[string]string{
			"ROUTER_ID":   l.nsName(i),
			"INTERFACE":   "eth0",
			"PRIORITY":    strconv.Itoa(150 - 50*i),
			"UNICAST_SRC": l.host(i),
			"PEER_1":      peers[0],
			"PEER_2":      peers[1],
			"VIP":         vip + "/24",
			"CHECK":       check + " http://127.0.0.1:" + strconv.Itoa(apiPort) + "/health",
		})
		if err != nil {
			t.Fatal(err)
		}
		confs[i] = conf
		kas[i] = startVIPKeepalived(t, kaBin, l.ns[i], t.TempDir(), conf)
	}
	for i, k := range kas {
		for _, bad := range []string{"not found, ignoring", "Unable to set default user", "unsafe permissions", "insecure"} {
			if k.count(bad) > 0 {
				t.Fatalf("keepalived in n%d refused part of the shipped config (%q)", i+1, bad)
			}
		}
	}

	// holder waits until exactly one namespace has the VIP and returns it. A
	// lost host (>= 0) is left out: its unreachable link may keep the address.
	holder := func(timeout time.Duration, lost int) int {
		t.Helper()
		h := -1
		eventually(t, timeout, "one holder of the VIP", func() error {
			var has []int
			for i := range 3 {
				if i == lost {
					continue
				}
				kas[i].requireRunning()
				ok, err := vipHasAddr(l.ns[i], vip)
				if err != nil {
					return err
				}
				if ok {
					has = append(has, i)
				}
			}
			if len(has) != 1 {
				return fmt.Errorf("held by %v", has)
			}
			h = has[0]
			return nil
		})
		return h
	}
	upAt := time.Now()
	h := holder(20*time.Second, -1)
	t.Logf("VIP %s held by n%d %v after keepalived started", vip, h+1, time.Since(upAt).Round(10*time.Millisecond))

	via := vip + ":" + strconv.Itoa(port)
	traffic := startVIPTraffic(via, nodeOf)
	defer traffic.Stop()
	writes := startVIPWrites(vip+":"+strconv.Itoa(apiPort), backend)
	defer writes.Stop()
	eventually(t, 5*time.Second, "traffic through the VIP", func() error {
		if _, ok := traffic.firstAnswerAfter(time.Now().Add(-time.Second), -1); !ok {
			return fmt.Errorf("no answer through %s", via)
		}
		return nil
	})

	// Steady state under writes: no client failure, no keepalived leaving its
	// state (each write adds a server: the listening check must not race them).
	steadyFrom := time.Now()
	var faults [3]int
	for i := range 3 {
		faults[i] = kas[i].count("Entering FAULT STATE")
	}
	time.Sleep(1500 * time.Millisecond)
	if f := traffic.failuresBetween(steadyFrom, time.Now()); len(f) > 0 {
		t.Fatalf("clients failed through the VIP before any fault: %+v", f)
	}

	// failover kills the holder and measures until a client is answered
	// through the VIP by another node. With lost, the holder's host is gone:
	// only the others are asked where the VIP is.
	failover := func(what string, lost bool, kill func(h int)) (int, time.Duration, time.Duration) {
		t.Helper()
		h := holder(5*time.Second, -1)
		t0 := time.Now()
		kill(h)
		var a vipAnswer
		eventually(t, 15*time.Second, what+": the VIP answers from another node", func() error {
			var ok bool
			if a, ok = traffic.firstAnswerAfter(t0, h); !ok {
				return fmt.Errorf("no answer from another node since the kill")
			}
			return nil
		})
		took := a.at.Sub(t0)
		gone := -1
		if lost {
			gone = h
		}
		next := holder(5*time.Second, gone)
		if next == h {
			t.Fatalf("%s: the VIP answers from another node, but n%d still has it", what, h+1)
		}
		if a.node != next {
			t.Fatalf("%s: first answer from n%d, but n%d holds the VIP", what, a.node+1, next+1)
		}
		eventually(t, 15*time.Second, what+": a write acknowledged through the VIP", func() error {
			if _, ok := writes.firstAckAfter(t0); !ok {
				return fmt.Errorf("no write acknowledged since the kill")
			}
			return nil
		})
		at, _ := writes.firstAckAfter(t0)
		t.Logf("%s: n%d held the VIP; n%d answered %v later (%d failed attempts); writes acknowledged again after %v",
			what, h+1, next+1, took.Round(time.Millisecond), len(traffic.failuresBetween(t0, a.at)), at.Sub(t0).Round(time.Millisecond))
		return h, took, at.Sub(t0)
	}

	for i := range 3 {
		if n := kas[i].count("Entering FAULT STATE"); n != faults[i] {
			t.Fatalf("keepalived in n%d entered FAULT before any fault (the check failed on a healthy node):\n%s", i+1, tail(kas[i].out.String(), 3000))
		}
	}

	// Three crashes of gobetween on the holder, then a stop by SIGTERM.
	var crash, crashWrites []time.Duration
	var graceful time.Duration
	var gracefulFailed int
	for run := 1; run <= 4; run++ {
		backups, faults := [3]int{}, [3]int{}
		for i := range 3 {
			backups[i] = kas[i].count("Entering BACKUP STATE")
			faults[i] = kas[i].count("Entering FAULT STATE")
		}
		var h int
		if run <= 3 {
			var took, wtook time.Duration
			h, took, wtook = failover(fmt.Sprintf("gobetween crash %d", run), false, func(h int) { nodes[h].signal(syscall.SIGKILL) })
			crash, crashWrites = append(crash, took), append(crashWrites, wtook)
		} else {
			var t0 time.Time
			h, graceful, _ = failover("gobetween stopped (SIGTERM, --stop-grace)", false, func(h int) { t0 = time.Now(); nodes[h].signal(syscall.SIGTERM) })
			gracefulFailed = len(traffic.failuresBetween(t0, t0.Add(graceful)))
			// The stopped node kept accepting until the VIP had left it: no
			// client was refused, at most a few SYNs went unanswered while
			// the VIP moved.
			if r := traffic.refusedBetween(t0, t0.Add(graceful)); len(r) > 0 {
				t.Fatalf("SIGTERM with --stop-grace: %d connections refused: %+v", len(r), r)
			}
		}
		// The VIP moved because the check failed: the old holder is in FAULT.
		if kas[h].count("Entering FAULT STATE") == faults[h] {
			t.Fatalf("keepalived in n%d gave the VIP up without entering FAULT:\n%s", h+1, tail(kas[h].out.String(), 3000))
		}
		// Back: the restarted node passes /health and its keepalived leaves
		// FAULT for BACKUP (nopreempt: the VIP stays where it is).
		nodes[h].waitExit(10 * time.Second)
		start(h)
		eventually(t, 20*time.Second, fmt.Sprintf("n%d healthy after its restart", h+1), func() error {
			nodes[h].requireRunning()
			return healthy(h)
		})
		eventually(t, 10*time.Second, fmt.Sprintf("keepalived in n%d back to BACKUP", h+1), func() error {
			if kas[h].count("Entering BACKUP STATE") <= backups[h] {
				return fmt.Errorf("still in FAULT")
			}
			return nil
		})
	}

	// A planned stop done in the right order: keepalived first (SIGTERM: a
	// priority-0 advert, the VIP dropped), while gobetween still serves.
	var t0 time.Time
	h, handover, _ := failover("keepalived stopped (planned handover)", false, func(h int) { t0 = time.Now(); kas[h].stop() })
	handoverFailed := len(traffic.failuresBetween(t0, t0.Add(handover)))
	// Until the backup takes over the VIP is nowhere: connection attempts time
	// out (a real client retries its SYN), none is refused.
	if r := traffic.refusedBetween(t0, t0.Add(handover)); len(r) > 0 {
		t.Fatalf("planned handover: %d connections refused: %+v", len(r), r)
	}
	kas[h] = startVIPKeepalived(t, kaBin, l.ns[h], t.TempDir(), confs[h])
	eventually(t, 10*time.Second, fmt.Sprintf("keepalived in n%d restarted as BACKUP", h+1), func() error {
		kas[h].requireRunning()
		if kas[h].count("Entering BACKUP STATE") == 0 {
			return fmt.Errorf("not a backup yet")
		}
		return nil
	})

	// Host loss: nothing of the holder answers or sends adverts any more.
	lost, hostTook, hostWrites := failover("host loss", true, func(h int) {
		if err := ipRun("-n", l.ns[h], "link", "set", "eth0", "down"); err != nil {
			t.Fatalf("n%d link down: %v", h+1, err)
		}
		kas[h].kill()
		nodes[h].signal(syscall.SIGKILL)
	})
	time.Sleep(500 * time.Millisecond) // writes through the new holder
	writes.Stop()
	traffic.Stop()

	acked, attempts := writes.result()
	if len(acked) < 50 {
		t.Fatalf("only %d of %d writes acknowledged", len(acked), attempts)
	}
	for i := range 3 {
		if i == lost {
			continue
		}
		eventually(t, 10*time.Second, fmt.Sprintf("every acknowledged write on n%d", i+1), func() error {
			missing, err := vipMissing(apis[nodeIDs[i]], acked)
			if err != nil {
				return err
			}
			if len(missing) > 0 {
				return fmt.Errorf("%d acknowledged writes missing: %s", len(missing), strings.Join(missing, " "))
			}
			return nil
		})
	}
	med, maxD := vipStats(crash)
	wmed, wmax := vipStats(crashWrites)
	param := func(name string) string { return vipParam(string(shipped), name) }
	t.Logf("shipped timings: ADVERT_INT %s, CHECK_INTERVAL %s, CHECK_FALL %s, CHECK_RISE %s",
		param("ADVERT_INT"), param("CHECK_INTERVAL"), param("CHECK_FALL"), param("CHECK_RISE"))
	t.Logf("failover, gobetween killed on the VIP holder (%d runs): median %v, max %v; API writes back: median %v, max %v",
		len(crash), med.Round(time.Millisecond), maxD.Round(time.Millisecond), wmed.Round(time.Millisecond), wmax.Round(time.Millisecond))
	t.Logf("failover, gobetween stopped by SIGTERM (--stop-grace %s) on the VIP holder: %v, %d client attempts timed out, none refused", stopGrace, graceful.Round(time.Millisecond), gracefulFailed)
	t.Logf("handover, keepalived stopped on the VIP holder: %v, %d client attempts timed out, none refused", handover.Round(time.Millisecond), handoverFailed)
	t.Logf("failover, holder host lost: %v; API writes back after %v", hostTook.Round(time.Millisecond), hostWrites.Round(time.Millisecond))
	t.Logf("writes: %d acknowledged of %d, all on the surviving nodes", len(acked), attempts)
}

// vipHealth is GET /health: the status code and the failing checks by name.
func vipHealth(a apiClient) (int, map[string]string, error) {
	code, body, err := a.do("GET", "/health", "")
	if err != nil {
		return 0, nil, err
	}
	var h struct {
		Status string `json:"status"`
		Checks map[string]struct {
			OK     bool   `json:"ok"`
			Detail string `json:"detail"`
		} `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		return code, nil, fmt.Errorf("GET /health: %w: %s", err, body)
	}
	if len(h.Checks) != 4 {
		return code, nil, fmt.Errorf("GET /health lists %d checks, want applied, stopping, listening and membership: %s", len(h.Checks), body)
	}
	failing := map[string]string{}
	for name, c := range h.Checks {
		if !c.OK {
			failing[name] = c.Detail
		}
	}
	return code, failing, nil
}

// vipHealthIs waits until GET /health on a answers 200 with no failing check,
// or 503 failing exactly check with a detail containing detail.
func vipHealthIs(t *testing.T, a apiClient, what, check, detail string) {
	t.Helper()
	eventually(t, 15*time.Second, what, func() error {
		code, failing, err := vipHealth(a)
		if err != nil {
			return err
		}
		if check == "" {
			if code != 200 || len(failing) > 0 {
				return fmt.Errorf("status %d, failing %v", code, failing)
			}
			return nil
		}
		if code != 503 || len(failing) != 1 || !strings.Contains(failing[check], detail) {
			return fmt.Errorf("status %d, failing %v; want 503 failing only %s (%q)", code, failing, check, detail)
		}
		return nil
	})
}

// The checks behind /health on a real cluster: a server that cannot listen on
// one node fails that node's listening check alone; a member removed from the
// cluster fails its membership check; neither touches the other nodes.
func TestVIPHealthChecks(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b")
	c := newTestCluster(t, "")
	for i := range 3 {
		c.start(i)
	}
	c.waitFormed(20*time.Second, 0, 1, 2)
	for i := range 3 {
		vipHealthIs(t, c.api(i), fmt.Sprintf("n%d healthy", i+1), "", "")
	}

	// The port of server "clash" is taken on n2's address only.
	taken, err := net.Listen("tcp", c.host(1)+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	if code, body := c.api(0).mustDo(t, "POST", "/servers/clash", viewServer(":"+port, "roundrobin", nil, b.addr)); code != 200 {
		t.Fatalf("POST /servers/clash: %d %s", code, body)
	}
	vipHealthIs(t, c.api(1), "n2 fails listening", "listening", `server "clash" (bind :`+port+`) did not start`)
	for _, i := range []int{0, 2} {
		vipHealthIs(t, c.api(i), fmt.Sprintf("n%d still healthy", i+1), "", "")
	}
	taken.Close()
	if code, body := c.api(0).mustDo(t, "DELETE", "/servers/clash", ""); code != 200 {
		t.Fatalf("DELETE /servers/clash: %d %s", code, body)
	}
	vipHealthIs(t, c.api(1), "n2 healthy again", "", "")

	// n3 removed from the cluster: out of Raft, told to leave gossip.
	if code, body := c.api(0).mustDo(t, "DELETE", "/cluster/members/n3", ""); code != 200 {
		t.Fatalf("DELETE /cluster/members/n3: %d %s", code, body)
	}
	vipHealthIs(t, c.api(2), "removed n3 fails membership", "membership", "")
	for _, i := range []int{0, 1} {
		vipHealthIs(t, c.api(i), fmt.Sprintf("n%d still healthy", i+1), "", "")
	}
}

// The shipped check script against an API on HTTPS: it passes with the CA in
// GOBETWEEN_HEALTH_CA or with GOBETWEEN_HEALTH_INSECURE=1, and fails without
// either (an unverified certificate), or when the node stops.
func TestVIPCheckScriptTLS(t *testing.T) {
	t.Parallel()
	requireTool(t, "curl")
	ca := newTestCA(t)
	other := newTestCA(t)
	certPath, keyPath, _ := ca.issue("api", "gobetween.example", "127.0.0.1")
	apiAddr := freeAddr(t)
	n := startNode(t, fmt.Sprintf("[api]\nenabled = true\nbind = %q\n\n  [api.tls]\n  cert_path = %q\n  key_path = %q\n", apiAddr, certPath, keyPath))
	url := "https://" + apiAddr + "/health"
	check := func(env ...string) (int, string) {
		cmd := exec.Command("sh", vipShippedCheck, url)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &ee):
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("run %s: %v", vipShippedCheck, err)
		return -1, ""
	}
	eventually(t, 15*time.Second, "the check passes with the CA", func() error {
		if code, out := check("GOBETWEEN_HEALTH_CA=" + ca.path); code != 0 {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})
	tests := []struct {
		name string
		env  []string
		want int
	}{
		{"the CA", []string{"GOBETWEEN_HEALTH_CA=" + ca.path}, 0},
		{"verification skipped", []string{"GOBETWEEN_HEALTH_INSECURE=1"}, 0},
		{"neither: the certificate is not trusted", nil, 1},
		{"another CA", []string{"GOBETWEEN_HEALTH_CA=" + other.path}, 1},
	}
	for _, tt := range tests {
		if code, out := check(tt.env...); code != tt.want {
			t.Errorf("%s: exit %d, want %d: %s", tt.name, code, tt.want, out)
		}
	}
	n.signal(syscall.SIGTERM)
	if code, out := check("GOBETWEEN_HEALTH_CA=" + ca.path); code != 1 {
		t.Errorf("after SIGTERM: exit %d, want 1: %s", code, out)
	}
}
