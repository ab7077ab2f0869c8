package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
)

// testPKI is a throw-away CA that issues server and client certificates into
// files of a test's temporary directory.
type testPKI struct {
	t      testing.TB
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	caPath string // the CA certificate, PEM
	serial atomic.Int64
}

// issued is one certificate issued by a testPKI: its files and the loaded pair.
type issued struct {
	certPath, keyPath string
	cert              tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gobetween test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{t: t, dir: t.TempDir(), ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.serial.Store(1)
	p.caPath = filepath.Join(p.dir, "ca.pem")
	writePEM(t, p.caPath, "CERTIFICATE", der)
	return p
}

// issue creates a certificate for cn with the SANs given (IP literals become IP
// SANs, anything else DNS names), for a server or, when client, a client. The
// files are dir/<file>.crt and dir/<file>.key, replaced atomically when they
// exist.
func (p *testPKI) issue(file, cn string, sans []string, client bool) issued {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	is := issued{certPath: filepath.Join(p.dir, file+".crt"), keyPath: filepath.Join(p.dir, file+".key")}
	writePEM(p.t, is.certPath, "CERTIFICATE", der)
	writePEM(p.t, is.keyPath, "PRIVATE KEY", keyDER)
	if is.cert, err = tls.LoadX509KeyPair(is.certPath, is.keyPath); err != nil {
		p.t.Fatal(err)
	}
	return is
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newBalanceHarness is a harness with the real balancers (balance.New: sni
// routing, iphash) and a static discovery that reads full backend lines
// ("host:port sni=name weight=N").
func newBalanceHarness(t testing.TB) *harness {
	tw := newTwins()
	opts := tw.options(slog.New(slog.DiscardHandler))
	opts.NewBalancer = balance.New
	opts.NewDiscovery = func(server string, cfg config.Discovery) (Discoverer, error) {
		var list []config.Backend
		for _, l := range cfg.StaticList {
			b, err := config.ParseBackend(l)
			if err != nil {
				return nil, err
			}
			list = append(list, b)
		}
		tw.mu.Lock()
		defer tw.mu.Unlock()
		tw.discRuns[server]++
		return &fakeDiscovery{initial: list, push: tw.pushChan(server)}, nil
	}
	h := &harness{t: t, rt: New(opts), tw: tw}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.rt.Shutdown(ctx)
	})
	return h
}

// withTLS terminates TLS with the certificate is (handshake_timeout as the
// defaults set it, 10 s), then applies mod.
func withTLS(is issued, mod func(*config.Tls)) serverOpt {
	return func(s *config.Server) {
		s.Tls = &config.Tls{CertPath: is.certPath, KeyPath: is.keyPath, HandshakeTimeout: config.Dur(config.DefaultTLSHandshakeTimeout)}
		if mod != nil {
			mod(s.Tls)
		}
	}
}

func withSni(matching, unexpected string, read time.Duration) serverOpt {
	return func(s *config.Server) {
		s.Sni = &config.Sni{HostnameMatchingStrategy: matching, UnexpectedHostnameStrategy: unexpected, ReadTimeout: config.Dur(read)}
	}
}

func withBackendsTLS(bt config.BackendsTls) serverOpt {
	return func(s *config.Server) { s.BackendsTls = &bt }
}

func withBalance(b string) serverOpt { return func(s *config.Server) { s.Balance = b } }

func strPtr(s string) *string { return &s }

// greetEcho is a plain backend that sends "<name>\n" first, then echoes.
func greetEcho(name string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}
		echo(c)
	}
}

// tlsGreeter is a TLS backend: after the handshake it sends one line naming
// itself and what it saw (version, client certificate, resumption), then
// echoes.
func tlsGreeter(name string, cfg *tls.Config) func(net.Conn) {
	return func(c net.Conn) {
		tc := tls.Server(c, cfg)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			return
		}
		tc.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		client := "-"
		if len(st.PeerCertificates) > 0 {
			client = st.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(tc, "%s version=%s client=%s resumed=%t sni=%s\n", name, tls.VersionName(st.Version), client, st.DidResume, st.ServerName)
		io.Copy(tc, tc)
		tc.CloseWrite()
	}
}

// readLine reads one line from r within 5 s.
func readLine(c net.Conn, r *bufio.Reader) (string, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	s, err := r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}

