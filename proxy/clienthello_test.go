package proxy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// go test ./proxy -run 'ClientHello' -update-clienthello rewrites the captured
// hellos in testdata/clienthello from live Go and openssl clients.
var updateHellos = flag.Bool("update-clienthello", false, "rewrite testdata/clienthello from live clients")

const helloTestdata = "testdata/clienthello"

// helloCaptures are the captured hellos in testdata and the name each sends.
var helloCaptures = []struct {
	file string
	want string
}{
	{"go-tls13-sni.bin", "foo.example"},
	{"go-tls13-nosni.bin", ""},
	{"go-tls12-sni.bin", "foo.example"},
	{"go-tls13-x25519-sni.bin", "foo.example"},
	{"openssl-sni.bin", "foo.example"},
	{"openssl-tls12-sni.bin", "bar.example"},
	{"openssl-nosni.bin", ""},
	{"openssl-multirecord-sni.bin", "split.example"},
}

func readHelloFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(helloTestdata, name))
	if err != nil {
		t.Fatalf("reading captured hello: %v (regenerate with -update-clienthello)", err)
	}
	return b
}

func writeHelloFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if !*updateHellos || name == "" {
		return
	}
	if err := os.MkdirAll(helloTestdata, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(helloTestdata, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// helloMemConn is an in-memory net.Conn whose reads return in, at most chunk
// bytes at a time (0: as much as asked), then io.EOF. It records read
// deadlines.
type helloMemConn struct {
	in            []byte
	chunk         int
	deadlineSets  int
	firstDeadline time.Time
	lastDeadline  time.Time
}

func (c *helloMemConn) Read(b []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := len(b)
	if c.chunk > 0 {
		n = min(n, c.chunk)
	}
	n = copy(b[:n], c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *helloMemConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *helloMemConn) Close() error                     { return nil }
func (c *helloMemConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *helloMemConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *helloMemConn) SetDeadline(t time.Time) error    { return c.SetReadDeadline(t) }
func (c *helloMemConn) SetWriteDeadline(time.Time) error { return nil }
func (c *helloMemConn) SetReadDeadline(t time.Time) error {
	if c.deadlineSets == 0 {
		c.firstDeadline = t
	}
	c.deadlineSets++
	c.lastDeadline = t
	return nil
}

// helloReplayConn replays the sniffed bytes before reading from the socket,
// as the proxy does towards a backend.
type helloReplayConn struct {
	net.Conn
	pending []byte
}

func (c *helloReplayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func helloTestCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "foo.example"},
		DNSNames:              []string{"foo.example"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func helloListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func helloAccept(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// helloRecords counts the TLS records that the hello of data spans,
// assuming well-formed records.
func helloRecords(data []byte, msgLen int) int {
	n := 0
	for pos, got := 0, 0; got < msgLen && pos+5 <= len(data); n++ {
		l := int(binary.BigEndian.Uint16(data[pos+3:]))
		got += l
		pos += 5 + l
	}
	return n
}

// helloMsgLen is the length, with its header, of the handshake message that
// starts in the first record of data.
func helloMsgLen(data []byte) int {
	return 4 + (int(data[6])<<16 | int(data[7])<<8 | int(data[8]))
}

// TestReadClientHelloGoClient sniffs hellos of Go's crypto/tls client over
// loopback, then replays the bytes to a crypto/tls server, which must complete
// the handshake and see the same server name.
func TestReadClientHelloGoClient(t *testing.T) {
	cert := helloTestCert(t)
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	tests := []struct {
		name string
		cfg  *tls.Config
		want string
		file string
	}{
		{"tls13 sni", &tls.Config{ServerName: "foo.example", RootCAs: roots}, "foo.example", "go-tls13-sni.bin"},
		{"tls13 no sni", &tls.Config{InsecureSkipVerify: true}, "", "go-tls13-nosni.bin"},
		{"tls12 only sni", &tls.Config{ServerName: "foo.example", RootCAs: roots, MaxVersion: tls.VersionTLS12}, "foo.example", "go-tls12-sni.bin"},
		{"tls13 x25519 sni", &tls.Config{ServerName: "foo.example", RootCAs: roots, CurvePreferences: []tls.CurveID{tls.X25519}}, "foo.example", "go-tls13-x25519-sni.bin"},
		{"case kept", &tls.Config{ServerName: "Foo.EXAMPLE", RootCAs: roots}, "Foo.EXAMPLE", ""},
		{"ip name sends no sni", &tls.Config{ServerName: "127.0.0.1", RootCAs: roots}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := helloListen(t)
			clientErr := make(chan error, 1)
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					clientErr <- err
					return
				}
				defer c.Close()
				tc := tls.Client(c, tt.cfg)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				clientErr <- tc.Handshake()
			}()
			sc := helloAccept(t, ln)
			data, name, err := readClientHello(sc, make([]byte, 0, 16<<10), time.Now().Add(5*time.Second))
			if err != nil {
				t.Fatalf("readClientHello: %v", err)
			}
			if name != tt.want {
				t.Errorf("server name %q, want %q", name, tt.want)
			}
			t.Logf("%d bytes", len(data))
			writeHelloFile(t, tt.file, data)

			var seen string
			srv := tls.Server(&helloReplayConn{Conn: sc, pending: bytes.Clone(data)}, &tls.Config{
				Certificates: []tls.Certificate{cert},
				GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
					seen = h.ServerName
					return nil, nil
				},
			})
			sc.SetDeadline(time.Now().Add(10 * time.Second))
			if err := srv.Handshake(); err != nil {
				t.Fatalf("server handshake over the replayed bytes: %v", err)
			}
			if err := <-clientErr; err != nil {
				t.Fatalf("client handshake: %v", err)
			}
			if seen != name {
				t.Errorf("crypto/tls saw server name %q, readClientHello %q", seen, name)
			}
		})
	}
}

// TestReadClientHelloOpenSSL sniffs hellos of openssl s_client. openssl is
// part of the test environment: its absence fails the test.
func TestReadClientHelloOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl binary not found (%v): install openssl (Debian: apt-get install openssl) to run this test", err)
	}
	// A long ALPN list makes the hello larger than the 512-byte records
	// that -max_send_frag asks for, so it spans records.
	var alpn []string
	for i := range 40 {
		alpn = append(alpn, "protocol-name-"+strings.Repeat("x", i%10)+"-number")
	}
	tests := []struct {
		name       string
		args       []string
		want       string
		minRecords int
		file       string
	}{
		{"servername", []string{"-servername", "foo.example"}, "foo.example", 1, "openssl-sni.bin"},
		{"tls12 servername", []string{"-tls1_2", "-servername", "bar.example"}, "bar.example", 1, "openssl-tls12-sni.bin"},
		{"noservername", []string{"-noservername"}, "", 1, "openssl-nosni.bin"},
		{"multi record", []string{"-servername", "split.example", "-max_send_frag", "512", "-alpn", strings.Join(alpn, ",")}, "split.example", 2, "openssl-multirecord-sni.bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := helloListen(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, append([]string{"s_client", "-connect", ln.Addr().String()}, tt.args...)...)
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatalf("starting openssl: %v", err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() { <-exited }()
			defer cancel()

			sc := helloAccept(t, ln)
			data, name, err := readClientHello(sc, nil, time.Now().Add(10*time.Second))
			sc.Close()
			if err != nil {
				t.Fatalf("readClientHello: %v\nopenssl output:\n%s", err, out.String())
			}
			if name != tt.want {
				t.Errorf("server name %q, want %q", name, tt.want)
			}
			msgLen := helloMsgLen(data)
			if n := helloRecords(data, msgLen); n < tt.minRecords {
				t.Errorf("hello spans %d records, want at least %d", n, tt.minRecords)
			}
			t.Logf("%d bytes, %d records", len(data), helloRecords(data, msgLen))
			writeHelloFile(t, tt.file, data)
		})
	}
}

