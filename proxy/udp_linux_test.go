package proxy

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A flood of new source ports (no waiting for answers) never holds more than
// the cap in sessions or sockets, and a client arriving after it is served.
func TestUDPFloodBoundsSessionsAndFDs(t *testing.T) {
	h := newHarness(t)
	be := startUDPBackend(t, "b1")
	const limit, flood = 100, 3000
	addr := h.startUDP("u", udpCfg([]string{be.addr()}, withMax(limit)))
	before := openFDs(t)
	dst := net.UDPAddrFromAddrPort(mustAddrPort(t, addr))
	for i := range flood {
		c, err := net.DialUDP("udp", nil, dst)
		if err != nil {
			t.Fatal(err)
		}
		if err := write(c, fmt.Sprint("quiet:", i)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		if n := h.sessions("u"); n > limit {
			t.Fatalf("%d sessions during the flood, cap %d", n, limit)
		}
		if n := openFDs(t) - before; n > limit+max(limit/4, 64)+2 {
			t.Fatalf("%d more descriptors during the flood, cap %d sessions", n, limit)
		}
	}
	// Datagrams the kernel dropped (the read loop behind) count nowhere; with
	// one CPU a good part is lost, or refused while evicted sessions close.
	waitFor(t, 10*time.Second, "flood processed", func() bool {
		st := h.stats("u")
		return st.TotalConnections+st.RefusedConnections >= flood/2
	})
	if ev := h.server("u").udp.evicted.Load(); ev < flood/4 {
		t.Errorf("only %d sessions evicted by a flood of %d", ev, flood)
	}
	// Evicted sessions close their sockets from their own goroutines.
	waitFor(t, 5*time.Second, "sockets bounded by the cap", func() bool {
		return openFDs(t)-before <= limit+2 && h.server("u").udp.closing.Load() == 0
	})
	// An evicted session gives its slot back from its own goroutine, so while
	// the last queued datagrams are still creating sessions the active count
	// can be one over the table for a moment; it settles at the cap.
	waitFor(t, 5*time.Second, "sessions and active connections within the cap", func() bool {
		return h.sessions("u") <= limit && h.stats("u").ActiveConnections <= limit
	})
	mustAsk(t, udpDial(t, addr), "after the flood")
}
