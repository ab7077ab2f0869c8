package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// onlyGoesTo makes n requests and fails unless every one reached want.
func onlyGoesTo(t testing.TB, addr string, want *backend, n int) {
	t.Helper()
	counts := countWho(t, addr, n)
	if counts[want.name] != n {
		t.Fatalf("want all %d requests on %s, got %v", n, want.name, counts)
	}
}

// eventuallyServes polls until a request through addr reaches b.
func eventuallyServes(t testing.TB, addr string, b *backend) {
	t.Helper()
	eventually(t, 10*time.Second, b.name+" gets traffic", func() error {
		name, err := who(addr)
		if err != nil {
			return err
		}
		if name != b.name {
			return fmt.Errorf("got %s", name)
		}
		return nil
	})
}

// ping: a killed backend is marked down and gets no more dials; restarted on the
// same port it is marked up and gets traffic again.
func TestHealthPing(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "hp", bind: addr, balance: "roundrobin", hc: pingHC, lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)
	api.waitLive(t, "hp", bs[1], true)

	bs[1].Kill()
	api.waitLive(t, "hp", bs[1], false)
	before, err := api.stats("hp")
	if err != nil {
		t.Fatal(err)
	}
	onlyGoesTo(t, addr, bs[0], 20)
	after, err := api.stats("hp")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := before.backendOf(bs[1])
	a, _ := after.backendOf(bs[1])
	if a.Stats.RefusedConnections != b.Stats.RefusedConnections || a.Stats.TotalConnections != b.Stats.TotalConnections {
		t.Errorf("a backend marked down was still dialled: refused %d -> %d, total %d -> %d",
			b.Stats.RefusedConnections, a.Stats.RefusedConnections, b.Stats.TotalConnections, a.Stats.TotalConnections)
	}

	bs[1].Restart()
	api.waitLive(t, "hp", bs[1], true)
	eventuallyServes(t, addr, bs[1])
}

// probe: a backend that accepts connections but answers the probe wrongly is
// marked down; answering right again brings it back.
func TestHealthProbe(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	hc := []string{
		`kind = "probe"`, `interval = "100ms"`, `timeout = "500ms"`, `fails = 2`, `passes = 1`,
		`probe_protocol = "tcp"`, `probe_send = "PING\n"`, `probe_recv = "PONG"`, `probe_strategy = "starts_with"`,
	}
	n := startNode(t, config(apiAddr, server{name: "pr", bind: addr, balance: "roundrobin", hc: hc, lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)
	api.waitLive(t, "pr", bs[1], true)

	bs[1].unhealthy.Store(true)
	api.waitLive(t, "pr", bs[1], false)
	onlyGoesTo(t, addr, bs[0], 20) // b2 still accepts: only the verdict keeps it out

	bs[1].unhealthy.Store(false)
	api.waitLive(t, "pr", bs[1], true)
	eventuallyServes(t, addr, bs[1])
}

// exec: `exec_command host port`, output compared with the expected outputs.
func TestHealthExec(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	dir := t.TempDir()
	script := filepath.Join(dir, "check.sh")
	// Healthy unless a file down-<port> exists; "bad" if the arguments are wrong.
	writeFile(t, script, fmt.Sprintf(`#!/bin/sh
[ "$1" = "127.0.0.1" ] || { printf bad; exit 0; }
if [ -e %q/down-"$2" ]; then printf 0; else printf 1; fi
`, dir))
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	addr, apiAddr := freeAddr(t), freeAddr(t)
	hc := []string{
		`kind = "exec"`, `interval = "150ms"`, `timeout = "2s"`, `fails = 1`, `passes = 1`,
		fmt.Sprintf("exec_command = %q", script),
		`exec_expected_positive_output = "1"`, `exec_expected_negative_output = "0"`,
	}
	n := startNode(t, config(apiAddr, server{name: "ex", bind: addr, balance: "roundrobin", hc: hc, lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)
	api.waitLive(t, "ex", bs[0], true)
	api.waitLive(t, "ex", bs[1], true)

	down := filepath.Join(dir, "down-"+bs[1].port())
	writeFile(t, down, "")
	api.waitLive(t, "ex", bs[1], false)
	onlyGoesTo(t, addr, bs[0], 20)

	if err := os.Remove(down); err != nil {
		t.Fatal(err)
	}
	api.waitLive(t, "ex", bs[1], true)
	eventuallyServes(t, addr, bs[1])
}

// Backends killed and restarted under continuous load: clients keep succeeding.
// The only failures allowed are requests whose backend connection was open when
// that backend was killed (nothing can save those), plus one per kill for a
// connection the proxy had dialled but the backend had not yet accepted.
func TestHealthKillRestartUnderLoad(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 3)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "ld", bind: addr, balance: "roundrobin", hc: pingHC, lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var errs []string
	lastSeen := map[string]time.Time{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				name, err := who(addr)
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if len(errs) < 20 {
						errs = append(errs, err.Error())
					}
				} else {
					ok.Add(1)
					lastSeen[name] = time.Now()
				}
				mu.Unlock()
				// Pace the load: every request leaves a socket in TIME_WAIT, and
				// an unpaced loop would exhaust the machine's ephemeral ports.
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopLoad)

	servedSince := func(b *backend, since time.Time) {
		t.Helper()
		eventually(t, 10*time.Second, b.name+" serves the load again", func() error {
			mu.Lock()
			defer mu.Unlock()
			if lastSeen[b.name].After(since) {
				return nil
			}
			return fmt.Errorf("last request at %v", lastSeen[b.name])
		})
	}

	closed, kills := 0, 0
	for _, round := range [][]*backend{{bs[1]}, {bs[0], bs[2]}, {bs[1]}} {
		for _, b := range round {
			closed += b.Kill()
			kills++
		}
		okAtKill := ok.Load()
		for _, b := range round {
			api.waitLive(t, "ld", b, false)
		}
		// Requests kept succeeding while the killed backends were out.
		eventually(t, 5*time.Second, "requests succeed with backends down", func() error {
			if ok.Load() > okAtKill+10 {
				return nil
			}
			return fmt.Errorf("%d requests since the kill", ok.Load()-okAtKill)
		})
		restarted := time.Now()
		for _, b := range round {
			b.Restart()
		}
		for _, b := range round {
			api.waitLive(t, "ld", b, true)
			servedSince(b, restarted)
		}
	}
	stopLoad()

	t.Logf("%d requests ok, %d failed; %d backend connections cut by %d kills", ok.Load(), failed.Load(), closed, kills)
	if f := failed.Load(); f > int64(closed+kills) {
		t.Errorf("%d requests failed, more than the %d cut by kills (+%d): %v", f, closed, kills, errs)
	}
	n.requireRunning()
}

// A failed dial is retried on the next backend: with no health check, a backend
// that is not listening costs clients nothing, and its refusals are counted.
func TestDialFailureTriesNextBackend(t *testing.T) {
	t.Parallel()
	live := startBackend(t, "b1")
	dead := &backend{name: "dead", addr: freeAddr(t)} // nothing listens there
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "df", bind: addr, balance: "roundrobin", lines: lines(dead, live)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)

	onlyGoesTo(t, addr, live, 20)
	s, err := api.stats("df")
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.backendOf(dead)
	if err != nil {
		t.Fatal(err)
	}
	if d.Stats.RefusedConnections == 0 {
		t.Errorf("dials to a backend that is not listening were not counted as refused: %+v", d.Stats)
	}
}
