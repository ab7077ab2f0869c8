package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pebbleVersion is the ACME test CA the tests run (Let's Encrypt's Pebble).
const pebbleVersion = "v2.10.1"

var pebbleOnce struct {
	sync.Once
	bin, modDir string
	err         error
}

// pebbleInstall finds the pebble binary (PATH, then a cache directory) or
// installs it there with `go install`, and returns it with its module directory,
// which holds the certificate of Pebble's own API.
func pebbleInstall(t testing.TB) (bin, modDir string) {
	t.Helper()
	pebbleOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMODCACHE").Output()
		if err != nil {
			pebbleOnce.err = fmt.Errorf("go env GOMODCACHE: %w", err)
			return
		}
		pebbleOnce.modDir = filepath.Join(strings.TrimSpace(string(out)), "github.com/letsencrypt/pebble/v2@"+pebbleVersion)
		gobin := filepath.Join(os.TempDir(), "gobetween-e2e-pebble-"+pebbleVersion)
		pebbleOnce.bin = filepath.Join(gobin, "pebble")
		if p, err := exec.LookPath("pebble"); err == nil {
			pebbleOnce.bin = p
		}
		if _, err := os.Stat(pebbleOnce.bin); err == nil {
			if _, err := os.Stat(pebbleOnce.modDir); err == nil {
				return
			}
		}
		cmd := exec.Command("go", "install", "github.com/letsencrypt/pebble/v2/cmd/pebble@"+pebbleVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			pebbleOnce.err = fmt.Errorf("go install pebble@%s: %w\n%s", pebbleVersion, err, out)
			return
		}
		pebbleOnce.bin = filepath.Join(gobin, "pebble")
	})
	if pebbleOnce.err != nil {
		t.Fatal(pebbleOnce.err)
	}
	return pebbleOnce.bin, pebbleOnce.modDir
}

// pebble is one Pebble ACME CA run by a test, validating http-01 on httpPort
// of the address its DNS server gives a name.
type pebble struct {
	dir      string // https://127.0.0.1:port/dir
	apiRoot  string // the CA file of Pebble's own HTTPS (SSL_CERT_FILE for gobetween)
	roots    *x509.CertPool
	httpPort int
	out      syncBuffer
}

// startPebble runs Pebble until the test ends, resolving names through the DNS
// server at dns, on fresh ports.
func startPebble(t *testing.T, dns string) *pebble {
	return startPebbleAt(t, dns, freeAddr(t), freePort(t))
}

// startPebbleAt runs Pebble with its directory on listen, validating http-01
// on httpPort. It really validates challenges (no PEBBLE_VA_ALWAYS_VALID),
// without its random delays and nonce rejections. tls-alpn-01 goes to a port
// where nothing listens, so autocert's attempt at it (autocert always tries it
// first) fails at once.
func startPebbleAt(t *testing.T, dns, listen string, httpPort int) *pebble {
	t.Helper()
	bin, modDir := pebbleInstall(t)
	mgmt := freeAddr(t)
	p := &pebble{
		dir:      "https://" + listen + "/dir",
		apiRoot:  filepath.Join(modDir, "test/certs/pebble.minica.pem"),
		httpPort: httpPort,
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": mgmt,
		"certificate":             filepath.Join(modDir, "test/certs/localhost/cert.pem"),
		"privateKey":              filepath.Join(modDir, "test/certs/localhost/key.pem"),
		"httpPort":                p.httpPort,
		"tlsPort":                 freePort(t),
		"ocspResponderURL":        "",
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles":                map[string]any{"default": map[string]any{"description": "test", "validityPeriod": 7776000}},
	}}
	b, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(t.TempDir(), "pebble.json")
	writeFile(t, cfgPath, string(b))

	cmd := exec.Command(bin, "-config", cfgPath, "-dnsserver", dns)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	stopChild(t, "pebble", cmd, &p.out)

	pem, err := os.ReadFile(p.apiRoot)
	if err != nil {
		t.Fatal(err)
	}
	apiPool := x509.NewCertPool()
	apiPool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: apiPool}}}
	eventually(t, 10*time.Second, "pebble answering", func() error {
		resp, err := hc.Get(p.dir)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	// Issued certificates chain to this root (not to Pebble's API CA).
	resp, err := hc.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	root, _ := io.ReadAll(resp.Body)
	p.roots = x509.NewCertPool()
	if !p.roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: no PEM in %q", root)
	}
	return p
}

// issued lists the serials (hex) of the certificates Pebble issued so far.
func (p *pebble) issued() []string {
	var out []string
	for _, m := range regexp.MustCompile(`Issued certificate serial ([0-9a-f]+) for order`).FindAllStringSubmatch(p.out.String(), -1) {
		out = append(out, m[1])
	}
	return out
}

