package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// udpStatsOf returns the stats of the backend at addr.
func udpStatsOf(s serverStats, addr string) (backendStats, error) {
	for _, x := range s.Backends {
		if net.JoinHostPort(x.Host, x.Port) == addr {
			return x, nil
		}
	}
	return backendStats{}, fmt.Errorf("backend %s not in stats %+v", addr, s.Backends)
}

// DNS-like load: many clients, each query from a new source port, every query
// answered; one session per query (max_requests = max_responses = 1), all of
// them ended afterwards, round robin over two backends.
func TestUDPRequestResponseLoad(t *testing.T) {
	t.Parallel()
	b1, b2 := startUDPEcho(t, "b1"), startUDPEcho(t, "b2")
	addr, apiAddr := freeUDPAddr(t), freeAddr(t)
	n := startNode(t, header(apiAddr)+udpServer{
		name: "dns", bind: addr, balance: "roundrobin", lines: udpLines(b1, b2),
		options: []string{`backend_idle_timeout = "2s"`},
		udp:     []string{"max_requests = 1", "max_responses = 1"},
	}.toml())
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServingUDP(addr)
	base, err := api.stats("dns")
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 32, 50
	var wg sync.WaitGroup
	var failed atomic.Int64
	counts := make([]map[string]int, workers)
	for w := range workers {
		counts[w] = map[string]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				name, err := udpWho(addr, fmt.Sprintf("q%d.%d", w, i))
				if err != nil {
					failed.Add(1)
					t.Errorf("worker %d query %d: %v", w, i, err)
					return
				}
				counts[w][name]++
			}
		}()
	}
	wg.Wait()
	total := map[string]int{}
	for _, c := range counts {
		for k, v := range c {
			total[k] += v
		}
	}
	if failed.Load() > 0 || total["b1"]+total["b2"] != workers*each {
		t.Fatalf("answers %v, failures %d, want %d answered", total, failed.Load(), workers*each)
	}
	if total["b1"] < workers*each/3 || total["b2"] < workers*each/3 {
		t.Errorf("round robin spread %v", total)
	}
	// Every session ended with its answer.
	eventually(t, 10*time.Second, "every session ended", func() error {
		s, err := api.stats("dns")
		if err != nil {
			return err
		}
		if s.ActiveConnections != 0 {
			return fmt.Errorf("active_connections = %d", s.ActiveConnections)
		}
		if got := s.TotalConnections - base.TotalConnections; got < workers*each {
			return fmt.Errorf("total_connections grew by %d, want ≥ %d (one session per query)", got, workers*each)
		}
		if s.RxTotal == 0 || s.TxTotal == 0 {
			return fmt.Errorf("rx/tx = %d/%d", s.RxTotal, s.TxTotal)
		}
		return nil
	})
}

// max_requests = 1 relays the answer (gobetween 0.8 dropped it, #167); each
// datagram is a session of its own, so round robin alternates.
func TestUDPMaxRequestsOneRelaysAnswer(t *testing.T) {
	t.Parallel()
	b1, b2 := startUDPEcho(t, "b1"), startUDPEcho(t, "b2")
	addr, apiAddr := freeUDPAddr(t), freeAddr(t)
	n := startNode(t, header(apiAddr)+udpServer{
		name: "u", bind: addr, balance: "roundrobin", lines: udpLines(b1, b2),
		options: []string{`client_idle_timeout = "1s"`},
		udp:     []string{"max_requests = 1"},
	}.toml())
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServingUDP(addr)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	for i := range 6 {
		ans, err := udpAsk(c.(*net.UDPConn), "m"+strconv.Itoa(i), 2*time.Second)
		if err != nil {
			t.Fatalf("datagram %d not answered: %v", i, err)
		}
		got = append(got, ans[:2])
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("answered by %v, want alternating backends (a new session per datagram)", got)
		}
	}
	eventually(t, 10*time.Second, "retired sessions idle out", func() error {
		s, err := api.stats("u")
		if err != nil {
			return err
		}
		if s.ActiveConnections != 0 {
			return fmt.Errorf("active_connections = %d", s.ActiveConnections)
		}
		return nil
	})
}