// tlsClient dials addr and completes a TLS handshake with cfg.
func tlsClient(t testing.TB, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c.(*tls.Conn), nil
}

// greeting reads the first line a connection gets, then checks that it echoes.
func greeting(c net.Conn) (string, error) {
	r := bufio.NewReader(c)
	line, err := readLine(c, r)
	if err != nil {
		return "", fmt.Errorf("no greeting: %w (got %q)", err, line)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return line, fmt.Errorf("after greeting %q: write: %w", line, err)
	}
	if echoed, err := readLine(c, r); err != nil || echoed != "ping" {
		return line, fmt.Errorf("after greeting %q: echo %q, %v", line, echoed, err)
	}
	return line, nil
}

// waitIdle waits until server name has no connection left, so that a client
// the server dropped has been fully handled (picked or not).
func (h *harness) waitIdle(name string) {
	h.t.Helper()
	waitFor(h.t, 5*time.Second, "server "+name+" without connections", func() bool {
		return h.stats(name).ActiveConnections == 0
	})
}

// TLS termination: versions and cipher suites honoured, the handshake done
// before a backend is dialed, protocol tcp with [tls] terminating as in 0.8.
func TestTLSTermination(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.issue("server", "proxy.test", []string{"localhost", "127.0.0.1"}, false)
	tests := []struct {
		name        string
		protocol    string
		mod         func(*config.Tls)
		clientMax   uint16
		wantVersion uint16 // 0: the handshake fails
		wantCipher  uint16
	}{
		{name: "tcp with tls section", protocol: "tcp", wantVersion: tls.VersionTLS13},
		{name: "protocol tls", protocol: "tls", wantVersion: tls.VersionTLS13},
		{name: "max tls1.2", protocol: "tcp", mod: func(c *config.Tls) { c.MaxVersion = "tls1.2" }, wantVersion: tls.VersionTLS12},
		{name: "min tls1.3, tls1.2 client", protocol: "tcp", mod: func(c *config.Tls) { c.MinVersion = "tls1.3" }, clientMax: tls.VersionTLS12},
		{name: "max tls1.1, modern client", protocol: "tcp", mod: func(c *config.Tls) { c.MaxVersion = "tls1.1" }},
		{name: "ciphers", protocol: "tcp", mod: func(c *config.Tls) {
			c.MaxVersion = "tls1.2"
			c.Ciphers = []string{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"}
		}, wantVersion: tls.VersionTLS12, wantCipher: tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			be := startBackend(t, greetEcho("b1"))
			cfg := serverCfg([]string{be.addr()}, withTLS(srv, tt.mod))
			cfg.Protocol = tt.protocol
			addr := h.start("web", cfg)
			c, err := tlsClient(t, addr, &tls.Config{RootCAs: pki.pool, ServerName: "localhost", MaxVersion: tt.clientMax})
			if tt.wantVersion == 0 {
				if err == nil {
					t.Fatalf("handshake succeeded with version %s", tls.VersionName(c.ConnectionState().Version))
				}
				h.waitIdle("web")
				if n := be.total.Load(); n != 0 {
					t.Fatalf("backend dialed %d times for a failed handshake", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			st := c.ConnectionState()
			if st.Version != tt.wantVersion {
				t.Errorf("version %s, want %s", tls.VersionName(st.Version), tls.VersionName(tt.wantVersion))
			}
			if tt.wantCipher != 0 && st.CipherSuite != tt.wantCipher {
				t.Errorf("cipher %s, want %s", tls.CipherSuiteName(st.CipherSuite), tls.CipherSuiteName(tt.wantCipher))
			}
			if cn := st.PeerCertificates[0].Subject.CommonName; cn != "proxy.test" {
				t.Errorf("certificate %q, want proxy.test", cn)
			}
			if g, err := greeting(c); err != nil || g != "b1" {
				t.Fatalf("greeting %q, %v", g, err)
			}
			// The client's close_notify reaches the backend as a half-close; the
			// backend's end reaches the client.
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
				t.Fatalf("after close_notify: %q, %v", rest, err)
			}
		})
	}
}

// A client that does not complete its handshake within handshake_timeout is
// closed and never costs a backend connection (0.8 dialed first).
func TestTLSHandshakeTimeout(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.issue("server", "proxy.test", []string{"localhost"}, false)
	h := newHarness(t)
	be := startBackend(t, greetEcho("b1"))
	const timeout = 300 * time.Millisecond
	addr := h.start("web", serverCfg([]string{be.addr()}, withTLS(srv, func(c *config.Tls) {
		c.HandshakeTimeout = config.Dur(timeout)
	})))
	for _, tt := range []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"half a record header", []byte{0x16, 0x03}},
		{"partial hello", []byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			start := time.Now()
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c, 5*time.Second)
			if took := time.Since(start); took < timeout-50*time.Millisecond || took > 3*time.Second {
				t.Errorf("closed after %v, want about %v", took, timeout)
			}
		})
	}
	h.waitIdle("web")
	if n := be.total.Load(); n != 0 {
		t.Fatalf("backend dialed %d times for clients that never completed a handshake", n)
	}
	c, err := tlsClient(t, addr, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if g, err := greeting(c); err != nil || g != "b1" {
		t.Fatalf("good client after the stalled ones: %q, %v", g, err)
	}
}

