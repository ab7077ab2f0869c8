package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// udpBackend is a real loopback UDP backend. It answers "<name>|<payload>",
// except for payloads "quiet:…" (no answer), "multi:N:…" (N answers) and
// "slow:MS:…" (one answer after MS milliseconds). It counts datagrams and
// remembers the source addresses it saw.
type udpBackend struct {
	name string
	pc   *net.UDPConn
	got  atomic.Int64
	mu   sync.Mutex
	srcs map[netip.AddrPort]int
	wg   sync.WaitGroup
}

func startUDPBackend(t testing.TB, name string) *udpBackend {
	return startUDPBackendOn(t, name, "127.0.0.1:0")
}

func startUDPBackendOn(t testing.TB, name, bind string) *udpBackend {
	t.Helper()
	pc, err := net.ListenPacket("udp", bind)
	if err != nil {
		t.Fatal(err)
	}
	b := &udpBackend{name: name, pc: pc.(*net.UDPConn), srcs: make(map[netip.AddrPort]int)}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(func() {
		b.pc.Close()
		b.wg.Wait()
	})
	return b
}

func (b *udpBackend) serve() {
	defer b.wg.Done()
	buf := make([]byte, udpMaxDatagram)
	for {
		n, from, err := b.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		b.got.Add(1)
		b.mu.Lock()
		b.srcs[from]++
		b.mu.Unlock()
		msg := string(buf[:n])
		reply := []byte(b.name + "|" + msg)
		switch {
		case strings.HasPrefix(msg, "quiet:"):
		case strings.HasPrefix(msg, "multi:"):
			k, _ := strconv.Atoi(strings.SplitN(msg, ":", 3)[1])
			for range k {
				b.pc.WriteToUDPAddrPort(reply, from)
			}
		case strings.HasPrefix(msg, "slow:"):
			ms, _ := strconv.Atoi(strings.SplitN(msg, ":", 3)[1])
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				time.Sleep(time.Duration(ms) * time.Millisecond)
				b.pc.WriteToUDPAddrPort(reply, from)
			}()
		default:
			b.pc.WriteToUDPAddrPort(reply, from)
		}
	}
}

func (b *udpBackend) addr() string { return b.pc.LocalAddr().String() }

func (b *udpBackend) target() config.Target {
	host, port, _ := net.SplitHostPort(b.addr())
	return config.Target{Host: host, Port: port}
}

func (b *udpBackend) sources() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.srcs)
}

func withUDP(maxRequests, maxResponses uint64) serverOpt {
	return func(s *config.Server) {
		s.Udp = &config.Udp{MaxRequests: maxRequests, MaxResponses: maxResponses}
	}
}

// udpCfg is a defaulted udp server on a free loopback port: round robin over
// backends, no idle limit (the 30 s default applies), a 100 ms drain.
func udpCfg(backends []string, opts ...serverOpt) config.Server {
	s := serverCfg(backends, withDrain(100*time.Millisecond))
	s.Protocol = "udp"
	s.Udp = &config.Udp{}
	for _, o := range opts {
		o(&s)
	}
	return s
}

// startUDP upserts a udp server, waits for candidates and returns its address.
func (h *harness) startUDP(name string, cfg config.Server) string {
	h.t.Helper()
	if err := h.rt.Upsert(h.t.Context(), name, cfg); err != nil {
		h.t.Fatal(err)
	}
	h.waitReady(name)
	return h.udpAddr(name)
}

func (h *harness) udpAddr(name string) string {
	h.t.Helper()
	h.rt.mu.Lock()
	defer h.rt.mu.Unlock()
	s := h.rt.servers[name]
	if s == nil || len(s.listeners) == 0 || s.listeners[0].pc == nil {
		h.t.Fatalf("server %q is not listening on udp", name)
	}
	return s.listeners[0].pc.LocalAddr().String()
}

// udpDial is a connected client socket from an ephemeral port, closed at the
// end of the test.
func udpDial(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	return udpDialFrom(t, "", addr)
}

// udpDialFrom is udpDial from local address src ("" for any).
func udpDialFrom(t testing.TB, src, addr string) *net.UDPConn {
	t.Helper()
	var laddr *net.UDPAddr
	if src != "" {
		laddr = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src + ":0"))
	}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ask sends msg and returns the first answer (2 s at most).
func ask(c *net.UDPConn, msg string) (string, error) {
	if err := write(c, msg); err != nil {
		return "", err
	}
	return recv(c, 2*time.Second)
}

// write sends msg, retrying while the host's conntrack table is full (EPERM:
// shared with every other test on the machine, it fills under UDP floods and
// benchmarks); the send never left, so this hides nothing of the proxy.
func write(c *net.UDPConn, msg string) error {
	for try := 0; ; try++ {
		_, err := c.Write([]byte(msg))
		if err == nil || !errors.Is(err, syscall.EPERM) || try == 20 {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func recv(c *net.UDPConn, within time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, udpMaxDatagram)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// mustAsk is ask that fails the test without an answer, and returns the name
// of the backend that answered.
func mustAsk(t testing.TB, c *net.UDPConn, msg string) string {
	t.Helper()
	got, err := ask(c, msg)
	if err != nil {
		t.Fatalf("ask %q from %s: %v", msg, c.LocalAddr(), err)
	}
	name, payload, ok := strings.Cut(got, "|")
	if !ok || payload != msg {
		t.Fatalf("ask %q: answer %q", msg, got)
	}
	return name
}

// expectSilence fails the test when c receives something within d.
func expectSilence(t testing.TB, c *net.UDPConn, d time.Duration) {
	t.Helper()
	got, err := recv(c, d)
	if err == nil {
		t.Fatalf("received %q, want nothing", got)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v, want a timeout", err)
	}
}

func (h *harness) sessions(name string) int {
	s := h.server(name)
	if s == nil {
		return 0
	}
	return s.udpSessions()
}

func backendStatsOf(st ServerStats, t config.Target) BackendCounters {
	for _, b := range st.Backends {
		if b.Target == t {
			return b.Stats
		}
	}
	return BackendCounters{}
}

// waitBackends waits until server name's discovered backends are exactly ts.
func (h *harness) waitBackends(name string, ts ...config.Target) {
	h.t.Helper()
	waitFor(h.t, 5*time.Second, fmt.Sprintf("server %s backends %v", name, ts), func() bool {
		var got []config.Target
		for _, b := range h.stats(name).Backends {
			if b.Stats.Discovered {
				got = append(got, b.Target)
			}
		}
		return slices.Equal(got, ts)
	})
}

func mustAddrPort(t testing.TB, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}
