package e2e

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
	"fmt"
	"io"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testCA is a throw-away certificate authority writing PEM files into a test's
// temporary directory.
type testCA struct {
	t      testing.TB
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	path   string // the CA certificate, PEM
	serial int64
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "gobetween e2e CA"},
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
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key, serial: 1}
	ca.path = filepath.Join(ca.dir, "ca.pem")
	writeFile(t, ca.path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return ca
}

// issue writes a server certificate for cn (IP literals among sans become IP
// SANs, the rest DNS names) to <dir>/<file>.crt and .key and returns the paths
// and the loaded pair.
func (ca *testCA) issue(file, cn string, sans ...string) (certPath, keyPath string, pair tls.Certificate) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(ca.dir, file+".crt"), filepath.Join(ca.dir, file+".key")
	writeFile(ca.t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(ca.t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	if pair, err = tls.LoadX509KeyPair(certPath, keyPath); err != nil {
		ca.t.Fatal(err)
	}
	return certPath, keyPath, pair
}

// startHandlerBackend serves every connection on a fresh loopback port (see
// listenFree) with handle, and stops in t.Cleanup. It returns the address.
func startHandlerBackend(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln := listenFree(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// lineReply answers the first line a client sends with "<prefix><line>\n",
// then closes: a client that writes one line and reads to EOF gets exactly
// one reply.
func lineReply(prefix string) func(net.Conn) {
	return func(c net.Conn) {
		c.SetDeadline(time.Now().Add(ioTimeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		io.WriteString(c, prefix+line)
	}
}

// tlsLineReply is lineReply behind TLS with cert.
func tlsLineReply(prefix string, cert tls.Certificate) func(net.Conn) {
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	return func(c net.Conn) {
		tc := tls.Server(c, cfg)
		defer tc.Close()
		lineReply(prefix)(tc)
	}
}

// requireTool fails the test when a program it drives is not installed.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required by this test and not installed (apt-get install %s): %v", name, name, err)
	}
	return p
}

// runTool runs a program with stdin to completion within 10 s and returns its
// combined output.
func runTool(t testing.TB, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireTool(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s still running after 10s", name)
	}
	return string(out), err
}

// startHAProxy runs haproxy in the foreground on cfg until the test ends
// (SIGTERM to the PID it started, SIGKILL after 5 s). Its output is logged
// when the test failed.
func startHAProxy(t testing.TB, cfg string) {
	t.Helper()
	bin := requireTool(t, "haproxy")
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	writeFile(t, path, cfg)
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
	cmd := exec.Command(bin, "-f", path, "-db")
	cmd.Dir = dir
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
			t.Errorf("haproxy exited on its own:\n%s", out.String())
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
}

// waitTCP waits until addr accepts connections.
func waitTCP(t testing.TB, addr string) {
	t.Helper()
	eventually(t, 10*time.Second, "listening on "+addr, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}