// Bytes that are not a TLS handshake close that client only.
func TestTLSGarbageClosesOnlyThatClient(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.issue("server", "proxy.test", []string{"localhost"}, false)
	h := newHarness(t)
	be := startBackend(t, greetEcho("b1"))
	addr := h.start("web", serverCfg([]string{be.addr()}, withTLS(srv, nil)))
	good, err := tlsClient(t, addr, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(good)
	if g, err := readLine(good, r); err != nil || g != "b1" {
		t.Fatalf("greeting %q, %v", g, err)
	}
	for _, tt := range []struct {
		name string
		send []byte
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")},
		{"sslv2 hello", []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10}},
		{"huge record", append([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, make([]byte, 64)...)},
		{"handshake not a hello", []byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00}},
		{"random", []byte("\x00\x01\x02\x03\xfe\xff garbage garbage")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			expectClosed(t, c, 5*time.Second)
		})
	}
	// The open connection still relays, new clients are served.
	good.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(good, "still\n"); err != nil {
		t.Fatal(err)
	}
	if l, err := readLine(good, r); err != nil || l != "still" {
		t.Fatalf("open connection after garbage clients: %q, %v", l, err)
	}
	c, err := tlsClient(t, addr, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if g, err := greeting(c); err != nil || g != "b1" {
		t.Fatalf("new client after garbage clients: %q, %v", g, err)
	}
	if n := be.total.Load(); n != 2 {
		t.Fatalf("backend saw %d connections, want the 2 good clients only", n)
	}
}