// TestParseCapturedHellos checks the captured hellos without the clients.
func TestParseCapturedHellos(t *testing.T) {
	for _, tc := range helloCaptures {
		t.Run(tc.file, func(t *testing.T) {
			in := readHelloFile(t, tc.file)
			conn := &helloMemConn{in: in}
			data, name, err := readClientHello(conn, nil, time.Time{})
			if err != nil {
				t.Fatalf("readClientHello: %v", err)
			}
			if name != tc.want {
				t.Errorf("server name %q, want %q", name, tc.want)
			}
			if !bytes.Equal(data, in) {
				t.Errorf("data differs from the input (%d bytes, want %d)", len(data), len(in))
			}
			if helloRecords(in, helloMsgLen(in)) == 1 {
				// A single record: parseClientHello alone on the message.
				name, err := parseClientHello(in[5:])
				if err != nil || name != tc.want {
					t.Errorf("parseClientHello = %q, %v; want %q", name, err, tc.want)
				}
			}
		})
	}
}

// splitRecords re-frames the single-record hello rec into records whose
// payloads end at the given offsets into the handshake message.
func splitRecords(rec []byte, cuts ...int) []byte {
	payload := rec[5:]
	var out []byte
	prev := 0
	for _, c := range append(cuts, len(payload)) {
		out = append(out, rec[0], rec[1], rec[2], byte((c-prev)>>8), byte(c-prev))
		out = append(out, payload[prev:c]...)
		prev = c
	}
	return out
}

