package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// nodeTLS issues a certificate for a node (client and server use, 127.0.0.1)
// and returns the node's tls.Config trusting this CA.
func (ca *testCA) nodeTLS(t testing.TB, name string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      ca.pool,
	}
}

func openTLSNode(t testing.TB, id string, tc *tls.Config, bootstrap bool) *Node {
	t.Helper()
	n, err := Open(context.Background(), Options{
		NodeID: id, DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", Bootstrap: bootstrap, TLS: tc, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// Raft and forwarded writes run over mutual TLS; a node with a certificate
// from another CA, or without TLS, gets nothing.
func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	ctx := context.Background()
	nodes := tlsThreeNodes(t, ca)
	rev, err := nodes[2].Apply(ctx, putCmd("web", "a:1"))
	if err != nil {
		t.Fatal(err)
	}
	if nodes[2].State().Servers["web"].Revision != rev {
		t.Fatal("forwarded write over TLS not visible on the follower")
	}
	if st, err := nodes[1].peerStatus(ctx, nodes[0].Addr(), time.Second); err != nil || !st.Voter {
		t.Fatalf("status over TLS: %+v, %v", st, err)
	}

	other := newTestCA(t, "another CA")
	// The server side verifies client certificates itself: a client that
	// skips verifying the server still gets no answer.
	for name, cc := range map[string]*tls.Config{
		"other CA":       other.nodeTLS(t, "x"),
		"no client cert": {RootCAs: ca.pool},
	} {
		cc.InsecureSkipVerify = true
		cc.MinVersion = tls.VersionTLS13
		c, err := tls.Dial("tcp", nodes[0].Addr(), cc)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, err = c.Write([]byte{muxRPC})
			if err == nil {
				err = writeFrame(c, &rpcRequest{Op: opStatus})
			}
			if err == nil {
				var resp rpcResponse
				err = readFrame(c, &resp)
			}
			_ = c.Close()
		}
		if err == nil {
			t.Fatalf("%s: a client outside the CA got an answer", name)
		}
	}
	for name, tc := range map[string]*tls.Config{"other-ca": other.nodeTLS(t, "bad"), "plain": nil} {
		bad := openTLSNode(t, name, tc, false)
		if _, err := bad.peerStatus(ctx, nodes[0].Addr(), time.Second); err == nil {
			t.Fatalf("%s: status from a node outside the CA succeeded", name)
		}
		if _, err := nodes[0].peerStatus(ctx, bad.Addr(), time.Second); err == nil {
			t.Fatalf("%s: status to a node outside the CA succeeded", name)
		}
		// Added by the leader, it never receives the log.
		if err := nodes[0].AddNonvoter(ctx, name, bad.Addr()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if got := bad.raft.LastIndex(); got != 0 {
			t.Fatalf("%s received the log up to %d", name, got)
		}
		if err := nodes[0].Remove(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := nodes[1].Apply(ctx, putCmd("web", "b:1")); err != nil {
		t.Fatal(err)
	}
}

func TestMutualTLSConfigErrors(t *testing.T) {
	for name, tc := range map[string]*tls.Config{
		"no certificate": {RootCAs: x509.NewCertPool()},
		"no CA":          {Certificates: []tls.Certificate{{}}},
	} {
		if n, err := Open(context.Background(), Options{NodeID: "x", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", TLS: tc}); err == nil {
			_ = n.Close()
			t.Fatalf("%s: open succeeded", name)
		}
	}
}

func tlsThreeNodes(t testing.TB, ca *testCA) []*Node {
	t.Helper()
	ctx := context.Background()
	nodes := []*Node{openTLSNode(t, "n1", ca.nodeTLS(t, "n1"), true)}
	waitLeader(t, nodes[0], 5*time.Second)
	for _, id := range []string{"n2", "n3"} {
		n := openTLSNode(t, id, ca.nodeTLS(t, id), false)
		if err := nodes[0].AddNonvoter(ctx, id, n.Addr()); err != nil {
			t.Fatal(err)
		}
		if err := nodes[0].Promote(ctx, id); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		eventually(t, 5*time.Second, n.ID()+" sees three voters", func() bool {
			return slices.Equal(suffrages(n.Members()), []string{"n1=voter", "n2=voter", "n3=voter"})
		})
	}
	return nodes
}

// BenchmarkApplyForwardedTLS writes through a follower over mutual TLS.
func BenchmarkApplyForwardedTLS(b *testing.B) {
	nodes := tlsThreeNodes(b, newTestCA(b, "cluster CA"))
	benchApply(b, nodes[1])
}
