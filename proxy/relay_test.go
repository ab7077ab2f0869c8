package proxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestRelayEchoAndCounts(t *testing.T) {
	for _, size := range []int{1, 64 << 10, 3<<20 + 17} { // 3 MiB+ spans several relay chunks
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			h := newHarness(t)
			be := startBackend(t, echo)
			addr := h.start("web", serverCfg([]string{be.addr()}))

			c := dial(t, addr)
			msg := make([]byte, size)
			rand.Read(msg)
			var got []byte
			var readErr error
			done := make(chan struct{})
			go func() {
				defer close(done)
				got, readErr = io.ReadAll(c)
			}()
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			<-done
			if readErr != nil {
				t.Fatal(readErr)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo returned %d bytes, want the %d sent", len(got), len(msg))
			}
			waitFor(t, 5*time.Second, "connection ended", func() bool { return h.stats("web").ActiveConnections == 0 })
			st := h.stats("web")
			if st.TxTotal != uint64(size) || st.RxTotal != uint64(size) {
				t.Errorf("server tx/rx = %d/%d, want %d/%d", st.TxTotal, st.RxTotal, size, size)
			}
			if st.TotalConnections != 1 || st.RefusedConnections != 0 {
				t.Errorf("server total/refused = %d/%d, want 1/0", st.TotalConnections, st.RefusedConnections)
			}
			if len(st.Backends) != 1 {
				t.Fatalf("backends = %+v", st.Backends)
			}
			b := st.Backends[0].Stats
			if b.Tx != uint64(size) || b.Rx != uint64(size) || b.TotalConnections != 1 || b.ActiveConnections != 0 || !b.Live || !b.Discovered {
				t.Errorf("backend stats = %+v", b)
			}
		})
	}
}

func TestRelayKeepAliveManyMessages(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}))
	c := dial(t, addr)
	for i := range 200 {
		msg := []byte(fmt.Sprintf("request %d", i))
		got, err := roundTrip(c, msg)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round trip %d: %q, %v", i, got, err)
		}
	}
}

func TestHalfClose(t *testing.T) {
	h := newHarness(t)
	// The backend reads the whole request, then replies and closes: it needs the
	// client's half-close to be forwarded, and its reply to flow after it.
	be := startBackend(t, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "got %d bytes", len(req))
	})
	addr := h.start("web", serverCfg([]string{be.addr()}))
	c := dial(t, addr)
	if _, err := c.Write(bytes.Repeat([]byte("x"), 1000)); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply) != "got 1000 bytes" {
		t.Fatalf("reply = %q", reply)
	}
	waitFor(t, 5*time.Second, "connection ended", func() bool { return h.stats("web").ActiveConnections == 0 })
}

func TestIdleTimeoutClosesSilentConnection(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, tc := range []struct {
		name            string
		client, backend time.Duration
	}{
		{"client_idle_timeout", idle, 0},
		{"backend_idle_timeout", 0, idle},
		{"smaller of both", 10 * idle, idle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			be := startBackend(t, echo)
			addr := h.start("web", serverCfg([]string{be.addr()}, withIdle(tc.client, tc.backend)))
			c := dial(t, addr)
			if _, err := roundTrip(c, []byte("hello")); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			expectClosed(t, c, 5*idle)
			if el := time.Since(start); el < idle {
				t.Fatalf("closed after %v, before the idle limit %v", el, idle)
			}
		})
	}
}

