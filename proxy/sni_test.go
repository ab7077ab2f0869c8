package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// recordConn is a net.Conn that keeps what a TLS client writes and ends the
// handshake at its first read: it captures a ClientHello.
type recordConn struct {
	net.Conn // nil: only the methods below are called
	written  []byte
}

func (c *recordConn) Write(b []byte) (int, error) {
	c.written = append(c.written, b...)
	return len(b), nil
}
func (c *recordConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *recordConn) Close() error                     { return nil }
func (c *recordConn) SetDeadline(time.Time) error      { return nil }
func (c *recordConn) SetWriteDeadline(time.Time) error { return nil }

// captureHello returns the ClientHello record a Go client with cfg sends.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	rc := &recordConn{}
	if err := tls.Client(rc, cfg).Handshake(); err == nil {
		t.Fatal("handshake against a recorder succeeded")
	}
	if len(rc.written) < 50 || rc.written[0] != 22 {
		t.Fatalf("captured %d bytes, not a ClientHello record", len(rc.written))
	}
	return rc.written
}

// reshapeConn rewrites the first Write of a TLS client (its ClientHello) into
// chunks written one by one, with a pause between them, so that the proxy
// reads them separately. Later writes pass through.
type reshapeConn struct {
	net.Conn
	reshape func([]byte) [][]byte
	pause   time.Duration
	done    bool
}

func (c *reshapeConn) Write(b []byte) (int, error) {
	if c.done {
		return c.Conn.Write(b)
	}
	c.done = true
	for i, chunk := range c.reshape(b) {
		if i > 0 && c.pause > 0 {
			time.Sleep(c.pause)
		}
		if _, err := c.Conn.Write(chunk); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// bytewise writes every byte on its own.
func bytewise(b []byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = b[i : i+1]
	}
	return out
}

// splitRecord cuts a single handshake record into records whose payloads
// break at the offsets given (into the payload), keeping the record header's
// type and version. Each record is a chunk of its own.
func splitRecord(cuts ...int) func([]byte) [][]byte {
	return func(rec []byte) [][]byte {
		hdr, body := rec[:5], rec[5:]
		var out [][]byte
		prev := 0
		for _, cut := range append(cuts, len(body)) {
			if cut < 0 {
				cut += len(body)
			}
			part := body[prev:cut]
			r := append([]byte{hdr[0], hdr[1], hdr[2], byte(len(part) >> 8), byte(len(part))}, part...)
			out = append(out, r)
			prev = cut
		}
		return out
	}
}

// joined is reshape's output as one write.
func joined(f func([]byte) [][]byte) func([]byte) [][]byte {
	return func(b []byte) [][]byte {
		var all []byte
		for _, c := range f(b) {
			all = append(all, c...)
		}
		return [][]byte{all}
	}
}

// SNI passthrough (tcp with [sni], no [tls]): the ClientHello is read across
// any number of reads and records, routes by its server name, and reaches the
// backend untouched, which completes TLS with the client end to end.
func TestSNIPassthrough(t *testing.T) {
	pki := newTestPKI(t)
	certA := pki.issue("a", "a.test", []string{"a.test"}, false)
	certB := pki.issue("b", "b.test", []string{"b.test", "c.test"}, false)
	certN := pki.issue("n", "plain.test", []string{"plain.test"}, false)
	ba := startBackend(t, tlsGreeter("a", &tls.Config{Certificates: []tls.Certificate{certA.cert}}))
	bb := startBackend(t, tlsGreeter("b", &tls.Config{Certificates: []tls.Certificate{certB.cert}}))
	bn := startBackend(t, tlsGreeter("none", &tls.Config{Certificates: []tls.Certificate{certN.cert}}))
	h := newBalanceHarness(t)
	addr := h.start("web", serverCfg(
		[]string{ba.addr() + " sni=a.test", bb.addr() + " sni=b.test", bn.addr()},
		withSni("exact", "default", 2*time.Second)))

	tests := []struct {
		name     string
		sni      string
		reshape  func([]byte) [][]byte
		pause    time.Duration
		wantCN   string
		wantName string
	}{
		{name: "a", sni: "a.test", wantCN: "a.test", wantName: "a"},
		{name: "b", sni: "b.test", wantCN: "b.test", wantName: "b"},
		{name: "unknown name to the sni-less backend", sni: "plain.test", wantCN: "plain.test", wantName: "none"},
		{name: "one byte per write", sni: "b.test", reshape: bytewise, pause: 100 * time.Microsecond, wantCN: "b.test", wantName: "b"},
		{name: "two records, cut in the handshake header", sni: "a.test", reshape: splitRecord(2), pause: 20 * time.Millisecond, wantCN: "a.test", wantName: "a"},
		{name: "two records in one write", sni: "b.test", reshape: joined(splitRecord(60)), wantCN: "b.test", wantName: "b"},
		{name: "two records, cut before the end", sni: "a.test", reshape: splitRecord(-3), pause: 20 * time.Millisecond, wantCN: "a.test", wantName: "a"},
		{name: "five records", sni: "b.test", reshape: splitRecord(1, 4, 50, 120), pause: 5 * time.Millisecond, wantCN: "b.test", wantName: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := dial(t, addr)
			var conn net.Conn = raw
			if tt.reshape != nil {
				conn = &reshapeConn{Conn: raw, reshape: tt.reshape, pause: tt.pause}
			}
			// X25519 alone keeps the hello small (a few hundred bytes).
			c := tls.Client(conn, &tls.Config{RootCAs: pki.pool, ServerName: tt.sni, CurvePreferences: []tls.CurveID{tls.X25519}})
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := c.Handshake(); err != nil {
				t.Fatalf("end-to-end handshake: %v", err)
			}
			c.SetDeadline(time.Time{})
			if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != tt.wantCN {
				t.Fatalf("certificate %q, want the backend's %q", cn, tt.wantCN)
			}
			g, err := greeting(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.wantName + " version=TLS 1.3 client=- resumed=false sni=" + tt.sni; g != want {
				t.Fatalf("backend saw %q, want %q", g, want)
			}
		})
	}
}

// A client that stalls inside its ClientHello is closed after read_timeout, one
// that sends no hello at all at once; neither reaches a backend, and the
// server keeps serving.
func TestSNIPassthroughBadHellos(t *testing.T) {
	pki := newTestPKI(t)
	certA := pki.issue("a", "a.test", []string{"a.test"}, false)
	ba := startBackend(t, tlsGreeter("a", &tls.Config{Certificates: []tls.Certificate{certA.cert}}))
	h := newBalanceHarness(t)
	const readTimeout = 500 * time.Millisecond
	addr := h.start("web", serverCfg([]string{ba.addr() + " sni=a.test"}, withSni("exact", "reject", readTimeout)))
	hello := captureHello(t, &tls.Config{ServerName: "a.test", CurvePreferences: []tls.CurveID{tls.X25519}})

	tests := []struct {
		name     string
		send     []byte
		closeW   bool // half-close after sending
		timedOut bool // closed by read_timeout (else at once)
	}{
		{name: "silent", timedOut: true},
		{name: "stalls in the record header", send: hello[:3], timedOut: true},
		{name: "stalls mid-hello", send: hello[:len(hello)/2], timedOut: true},
		{name: "stalls one byte short", send: hello[:len(hello)-1], timedOut: true},
		{name: "plain text", send: []byte("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")},
		{name: "plain line", send: []byte("hello\n")},
		{name: "sslv2 hello", send: []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}},
		{name: "record too long", send: []byte{0x16, 0x03, 0x01, 0xff, 0xff, 0x01}},
		{name: "not a ClientHello", send: []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00}},
		{name: "hello then EOF", send: hello[:40], closeW: true},
		{name: "unknown name (reject)", send: captureHello(t, &tls.Config{ServerName: "z.test"})},
		{name: "no name (reject)", send: captureHello(t, &tls.Config{InsecureSkipVerify: true})},
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
			if tt.timedOut && (took < readTimeout-50*time.Millisecond || took > 3*time.Second) {
				t.Errorf("closed after %v, want about read_timeout %v", took, readTimeout)
			}
			if !tt.timedOut && took > readTimeout {
				t.Errorf("closed after %v, want at once (read_timeout %v)", took, readTimeout)
			}
		})
	}
	h.waitIdle("web")
	if n := ba.total.Load(); n != 0 {
		t.Fatalf("backend dialed %d times for bad hellos", n)
	}
	c, err := tlsClient(t, addr, &tls.Config{RootCAs: pki.pool, ServerName: "a.test"})
	if err != nil {
		t.Fatalf("good client after bad hellos: %v", err)
	}
	if g, err := greeting(c); err != nil || !strings.HasPrefix(g, "a ") {
		t.Fatalf("good client after bad hellos: %q, %v", g, err)
	}
}