// serverCN is the common name of the certificate a new TLS client gets at addr.
func serverCN(t testing.TB, addr string, pool *x509.CertPool) string {
	t.Helper()
	c, err := tlsClient(t, addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// Certificates are read when the server starts or changes, and by
// ReloadCertificates (SIGHUP): new connections get the new certificate, an open
// connection keeps relaying. An Upsert of the unchanged definition does not
// read them (it is a no-op).
func TestTLSCertificateReload(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.issue("server", "one.test", []string{"localhost"}, false)
	h := newHarness(t)
	be := startBackend(t, greetEcho("b1"))
	cfg := serverCfg([]string{be.addr()}, withTLS(srv, nil))
	addr := h.start("web", cfg)

	open, err := tlsClient(t, addr, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(open)
	if g, err := readLine(open, r); err != nil || g != "b1" {
		t.Fatalf("greeting %q, %v", g, err)
	}
	stillRelays := func(what string) {
		t.Helper()
		open.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(open, what+"\n"); err != nil {
			t.Fatalf("open connection %s: %v", what, err)
		}
		if l, err := readLine(open, r); err != nil || l != what {
			t.Fatalf("open connection %s: %q, %v", what, l, err)
		}
	}
	if cn := serverCN(t, addr, pki.pool); cn != "one.test" {
		t.Fatalf("first certificate %q", cn)
	}

	pki.issue("server", "two.test", []string{"localhost"}, false) // same files
	if err := h.rt.Upsert(t.Context(), "web", cfg); err != nil {
		t.Fatal(err)
	}
	if cn := serverCN(t, addr, pki.pool); cn != "one.test" {
		t.Fatalf("after an unchanged Upsert: %q, want one.test (unchanged definitions are not re-read)", cn)
	}
	if err := h.rt.ReloadCertificates(); err != nil {
		t.Fatal(err)
	}
	if cn := serverCN(t, addr, pki.pool); cn != "two.test" {
		t.Fatalf("after ReloadCertificates: %q, want two.test", cn)
	}
	stillRelays("after reload")

	pki.issue("server", "three.test", []string{"localhost"}, false)
	changed := cfg
	changed.Tls = &config.Tls{CertPath: srv.certPath, KeyPath: srv.keyPath, HandshakeTimeout: config.Dur(9 * time.Second)}
	if err := h.rt.Upsert(t.Context(), "web", changed); err != nil {
		t.Fatal(err)
	}
	if cn := serverCN(t, addr, pki.pool); cn != "three.test" {
		t.Fatalf("after a changed Upsert: %q, want three.test", cn)
	}
	stillRelays("after update")

	// A broken key on disk: the reload fails naming the server, which keeps
	// the certificate it has.
	if err := os.WriteFile(srv.keyPath, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.rt.ReloadCertificates(); err == nil || !strings.Contains(err.Error(), `"web"`) {
		t.Fatalf("reload with a broken key: %v, want an error naming the server", err)
	}
	if cn := serverCN(t, addr, pki.pool); cn != "three.test" {
		t.Fatalf("after a failed reload: %q, want three.test", cn)
	}
	stillRelays("after failed reload")
}

// The server name of the terminated handshake routes to the backend whose sni
// option matches, under each strategy.
func TestTLSTerminationRoutesBySNI(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.issue("server", "proxy.test", []string{"localhost"}, false)
	ba, bb, bn := startBackend(t, greetEcho("a")), startBackend(t, greetEcho("b")), startBackend(t, greetEcho("none"))
	type req struct{ name, want string } // want "": closed without a backend; "*": any backend
	tests := []struct {
		name                 string
		matching, unexpected string
		lines                []string
		reqs                 []req
	}{
		{"exact default", "exact", "default",
			[]string{ba.addr() + " sni=a.test", bb.addr() + " sni=b.test", bn.addr()},
			[]req{{"a.test", "a"}, {"B.Test", "b"}, {"c.test", "none"}, {"", "none"}}},
		{"exact default without sni-less backend", "exact", "default",
			[]string{ba.addr() + " sni=a.test", bb.addr() + " sni=b.test"},
			[]req{{"a.test", "a"}, {"c.test", ""}, {"", ""}}},
		{"exact reject", "exact", "reject",
			[]string{ba.addr() + " sni=a.test", bb.addr() + " sni=b.test", bn.addr()},
			[]req{{"b.test", "b"}, {"c.test", ""}, {"", "none"}}},
		{"exact any", "exact", "any",
			[]string{ba.addr() + " sni=a.test", bb.addr() + " sni=b.test"},
			[]req{{"a.test", "a"}, {"c.test", "*"}, {"", "*"}}},
		{"regexp reject", "regexp", "reject",
			[]string{ba.addr() + ` sni=a\.test`, bb.addr() + ` sni=.+\.b\.test`},
			[]req{{"a.test", "a"}, {"x.b.test", "b"}, {"y.x.b.test", "b"}, {"aXtest", ""}, {"a.test.evil", ""}, {"b.test", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newBalanceHarness(t)
			addr := h.start("web", serverCfg(tt.lines, withTLS(srv, nil), withSni(tt.matching, tt.unexpected, time.Second)))
			for _, rq := range tt.reqs {
				c, err := tlsClient(t, addr, &tls.Config{InsecureSkipVerify: true, ServerName: rq.name})
				if err != nil {
					t.Fatalf("%q: handshake: %v", rq.name, err)
				}
				got, err := greeting(c)
				switch {
				case rq.want == "" && err == nil:
					t.Errorf("%q: routed to %q, want closed", rq.name, got)
				case rq.want == "":
				case err != nil:
					t.Errorf("%q: %v, want backend %q", rq.name, err, rq.want)
				case rq.want != "*" && got != rq.want:
					t.Errorf("%q: routed to %q, want %q", rq.name, got, rq.want)
				}
			}
		})
	}
}

// backends_tls: the backend's certificate is verified against its sni option,
// else its host; a failed handshake counts like a failed dial (refused, next
// candidate); ignore_verify, a client certificate and versions apply.
func TestBackendTLS(t *testing.T) {
	pki := newTestPKI(t)
	other := newTestPKI(t) // a CA gobetween does not trust
	nameOnly := pki.issue("name-only", "backend.test", []string{"backend.test"}, false)
	withIP := pki.issue("with-ip", "ip.backend", []string{"backend.test", "127.0.0.1"}, false)
	untrusted := other.issue("untrusted", "untrusted", []string{"127.0.0.1", "backend.test"}, false)
	clientCert := pki.issue("client", "gobetween-client", nil, true)

	serverTLS := func(is issued, mod func(*tls.Config)) *tls.Config {
		c := &tls.Config{Certificates: []tls.Certificate{is.cert}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	requireClient := func(c *tls.Config) { c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pki.pool }

	type backendSpec struct {
		name string
		cfg  *tls.Config
		opts string // backend line options
	}
	tests := []struct {
		name     string
		backends []backendSpec
		bt       config.BackendsTls
		conns    int
		want     string // greeting prefix every client gets; "" = closed
		refused  map[string]bool
	}{
		{name: "verified against the sni option",
			backends: []backendSpec{{"a", serverTLS(nameOnly, nil), "sni=backend.test"}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath},
			conns:    2, want: "a version=TLS 1.3 client=- resumed=false sni=backend.test"},
		{name: "verified against the host IP",
			backends: []backendSpec{{"a", serverTLS(withIP, nil), ""}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath},
			conns:    2, want: "a version=TLS 1.3 client=- resumed=false sni="},
		{name: "host IP not in the certificate: next candidate",
			backends: []backendSpec{{"bad", serverTLS(nameOnly, nil), ""}, {"good", serverTLS(withIP, nil), ""}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath},
			conns:    4, want: "good ", refused: map[string]bool{"bad": true}},
		{name: "wrong sni option fails",
			backends: []backendSpec{{"a", serverTLS(nameOnly, nil), "sni=other.test"}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath},
			conns:    1, refused: map[string]bool{"a": true}},
		{name: "untrusted CA fails",
			backends: []backendSpec{{"a", serverTLS(untrusted, nil), ""}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath},
			conns:    1, refused: map[string]bool{"a": true}},
		{name: "ignore_verify",
			backends: []backendSpec{{"a", serverTLS(untrusted, nil), ""}},
			bt:       config.BackendsTls{IgnoreVerify: true},
			conns:    2, want: "a version=TLS 1.3"},
		{name: "client certificate",
			backends: []backendSpec{{"a", serverTLS(withIP, requireClient), ""}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath, CertPath: &clientCert.certPath, KeyPath: &clientCert.keyPath},
			conns:    2, want: "a version=TLS 1.3 client=gobetween-client"},
		{name: "client certificate missing",
			backends: []backendSpec{{"a", serverTLS(withIP, func(c *tls.Config) { requireClient(c); c.MaxVersion = tls.VersionTLS12 }), ""}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath},
			conns:    1, refused: map[string]bool{"a": true}},
		{name: "max_version",
			backends: []backendSpec{{"a", serverTLS(withIP, nil), ""}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath, MaxVersion: "tls1.2"},
			conns:    1, want: "a version=TLS 1.2"},
		{name: "min_version above the backend's",
			backends: []backendSpec{{"a", serverTLS(withIP, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), ""}},
			bt:       config.BackendsTls{RootCaCertPath: &pki.caPath, MinVersion: "tls1.3"},
			conns:    1, refused: map[string]bool{"a": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newBalanceHarness(t)
			var lines []string
			byName := map[string]*testBackend{}
			for _, bs := range tt.backends {
				b := startBackend(t, tlsGreeter(bs.name, bs.cfg))
				byName[bs.name] = b
				lines = append(lines, strings.TrimSpace(b.addr()+" "+bs.opts))
			}
			addr := h.start("web", serverCfg(lines, withBackendsTLS(tt.bt), withDialTimeout(3*time.Second)))
			for i := 0; i < tt.conns; i++ {
				c := dial(t, addr)
				got, err := greeting(c)
				c.Close()
				switch {
				case tt.want == "" && err == nil:
					t.Fatalf("client %d got %q, want closed", i, got)
				case tt.want == "":
				case err != nil:
					t.Fatalf("client %d: %v", i, err)
				case !strings.HasPrefix(got, tt.want):
					t.Fatalf("client %d got %q, want %q…", i, got, tt.want)
				}
			}
			h.waitIdle("web")
			st := h.stats("web")
			if tt.want == "" && st.RefusedConnections != int64(tt.conns) {
				t.Errorf("server refused %d, want %d", st.RefusedConnections, tt.conns)
			}
			for name, b := range byName {
				bst := h.mustBackendStats("web", b.addr())
				if tt.refused[name] != (bst.RefusedConnections > 0) {
					t.Errorf("backend %s refused %d (want refusals: %v)", name, bst.RefusedConnections, tt.refused[name])
				}
				if tt.refused[name] && b.total.Load() == 0 {
					t.Errorf("backend %s was never dialed", name)
				}
			}
		})
	}
}

// session_tickets on backends_tls resumes sessions with the backend; off (the
// 0.8 default) it does not.
func TestBackendTLSSessionTickets(t *testing.T) {
	pki := newTestPKI(t)
	withIP := pki.issue("with-ip", "ip.backend", []string{"127.0.0.1"}, false)
	for _, tickets := range []bool{true, false} {
		t.Run(fmt.Sprintf("session_tickets=%v", tickets), func(t *testing.T) {
			h := newHarness(t)
			be := startBackend(t, tlsGreeter("a", &tls.Config{Certificates: []tls.Certificate{withIP.cert}}))
			addr := h.start("web", serverCfg([]string{be.addr()},
				withBackendsTLS(config.BackendsTls{RootCaCertPath: &pki.caPath, SessionTickets: tickets})))
			var last string
			for i := 0; i < 3; i++ {
				g, err := greeting(dial(t, addr))
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 && strings.Contains(g, "resumed=true") {
					t.Fatalf("first connection resumed: %q", g)
				}
				last = g
			}
			if got := strings.Contains(last, "resumed=true"); got != tickets {
				t.Fatalf("third connection: %q, want resumed=%v", last, tickets)
			}
		})
	}
}

// Files a server reads are checked by Runnable: a missing or broken certificate
// or CA is ErrInvalid (the API answers 422), not a server that fails later.
func TestRunnableRefusesBadTLSFiles(t *testing.T) {
	pki := newTestPKI(t)
	srv := pki.issue("server", "proxy.test", []string{"localhost"}, false)
	other := pki.issue("other", "other.test", []string{"localhost"}, false)
	client := pki.issue("client", "client", nil, true)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	tests := []struct {
		name string
		opt  serverOpt
		ok   bool
	}{
		{"tls ok", withTLS(srv, nil), true},
		{"backends_tls ok", withBackendsTLS(config.BackendsTls{RootCaCertPath: &pki.caPath, CertPath: &client.certPath, KeyPath: &client.keyPath}), true},
		{"missing certificate", withTLS(issued{certPath: missing, keyPath: srv.keyPath}, nil), false},
		{"missing key", withTLS(issued{certPath: srv.certPath, keyPath: missing}, nil), false},
		{"key of another certificate", withTLS(issued{certPath: srv.certPath, keyPath: other.keyPath}, nil), false},
		{"certificate not PEM", withTLS(issued{certPath: notPEM, keyPath: srv.keyPath}, nil), false},
		{"missing CA", withBackendsTLS(config.BackendsTls{RootCaCertPath: &missing}), false},
		{"CA without a certificate", withBackendsTLS(config.BackendsTls{RootCaCertPath: &notPEM}), false},
		{"missing client certificate", withBackendsTLS(config.BackendsTls{CertPath: &missing, KeyPath: &client.keyPath}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := serverCfg([]string{"127.0.0.1:1"}, tt.opt)
			err := h.rt.Runnable(t.Context(), cfg)
			if tt.ok {
				if err != nil {
					t.Fatalf("Runnable = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Runnable = %v, want ErrInvalid", err)
			}
			if err := h.rt.Upsert(t.Context(), "bad", cfg); err == nil {
				t.Fatalf("Upsert started a server Runnable refused")
			}
			if _, ok := h.rt.Stats("bad"); ok {
				t.Fatalf("refused server is running")
			}
		})
	}
}