// everyByteRecords frames each byte of the hello's message in its own record.
func everyByteRecords(rec []byte) []byte {
	cuts := make([]int, 0, len(rec)-6)
	for i := 1; i < len(rec)-5; i++ {
		cuts = append(cuts, i)
	}
	return splitRecords(rec, cuts...)
}

// sniOffset is where the host name starts in the hello's message.
func sniOffset(t *testing.T, rec []byte, name string) int {
	t.Helper()
	i := bytes.Index(rec[5:], []byte(name))
	if i < 0 {
		t.Fatalf("name %q not in the hello", name)
	}
	return i
}

// TestReadClientHelloFragmented feeds a real hello in pieces: one byte per
// write, split into several records, with bytes after it.
func TestReadClientHelloFragmented(t *testing.T) {
	hello := readHelloFile(t, "go-tls13-sni.bin")
	mid := sniOffset(t, hello, "foo.example") + 4
	trailer := []byte("\x17\x03\x03\x00\x05early")
	tests := []struct {
		name   string
		in     []byte
		writes int // bytes per write; 0: one write
	}{
		{"one write", hello, 0},
		{"one byte per write", hello, 1},
		{"three bytes per write", hello, 3},
		{"split after handshake type", splitRecords(hello, 1), 0},
		{"split inside handshake length", splitRecords(hello, 2), 0},
		{"split after handshake header", splitRecords(hello, 4), 0},
		{"split inside the name", splitRecords(hello, mid), 0},
		{"three records", splitRecords(hello, 100, 200), 0},
		{"one record per byte", everyByteRecords(hello), 0},
		{"split records one byte per write", splitRecords(hello, 3, mid), 1},
		{"trailing bytes", append(bytes.Clone(hello), trailer...), 0},
		{"split records and trailing bytes", append(splitRecords(hello, mid), trailer...), 0},
	}
	bufs := []struct {
		name string
		buf  func() []byte
	}{
		{"nil buf", func() []byte { return nil }},
		{"small buf", func() []byte { return make([]byte, 0, 16) }},
		{"pooled buf", func() []byte { return make([]byte, 0, 16<<10) }},
	}
	transports := []struct {
		name string
		pair func(t *testing.T) (client, server net.Conn)
	}{
		{"pipe", func(t *testing.T) (net.Conn, net.Conn) {
			a, b := net.Pipe()
			t.Cleanup(func() { a.Close(); b.Close() })
			return a, b
		}},
		{"tcp", func(t *testing.T) (net.Conn, net.Conn) {
			ln := helloListen(t)
			a, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			return a, helloAccept(t, ln)
		}},
	}
	for _, tt := range tests {
		for _, tr := range transports {
			for _, bf := range bufs {
				t.Run(tt.name+"/"+tr.name+"/"+bf.name, func(t *testing.T) {
					client, server := tr.pair(t)
					writeErr := make(chan error, 1)
					go func() {
						step := tt.writes
						if step == 0 {
							step = len(tt.in)
						}
						for i := 0; i < len(tt.in); i += step {
							if _, err := client.Write(tt.in[i:min(i+step, len(tt.in))]); err != nil {
								writeErr <- err
								return
							}
						}
						writeErr <- nil
					}()
					data, name, err := readClientHello(server, bf.buf(), time.Now().Add(10*time.Second))
					if err != nil {
						t.Fatalf("readClientHello: %v", err)
					}
					if name != "foo.example" {
						t.Errorf("server name %q, want foo.example", name)
					}
					// Over TCP the trailer may arrive in a later segment:
					// data is then a prefix; read the rest to compare all.
					rest := make([]byte, len(tt.in)-len(data))
					server.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.ReadFull(server, rest); err != nil {
						t.Fatalf("reading after the hello: %v", err)
					}
					if got := append(bytes.Clone(data), rest...); !bytes.Equal(got, tt.in) {
						t.Errorf("data + rest differs from what the client sent")
					}
					if tr.name == "pipe" && tt.writes == 0 && !bytes.Equal(data, tt.in) {
						t.Errorf("one write over a pipe: data has %d bytes, want all %d", len(data), len(tt.in))
					}
					if err := <-writeErr; err != nil {
						t.Fatalf("client write: %v", err)
					}
				})
			}
		}
	}
}