// A long one-way transfer with a silent other side is not idle (gobetween 0.8
// closed such downloads). The stream is slow enough that one relay chunk takes
// several idle periods, so the check must see bytes move inside a chunk.
func TestIdleTimeoutSparesOneWayTransfer(t *testing.T) {
	const (
		idle  = 150 * time.Millisecond
		piece = 8 << 10
		every = 10 * time.Millisecond
		total = 1500 * time.Millisecond
	)
	stream := func(w net.Conn) int {
		buf := make([]byte, piece)
		n := 0
		for end := time.Now().Add(total); time.Now().Before(end); {
			m, err := w.Write(buf)
			n += m
			if err != nil {
				return n
			}
			time.Sleep(every)
		}
		return n
	}
	t.Run("download, silent client", func(t *testing.T) {
		h := newHarness(t)
		sent := make(chan int, 1)
		be := startBackend(t, func(c net.Conn) {
			sent <- stream(c)
		})
		addr := h.start("web", serverCfg([]string{be.addr()}, withIdle(idle, idle)))
		c := dial(t, addr)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Fatal(err)
		}
		if want := <-sent; int(got) != want {
			t.Fatalf("client got %d bytes, backend sent %d: closed early", got, want)
		}
	})
	t.Run("upload, silent backend", func(t *testing.T) {
		h := newHarness(t)
		received := make(chan int64, 1)
		be := startBackend(t, func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			received <- n
		})
		addr := h.start("web", serverCfg([]string{be.addr()}, withIdle(idle, idle)))
		c := dial(t, addr)
		n := stream(c)
		c.CloseWrite()
		select {
		case got := <-received:
			if got != int64(n) {
				t.Fatalf("backend got %d bytes, client sent %d: closed early", got, n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("backend never saw the end of the upload")
		}
	})
}

// A backend that resets mid-stream and a client that sends garbage then
// vanishes end their own connections only.
func TestBadPeersAffectOnlyTheirConnection(t *testing.T) {
	h := newHarness(t)
	resetter := startBackend(t, func(c net.Conn) {
		c.Write(bytes.Repeat([]byte("r"), 4096))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	good := startBackend(t, echo)
	goodAddr := h.start("good", serverCfg([]string{good.addr()}))
	resetAddr := h.start("reset", serverCfg([]string{resetter.addr()}))

	steady := dial(t, goodAddr)
	if _, err := roundTrip(steady, []byte("before")); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for range 10 {
		wg.Add(2)
		go func() { // the backend resets: the client sees the end, with an RST
			defer wg.Done()
			c, err := net.Dial("tcp", resetAddr)
			if err != nil {
				// The reset can reach the client before its connect completes.
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Error(err)
				}
				return
			}
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Error("client of a reset backend was never closed")
			}
		}()
		go func() { // garbage, then the client vanishes with an RST
			defer wg.Done()
			c, err := net.Dial("tcp", goodAddr)
			if err != nil {
				t.Error(err)
				return
			}
			c.Write([]byte{0xff, 0x00, 0xfe, 0x13, 0x37})
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}()
	}
	wg.Wait()
	for i := range 20 {
		msg := []byte(fmt.Sprintf("after %d", i))
		if got, err := roundTrip(steady, msg); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("steady connection broken: %q, %v", got, err)
		}
	}
	waitFor(t, 5*time.Second, "only the steady connection is left", func() bool {
		return h.stats("good").ActiveConnections == 1 && h.stats("reset").ActiveConnections == 0
	})
}

func TestBackendResetReachesClientAsReset(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, func(c net.Conn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	addr := h.start("web", serverCfg([]string{be.addr()}))
	c := dial(t, addr)
	c.Write([]byte("hello"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client read ended with %v, want a connection reset (a clean EOF passes for a complete reply)", err)
	}
}

// Many connections with an idle limit end every way at once (client close,
// idle close, drain), exercising the reference counting between the pumps and
// the idle timer under the race detector.
func TestIdleTimerAndRecyclingUnderChurn(t *testing.T) {
	const idle = 100 * time.Millisecond
	h := newHarness(t)
	be := startBackend(t, echo)
	addr := h.start("web", serverCfg([]string{be.addr()}, withIdle(idle, 0)))
	var wg sync.WaitGroup
	for i := range 120 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			msg := []byte(fmt.Sprint("m", i))
			if got, err := roundTrip(c, msg); err != nil || !bytes.Equal(got, msg) {
				t.Errorf("round trip: %q, %v", got, err)
				return
			}
			switch i % 3 {
			case 0: // client closes at once
			case 1: // left idle: the proxy closes it
				expectClosed(t, c, 20*idle)
			case 2: // active longer than the limit
				for range 6 {
					time.Sleep(idle / 4)
					if _, err := roundTrip(c, msg); err != nil {
						t.Errorf("active connection closed: %v", err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 5*time.Second, "all connections ended", func() bool { return h.stats("web").ActiveConnections == 0 })
}
