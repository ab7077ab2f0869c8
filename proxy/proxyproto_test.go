package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/gobetween/gobetween/config"
)

func withSendProxy(version string) serverOpt {
	return func(s *config.Server) { s.ProxyProtocol = &config.ProxyProtocol{Version: version} }
}

func withAcceptProxy(timeout time.Duration, allow ...string) serverOpt {
	return func(s *config.Server) {
		s.AcceptProxyProtocol = &config.AcceptProxyProtocol{Timeout: config.Dur(timeout), Allow: allow}
	}
}

// proxyReporter is a backend that reads a PROXY header (as a real receiver
// would, with go-proxyproto), answers one line "<src> <dst> v<version>
// <command>" (or "ERR …"), then echoes everything after the header.
func proxyReporter(c net.Conn) {
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := proxyproto.Read(br)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		fmt.Fprintf(c, "ERR %v\n", err)
		return
	}
	fmt.Fprintf(c, "%s\n", describeHeader(h))
	io.Copy(c, br)
	c.(*net.TCPConn).CloseWrite()
}

func describeHeader(h *proxyproto.Header) string {
	cmd := "proxy"
	if h.Command.IsLocal() {
		cmd = "local"
	}
	return fmt.Sprintf("%v %v v%d %s", h.SourceAddr, h.DestinationAddr, h.Version, cmd)
}

// header is a PROXY header of version for a client at src that connected to
// dst ("ip:port" each).
func header(t testing.TB, version byte, src, dst string) []byte {
	t.Helper()
	s, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	d, err := net.ResolveTCPAddr("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proxyproto.HeaderProxyFromAddrs(version, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// PROXY protocol sent to backends (v1, v2; IPv4, IPv6 clients): the backend
// parses the header and sees the client's address and the address it
// connected to, then the client's bytes intact.
func TestSendProxyProtocol(t *testing.T) {
	be := startBackend(t, proxyReporter)
	for _, bind := range []string{"127.0.0.1:0", "[::1]:0"} {
		if ln, err := net.Listen("tcp", bind); err != nil {
			t.Logf("no %s on this host: %v", bind, err)
			continue
		} else {
			ln.Close()
		}
		for _, v := range []string{"1", "2"} {
			t.Run(bind+"/v"+v, func(t *testing.T) {
				h := newHarness(t)
				addr := h.start("web", serverCfg([]string{be.addr()}, withBind(bind), withSendProxy(v)))
				c := dial(t, addr)
				payload := patterned(100000)
				go c.Write(payload) // before anything comes back: the header goes first anyway
				r := bufio.NewReader(c)
				line, err := readLine(c, r)
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("%s %s v%s proxy", c.LocalAddr(), c.RemoteAddr(), v); line != want {
					t.Fatalf("backend saw header %q, want %q", line, want)
				}
				got := make([]byte, len(payload))
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(r, got); err != nil {
					t.Fatal(err)
				}
				checkSame(t, got, payload)
			})
		}
	}
}

// bufConn reads through a bufio.Reader that already holds bytes of the
// connection.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// The PROXY header is sent after the dial and before backend TLS: a backend
// that reads the header and then terminates TLS sees both.
func TestSendProxyThenBackendTLS(t *testing.T) {
	pki := newTestPKI(t)
	cert := pki.issue("backend", "backend.test", []string{"backend.test"}, false)
	be := startBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		h, err := proxyproto.Read(br)
		if err != nil {
			fmt.Fprintf(c, "ERR %v\n", err)
			return
		}
		c.SetReadDeadline(time.Time{})
		tc := tls.Server(&bufConn{Conn: c, r: br}, &tls.Config{Certificates: []tls.Certificate{cert.cert}})
		if err := tc.Handshake(); err != nil {
			return
		}
		fmt.Fprintf(tc, "%s tls=%s\n", describeHeader(h), tc.ConnectionState().ServerName)
		io.Copy(tc, tc)
		tc.CloseWrite()
	})
	for _, v := range []string{"1", "2"} {
		t.Run("v"+v, func(t *testing.T) {
			h := newBalanceHarness(t)
			addr := h.start("web", serverCfg([]string{be.addr() + " sni=backend.test"}, withSendProxy(v),
				withBackendsTLS(config.BackendsTls{RootCaCertPath: &pki.caPath})))
			c := dial(t, addr)
			g, err := greeting(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%s %s v%s proxy tls=backend.test", c.LocalAddr(), c.RemoteAddr(), v); g != want {
				t.Fatalf("backend saw %q, want %q", g, want)
			}
		})
	}
}