// A flood of 20,000 new source ports against a server capped at 1,000
// sessions: the node's file descriptors and memory stay bounded, and a client
// arriving after the flood is served.
func TestUDPFloodOfSourcesStaysBounded(t *testing.T) {
	t.Parallel()
	be := startUDPEcho(t, "b1")
	addr, apiAddr := freeUDPAddr(t), freeAddr(t)
	const limit, flood = 1000, 20000
	n := startNode(t, header(apiAddr)+udpServer{
		name: "u", bind: addr, lines: udpLines(be),
		options: []string{"max_connections = " + strconv.Itoa(limit), `client_idle_timeout = "1m"`},
	}.toml())
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServingUDP(addr)
	pid := n.pid()
	fds0, err := procFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	rss0, err := procStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))
	// Distinct sources: 20 loopback addresses × 1,000 ports, bound explicitly
	// and closed at once (the test process has fewer descriptors than that).
	var peakFDs, sent int
	for i := range flood {
		src := &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(10+i/1000)), Port: 21000 + i%1000}
		c, err := net.DialUDP("udp", src, dst)
		if err != nil {
			continue // that port is someone else's
		}
		if _, err := c.Write([]byte("quiet:" + strconv.Itoa(i))); err == nil {
			sent++
		}
		c.Close()
		if i%500 == 499 {
			fds, err := procFDs(pid)
			if err != nil {
				t.Fatal(err)
			}
			peakFDs = max(peakFDs, fds)
			time.Sleep(5 * time.Millisecond) // let the read loop keep up: a flood, not a buffer overflow test
		}
	}
	if sent < flood*9/10 {
		t.Fatalf("only %d of %d flood datagrams sent", sent, flood)
	}
	var st serverStats
	eventually(t, 15*time.Second, "flood processed", func() error {
		if st, err = api.stats("u"); err != nil {
			return err
		}
		if st.TotalConnections < int64(sent)*8/10 {
			return fmt.Errorf("total_connections %d of %d datagrams", st.TotalConnections, sent)
		}
		return nil
	})
	if st.ActiveConnections > limit {
		t.Errorf("active_connections %d, cap %d", st.ActiveConnections, limit)
	}
	// Evicted sessions close their sockets from their own goroutines.
	var fds int
	eventually(t, 10*time.Second, "descriptors bounded by the cap", func() error {
		if fds, err = procFDs(pid); err != nil {
			return err
		}
		if fds > fds0+limit+20 {
			return fmt.Errorf("%d descriptors, %d before the flood, cap %d", fds, fds0, limit)
		}
		return nil
	})
	// Sessions evicted but not closed yet are bounded by a quarter of the cap.
	if peakFDs > fds0+limit+limit/4+20 {
		t.Errorf("peak of %d descriptors during the flood, %d before, cap %d", peakFDs, fds0, limit)
	}
	rss, err := procStatus(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	// A session costs a few KiB (socket, goroutine, table entry): 1,000 of
	// them, the pooled buffers and the heap's slack stay far below 64 MiB
	// (measured: about 10 MiB). The race detector's shadow memory multiplies
	// that.
	maxGrowth := 64 << 10
	if os.Getenv("GOBETWEEN_E2E_RACE") == "1" {
		maxGrowth *= 4
	}
	if rss-rss0 > maxGrowth {
		t.Errorf("RSS grew from %d to %d kB during a flood capped at %d sessions", rss0, rss, limit)
	}
	t.Logf("flood of %d sources (%d sent): %d sessions created, %d active; fds %d → %d (peak %d); RSS %d → %d kB",
		flood, sent, st.TotalConnections, st.ActiveConnections, fds0, fds, peakFDs, rss0, rss)
	if _, err := udpWho(addr, "after the flood"); err != nil {
		t.Fatalf("a new client after the flood: %v", err)
	}
}