// orders counts the orders Pebble created.
func (p *pebble) orders() int { return strings.Count(p.out.String(), "Added order") }

// startDNS runs dnsmasq answering every name under acme.test with ip, and
// returns its address.
func startDNS(t *testing.T, ip string) string {
	t.Helper()
	bin := requireTool(t, "dnsmasq")
	port := freePort(t)
	var out syncBuffer
	cmd := exec.Command(bin, "--no-daemon", "--no-resolv", "--no-hosts", "--pid-file=",
		"--port="+strconv.Itoa(port), "--listen-address=127.0.0.1", "--bind-interfaces",
		"--address=/acme.test/"+ip)
	cmd.Stdout, cmd.Stderr = &out, &out
	stopChild(t, "dnsmasq", cmd, &out)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	eventually(t, 10*time.Second, "dnsmasq answering", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ips, err := r.LookupHost(ctx, "a.acme.test")
		if err != nil {
			return err
		}
		if len(ips) != 1 || ips[0] != ip {
			return fmt.Errorf("a.acme.test is %v, want %s", ips, ip)
		}
		return nil
	})
	return addr
}

// stopChild starts cmd and stops it, by the PID started, when the test ends;
// its output is logged if the test failed.
func stopChild(t *testing.T, name string, cmd *exec.Cmd, out *syncBuffer) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(out.String(), 8000))
		}
	})
}

// tlsWho completes a TLS handshake with addr for name, verified against roots,
// asks the backend behind it WHO, and returns the answer and the serial (hex)
// of the certificate the server presented.
func tlsWho(addr, name string, roots *x509.CertPool) (who, serial string, err error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{ServerName: name, RootCAs: roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	serial = hex.EncodeToString(c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Bytes())
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "WHO\n"); err != nil {
		return "", serial, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), serial, err
}