// accept_proxy_protocol: v1 and v2 headers are read; their source is the
// client (also in the header sent on), and the bytes after the header, sent
// in the same write or later, reach the backend.
func TestAcceptProxyProtocol(t *testing.T) {
	reporter := startBackend(t, proxyReporter)
	plain := startBackend(t, greetEcho("b1"))
	const src4, dst4 = "10.1.2.3:4000", "10.9.9.9:80"
	const src6, dst6 = "[2001:db8::7]:4000", "[2001:db8::1]:443"
	local2, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	withTLV := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 4000}, &net.TCPAddr{IP: net.IPv4(10, 9, 9, 9), Port: 80})
	if err := withTLV.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("example.test")}}); err != nil {
		t.Fatal(err)
	}
	tlvHeader, err := withTLV.Format()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		header []byte
		later  bool   // the payload in a second write
		send   string // proxy_protocol sent on: "" none
		want   string // the backend's first line; "PEER" is replaced by the TCP peer's addresses
		size   int    // payload bytes
	}{
		{name: "v1", header: header(t, 1, src4, dst4), want: "b1", size: 6},
		{name: "v2", header: header(t, 2, src4, dst4), want: "b1", size: 6},
		{name: "v1 then a large payload in the same write", header: header(t, 1, src4, dst4), want: "b1", size: 200000},
		{name: "v2 then the payload later", header: header(t, 2, src4, dst4), later: true, want: "b1", size: 6},
		{name: "v2 in, v1 out", header: header(t, 2, src4, dst4), send: "1", want: src4 + " " + dst4 + " v1 proxy", size: 6},
		{name: "v1 in, v2 out", header: header(t, 1, src4, dst4), send: "2", want: src4 + " " + dst4 + " v2 proxy", size: 3000},
		{name: "v2 IPv6 in, v1 out", header: header(t, 2, src6, dst6), send: "1", want: src6 + " " + dst6 + " v1 proxy", size: 6},
		{name: "v1 IPv6 in, v2 out", header: header(t, 1, src6, dst6), send: "2", want: src6 + " " + dst6 + " v2 proxy", size: 6},
		{name: "v2 with TLVs", header: tlvHeader, send: "2", want: src4 + " " + dst4 + " v2 proxy", size: 6},
		{name: "v2 LOCAL: the TCP peer", header: local2, send: "2", want: "PEER v2 proxy", size: 6},
		{name: "v1 UNKNOWN: the TCP peer", header: []byte("PROXY UNKNOWN\r\n"), send: "1", want: "PEER v1 proxy", size: 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			be := plain
			opts := []serverOpt{withAcceptProxy(2 * time.Second)}
			if tt.send != "" {
				be = reporter
				opts = append(opts, withSendProxy(tt.send))
			}
			addr := h.start("web", serverCfg([]string{be.addr()}, opts...))
			c := dial(t, addr)
			payload := patterned(tt.size)
			if tt.later {
				if _, err := c.Write(tt.header); err != nil {
					t.Fatal(err)
				}
				// The header is read and the backend dialed before the payload comes.
				waitFor(t, 5*time.Second, "backend connection", func() bool { return h.stats("web").Backends[0].Stats.ActiveConnections == 1 })
				go c.Write(payload)
			} else {
				go c.Write(cat(tt.header, payload))
			}
			r := bufio.NewReader(c)
			line, err := readLine(c, r)
			if err != nil {
				t.Fatalf("first line: %v (got %q)", err, line)
			}
			want := strings.ReplaceAll(tt.want, "PEER", c.LocalAddr().String()+" "+c.RemoteAddr().String())
			if line != want {
				t.Fatalf("backend saw %q, want %q", line, want)
			}
			got := make([]byte, len(payload))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatalf("payload back: %v", err)
			}
			checkSame(t, got, payload)
		})
	}
}