// TestReadClientHelloTruncated: every proper prefix of real hellos, one
// record or many, fails with EOF, never succeeds or panics.
func TestReadClientHelloTruncated(t *testing.T) {
	hello := readHelloFile(t, "go-tls13-sni.bin")
	inputs := map[string][]byte{
		"go":        hello,
		"openssl":   readHelloFile(t, "openssl-sni.bin"),
		"multi":     readHelloFile(t, "openssl-multirecord-sni.bin"),
		"3 records": splitRecords(hello, 1, 300),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			for n := range len(in) {
				_, _, err := readClientHello(&helloMemConn{in: in[:n]}, nil, time.Time{})
				want := io.ErrUnexpectedEOF
				if n == 0 {
					want = io.EOF
				}
				if !errors.Is(err, want) {
					t.Fatalf("prefix of %d bytes: err %v, want %v", n, err, want)
				}
			}
		})
	}
}

// TestParseClientHelloTruncated: every proper prefix of a message fails;
// with the handshake length patched to match, the parser meets every
// truncated field and must fail or succeed without reading out of bounds.
func TestParseClientHelloTruncated(t *testing.T) {
	msg := readHelloFile(t, "go-tls13-sni.bin")[5:]
	for n := range len(msg) {
		if _, err := parseClientHello(msg[:n]); err == nil {
			t.Fatalf("prefix of %d bytes parsed", n)
		}
		if n < 4 {
			continue
		}
		p := bytes.Clone(msg[:n])
		p[1], p[2], p[3] = byte((n-4)>>16), byte((n-4)>>8), byte(n-4)
		if name, err := parseClientHello(p); err == nil && name != "" {
			t.Fatalf("patched prefix of %d bytes gave name %q", n, name)
		}
	}
}

// Crafting hellos.

func u16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

func prefixed16(b ...[]byte) []byte {
	body := bytes.Join(b, nil)
	return append(u16(len(body)), body...)
}

func sniEntry(typ byte, name string) []byte {
	return append([]byte{typ}, prefixed16([]byte(name))...)
}

func sniExt(entries ...[]byte) []byte {
	return append(u16(0), prefixed16(prefixed16(entries...))...)
}

func ext(typ int, body []byte) []byte {
	return append(u16(typ), prefixed16(body)...)
}

