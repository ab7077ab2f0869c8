package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/config"
)

// leaderNode is a one-voter cluster node that leads.
func leaderNode(t *testing.T) *cluster.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := cluster.Open(ctx, cluster.Options{NodeID: "n1", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", Bootstrap: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	if err := n.WaitForLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for !n.IsLeader() {
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

func putServer(t *testing.T, n *cluster.Node, name string, acmeHosts ...string) {
	t.Helper()
	s := config.Server{Bind: ":1", Protocol: "tcp"}
	if acmeHosts != nil {
		s.Tls = &config.Tls{AcmeHosts: acmeHosts}
	}
	if _, err := n.Apply(t.Context(), cluster.Command{Type: cluster.PutServer, Name: name, Origin: cluster.OriginAPI, Server: &s}); err != nil {
		t.Fatal(err)
	}
}

func testACME(t *testing.T, n *cluster.Node, shared bool) *acmeCerts {
	cfg := &config.Acme{HttpBind: "127.0.0.1:0", CacheDir: t.TempDir(), DirectoryURL: "https://127.0.0.1:1/dir"}
	return newACME(cfg, n, shared, "", slog.New(slog.DiscardHandler))
}

// The policy is the union of the acme_hosts of the servers in the current
// state, matched case-insensitively, with or without a port (http-01 Host).
func TestACMEHostPolicy(t *testing.T) {
	n := leaderNode(t)
	a := testACME(t, n, true)
	putServer(t, n, "web", "A.example", "b.example.")
	putServer(t, n, "api", "c.example")
	putServer(t, n, "plain")
	for _, tt := range []struct {
		host string
		ok   bool
	}{
		{"a.example", true}, {"B.EXAMPLE", true}, {"b.example", true}, {"c.example:5002", true},
		{"d.example", false}, {"example", false}, {"", false},
	} {
		if err := a.hostPolicy(t.Context(), tt.host); (err == nil) != tt.ok {
			t.Errorf("policy(%q) = %v, want allowed %v", tt.host, err, tt.ok)
		}
	}
	if _, err := n.Apply(t.Context(), cluster.Command{Type: cluster.DeleteServer, Name: "api"}); err != nil {
		t.Fatal(err)
	}
	if err := a.hostPolicy(t.Context(), "c.example"); err == nil || !strings.Contains(err.Error(), "not in any server's tls.acme_hosts") {
		t.Fatalf("policy after the server was deleted: %v", err)
	}
	if got := a.currentHosts().names; strings.Join(got, ",") != "a.example,b.example" {
		t.Fatalf("hosts %v", got)
	}
}

func TestBlobCache(t *testing.T) {
	n := leaderNode(t)
	c := &blobCache{node: n}
	ctx := t.Context()
	if _, err := c.Get(ctx, "a.example"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("get of a missing key: %v", err)
	}
	if err := c.Put(ctx, "a.example", []byte("cert")); err != nil {
		t.Fatal(err)
	}
	if v := n.State().Blobs["acme/a.example"]; string(v) != "cert" {
		t.Fatalf("blob in the log: %q", v)
	}
	v, err := c.Get(ctx, "a.example")
	if err != nil || string(v) != "cert" {
		t.Fatalf("get: %q, %v", v, err)
	}
	v[0] = 'X' // the caller owns what Get returns
	if v, _ := c.Get(ctx, "a.example"); string(v) != "cert" {
		t.Fatalf("Get shares the state's bytes: %q", v)
	}
	if err := c.Put(ctx, "big", make([]byte, cluster.MaxBlobSize+1)); !errors.Is(err, cluster.ErrInvalidCommand) {
		t.Fatalf("oversized put: %v", err)
	}
	for range 2 { // deleting twice is fine
		if err := c.Delete(ctx, "a.example"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Get(ctx, "a.example"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestLeaderOnlyTransport(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	var leader atomic.Bool
	hc := &http.Client{Transport: &leaderOnly{leader: leader.Load, next: http.DefaultTransport}}
	if _, err := hc.Get(srv.URL); !errors.Is(err, errNotLeader) || hits.Load() != 0 {
		t.Fatalf("follower: %v, %d requests reached the CA", err, hits.Load())
	}
	leader.Store(true)
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hits.Load() != 1 {
		t.Fatalf("leader: %d requests reached the CA", hits.Load())
	}
}

// testIssuer signs certificates in autocert's cache format.
type testIssuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	next int64
}

func newTestIssuer(t *testing.T) *testIssuer {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testIssuer{cert: cert, key: key, pool: pool, next: 100}
}

// entry is an autocert cache entry (EC key, then the certificate, PEM) for
// host, valid from notBefore for life; it returns the serial too.
func (ti *testIssuer) entry(t *testing.T, host string, notBefore time.Time, life time.Duration) ([]byte, int64) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ti.next++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ti.next), DNSNames: []string{host},
		NotBefore: notBefore, NotAfter: notBefore.Add(life), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ti.cert, &key.PublicKey, ti.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	return b.Bytes(), ti.next
}

// handshaker serves TLS with src's certificates and records the errors of
// GetCertificate.
type handshaker struct {
	addr string
	mu   sync.Mutex
	errs []string
}

func serveTLS(t *testing.T, get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *handshaker {
	h := &handshaker{}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := get(hello)
		if err != nil {
			h.mu.Lock()
			h.errs = append(h.errs, err.Error())
			h.mu.Unlock()
		}
		return c, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	h.addr = ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return h
}

func (h *handshaker) lastErr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) == 0 {
		return ""
	}
	return h.errs[len(h.errs)-1]
}

// serial is the serial of the certificate a client verifying against pool gets
// for name, or 0 and the error.
func (h *handshaker) serial(name string, pool *x509.CertPool) (int64, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr, &tls.Config{ServerName: name, RootCAs: pool})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// In a cluster every node serves the newest valid certificate in the log; a
// follower without one fails the handshake and never contacts the CA, while
// the leader asks the CA.
func TestACMEServesStoredCertificates(t *testing.T) {
	n := leaderNode(t)
	putServer(t, n, "web", "a.example")
	a := testACME(t, n, true)
	var caHits atomic.Int32
	ca := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caHits.Add(1)
		http.NotFound(w, r)
	}))
	defer ca.Close()
	a.mgr.Client.DirectoryURL = ca.URL + "/dir"
	a.mgr.Client.HTTPClient.Transport.(*leaderOnly).next = ca.Client().Transport
	var leader atomic.Bool
	a.isLeader = leader.Load

	iss := newTestIssuer(t)
	h := serveTLS(t, a.GetCertificate)
	cache := &blobCache{node: n}
	put := func(entry []byte) {
		t.Helper()
		if err := cache.Put(t.Context(), "a.example", entry); err != nil {
			t.Fatal(err)
		}
	}

	// A follower without a certificate.
	if _, err := h.serial("a.example", iss.pool); err == nil {
		t.Fatal("handshake succeeded without a certificate")
	}
	if e := h.lastErr(); !strings.Contains(e, "the cluster leader obtains it") || caHits.Load() != 0 {
		t.Fatalf("follower without a certificate: %q, %d requests to the CA", e, caHits.Load())
	}

	first, s1 := iss.entry(t, "a.example", time.Now().Add(-time.Minute), time.Hour)
	put(first)
	if got, err := h.serial("a.example", iss.pool); err != nil || got != s1 {
		t.Fatalf("stored certificate: serial %d, %v; want %d", got, err, s1)
	}
	// A renewal by the leader is served at the next handshake.
	renewed, s2 := iss.entry(t, "a.example", time.Now().Add(-time.Minute), time.Hour)
	put(renewed)
	if got, err := h.serial("a.example", iss.pool); err != nil || got != s2 {
		t.Fatalf("renewed certificate: serial %d, %v; want %d", got, err, s2)
	}
	// An expired or not yet valid one is not served.
	for _, nb := range []time.Time{time.Now().Add(-2 * time.Hour), time.Now().Add(time.Hour)} {
		stale, _ := iss.entry(t, "a.example", nb, time.Hour)
		put(stale)
		if _, err := h.serial("a.example", iss.pool); err == nil {
			t.Fatalf("a certificate valid from %s was served", nb)
		}
	}
	if caHits.Load() != 0 {
		t.Fatalf("a follower sent %d requests to the CA", caHits.Load())
	}
	// The leader asks the CA for it (which fails here: the CA answers 404).
	leader.Store(true)
	if _, err := h.serial("a.example", iss.pool); err == nil {
		t.Fatal("handshake succeeded with a failing CA")
	}
	if caHits.Load() == 0 {
		t.Fatalf("the leader did not contact the CA (last error %q)", h.lastErr())
	}
}

func TestOnServersHost(t *testing.T) {
	for _, tt := range []struct{ bind, host, want string }{
		{"0.0.0.0:80", "127.0.0.2", "127.0.0.2:80"},
		{":80", "127.0.0.2", "127.0.0.2:80"},
		{"[::]:80", "127.0.0.2", "127.0.0.2:80"},
		{"10.0.0.1:80", "127.0.0.2", "10.0.0.1:80"},
		{"0.0.0.0:80", "", "0.0.0.0:80"},
	} {
		if got := onServersHost(tt.bind, tt.host); got != tt.want {
			t.Errorf("onServersHost(%q, %q) = %q, want %q", tt.bind, tt.host, got, tt.want)
		}
	}
}