// challengeStatus is the status of GET /.well-known/acme-challenge/<token> at
// addr with Host host.
func challengeStatus(addr, host, token string) (int, error) {
	req, err := http.NewRequest("GET", "http://"+addr+"/.well-known/acme-challenge/"+token, nil)
	if err != nil {
		return 0, err
	}
	req.Host = host
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// One node: a server with acme_hosts gets a certificate from the CA (http-01
// really validated on [acme] http_bind) and relays; another server of the same
// config keeps its static certificate.
func TestACMESingleNode(t *testing.T) {
	t.Parallel()
	pb := startPebble(t, startDNS(t, "127.0.0.1"))
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	ca := newTestCA(t)
	certPath, keyPath, _ := ca.issue("static", "static.test", "static.test")
	acmeAddr, staticAddr := freeAddr(t), freeAddr(t)
	dir := t.TempDir()
	n := startNodeWith(t, fmt.Sprintf(`[logging]
level = "debug"
output = "stdout"

[acme]
http_bind = "127.0.0.1:%[1]d"
cache_dir = "%[2]s"
directory_url = %[3]q

[servers.acme]
bind = %[4]q
  [servers.acme.tls]
  acme_hosts = ["a.acme.test"]
  [servers.acme.discovery]
  kind = "static"
  static_list = [%[5]q]

[servers.static]
bind = %[6]q
  [servers.static.tls]
  cert_path = %[7]q
  key_path = %[8]q
  [servers.static.discovery]
  kind = "static"
  static_list = [%[9]q]
`, pb.httpPort, filepath.Join(dir, "acme-cache"), pb.dir, acmeAddr, b1.addr, staticAddr, certPath, keyPath, b2.addr),
		nodeOptions{dir: dir, env: []string{"SSL_CERT_FILE=" + pb.apiRoot}})

	start := time.Now()
	var serial string
	eventually(t, 30*time.Second, "a certificate from the ACME CA", func() error {
		n.requireRunning()
		who, s, err := tlsWho(acmeAddr, "a.acme.test", pb.roots)
		if err != nil {
			return err
		}
		if who != "b1" {
			return fmt.Errorf("relayed to %q, want b1", who)
		}
		serial = s
		return nil
	})
	t.Logf("certificate issued and served %s after start (%d orders at the CA)", time.Since(start).Round(time.Millisecond), pb.orders())
	if got := pb.issued(); len(got) != 1 || got[0] != serial {
		t.Fatalf("the CA issued %v; the server presents %s", got, serial)
	}
	if _, err := os.Stat(filepath.Join(dir, "acme-cache", "a.acme.test")); err != nil {
		t.Fatalf("certificate not in cache_dir: %v", err)
	}
	ours := x509.NewCertPool()
	ours.AppendCertsFromPEM(mustRead(t, ca.path))
	if who, _, err := tlsWho(staticAddr, "static.test", ours); err != nil || who != "b2" {
		t.Fatalf("static server: %q, %v", who, err)
	}
	// The ACME server has no certificate for other names.
	if _, _, err := tlsWho(acmeAddr, "static.test", ours); err == nil {
		t.Fatal("the ACME server completed a handshake for a name not in acme_hosts")
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Three nodes: the leader alone orders a certificate for a server created
// through the API; the CA validates http-01 at a follower (the name resolves
// to it), which answers from the token the leader put in the Raft log; all
// three nodes serve the same certificate.
func TestACMECluster(t *testing.T) {
	t.Parallel()
	be := startBackend(t, "b1")
	_, modDir := pebbleInstall(t)
	// A wildcard http_bind listens on each node's servers_host, like servers.
	httpPort := freePort(t)
	c := newTestCluster(t, "")
	// The CA starts once the leader is known (its DNS points at a follower);
	// the nodes know its address beforehand.
	listen := freeAddr(t)
	c.extra = fmt.Sprintf(`[acme]
http_bind = "0.0.0.0:%d"
directory_url = "https://%s/dir"
`, httpPort, listen)
	env := []string{"SSL_CERT_FILE=" + filepath.Join(modDir, "test/certs/pebble.minica.pem")}
	for _, i := range []int{0, 1, 2} {
		c.nodes[i] = startNodeWith(t, c.config(i), nodeOptions{dir: c.dirs[i], env: env})
	}
	leader := c.waitFormed(20*time.Second, 0, 1, 2)
	follower := (leader + 1) % 3
	pb := startPebbleAt(t, startDNS(t, c.host(follower)), listen, httpPort)

	// Every node answers http-01 on its own address, for acme hosts only.
	for i := range 3 {
		addr := net.JoinHostPort(c.host(i), strconv.Itoa(httpPort))
		eventually(t, 5*time.Second, "http-01 listener on n"+strconv.Itoa(i+1), func() error {
			code, err := challengeStatus(addr, "a.acme.test", "no-such-token")
			if err == nil && code != http.StatusForbidden {
				return fmt.Errorf("status %d before the host is an acme host, want 403", code)
			}
			return err
		})
	}

	port := freePort(t)
	body := fmt.Sprintf(`{"bind":":%d","tls":{"acme_hosts":["a.acme.test"]},"discovery":{"kind":"static","static_list":[%q]}}`, port, be.addr)
	posted := time.Now()
	if code, resp := c.api(follower).mustDo(t, "POST", "/servers/web", body); code != 200 {
		t.Fatalf("POST /servers/web: %d %s", code, resp)
	}
	serials := map[int]string{}
	for i := range 3 {
		addr := net.JoinHostPort(c.host(i), strconv.Itoa(port))
		eventually(t, 30*time.Second, "n"+strconv.Itoa(i+1)+" serving the ACME certificate", func() error {
			c.nodes[i].requireRunning()
			who, s, err := tlsWho(addr, "a.acme.test", pb.roots)
			if err != nil {
				return err
			}
			if who != "b1" {
				return fmt.Errorf("relayed to %q", who)
			}
			serials[i] = s
			return nil
		})
	}
	t.Logf("leader n%d, challenge answered by n%d; all nodes serve the certificate %s after the POST (%d orders at the CA)",
		leader+1, follower+1, time.Since(posted).Round(time.Millisecond), pb.orders())
	issued := pb.issued()
	if len(issued) != 1 {
		t.Fatalf("the CA issued %d certificates (%v), want 1", len(issued), issued)
	}
	for i, s := range serials {
		if s != issued[0] {
			t.Fatalf("n%d serves serial %s, the CA issued %s", i+1, s, issued[0])
		}
	}
	// The leader logs once its Put has returned, which can be after the
	// followers applied the certificate and served it.
	eventually(t, 5*time.Second, "only the leader logged the certificate", func() error {
		for i := range 3 {
			got := strings.Count(c.nodes[i].output(), "acme: certificate obtained and stored")
			want := 0
			if i == leader {
				want = 1
			}
			if got != want {
				return fmt.Errorf("n%d logged %d certificates obtained, want %d (leader n%d)", i+1, got, want, leader+1)
			}
		}
		return nil
	})
	// The tokens were removed after the order; the listeners still answer.
	for i := range 3 {
		addr := net.JoinHostPort(c.host(i), strconv.Itoa(httpPort))
		if code, err := challengeStatus(addr, "a.acme.test", "no-such-token"); err != nil || code != http.StatusNotFound {
			t.Fatalf("n%d http-01 for an unknown token: %d, %v (want 404)", i+1, code, err)
		}
	}
}