// craftMessage builds a ClientHello handshake message with the given
// extensions block (nil: none).
func craftMessage(exts []byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session_id
	body = append(body, 0, 2, 0x13, 0x01) // cipher_suites
	body = append(body, 1, 0)             // compression_methods
	body = append(body, exts...)          // extensions, length-prefixed by the caller
	return append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
}

func craftHello(exts ...[]byte) []byte {
	return craftMessage(prefixed16(exts...))
}

// records frames msg in records of at most size payload bytes.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestReadClientHelloInputs(t *testing.T) {
	good := craftHello(ext(0x2b, []byte{2, 3, 4}), sniExt(sniEntry(0, "crafted.example")))
	var others [][]byte
	for range 4000 {
		others = append(others, sniEntry(7, "other.example"))
	}
	hugeOthers := craftHello(sniExt(append(others, sniEntry(0, "after.many.example"))...))
	var hostNames [][]byte
	for range 3000 {
		hostNames = append(hostNames, sniEntry(0, "dup.example"))
	}
	longName := strings.Repeat("a", 40000)
	setLen := func(msg []byte, n int) []byte {
		m := bytes.Clone(msg)
		m[1], m[2], m[3] = byte(n>>16), byte(n>>8), byte(n)
		return m
	}
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr error
		errText string
	}{
		{"crafted", records(good, 1<<14), "crafted.example", nil, ""},
		{"no extensions", records(craftMessage(nil), 1<<14), "", nil, ""},
		{"empty extensions", records(craftHello(), 1<<14), "", nil, ""},
		{"no sni among others", records(craftHello(ext(10, []byte{0, 2, 0, 29})), 1<<14), "", nil, ""},
		{"other name types skipped", records(craftHello(sniExt(sniEntry(1, "x"), sniEntry(0, "b.example"))), 1<<14), "b.example", nil, ""},
		{"huge list of other name types", records(hugeOthers, 1<<14), "after.many.example", nil, ""},
		{"40000-byte name over 3 records", records(craftHello(sniExt(sniEntry(0, longName))), 1<<14), longName, nil, ""},
		{"7-byte records", records(good, 7), "crafted.example", nil, ""},
		{"record version 3.0", append([]byte{22, 3, 0, 0, byte(len(good))}, good...), "crafted.example", nil, ""},

		{"empty", nil, "", io.EOF, ""},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "", errNotTLS, "first byte 0x47"},
		{"sslv2 hello", []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15}, "", errNotTLS, "SSLv2"},
		{"alert record", []byte{21, 3, 1, 0, 2, 2, 40}, "", errNotTLS, "first byte 0x15"},
		{"change cipher spec first", []byte{20, 3, 3, 0, 1, 1}, "", errNotTLS, "first byte 0x14"},
		{"record version 2.0", append([]byte{22, 2, 0, 0, byte(len(good))}, good...), "", errNotTLS, "record version 2.0"},
		{"record length 0", []byte{22, 3, 1, 0, 0}, "", errNotTLS, "record length 0"},
		{"record length over 2^14+256", []byte{22, 3, 1, 0x41, 0x01, 1}, "", errNotTLS, "record length 16641"},
		{"server hello", records(append([]byte{2}, good[1:]...), 1<<14), "", errNotTLS, "message type 2"},
		{"handshake length 2^24-1", records(setLen(good, 1<<24-1), 1<<14), "", errHelloTooLarge, "message length"},
		// The message is complete before its record is: enough to route.
		{"record longer than the message", append([]byte{22, 3, 1, 0x03, 0}, good...), "crafted.example", nil, ""},
		{"message longer than sent", records(setLen(good, len(good)+10), 1<<14), "", io.ErrUnexpectedEOF, ""},
		{"record shorter than message then garbage", append([]byte{22, 3, 1, 0, 50}, good...), "", errNotTLS, "record"},
		{"application data inside the hello", append(records(good[:50], 50), append([]byte{23, 3, 3, 0, byte(len(good) - 50)}, good[50:]...)...), "", errNotTLS, "record type 23"},
		{"one-byte records beyond the cap", records(craftHello(sniExt(sniEntry(0, strings.Repeat("b", 20000)))), 1), "", errHelloTooLarge, "no complete hello"},
		{"extension length overflows", records(craftMessage(prefixed16(append(u16(0), 0xff, 0xff, 0, 1))), 1<<14), "", errHelloMalformed, "truncated extension"},
		{"extensions block longer than message", records(craftMessage(append(u16(100), ext(10, nil)...)), 1<<14), "", errHelloMalformed, "extensions length"},
		{"extensions block shorter than message", records(craftMessage(append(u16(2), ext(10, []byte{1, 2})...)), 1<<14), "", errHelloMalformed, "extensions length"},
		{"sni list overflows extension", records(craftHello(ext(0, append(u16(200), sniEntry(0, "a.example")...))), 1<<14), "", errHelloMalformed, "server_name list"},
		{"sni entry overflows list", records(craftHello(ext(0, prefixed16([]byte{0, 0xff, 0xff, 'a'}))), 1<<14), "", errHelloMalformed, "server_name entry"},
		{"trailing bytes in sni extension", records(craftHello(ext(0, append(prefixed16(sniEntry(0, "a.example")), 0))), 1<<14), "", errHelloMalformed, "server_name list"},
		{"empty sni list", records(craftHello(ext(0, u16(0))), 1<<14), "", errHelloMalformed, "server_name list"},
		{"empty sni extension", records(craftHello(ext(0, nil)), 1<<14), "", errHelloMalformed, "server_name list"},
		{"zero-length name", records(craftHello(sniExt(sniEntry(0, ""))), 1<<14), "", errHelloMalformed, "server_name entry"},
		{"huge list of host names", records(craftHello(sniExt(hostNames...)), 1<<14), "", errHelloMalformed, "more than one host_name"},
		{"NUL in name", records(craftHello(sniExt(sniEntry(0, "evil.example\x00.good"))), 1<<14), "", errHelloMalformed, "NUL"},
		{"duplicate sni extension", records(craftHello(sniExt(sniEntry(0, "a.example")), sniExt(sniEntry(0, "b.example"))), 1<<14), "", errHelloMalformed, "duplicate server_name"},
		{"session id of 33 bytes", records(func() []byte { m := bytes.Clone(good); m[4+34] = 33; return m }(), 1<<14), "", errHelloMalformed, "session_id"},
		{"odd cipher suites length", records(func() []byte { m := bytes.Clone(good); m[4+35+1] = 3; return m }(), 1<<14), "", errHelloMalformed, "cipher_suites"},
		{"no compression methods", records(func() []byte { m := bytes.Clone(good); m[4+39] = 0; return m }(), 1<<14), "", errHelloMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1, 1000} {
				conn := &helloMemConn{in: tt.in, chunk: chunk}
				data, name, err := readClientHello(conn, nil, time.Time{})
				if tt.wantErr == nil {
					if err != nil {
						t.Fatalf("chunk %d: %v", chunk, err)
					}
					if name != tt.want {
						t.Fatalf("chunk %d: server name %.40q, want %.40q", chunk, name, tt.want)
					}
					if !bytes.Equal(data, tt.in) {
						t.Fatalf("chunk %d: data is not the input", chunk)
					}
					continue
				}
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("chunk %d: err %v, want %v containing %q", chunk, err, tt.wantErr, tt.errText)
				}
				if !bytes.HasPrefix(tt.in, data) {
					t.Fatalf("chunk %d: data on error is not a prefix of the input", chunk)
				}
			}
		})
	}
}