// The header's source is what access rules judge, not the balancer in front.
func TestAcceptProxyAccessRules(t *testing.T) {
	be := startBackend(t, greetEcho("b1"))
	h := newHarness(t)
	addr := h.start("web", serverCfg([]string{be.addr()}, withAcceptProxy(2*time.Second),
		withAccess("allow", "deny 10.6.6.0/24", "deny 2001:db8:6::/48", "deny 127.0.0.1")))
	tests := []struct {
		src     string
		allowed bool
	}{
		{"10.6.6.6:1000", false},
		{"10.7.7.7:1000", true}, // the TCP peer 127.0.0.1 is denied: the header decides
		{"[2001:db8:6::1]:1000", false},
		{"[2001:db8:7::1]:1000", true},
		{"127.0.0.1:1000", false},
	}
	served := int64(0)
	for _, v := range []byte{1, 2} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("v%d/%s", v, tt.src), func(t *testing.T) {
				dst := "10.0.0.1:80"
				if strings.HasPrefix(tt.src, "[") {
					dst = "[2001:db8::1]:80"
				}
				c := dial(t, addr)
				if _, err := c.Write(header(t, v, tt.src, dst)); err != nil {
					t.Fatal(err)
				}
				g, err := greeting(c)
				if tt.allowed {
					served++
					if err != nil || g != "b1" {
						t.Fatalf("allowed source: %q, %v", g, err)
					}
					return
				}
				if err == nil {
					t.Fatalf("denied source served by %q", g)
				}
			})
		}
	}
	h.waitIdle("web")
	if n := be.total.Load(); n != served {
		t.Fatalf("backend saw %d connections, want %d (denied sources must not reach it)", n, served)
	}
}

// iphash and iphash1 hash the header's source: one TCP peer carrying many
// clients spreads them, and each client sticks to its backend.
func TestAcceptProxyIPHash(t *testing.T) {
	var lines []string
	for i := 1; i <= 3; i++ {
		lines = append(lines, startBackend(t, greetEcho("b"+strconv.Itoa(i))).addr())
	}
	for _, strategy := range []string{"iphash", "iphash1"} {
		t.Run(strategy, func(t *testing.T) {
			h := newBalanceHarness(t)
			addr := h.start("web", serverCfg(lines, withBalance(strategy), withAcceptProxy(2*time.Second)))
			first := map[string]string{}
			used := map[string]bool{}
			for round := 0; round < 2; round++ {
				for i := 1; i <= 24; i++ {
					src := fmt.Sprintf("10.0.%d.%d:%d", i, i*7%250, 1000+round) // the port must not matter
					c := dial(t, addr)
					if _, err := c.Write(header(t, byte(1+i%2), src, "10.0.0.1:80")); err != nil {
						t.Fatal(err)
					}
					g, err := greeting(c)
					c.Close()
					if err != nil {
						t.Fatalf("%s: %v", src, err)
					}
					ip, _, _ := strings.Cut(src, ":")
					if round == 0 {
						first[ip] = g
					} else if first[ip] != g {
						t.Fatalf("%s went to %s, then %s", ip, first[ip], g)
					}
					used[g] = true
				}
			}
			if len(used) < 2 {
				t.Fatalf("24 sources behind one TCP peer all went to %v: the TCP peer was hashed, not the header's source", used)
			}
		})
	}
}

