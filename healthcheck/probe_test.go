package healthcheck

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// streamServer accepts connections on ln and runs handle on each until ln closes.
func streamServer(t *testing.T, ln net.Listener, handle func(net.Conn)) config.Target {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				handle(c)
			}()
		}
	}()
	return targetOf(t, ln.Addr().String())
}

func tcpServer(t *testing.T, handle func(net.Conn)) config.Target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return streamServer(t, ln, handle)
}

// expect reads len(want) bytes and reports whether they are want.
func expect(c net.Conn, want string) bool {
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil {
		return false
	}
	return string(buf) == want
}

// reply answers with resp when the probe sent want, "BAD" otherwise, then acts
// per after: "close" closes, "hold" keeps the connection open and silent.
func reply(want, resp, after string) func(net.Conn) {
	return func(c net.Conn) {
		if !expect(c, want) {
			c.Write([]byte("BAD"))
			return
		}
		c.Write([]byte(resp))
		if after == "hold" {
			io.Copy(io.Discard, c)
		}
	}
}

func probeCfg(protocol, send, recv, strategy string, recvLen int) config.Healthcheck {
	return config.Healthcheck{Kind: "probe", ProbeProtocol: protocol, ProbeSend: send, ProbeRecv: recv,
		ProbeStrategy: strategy, ProbeRecvLen: recvLen}
}

func TestProbeTCP(t *testing.T) {
	tests := []struct {
		name    string
		cfg     config.Healthcheck
		handle  func(net.Conn)
		timeout time.Duration
		pass    bool
	}{
		{"starts_with pass", probeCfg("tcp", `PING\r\n`, `+PONG`, "starts_with", 0),
			reply("PING\r\n", "+PONG\r\n", "close"), time.Second, true},
		{"starts_with escapes", probeCfg("tcp", `\x00\x01hi\n`, `\x02\xff`, "starts_with", 0),
			reply("\x00\x01hi\n", "\x02\xffrest", "close"), time.Second, true},
		{"starts_with reply held open", probeCfg("tcp", `hi`, `ok`, "starts_with", 0),
			reply("hi", "ok and more", "hold"), 5 * time.Second, true},
		{"starts_with wrong reply", probeCfg("tcp", `PING\r\n`, `+PONG`, "starts_with", 0),
			reply("PING\r\n", "-ERR\r\n", "close"), time.Second, false},
		{"starts_with short reply", probeCfg("tcp", `hi`, `hello`, "starts_with", 0),
			reply("hi", "hel", "close"), time.Second, false},
		{"starts_with silent backend", probeCfg("tcp", `hi`, `hello`, "starts_with", 0),
			reply("hi", "", "hold"), 200 * time.Millisecond, false},
		{"regexp full length", probeCfg("tcp", `GET\n`, `^HTTP/1\.[01] 200`, "regexp", 12),
			reply("GET\n", "HTTP/1.1 200 OK\r\n", "close"), time.Second, true},
		{"regexp shorter reply then EOF", probeCfg("tcp", `v?`, `version=\d+`, "regexp", 64),
			reply("v?", "version=42", "close"), time.Second, true},
		{"regexp shorter reply then timeout", probeCfg("tcp", `v?`, `version=\d+`, "regexp", 64),
			reply("v?", "version=42", "hold"), 300 * time.Millisecond, true},
		{"regexp reads only probe_recv_len", probeCfg("tcp", `v?`, `version=42`, "regexp", 5),
			reply("v?", "version=42", "close"), time.Second, false},
		{"regexp no match", probeCfg("tcp", `v?`, `version=\d+`, "regexp", 64),
			reply("v?", "error", "close"), time.Second, false},
		{"regexp with escaped bytes", probeCfg("tcp", `\x01`, `\x02[a-z]+\x03`, "regexp", 16),
			reply("\x01", "\x02abc\x03", "close"), time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := tcpServer(t, tc.handle)
			checker, err := NewChecker(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = checker.Check(checkCtx(t, tc.timeout), target)
			if (err == nil) != tc.pass {
				t.Fatalf("Check = %v, want pass %v", err, tc.pass)
			}
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		checker, err := NewChecker(probeCfg("tcp", "x", "y", "starts_with", 0))
		if err != nil {
			t.Fatal(err)
		}
		if err := checker.Check(checkCtx(t, time.Second), closedTarget(t)); err == nil {
			t.Fatal("Check passed against a closed port")
		}
	})

	t.Run("cancel aborts a waiting read", func(t *testing.T) {
		target := tcpServer(t, reply("x", "", "hold"))
		checker, err := NewChecker(probeCfg("tcp", "x", "y", "regexp", 8))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		err = checker.Check(ctx, target)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Check = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("Check took %v after cancel", d)
		}
	})
}

func TestProbeUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// Echo server: answers "echo:" + datagram, except to "quiet" which it ignores.
	go func() {
		buf := make([]byte, 2048)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) == "quiet" {
				continue
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), addr)
		}
	}()
	echo := targetOf(t, pc.LocalAddr().String())

	tests := []struct {
		name   string
		cfg    config.Healthcheck
		target config.Target
		pass   bool
	}{
		{"starts_with pass", probeCfg("udp", `\x01ping`, `echo:\x01p`, "starts_with", 0), echo, true},
		{"starts_with fail", probeCfg("udp", `ping`, `pong`, "starts_with", 0), echo, false},
		{"regexp pass", probeCfg("udp", `id=7`, `^echo:id=\d$`, "regexp", 100), echo, true},
		{"regexp cut to probe_recv_len", probeCfg("udp", `id=7`, `id=7`, "regexp", 6), echo, false},
		{"no answer", probeCfg("udp", `quiet`, `echo`, "starts_with", 0), echo, false},
		{"nothing listening", probeCfg("udp", `ping`, `echo`, "starts_with", 0), closedUDP(t), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checker, err := NewChecker(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = checker.Check(checkCtx(t, 300*time.Millisecond), tc.target)
			if (err == nil) != tc.pass {
				t.Fatalf("Check = %v, want pass %v", err, tc.pass)
			}
		})
	}
}

func closedUDP(t *testing.T) config.Target {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return targetOf(t, addr)
}

// selfSigned makes a certificate for a name that is not the address the probe
// dials, so a verifying client would refuse it.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "backend.invalid"},
		DNSNames:     []string{"backend.invalid"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestProbeTLS(t *testing.T) {
	cert := selfSigned(t)
	tlsServer := func(handle func(net.Conn)) config.Target {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		return streamServer(t, ln, handle)
	}
	tests := []struct {
		name   string
		cfg    config.Healthcheck
		target func() config.Target
		pass   bool
	}{
		{"self-signed backend answers", probeCfg("tls", `HELLO\n`, `WELCOME`, "starts_with", 0),
			func() config.Target { return tlsServer(reply("HELLO\n", "WELCOME\n", "close")) }, true},
		{"regexp over tls", probeCfg("tls", `HELLO\n`, `W[A-Z]+`, "regexp", 32),
			func() config.Target { return tlsServer(reply("HELLO\n", "WELCOME\n", "hold")) }, true},
		{"wrong reply", probeCfg("tls", `HELLO\n`, `WELCOME`, "starts_with", 0),
			func() config.Target { return tlsServer(reply("HELLO\n", "GO AWAY\n", "close")) }, false},
		{"plain tcp backend", probeCfg("tls", `HELLO\n`, `WELCOME`, "starts_with", 0),
			func() config.Target {
				return tcpServer(t, func(c net.Conn) { c.Write(bytes.Repeat([]byte("WELCOME\n"), 8)) })
			}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checker, err := NewChecker(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = checker.Check(checkCtx(t, time.Second), tc.target())
			if (err == nil) != tc.pass {
				t.Fatalf("Check = %v, want pass %v", err, tc.pass)
			}
			if err != nil && strings.Contains(err.Error(), "certificate") {
				t.Fatalf("Check verified the certificate: %v", err)
			}
		})
	}
}