// TestReadClientHelloTimeout: a client that sends half a hello and stalls
// gets a deadline error at the deadline, and the deadline is cleared after.
func TestReadClientHelloTimeout(t *testing.T) {
	hello := readHelloFile(t, "go-tls13-sni.bin")
	ln := helloListen(t)
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := helloAccept(t, ln)
	if _, err := client.Write(hello[:len(hello)/2]); err != nil {
		t.Fatal(err)
	}
	const wait = 300 * time.Millisecond
	start := time.Now()
	data, _, err := readClientHello(server, nil, start.Add(wait))
	elapsed := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err %v, want one wrapping os.ErrDeadlineExceeded", err)
	}
	if elapsed < wait || elapsed > wait+3*time.Second {
		t.Errorf("returned after %v, deadline was %v", elapsed, wait)
	}
	if !bytes.Equal(data, hello[:len(hello)/2]) {
		t.Errorf("data has %d bytes, want the %d sent", len(data), len(hello)/2)
	}
	// Cleared deadline: a read now waits for the rest instead of failing.
	go client.Write(hello[len(hello)/2:])
	rest := make([]byte, len(hello)-len(hello)/2)
	if _, err := io.ReadFull(server, rest); err != nil {
		t.Fatalf("read after readClientHello: %v (deadline not cleared?)", err)
	}
}