// Clients without a valid header, too slow, or hostile are closed, never reach
// a backend, and the server keeps serving.
func TestAcceptProxyRefuses(t *testing.T) {
	be := startBackend(t, greetEcho("b1"))
	h := newHarness(t)
	const timeout = 500 * time.Millisecond
	addr := h.start("web", serverCfg([]string{be.addr()}, withAcceptProxy(timeout)))
	sig := []byte("\r\n\r\n\x00\r\nQUIT\n")
	v2 := func(verCmd, fam byte, length int, body []byte) []byte {
		return cat(sig, []byte{verCmd, fam, byte(length >> 8), byte(length)}, body)
	}
	addrs4 := []byte{10, 0, 0, 1, 10, 0, 0, 2, 0x10, 0x00, 0x00, 0x50}
	hello := captureHello(t, &tls.Config{ServerName: "a.test"})
	tests := []struct {
		name     string
		send     []byte
		closeW   bool
		timedOut bool
	}{
		{name: "silent", timedOut: true},
		{name: "plain data", send: []byte("hello\n")},
		{name: "http", send: []byte("GET / HTTP/1.0\r\n\r\n")},
		{name: "tls hello", send: hello},
		{name: "v1 signature only", send: []byte("PROXY")}, // go-proxyproto wants a v1 line in one read
		{name: "v1 without CR", send: []byte("PROXY TCP4 10.0.0.1 10.0.0.2 1000 80\nhello\n")},
		{name: "v1 too long", send: []byte("PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n")},
		{name: "v1 bad address", send: []byte("PROXY TCP4 999.0.0.1 10.0.0.2 1000 80\r\n")},
		{name: "v1 bad port", send: []byte("PROXY TCP4 10.0.0.1 10.0.0.2 99999 80\r\n")},
		{name: "v1 IPv6 as TCP4", send: []byte("PROXY TCP4 ::1 ::1 1000 80\r\n")},
		{name: "v1 extra field", send: []byte("PROXY TCP4 10.0.0.1 10.0.0.2 1000 80 9\r\n")},
		{name: "v2 signature only", send: sig, timedOut: true},
		{name: "v2 truncated, then EOF", send: cat(sig, []byte{0x21, 0x11}), closeW: true},
		{name: "v2 address block short", send: v2(0x21, 0x11, 12, addrs4[:6]), timedOut: true},
		{name: "v2 length too short for TCP4", send: v2(0x21, 0x11, 5, addrs4[:5])},
		{name: "v2 huge length", send: v2(0x21, 0x11, 0xffff, addrs4)},
		{name: "v2 claims 4096 bytes, sends 12", send: v2(0x21, 0x11, 4096, addrs4), timedOut: true},
		{name: "v2 bad version", send: v2(0x31, 0x11, 12, addrs4)},
		{name: "v2 bad command", send: v2(0x2f, 0x11, 12, addrs4)},
		{name: "v2 bad family", send: v2(0x21, 0x13, 12, addrs4)},
		{name: "v2 PROXY UNSPEC", send: v2(0x21, 0x00, 0, nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			start := time.Now()
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.closeW {
				c.CloseWrite()
			}
			expectClosed(t, c, 5*time.Second)
			took := time.Since(start)
			if tt.timedOut && (took < timeout-50*time.Millisecond || took > 3*time.Second) {
				t.Errorf("closed after %v, want about the header timeout %v", took, timeout)
			}
			if !tt.timedOut && took > timeout {
				t.Errorf("closed after %v, want at once (timeout %v)", took, timeout)
			}
		})
	}
	h.waitIdle("web")
	if n := be.total.Load(); n != 0 {
		t.Fatalf("backend dialed %d times for clients without a valid header", n)
	}
	c := dial(t, addr)
	if _, err := c.Write(header(t, 2, "10.1.1.1:1", "10.2.2.2:2")); err != nil {
		t.Fatal(err)
	}
	if g, err := greeting(c); err != nil || g != "b1" {
		t.Fatalf("good client after hostile ones: %q, %v", g, err)
	}
}

// accept_proxy_protocol.allow: a connection from another source is closed
// before anything is read, whatever it sends.
func TestAcceptProxyAllowList(t *testing.T) {
	be := startBackend(t, greetEcho("b1"))
	tests := []struct {
		allow  []string
		served bool
	}{
		{[]string{"10.0.0.0/8"}, false},
		{[]string{"192.168.1.1", "::1"}, false},
		{[]string{"10.0.0.0/8", "127.0.0.0/8"}, true},
		{[]string{"127.0.0.1"}, true},
		{[]string{}, true},
	}
	for _, tt := range tests {
		name := strings.Join(tt.allow, ",")
		if name == "" {
			name = "any source"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			addr := h.start("web", serverCfg([]string{be.addr()}, withAcceptProxy(2*time.Second, tt.allow...)))
			before := be.total.Load()
			c := dial(t, addr)
			if _, err := c.Write(header(t, 1, "10.1.1.1:1000", "10.2.2.2:80")); err != nil {
				t.Fatal(err)
			}
			g, err := greeting(c)
			c.Close()
			if tt.served != (err == nil) {
				t.Fatalf("served=%v (%q, %v), want %v", err == nil, g, err, tt.served)
			}
			h.waitIdle("web")
			if !tt.served && be.total.Load() != before {
				t.Fatal("a refused source reached the backend")
			}
		})
	}
}