// A client whose hello is read while more bytes follow in the same write (TLS
// 1.3 early data, a pipelining client) gets every byte relayed, in order.
func TestSNIPassthroughBytesAfterHello(t *testing.T) {
	hello := captureHello(t, &tls.Config{ServerName: "a.test", CurvePreferences: []tls.CurveID{tls.X25519}})
	got := make(chan []byte, 1)
	extra := patterned(6000)
	be := startBackend(t, func(c net.Conn) {
		b := make([]byte, len(hello)+len(extra))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _ := io.ReadFull(c, b)
		got <- b[:n]
	})
	h := newBalanceHarness(t)
	addr := h.start("web", serverCfg([]string{be.addr() + " sni=a.test"}, withSni("exact", "reject", time.Second)))
	c := dial(t, addr)
	if _, err := c.Write(append(append([]byte(nil), hello...), extra...)); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		checkSame(t, b, append(append([]byte(nil), hello...), extra...))
	case <-time.After(10 * time.Second):
		t.Fatal("backend got nothing")
	}
}

// patterned is n bytes whose every 8-byte block names its offset, so a lost
// or reordered range shows where.
func patterned(n int) []byte {
	b := make([]byte, 0, n+8)
	for i := 0; len(b) < n; i += 8 {
		b = append(b, []byte{'<', byte('0' + i/100000%10), byte('0' + i/10000%10), byte('0' + i/1000%10), byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10), '>'}...)
	}
	return b[:n]
}

// checkSame fails unless got equals want, naming the first difference.
func checkSame(t testing.TB, got, want []byte) {
	t.Helper()
	if len(got) == len(want) && string(got) == string(want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	end := func(b []byte) []byte { return b[i:min(len(b), i+24)] }
	t.Fatalf("backend got %d bytes, want %d; first difference at %d: got %q, want %q", len(got), len(want), i, end(got), end(want))
}
