package e2e

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Clients that send garbage, vanish, reset or connect and leave at once do not
// disturb other clients, and leave no connection behind in gobetween.
func TestGarbageAndVanishingClients(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "g", bind: addr, balance: "roundrobin", lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)

	garbage := make([]byte, 64<<10)
	rand.Read(garbage)
	bad := []func(c *net.TCPConn){
		func(c *net.TCPConn) { c.Write(garbage); c.SetLinger(0); c.Close() }, // garbage, then reset
		func(c *net.TCPConn) { c.Close() },                                   // connect and leave
		func(c *net.TCPConn) { c.SetLinger(0); c.Close() },                   // connect and reset
		func(c *net.TCPConn) { c.Write(garbage[:100]); c.Close() },           // half a request, then FIN
		func(c *net.TCPConn) { c.Write(garbage); c.CloseWrite(); io.Copy(io.Discard, c); c.Close() },
	}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, ioTimeout)
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			bad[i%len(bad)](c.(*net.TCPConn))
		}()
	}
	for i := 0; i < 40; i++ {
		if _, err := who(addr); err != nil {
			t.Fatalf("good client %d among bad ones: %v", i, err)
		}
	}
	wg.Wait()
	api.waitIdle(t, "g")
	if _, err := who(addr); err != nil {
		t.Fatalf("after the bad clients: %v", err)
	}
	n.requireRunning()
}

// A backend that resets mid-stream: the client sees the data sent so far and
// then the connection end; gobetween keeps serving and counts nothing open.
func TestBackendResetMidStream(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	addr, apiAddr := freeAddr(t), freeAddr(t)
	n := startNode(t, config(apiAddr, server{name: "r", bind: addr, balance: "roundrobin", lines: lines(bs...)}))
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(addr)

	for i := 0; i < 20; i++ {
		c := mustDial(t, addr)
		if got, err := c.cmd("RESET"); err != nil || got != "partial" {
			t.Fatalf("reset %d: got %q, %v", i, got, err)
		}
		c.c.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := c.r.ReadByte(); err == nil {
			t.Fatalf("reset %d: data after the backend reset", i)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("reset %d: the client connection stayed open after the backend reset", i)
		}
		c.Close()
	}
	counts := countWho(t, addr, 10)
	if counts["b1"]+counts["b2"] != 10 {
		t.Fatalf("after resets: %v", counts)
	}
	api.waitIdle(t, "r")
	n.requireRunning()
}

// A client half-close reaches the backend, and the backend's answer still
// reaches the client (gobetween 0.8 closed both sides at once).
func TestHalfClose(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	addr := freeAddr(t)
	n := startNode(t, config("", server{name: "h", bind: addr, lines: lines(b)}))
	n.waitServing(addr)

	c := mustDial(t, addr)
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.c, "ECHO half-closed\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c.r)
	if err != nil || string(got) != "half-closed\n" {
		t.Fatalf("after a client half-close: got %q, %v; want the reply then EOF", got, err)
	}
}

// A server whose port is taken fails alone: it is logged with its port, and the
// other servers serve — at start and when added by SIGHUP.
func TestPortInUseOtherServersServe(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	holder1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer holder1.Close()
	holder2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer holder2.Close()
	good, good2 := freeAddr(t), freeAddr(t)
	busy := server{name: "busy", bind: holder1.Addr().String(), lines: lines(b)}
	ok := server{name: "good", bind: good, lines: lines(b)}
	n := startNode(t, config("", busy, ok))
	n.waitServing(good)
	wantLogged := func(port string) {
		t.Helper()
		eventually(t, 5*time.Second, "the busy port "+port+" logged", func() error {
			for _, l := range strings.Split(n.output(), "\n") {
				if strings.Contains(l, port) && strings.Contains(strings.ToLower(l), "in use") {
					return nil
				}
			}
			return fmt.Errorf("no log line names port %s as in use", port)
		})
	}
	wantLogged(portOf(holder1.Addr()))

	busy2 := server{name: "busy2", bind: holder2.Addr().String(), lines: lines(b)}
	n.reload(config("", busy, ok, busy2, server{name: "good2", bind: good2, lines: lines(b)}))
	n.waitServing(good2)
	wantLogged(portOf(holder2.Addr()))
	for _, a := range []string{good, good2} {
		if _, err := who(a); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	n.requireRunning()
}

func portOf(a net.Addr) string { return strconv.Itoa(a.(*net.TCPAddr).Port) }

// client_idle_timeout means no bytes in either direction: a long download to a
// silent client is not cut, a connection silent both ways is.
func TestClientIdleTimeout(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	addr := freeAddr(t)
	n := startNode(t, config("", server{name: "idle", bind: addr, lines: lines(b), options: []string{`client_idle_timeout = "1s"`}}))
	n.waitServing(addr)

	t.Run("download with a silent client", func(t *testing.T) {
		t.Parallel()
		c := mustDial(t, addr)
		const chunks = 25 // 2.5 s of data at one KiB every 100 ms
		c.c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := io.WriteString(c.c, "STREAM "+strconv.Itoa(chunks)+" 100ms\n"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		body := make([]byte, chunks*1024)
		if n, err := io.ReadFull(c.r, body); err != nil {
			t.Fatalf("download cut after %d of %d bytes, %v in: %v", n, len(body), time.Since(start).Round(time.Millisecond), err)
		}
		if end, err := c.r.ReadString('\n'); err != nil || end != "END\n" {
			t.Fatalf("download end: %q %v", end, err)
		}
	})
	t.Run("silent both ways", func(t *testing.T) {
		t.Parallel()
		c := mustDial(t, addr)
		if _, err := c.cmd("WHO"); err != nil {
			t.Fatal(err)
		}
		last := time.Now()
		closedAt := waitClosed(t, c, 6*time.Second)
		if d := closedAt.Sub(last); d < 800*time.Millisecond || d > 5*time.Second {
			t.Fatalf("silent connection closed %v after its last byte, want about 1s", d.Round(time.Millisecond))
		}
	})
}
