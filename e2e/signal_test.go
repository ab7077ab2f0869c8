package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// refused reports nil when nothing accepts on addr any more.
func refused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil
	}
	c.Close()
	return fmt.Errorf("%s still accepts connections", addr)
}

// waitClosed waits up to d for the peer to close c (EOF or reset) and returns
// when that happened; any data read before is an error.
func waitClosed(t *testing.T, c *client, d time.Duration) time.Time {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 256)
	n, err := c.r.Read(buf)
	at := time.Now()
	if n > 0 {
		t.Fatalf("unexpected data on a draining connection: %q", buf[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open %v later", d)
	}
	if err == nil {
		t.Fatal("read returned no data and no error")
	}
	return at
}

func TestSighupAddsServer(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	a, b := freeAddr(t), freeAddr(t)
	srvA := server{name: "a", bind: a, lines: lines(bs[0])}
	n := startNode(t, config("", srvA))
	n.waitServing(a)
	long := mustDial(t, a)
	if err := long.echo("before"); err != nil {
		t.Fatal(err)
	}

	load := startLoad(t, a)
	n.reload(config("", srvA, server{name: "b", bind: b, lines: lines(bs[1])}))
	n.waitServing(b)
	if r := load(); r.failed > 0 || r.ok == 0 {
		t.Errorf("requests to the unchanged server a during the reload: %d ok, %d failed %v", r.ok, r.failed, r.errs)
	}
	if got := mustWho(t, b); got != "b2" {
		t.Fatalf("new server b answered %s", got)
	}
	if err := long.echo("after"); err != nil {
		t.Fatalf("a connection through the unchanged server a after reload: %v", err)
	}
	if got := mustWho(t, a); got != "b1" {
		t.Fatalf("server a answered %s", got)
	}
	n.requireRunning()
}

// Changing a server's backend list and health check keeps its listener and its
// open connections: a long-lived connection keeps relaying to the old backend
// while new connections go to the new list.
func TestSighupChangesBackendsKeepsConnections(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr := freeAddr(t)
	n := startNode(t, config("", server{name: "a", bind: addr, lines: lines(bs[0])}))
	n.waitServing(addr)
	long := mustDial(t, addr)
	if name, err := long.cmd("WHO"); err != nil || name != "b1" {
		t.Fatalf("long-lived connection: %q %v", name, err)
	}

	// A client loop across both reloads: the listener is kept, so not one
	// connection is refused.
	load := startLoad(t, addr)
	n.reload(config("", server{name: "a", bind: addr, lines: lines(bs[1])}))
	eventuallyServes(t, addr, bs[1])
	if err := long.echo("still relaying"); err != nil {
		t.Fatalf("the open connection after the backend list changed: %v", err)
	}
	if name, err := long.cmd("WHO"); err != nil || name != "b1" {
		t.Fatalf("the open connection now reaches %q (%v), want the old backend b1", name, err)
	}

	// Add a health check and move back to b1: same listener, same connection.
	n.reload(config("", server{name: "a", bind: addr, hc: pingHC, lines: lines(bs[0], bs[1]), balance: "roundrobin"}))
	eventuallyServes(t, addr, bs[0])
	if err := long.echo("after health check change"); err != nil {
		t.Fatalf("the open connection after the health check changed: %v", err)
	}
	if r := load(); r.failed > 0 || r.ok == 0 {
		t.Errorf("requests during the reloads: %d ok, %d failed %v", r.ok, r.failed, r.errs)
	}
	n.requireRunning()
}

// Removing a server: it stops accepting at once, its open connection keeps
// relaying until the server's drain_timeout, then is closed.
func TestSighupRemovesServerDrains(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	a, b := freeAddr(t), freeAddr(t)
	srvA := server{name: "a", bind: a, lines: lines(bs[0])}
	srvB := server{name: "b", bind: b, lines: lines(bs[1]), options: []string{`drain_timeout = "3s"`}}
	n := startNode(t, config("", srvA, srvB))
	n.waitServing(a)
	n.waitServing(b)
	long := mustDial(t, b)
	if err := long.echo("hello"); err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	n.reload(config("", srvA))
	eventually(t, 2*time.Second, "removed server b stops accepting", func() error { return refused(b) })
	if time.Since(sent) < 2*time.Second {
		if err := long.echo("draining"); err != nil {
			t.Fatalf("open connection cut %v after the reload, before drain_timeout (3s): %v", time.Since(sent).Round(time.Millisecond), err)
		}
	}
	closedAt := waitClosed(t, long, 8*time.Second)
	if d := closedAt.Sub(sent); d < 2500*time.Millisecond || d > 7*time.Second {
		t.Errorf("open connection of the removed server closed %v after the reload, want about drain_timeout (3s)", d.Round(time.Millisecond))
	}
	if got := mustWho(t, a); got != "b1" {
		t.Errorf("server a after removing b: %s", got)
	}
	n.requireRunning()
}

// SIGTERM with a long-lived connection: stop accepting, keep relaying on the
// open connection, close it at drain_timeout and exit 0.
func TestSigtermDrainsUntilTimeout(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	addr := freeAddr(t)
	cfg := config("", server{name: "a", bind: addr, lines: lines(b), options: []string{`drain_timeout = "2s"`}})
	n := startNode(t, cfg)
	n.waitServing(addr)
	long := mustDial(t, addr)
	if err := long.echo("hello"); err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	n.signal(syscall.SIGTERM)
	eventually(t, 1500*time.Millisecond, "stops accepting after SIGTERM", func() error { return refused(addr) })
	if err := long.echo("draining"); err != nil {
		t.Fatalf("open connection cut %v after SIGTERM, before drain_timeout: %v", time.Since(sent).Round(time.Millisecond), err)
	}
	if code := n.waitExit(8 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	exited := time.Since(sent)
	if exited < 1500*time.Millisecond || exited > 6*time.Second {
		t.Errorf("exited %v after SIGTERM with an open connection and drain_timeout 2s", exited.Round(time.Millisecond))
	}
	waitClosed(t, long, 2*time.Second)
}

// SIGTERM: the process exits as soon as the last open connection ends, well
// before a long drain_timeout.
func TestSigtermExitsWhenConnectionsEnd(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	addr := freeAddr(t)
	cfg := config("", server{name: "a", bind: addr, lines: lines(b), options: []string{`drain_timeout = "30s"`}})
	n := startNode(t, cfg)
	n.waitServing(addr)
	long := mustDial(t, addr)
	if err := long.echo("hello"); err != nil {
		t.Fatal(err)
	}

	n.signal(syscall.SIGTERM)
	eventually(t, 1500*time.Millisecond, "stops accepting after SIGTERM", func() error { return refused(addr) })
	for i := 0; i < 3; i++ {
		if err := long.echo(fmt.Sprintf("draining %d", i)); err != nil {
			t.Fatalf("open connection during drain: %v", err)
		}
	}
	if n.exited() {
		t.Fatal("exited with a connection still open and 30s of drain_timeout left")
	}
	long.Close()
	closed := time.Now()
	if code := n.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	t.Logf("exited %v after the last connection closed", time.Since(closed).Round(time.Millisecond))
}

func TestSigintExits(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	addr := freeAddr(t)
	n := startNode(t, config("", server{name: "a", bind: addr, lines: lines(b)}))
	n.waitServing(addr)
	n.signal(syscall.SIGINT)
	if code := n.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGINT", code)
	}
}

// A reload with a broken config is refused as a whole: the running servers keep
// serving and the problem is logged with its path; a fixed config then applies.
func TestSighupBadConfigKeepsRunning(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	a, b := freeAddr(t), freeAddr(t)
	srvA := server{name: "a", bind: a, lines: lines(bs[0])}
	n := startNode(t, config("", srvA))
	n.waitServing(a)
	long := mustDial(t, a)
	if err := long.echo("hello"); err != nil {
		t.Fatal(err)
	}

	broken := server{name: "a", bind: a, lines: lines(bs[1]), hc: []string{`kind = "ping"`, `interval = "5"`}}
	n.reload(config("", broken, server{name: "b", bind: b, lines: lines(bs[1])}))
	eventually(t, 5*time.Second, "the refused reload logged with its path", func() error {
		if !strings.Contains(n.output(), "servers.a.healthcheck.interval") {
			return errors.New("servers.a.healthcheck.interval not in the output")
		}
		return nil
	})
	if err := refused(b); err != nil {
		t.Errorf("server b of the refused config was started: %v", err)
	}
	if got := mustWho(t, a); got != "b1" {
		t.Errorf("server a changed by a refused reload: answered %s", got)
	}
	if err := long.echo("still here"); err != nil {
		t.Errorf("open connection after a refused reload: %v", err)
	}

	n.reload(config("", server{name: "a", bind: a, lines: lines(bs[1])}, server{name: "b", bind: b, lines: lines(bs[1])}))
	n.waitServing(b)
	eventuallyServes(t, a, bs[1])
	n.requireRunning()
}

// loadResult is what a background client loop saw.
type loadResult struct {
	ok, failed int
	errs       []string
}

// startLoad runs one client making requests through addr in a loop until the
// returned function is called; the function returns what it saw.
func startLoad(t *testing.T, addr string) func() loadResult {
	t.Helper()
	stop := make(chan struct{})
	res := make(chan loadResult, 1)
	go func() {
		var r loadResult
		for {
			select {
			case <-stop:
				res <- r
				return
			default:
			}
			if _, err := who(addr); err != nil {
				r.failed++
				if len(r.errs) < 10 {
					r.errs = append(r.errs, err.Error())
				}
			} else {
				r.ok++
			}
			time.Sleep(2 * time.Millisecond) // paced: see TestHealthKillRestartUnderLoad
		}
	}()
	var once sync.Once
	var out loadResult
	finish := func() loadResult {
		once.Do(func() { close(stop); out = <-res })
		return out
	}
	t.Cleanup(func() { finish() })
	return finish
}

// With --stop-grace, SIGTERM fails /health at once while the server keeps
// accepting and relaying for the grace, so a VIP in front can move first; then
// the node stops accepting and exits as without it.
func TestSigtermStopGrace(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNodeWith(t, config(apiAddr, server{name: "a", bind: addr, lines: lines(b)}), nodeOptions{args: []string{"--stop-grace", "2s"}})
	n.waitServing(addr)
	health := func() (int, error) {
		resp, err := http.Get("http://" + apiAddr + "/health")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := health(); err != nil || code != http.StatusOK {
		t.Fatalf("GET /health before SIGTERM: %d %v", code, err)
	}

	sent := time.Now()
	n.signal(syscall.SIGTERM)
	eventually(t, time.Second, "/health fails after SIGTERM", func() error {
		if code, err := health(); err != nil || code != http.StatusServiceUnavailable {
			return fmt.Errorf("GET /health: %d %v", code, err)
		}
		return nil
	})
	failedAfter := time.Since(sent)
	// Within the grace new connections are still served.
	for time.Since(sent) < 1500*time.Millisecond {
		if got := mustWho(t, addr); got != "b1" {
			t.Fatalf("during the grace the server answered %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	eventually(t, 3*time.Second, "stops accepting after the grace", func() error { return refused(addr) })
	stopped := time.Since(sent)
	if stopped < 2*time.Second {
		t.Errorf("stopped accepting %v after SIGTERM, before the 2s grace", stopped.Round(time.Millisecond))
	}
	if code := n.waitExit(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	t.Logf("/health failed %v after SIGTERM; accepting stopped %v after", failedAfter.Round(time.Millisecond), stopped.Round(time.Millisecond))
}