// A header then TLS termination: the handshake reads on after the header,
// also when the ClientHello came in the header's write, and the header's
// source goes on in the PROXY header to the backend.
func TestAcceptProxyThenTLS(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.issue("server", "proxy.test", []string{"localhost"}, false)
	be := startBackend(t, proxyReporter)
	h := newHarness(t)
	addr := h.start("web", serverCfg([]string{be.addr()}, withTLS(srv, nil), withAcceptProxy(2*time.Second), withSendProxy("2")))
	const src, dst = "10.1.2.3:4000", "10.9.9.9:443"
	for _, tt := range []struct {
		name      string
		sameWrite bool
	}{{"header, then the handshake", false}, {"header and ClientHello in one write", true}} {
		t.Run(tt.name, func(t *testing.T) {
			raw := dial(t, addr)
			hdr := header(t, 2, src, dst)
			var conn net.Conn = raw
			if tt.sameWrite {
				conn = &reshapeConn{Conn: raw, reshape: func(b []byte) [][]byte { return [][]byte{cat(hdr, b)} }}
			} else if _, err := raw.Write(hdr); err != nil {
				t.Fatal(err)
			}
			c := tls.Client(conn, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"})
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := c.Handshake(); err != nil {
				t.Fatalf("handshake after the header: %v", err)
			}
			c.SetDeadline(time.Time{})
			g, err := greeting(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := src + " " + dst + " v2 proxy"; g != want {
				t.Fatalf("backend saw %q, want %q", g, want)
			}
		})
	}
}

// A header then SNI passthrough: the hello after the header routes, and every
// byte after the header reaches the backend untouched, also when more bytes
// than the hello came in the header's write.
func TestAcceptProxyThenSNIPassthrough(t *testing.T) {
	pki := newTestPKI(t)
	certA := pki.issue("a", "a.test", []string{"a.test"}, false)
	certB := pki.issue("b", "b.test", []string{"b.test"}, false)
	ba := startBackend(t, tlsGreeter("a", &tls.Config{Certificates: []tls.Certificate{certA.cert}}))
	bb := startBackend(t, tlsGreeter("b", &tls.Config{Certificates: []tls.Certificate{certB.cert}}))
	hello := captureHello(t, &tls.Config{ServerName: "c.test", CurvePreferences: []tls.CurveID{tls.X25519}})
	extra := patterned(3000)
	got := make(chan []byte, 1)
	bc := startBackend(t, func(c net.Conn) {
		b := make([]byte, len(hello)+len(extra))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, _ := io.ReadFull(c, b)
		got <- b[:n]
	})
	h := newBalanceHarness(t)
	addr := h.start("web", serverCfg([]string{ba.addr() + " sni=a.test", bb.addr() + " sni=b.test", bc.addr() + " sni=c.test"},
		withSni("exact", "reject", time.Second), withAcceptProxy(2*time.Second)))
	hdr := header(t, 2, "10.1.2.3:4000", "10.9.9.9:443")

	for _, name := range []string{"a", "b"} {
		t.Run("routes to "+name, func(t *testing.T) {
			raw := dial(t, addr)
			conn := &reshapeConn{Conn: raw, reshape: func(b []byte) [][]byte { return [][]byte{cat(hdr, b)} }}
			c := tls.Client(conn, &tls.Config{RootCAs: pki.pool, ServerName: name + ".test"})
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := c.Handshake(); err != nil {
				t.Fatalf("end-to-end handshake: %v", err)
			}
			c.SetDeadline(time.Time{})
			if g, err := greeting(c); err != nil || !strings.HasPrefix(g, name+" ") {
				t.Fatalf("greeting %q, %v", g, err)
			}
		})
	}
	t.Run("bytes after the hello in the header's write", func(t *testing.T) {
		c := dial(t, addr)
		if _, err := c.Write(cat(hdr, hello, extra)); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			checkSame(t, b, cat(hello, extra))
		case <-time.After(10 * time.Second):
			t.Fatal("backend got nothing")
		}
	})
}

// Logs name the header's source as the client.
func TestAcceptProxySourceInLogs(t *testing.T) {
	rec := &recordHandler{}
	h := newHarnessLog(t, slog.New(rec))
	h.start("refused", serverCfg([]string{deadPort(t)}, withAcceptProxy(2*time.Second)))
	h.start("denied", serverCfg([]string{deadPort(t)}, withAcceptProxy(2*time.Second), withAccess("deny")))
	for _, tt := range []struct{ server, msg string }{
		{"refused", "client refused"},
		{"denied", "client denied by access rules"},
	} {
		t.Run(tt.server, func(t *testing.T) {
			c := dial(t, h.addr(tt.server))
			if _, err := c.Write(header(t, 2, "10.1.2.3:4000", "10.9.9.9:80")); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c, 5*time.Second)
			waitFor(t, 5*time.Second, "log line "+tt.msg, func() bool { return rec.count(tt.msg) > 0 })
			if got := logAttr(rec, tt.msg, "client"); got != "10.1.2.3" {
				t.Fatalf("%q logged client %q, want the header's 10.1.2.3", tt.msg, got)
			}
		})
	}
}

// logAttr is the value of attribute key in the first record with message msg.
func logAttr(h *recordHandler, msg, key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.records {
		if r.Message != msg {
			continue
		}
		val := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == key {
				val = a.Value.String()
				return false
			}
			return true
		})
		return val
	}
	return ""
}