func TestReadClientHelloSetsAndClearsDeadline(t *testing.T) {
	hello := readHelloFile(t, "go-tls13-sni.bin")
	deadline := time.Now().Add(time.Minute)
	for name, in := range map[string][]byte{"complete": hello, "truncated": hello[:100], "not tls": []byte("SSH-2.0-x\r\n")} {
		t.Run(name, func(t *testing.T) {
			conn := &helloMemConn{in: in}
			readClientHello(conn, nil, deadline)
			if conn.deadlineSets != 2 || !conn.firstDeadline.Equal(deadline) || !conn.lastDeadline.IsZero() {
				t.Errorf("deadlines: %d sets, first %v, last %v; want the deadline then zero",
					conn.deadlineSets, conn.firstDeadline, conn.lastDeadline)
			}
		})
	}
}

// TestReadClientHelloAllocations: with a buffer large enough, the only
// allocation is the returned name.
func TestReadClientHelloAllocations(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		max  float64
	}{
		{"sni", readHelloFile(t, "go-tls13-sni.bin"), 1},
		{"no sni", readHelloFile(t, "go-tls13-nosni.bin"), 0},
		{"split records", readHelloFile(t, "openssl-multirecord-sni.bin"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, 0, 16<<10)
			conn := &helloMemConn{}
			allocs := testing.AllocsPerRun(100, func() {
				conn.in = tt.in
				if _, _, err := readClientHello(conn, buf, time.Time{}); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > tt.max {
				t.Errorf("%v allocations per call, want at most %v", allocs, tt.max)
			}
		})
	}
}

// BenchmarkReadClientHello reads Go's default hello (X25519MLKEM768 key
// share, about 1.5 KB) and a classic X25519-only one (about 270 bytes), from
// memory (the parsing cost) and over loopback TCP (with the syscalls).
func BenchmarkReadClientHello(b *testing.B) {
	for _, file := range []string{"go-tls13-sni.bin", "go-tls13-x25519-sni.bin"} {
		hello := readHelloFile(b, file)
		b.Run(strings.TrimSuffix(file, ".bin")+"/memory", func(b *testing.B) {
			buf := make([]byte, 0, 16<<10)
			conn := &helloMemConn{}
			b.SetBytes(int64(len(hello)))
			b.ReportAllocs()
			for b.Loop() {
				conn.in = hello
				if _, _, err := readClientHello(conn, buf, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(strings.TrimSuffix(file, ".bin")+"/loopback", func(b *testing.B) {
			benchHelloLoopback(b, hello)
		})
	}
}

func benchHelloLoopback(b *testing.B, hello []byte) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	// The client sends the next hello only after the server's one-byte
	// acknowledgement, so each call reads exactly one hello.
	go func() {
		ack := make([]byte, 1)
		for {
			if _, err := client.Write(hello); err != nil {
				return
			}
			if _, err := client.Read(ack); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 0, 16<<10)
	ack := []byte{0}
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		data, _, err := readClientHello(server, buf, time.Now().Add(5*time.Second))
		if err != nil || len(data) != len(hello) {
			b.Fatalf("readClientHello: %d bytes, %v", len(data), err)
		}
		if _, err := server.Write(ack); err != nil {
			b.Fatal(err)
		}
	}
}
