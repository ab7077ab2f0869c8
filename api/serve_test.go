package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gobetween test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// getUntil polls url until it answers or the deadline passes.
func getUntil(t *testing.T, client *http.Client, url string) (*http.Response, string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runServe starts serve in a goroutine and returns a stop function that cancels it
// and returns its result.
func runServe(t *testing.T, serve func(ctx context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	var stopped bool
	var result error
	stop = func() error {
		if stopped {
			return result
		}
		stopped = true
		cancel()
		select {
		case result = <-done:
		case <-time.After(10 * time.Second):
			result = errors.New("serve did not return within 10s of cancel")
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestServeTLS(t *testing.T) {
	certPath, keyPath, pool := selfSigned(t, t.TempDir())
	addr := freeAddr(t)
	f := newFixture(t)
	stop := runServe(t, func(ctx context.Context) error {
		return Serve(ctx, addr, f.handler, &config.ApiTls{CertPath: certPath, KeyPath: keyPath}, nil)
	})

	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	resp, body := getUntil(t, client, "https://"+addr+"/ping")
	if resp.StatusCode != http.StatusOK || body != "OK" {
		t.Fatalf("GET /ping over TLS = %d %q", resp.StatusCode, body)
	}
	if resp.TLS == nil {
		t.Fatal("answer did not come over TLS")
	}
	// Plain HTTP to the TLS port is not answered as the API.
	if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + addr + "/ping"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered on the TLS listener")
		}
	}

	if err := stop(); err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	if _, err := client.Get("https://" + addr + "/ping"); err == nil {
		t.Fatal("still answering after shutdown")
	}
}

func TestServerRun(t *testing.T) {
	addr := freeAddr(t)
	srv := NewServer(Options{
		Config: config.Api{Enabled: true, Bind: addr},
		Store:  newMemStore(nil),
		Stats:  &memStats{},
		Dump:   func() *config.Config { return &config.Config{} },
	})
	stop := runServe(t, srv.Run)
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	resp, body := getUntil(t, client, "http://"+addr+"/servers")
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(body) != "{}" {
		t.Fatalf("GET /servers = %d %q", resp.StatusCode, body)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

func TestServeErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	tests := []struct {
		name string
		bind string
		tls  *config.ApiTls
		want string
	}{
		{"port in use", busy.Addr().String(), nil, "listen on"},
		{"missing certificate", "127.0.0.1:0", &config.ApiTls{CertPath: filepath.Join(dir, "nope.pem"), KeyPath: filepath.Join(dir, "nope.key")}, "load certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := Serve(ctx, tt.bind, http.NotFoundHandler(), tt.tls, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Serve = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// Shutdown lets a request in flight finish instead of cutting it.
func TestServeGracefulShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "finished")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	stop := runServe(t, func(ctx context.Context) error { return ServeListener(ctx, ln, h, nil, nil) })

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-entered

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// New connections are refused once shutdown began; poll until they are.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepting during shutdown")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	r := <-got
	if r.err != nil || r.body != "finished" {
		t.Fatalf("request in flight = %q, %v; want it to finish", r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("ServeListener = %v", err)
	}
}
