package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// udpEcho is an in-process UDP backend. Every datagram is answered
// "<name>|<payload>", except "PING" (the probe health check's probe_send),
// answered "PONG", or "FAIL" while the test marks it unhealthy, and payloads
// starting with "quiet:", not answered. It counts datagrams and remembers
// the source addresses it saw.
type udpEcho struct {
	name      string
	pc        *net.UDPConn
	addr      string
	got       atomic.Int64
	unhealthy atomic.Bool

	mu   sync.Mutex
	srcs map[netip.AddrPort]int
	done chan struct{}
}

// startUDPEcho listens on a free loopback UDP port; it is closed in t.Cleanup.
func startUDPEcho(t testing.TB, name string) *udpEcho {
	t.Helper()
	return serveUDPEcho(t, name, listenUDPFree(t, "127.0.0.1"))
}

func serveUDPEcho(t testing.TB, name string, pc *net.UDPConn) *udpEcho {
	b := &udpEcho{name: name, pc: pc, addr: pc.LocalAddr().String(), srcs: map[netip.AddrPort]int{}, done: make(chan struct{})}
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *udpEcho) close() {
	b.pc.Close()
	<-b.done
}

func (b *udpEcho) serve() {
	defer close(b.done)
	buf := make([]byte, 65536)
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
		switch {
		case msg == "PING" && b.unhealthy.Load():
			b.pc.WriteToUDPAddrPort([]byte("FAIL"), from)
		case msg == "PING":
			b.pc.WriteToUDPAddrPort([]byte("PONG"), from)
		case strings.HasPrefix(msg, "quiet:"):
		default:
			b.pc.WriteToUDPAddrPort([]byte(b.name+"|"+msg), from)
		}
	}
}

// seen reports how many datagrams came from src.
func (b *udpEcho) seen(src netip.AddrPort) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.srcs[src]
}

// listenUDPFree listens on a UDP port of host taken from the same range as
// the TCP ports (see listenFree), so that it is not an ephemeral one.
func listenUDPFree(t testing.TB, host string) *net.UDPConn {
	t.Helper()
	for range 100 {
		port := freePort(t)
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			return pc.(*net.UDPConn)
		}
	}
	t.Fatalf("no free udp port on %s", host)
	return nil
}

// freeUDPAddr is "127.0.0.1:<port>" with the port free for UDP (and TCP).
func freeUDPAddr(t testing.TB) string {
	t.Helper()
	pc := listenUDPFree(t, "127.0.0.1")
	defer pc.Close()
	return pc.LocalAddr().String()
}

// udpServer is one [servers.<name>] section with protocol udp.
type udpServer struct {
	name    string
	bind    string
	balance string
	lines   []string
	options []string // raw `key = value` lines of [servers.<name>]
	udp     []string // raw lines of [servers.<name>.udp]
	hc      []string // raw lines of [servers.<name>.healthcheck]; nil = none
}

func (s udpServer) toml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[servers.%s]\nbind = %q\nprotocol = \"udp\"\n", s.name, s.bind)
	if s.balance != "" {
		fmt.Fprintf(&b, "balance = %q\n", s.balance)
	}
	for _, o := range s.options {
		b.WriteString(o + "\n")
	}
	fmt.Fprintf(&b, "  [servers.%s.udp]\n", s.name)
	for _, l := range s.udp {
		b.WriteString("  " + l + "\n")
	}
	fmt.Fprintf(&b, "  [servers.%s.discovery]\n  kind = \"static\"\n  static_list = %s\n", s.name, tomlList(s.lines...))
	if s.hc != nil {
		fmt.Fprintf(&b, "  [servers.%s.healthcheck]\n", s.name)
		for _, l := range s.hc {
			b.WriteString("  " + l + "\n")
		}
	}
	b.WriteString("\n")
	return b.String()
}

func udpLines(bs ...*udpEcho) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.addr
	}
	return out
}

// udpAsk sends msg from a connected socket and waits up to d for the answer.
func udpAsk(c *net.UDPConn, msg string, d time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// udpWho asks through addr from a new socket, retrying a lost datagram
// as a DNS client would, and returns the answering backend's name.
func udpWho(addr, msg string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	var last error
	for try := range 4 {
		got, err := udpAsk(c.(*net.UDPConn), msg, 700*time.Millisecond)
		if err != nil {
			last = err
			if errors.Is(err, syscall.EPERM) {
				// The host's conntrack table is full (shared with every other
				// test): this send never left, as if the datagram were lost.
				time.Sleep(time.Duration(try+1) * 100 * time.Millisecond)
			}
			continue
		}
		name, payload, ok := strings.Cut(got, "|")
		if !ok || payload != msg {
			return "", fmt.Errorf("answer %q to %q", got, msg)
		}
		return name, nil
	}
	return "", last
}

// waitServingUDP polls until a datagram through addr is answered.
func (n *node) waitServingUDP(addr string) {
	n.t.Helper()
	eventually(n.t, 15*time.Second, "gobetween serving udp on "+addr, func() error {
		n.requireRunning()
		_, err := udpWho(addr, "ready?")
		return err
	})
}

// procStatus reads a field of /proc/<pid>/status in kB (VmRSS) or as a count.
func procStatus(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// procFDs counts the open file descriptors of pid.
func procFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// sysSetns is setns(2)'s number by architecture (the syscall package has no
// constant for it).
var sysSetns = map[string]uintptr{"amd64": 308, "arm64": 268, "riscv64": 268, "386": 346, "arm": 375, "ppc64le": 350, "s390x": 339}

// listenUDPInNetns opens a UDP socket inside network namespace ns (created by
// `ip netns add`): a thread of this process enters the namespace, opens the
// socket and dies with its goroutine, never going back to serve anything else.
// The socket stays in ns and works with the runtime's poller as any other.
func listenUDPInNetns(t testing.TB, ns, addr string) *net.UDPConn {
	t.Helper()
	type result struct {
		pc  *net.UDPConn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		nr, ok := sysSetns[runtime.GOARCH]
		if !ok {
			ch <- result{err: fmt.Errorf("setns: syscall number unknown on %s", runtime.GOARCH)}
			return
		}
		if _, _, e := syscall.RawSyscall(nr, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			ch <- result{err: fmt.Errorf("setns %s: %w", ns, e)}
			return
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{pc: pc.(*net.UDPConn)}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("udp socket in netns %s: %v", ns, r.err)
	}
	return r.pc
}
