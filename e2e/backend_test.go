package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// backend is an in-process TCP server that identifies itself. Its protocol is
// client-speaks-first, one command per line:
//
//	WHO                   -> "<name>\n"
//	ECHO <text>           -> "<text>\n"
//	STREAM <n> <interval> -> n chunks of 1 KiB of 'x', one every interval, then "END\n"
//	RESET                 -> "partial\n", then the connection is reset (RST)
//	PING (no newline needed, for probe health checks) -> "PONG\n", or "FAIL\n" while unhealthy
//
// Anything else is answered "ERR\n". Kill closes the listener and every open
// connection; Restart listens again on the same address.
type backend struct {
	t    testing.TB
	name string
	addr string // fixed at the first listen, kept across Restart

	accepted  atomic.Int64 // connections accepted since start
	unhealthy atomic.Bool  // PING answers FAIL

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// startBackend listens on a fresh loopback port (see listenFree); it is killed in t.Cleanup.
func startBackend(t testing.TB, name string) *backend {
	t.Helper()
	b := &backend{t: t, name: name, conns: map[net.Conn]struct{}{}}
	ln := listenFree(t)
	b.addr = ln.Addr().String()
	b.serve(ln)
	t.Cleanup(func() { b.Kill() })
	return b
}

// startBackends starts backends named b1..bn.
func startBackends(t testing.TB, n int) []*backend {
	t.Helper()
	bs := make([]*backend, n)
	for i := range bs {
		bs[i] = startBackend(t, fmt.Sprintf("b%d", i+1))
	}
	return bs
}

// line is the static_list line of this backend with the given options.
func (b *backend) line(opts ...string) string {
	return strings.Join(append([]string{b.addr}, opts...), " ")
}

func (b *backend) port() string {
	_, p, _ := net.SplitHostPort(b.addr)
	return p
}

func (b *backend) serve(ln net.Listener) {
	b.mu.Lock()
	b.ln = ln
	b.mu.Unlock()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			if b.ln != ln { // killed between Accept and here
				b.mu.Unlock()
				c.Close()
				return
			}
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.accepted.Add(1)
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				b.handle(c)
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
		}
	}()
}

// active is the number of open connections.
func (b *backend) active() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Kill stops listening and closes every open connection; it returns how many
// connections it closed.
func (b *backend) Kill() int {
	b.mu.Lock()
	ln := b.ln
	b.ln = nil
	n := len(b.conns)
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	b.wg.Wait()
	return n
}

// Restart listens again on the same address.
func (b *backend) Restart() {
	b.t.Helper()
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", b.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatalf("restart backend %s on %s: %v", b.name, b.addr, err)
	}
	b.serve(ln)
}

func (b *backend) handle(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		if p, err := r.Peek(4); err == nil && string(p) == "PING" {
			r.Discard(4)
			reply := "PONG\n"
			if b.unhealthy.Load() {
				reply = "FAIL\n"
			}
			if _, err := io.WriteString(c, reply); err != nil {
				return
			}
			continue
		}
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		switch cmd {
		case "":
			continue
		case "WHO":
			_, err = io.WriteString(c, b.name+"\n")
		case "ECHO":
			_, err = io.WriteString(c, arg+"\n")
		case "STREAM":
			err = stream(c, arg)
		case "RESET":
			io.WriteString(c, "partial\n")
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			return
		default:
			_, err = io.WriteString(c, "ERR\n")
		}
		if err != nil {
			return
		}
	}
}

func stream(c net.Conn, arg string) error {
	nStr, ivStr, _ := strings.Cut(arg, " ")
	n, err := strconv.Atoi(nStr)
	if err != nil {
		return err
	}
	iv, err := time.ParseDuration(ivStr)
	if err != nil {
		return err
	}
	chunk := []byte(strings.Repeat("x", 1024))
	for i := 0; i < n; i++ {
		if _, err := c.Write(chunk); err != nil {
			return err
		}
		time.Sleep(iv)
	}
	_, err = io.WriteString(c, "END\n")
	return err
}

// ioTimeout bounds every client read and write in these tests.
const ioTimeout = 3 * time.Second

// client is one connection to a gobetween server.
type client struct {
	c net.Conn
	r *bufio.Reader
}

// dialFrom connects to addr from the local IP src ("" = any).
func dialFrom(src, addr string) (*client, error) {
	d := net.Dialer{Timeout: ioTimeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &client{c: c, r: bufio.NewReader(c)}, nil
}

// mustDial connects to addr and closes the connection in t.Cleanup.
func mustDial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := dialFrom("", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// cmd sends one command line and returns the reply line without its newline.
func (c *client) cmd(line string) (string, error) {
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	defer c.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.c, line+"\n"); err != nil {
		return "", err
	}
	reply, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s: read reply: %w (got %q)", line, err, reply)
	}
	return strings.TrimSuffix(reply, "\n"), nil
}

// echo checks that the connection still relays both ways.
func (c *client) echo(text string) error {
	got, err := c.cmd("ECHO " + text)
	if err != nil {
		return err
	}
	if got != text {
		return fmt.Errorf("echo %q: got %q", text, got)
	}
	return nil
}

func (c *client) Close() error { return c.c.Close() }

// who opens a connection to addr, asks the backend's name and closes.
func who(addr string) (string, error) { return whoFrom("", addr) }

func whoFrom(src, addr string) (string, error) {
	c, err := dialFrom(src, addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.cmd("WHO")
}

// mustWho is who that fails the test on error.
func mustWho(t testing.TB, addr string) string {
	t.Helper()
	name, err := who(addr)
	if err != nil {
		t.Fatalf("request through %s: %v", addr, err)
	}
	return name
}

// countWho makes n sequential requests and counts the answers per backend.
func countWho(t testing.TB, addr string, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		counts[mustWho(t, addr)]++
	}
	return counts
}

// errGotData is returned by closedWithoutData when a refused client got bytes.
var errGotData = errors.New("connection relayed data")

// closedWithoutData sends a request on a fresh connection from src and reports
// nil when the connection is closed (EOF or reset) without a single byte, or
// refused outright.
func closedWithoutData(src, addr string) error {
	c, err := dialFrom(src, addr)
	if err != nil {
		return nil // refused at connect: no data either
	}
	defer c.Close()
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	io.WriteString(c.c, "WHO\n") // may fail with a reset: that is fine
	buf := make([]byte, 64)
	n, err := c.c.Read(buf)
	if n > 0 {
		return fmt.Errorf("%w: %q", errGotData, buf[:n])
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("connection neither answered nor closed within %v", ioTimeout)
	}
	return nil
}