// probe health checks over UDP: a backend answering FAIL, then one that is
// gone, leave the healthy set; each comes back once it answers PONG again.
func TestUDPProbeHealthcheck(t *testing.T) {
	t.Parallel()
	b1, b2 := startUDPEcho(t, "b1"), startUDPEcho(t, "b2")
	addr, apiAddr := freeUDPAddr(t), freeAddr(t)
	n := startNode(t, header(apiAddr)+udpServer{
		name: "u", bind: addr, balance: "roundrobin", lines: udpLines(b1, b2),
		options: []string{`client_idle_timeout = "1s"`},
		udp:     []string{"max_requests = 1"},
		hc: []string{`kind = "probe"`, `probe_protocol = "udp"`, `probe_send = "PING"`, `probe_recv = "PONG"`,
			`interval = "100ms"`, `timeout = "300ms"`, `fails = 1`, `passes = 1`},
	}.toml())
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServingUDP(addr)
	waitLive := func(b *udpEcho, live bool) {
		t.Helper()
		eventually(t, 10*time.Second, fmt.Sprintf("%s live=%v", b.name, live), func() error {
			s, err := api.stats("u")
			if err != nil {
				return err
			}
			bs, err := udpStatsOf(s, b.addr)
			if err != nil {
				return err
			}
			if bs.Stats.Live != live {
				return fmt.Errorf("live=%v", bs.Stats.Live)
			}
			return nil
		})
	}
	onlyTo := func(b *udpEcho) {
		t.Helper()
		for i := range 10 {
			name, err := udpWho(addr, "q"+strconv.Itoa(i))
			if err != nil {
				t.Fatal(err)
			}
			if name != b.name {
				t.Fatalf("answered by %s, want only %s", name, b.name)
			}
		}
	}
	waitLive(b1, true)
	waitLive(b2, true)

	b2.unhealthy.Store(true)
	waitLive(b2, false)
	onlyTo(b1)
	b2.unhealthy.Store(false)
	waitLive(b2, true)

	// Gone: the probe gets an ICMP port unreachable or no answer.
	b1.close()
	waitLive(b1, false)
	onlyTo(b2)
}

// transparent = true in network namespaces: the backend sees the client's
// address and port, and its answer goes to the client directly, not through
// gobetween. The client is this process on the bridge (169.254.X.254),
// gobetween runs in namespace 1 (.1), the backend's socket lives in namespace
// 2 (.2); all three share the bridge, so the backend reaches the client's
// address without gobetween.
func TestUDPTransparent(t *testing.T) {
	t.Parallel()
	l := newNetnsLab(t)
	bpc := listenUDPInNetns(t, l.ns[1], l.host(1)+":0")
	be := serveUDPEcho(t, "b1", bpc)
	port, apiPort := freePort(t), freePort(t)
	addr := l.addr(0, port)
	cfg := "[logging]\nlevel = \"debug\"\noutput = \"stdout\"\n\n[defaults]\ndrain_timeout = \"1s\"\n\n" +
		fmt.Sprintf("[api]\nenabled = true\nbind = %q\n\n", l.addr(0, apiPort)) +
		udpServer{name: "t", bind: addr, lines: []string{be.addr},
			options: []string{`client_idle_timeout = "5s"`},
			udp:     []string{"transparent = true"},
		}.toml()
	n := startNodeInNetns(t, l.ns[0], cfg, t.TempDir())
	api := newAPI(l.addr(0, apiPort))
	api.wait(t, n)

	client, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(l.bridge()+":0")))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	me := client.LocalAddr().(*net.UDPAddr).AddrPort()
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))
	backendAddr := netip.MustParseAddrPort(be.addr)
	buf := make([]byte, 2048)
	var from netip.AddrPort
	var answer string
	eventually(t, 15*time.Second, "an answer through the transparent server", func() error {
		n.requireRunning()
		if _, err := client.WriteToUDP([]byte("who"), dst); err != nil {
			return err
		}
		client.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		k, f, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		from, answer = f, string(buf[:k])
		return nil
	})
	if answer != "b1|who" {
		t.Errorf("answer %q", answer)
	}
	if from != backendAddr {
		t.Errorf("answer came from %s, want the backend %s directly (not gobetween at %s)", from, backendAddr, addr)
	}
	if be.seen(me) == 0 {
		t.Errorf("the backend never saw the client's address %s as source", me)
	}
	s, err := api.stats("t")
	if err != nil {
		t.Fatal(err)
	}
	if s.TotalConnections == 0 || s.TxTotal == 0 || s.RxTotal != 0 {
		t.Errorf("stats total %d tx %d rx %d: want sessions and bytes sent, nothing relayed back", s.TotalConnections, s.TxTotal, s.RxTotal)
	}
}
