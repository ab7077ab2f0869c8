package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gobetween/gobetween/e2e/bench/wire"
)

// Contender names, in the order tables list them.
const (
	direct    = "direct"
	gobetween = "gobetween"
	haproxy   = "haproxy"
	nginx     = "nginx"
	mincopy   = "mincopy"
)

var allContenders = []string{direct, gobetween, haproxy, nginx, mincopy}

// peers are the established proxies gobetween is compared with; a ratio is taken
// against the best of them in each workload.
var peers = []string{haproxy, nginx}

// Listener kinds: what a workload connects to. A contender runs one process per
// kind it serves, so one that cannot start (a protocol its build lacks) costs
// only the workloads of that kind.
const (
	kindTCP      = "tcp"       // plain TCP relayed to the TCP backend
	kindTLSECDSA = "tls-ecdsa" // TLS terminated with an ECDSA P-256 certificate, plain TCP to the backend
	kindTLSRSA   = "tls-rsa"   // the same with an RSA 2048 certificate
	kindUDPFlow  = "udp"       // UDP relayed to the UDP backend; a session ends when idle
	kindUDPOnce  = "udp-once"  // UDP; a session ends with the backend's first reply
)

// lacks says why a contender has no listener of a kind: workloads on that kind
// are not applicable to it, and ratios are taken against the peers that have it.
var lacks = map[string]map[string]string{
	direct: {
		kindTLSECDSA: "the backend does not speak TLS",
		kindTLSRSA:   "the backend does not speak TLS",
	},
	haproxy: {
		kindUDPFlow: "HAProxy has no UDP proxy",
		kindUDPOnce: "HAProxy has no UDP proxy",
	},
	mincopy: {
		kindTLSECDSA: "the minimal proxy relays plain TCP only",
		kindTLSRSA:   "the minimal proxy relays plain TCP only",
		kindUDPFlow:  "the minimal proxy relays plain TCP only",
		kindUDPOnce:  "the minimal proxy relays plain TCP only",
	},
}

func isTLS(kind string) bool { return kind == kindTLSECDSA || kind == kindTLSRSA }
func isUDP(kind string) bool { return kind == kindUDPFlow || kind == kindUDPOnce }

// network is the socket type of a listener kind.
func network(kind string) string {
	if isUDP(kind) {
		return "udp"
	}
	return "tcp"
}

// contender is one path from the load generator to the backend.
type contender struct {
	Name    string            `json:"name"`
	Version string            `json:"version,omitempty"` // what ran, as the tool reports itself
	Addrs   map[string]string `json:"addrs,omitempty"`   // listener kind → where the load generator connects
	Skip    map[string]string `json:"skip,omitempty"`    // listener kind → why it was not started
}

// stage holds what starting the contenders needs.
type stage struct {
	ctx        context.Context
	dir        string // work directory: configs, logs, built helpers
	procs      *procs
	backend    string               // the TCP backend's address
	udpBackend string               // the UDP backend's address
	certs      map[string]certFiles // TLS listener kind → certificate
	tlsVersion uint16               // -tls-version
	gobinary   string               // -bin
	splice     bool                 // -haproxy-splice
}

// launcher starts one listener of a kind and returns its address once a request
// relayed through it has reached the backend.
type launcher func(kind string) (addr string, err error)

// startContender starts the named contender's listeners of the given kinds
// (those it has: see lacks). A listener that cannot run is recorded in Skip,
// never returned as an error: the others are still measured.
func (s *stage) startContender(name string, kinds []string) contender {
	c := contender{Name: name, Addrs: map[string]string{}, Skip: map[string]string{}}
	var launch launcher
	var prepErr error // the contender cannot run at all: every listener is skipped
	switch name {
	case direct:
		c.Version = "no proxy"
		launch = s.direct
	case gobetween:
		launch, c.Version, prepErr = s.prepareGobetween()
	case haproxy:
		launch, c.Version, prepErr = s.prepareHAProxy()
	case nginx:
		launch, c.Version, prepErr = s.prepareNginx()
	case mincopy:
		launch, c.Version, prepErr = s.prepareMincopy()
	default:
		prepErr = fmt.Errorf("unknown contender %q (known: %s)", name, strings.Join(allContenders, ", "))
	}
	for _, kind := range kinds {
		if lacks[name][kind] != "" {
			continue
		}
		if prepErr != nil {
			c.Skip[kind] = prepErr.Error()
			continue
		}
		addr, err := launch(kind)
		if err != nil {
			c.Skip[kind] = err.Error()
			continue
		}
		c.Addrs[kind] = addr
	}
	return c
}

// direct is the path without a proxy: the backend itself.
func (s *stage) direct(kind string) (string, error) {
	if isUDP(kind) {
		return s.udpBackend, nil
	}
	return s.backend, nil
}

// backendOf is the backend a listener of kind relays to.
func (s *stage) backendOf(kind string) string {
	if isUDP(kind) {
		return s.udpBackend
	}
	return s.backend
}

// listenAddr picks a free loopback address for a listener of kind.
func listenAddr(kind string) (string, error) {
	port, err := freePort(network(kind))
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", port), nil
}

func (s *stage) prepareGobetween() (launcher, string, error) {
	bin := s.gobinary
	if _, err := os.Stat(bin); err != nil {
		bin = filepath.Join(s.dir, "gobetween")
		fmt.Printf("gobetween: %s not found, building it\n", s.gobinary)
		if err := s.build(bin, "github.com/gobetween/gobetween/cmd/gobetween"); err != nil {
			return nil, "", err
		}
	}
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	return func(kind string) (string, error) {
		addr, err := listenAddr(kind)
		if err != nil {
			return "", err
		}
		protocol, extra := "tcp", ""
		switch kind {
		case kindTLSECDSA, kindTLSRSA:
			// Session tickets are off by default (tls.session_tickets).
			protocol = "tls"
			extra = fmt.Sprintf("\n  [servers.bench.tls]\n  cert_path = %q\n  key_path = %q\n", s.certs[kind].Cert, s.certs[kind].Key)
		case kindUDPFlow:
			protocol, extra = "udp", "client_idle_timeout = \"10s\"\n"
		case kindUDPOnce:
			protocol = "udp"
			extra = "client_idle_timeout = \"10s\"\n\n  [servers.bench.udp]\n  max_responses = 1\n"
		}
		cfg := fmt.Sprintf(`# Written by the benchmark harness: one %s server, one static backend.
[logging]
level = "warn"
output = "stderr"

[defaults]
drain_timeout = "1s"

[servers.bench]
bind = %q
protocol = %q
balance = "roundrobin"
%s
  [servers.bench.discovery]
  kind = "static"
  static_list = [%q]
`, kind, addr, protocol, extra, s.backendOf(kind))
		path := filepath.Join(s.dir, "gobetween-"+kind+".toml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return "", err
		}
		p, err := s.procs.start(gobetween+" "+kind, s.dir, filepath.Join(s.dir, "gobetween-"+kind+".log"), nil, nil, bin, "-c", path,
			"--data-dir", filepath.Join(s.dir, "gobetween-"+kind+"-data"))
		if err != nil {
			return "", err
		}
		return addr, s.waitReady(p, kind, addr)
	}, output(s.ctx, bin, "-v"), nil
}

// OpenSSL settings that make HAProxy and nginx do the handshake work gobetween
// (Go) does: the same TLS 1.3 suite (Go picks AES-128-GCM on a CPU with AES
// instructions), the same TLS 1.2 suites, and no session tickets or session
// cache (Go sends no ticket with session_tickets off and has no cache; the load
// generator never resumes, so both would be work for nothing).
const (
	tls13Suites = "TLS_AES_128_GCM_SHA256"
	tls12Suites = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
)

// opensslNoTickets is an OpenSSL configuration that makes every TLS server
// context send no TLS 1.3 session ticket.
const opensslNoTickets = `openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
NumTickets = 0
`

func (s *stage) prepareHAProxy() (launcher, string, error) {
	bin, err := lookTool("haproxy", "haproxy")
	if err != nil {
		return nil, "", err
	}
	version, _, _ := strings.Cut(output(s.ctx, bin, "-v"), "\n")
	return func(kind string) (string, error) {
		addr, err := listenAddr(kind)
		if err != nil {
			return "", err
		}
		global, bind := "", ""
		var env []string
		if isTLS(kind) {
			global = fmt.Sprintf("    tune.ssl.cachesize 0\n    ssl-default-bind-options no-tls-tickets\n"+
				"    ssl-default-bind-ciphersuites %s\n    ssl-default-bind-ciphers %s\n", tls13Suites, tls12Suites)
			bind = " ssl crt " + s.certs[kind].Combined
			// With no-tls-tickets OpenSSL still sends two stateful TLS 1.3
			// tickets per handshake; HAProxy 2.6 has no setting for the number,
			// OpenSSL's own configuration has.
			conf := filepath.Join(s.dir, "openssl-no-tickets.cnf")
			if err := os.WriteFile(conf, []byte(opensslNoTickets), 0o644); err != nil {
				return "", err
			}
			env = []string{"OPENSSL_CONF=" + conf}
		}
		splice := ""
		if s.splice {
			splice = "    option splice-auto\n"
		}
		// maxconn stays below this machine's 20,000 descriptors (two per connection).
		cfg := fmt.Sprintf(`# Written by the benchmark harness.
global
    maxconn 9000
    nbthread 2
%s
defaults
    mode tcp
    maxconn 9000
    timeout connect 5s
    timeout client 1m
    timeout server 1m
%s
frontend bench
    bind %s%s
    default_backend backend

backend backend
    server b1 %s
`, global, splice, addr, bind, s.backendOf(kind))
		path := filepath.Join(s.dir, "haproxy-"+kind+".cfg")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return "", err
		}
		p, err := s.procs.start(haproxy+" "+kind, s.dir, filepath.Join(s.dir, "haproxy-"+kind+".log"), env, nil, bin, "-db", "-f", path)
		if err != nil {
			return "", err
		}
		return addr, s.waitReady(p, kind, addr)
	}, version, nil
}

// streamModule is where Debian's libnginx-mod-stream puts the stream module.
const streamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

func (s *stage) prepareNginx() (launcher, string, error) {
	bin, err := lookTool("nginx", "nginx libnginx-mod-stream")
	if err != nil {
		return nil, "", err
	}
	if _, err := os.Stat(streamModule); err != nil {
		return nil, "", fmt.Errorf("%s missing: run `make bench` (it installs it) or apt-get install -y libnginx-mod-stream", streamModule)
	}
	return func(kind string) (string, error) {
		addr, err := listenAddr(kind)
		if err != nil {
			return "", err
		}
		prefix := filepath.Join(s.dir, "nginx-"+kind)
		if err := os.MkdirAll(prefix, 0o755); err != nil {
			return "", err
		}
		listen, extra := "", ""
		switch kind {
		case kindTLSECDSA, kindTLSRSA:
			// nginx 1.22 leaves TLS 1.3 out unless told.
			listen = " ssl"
			extra = fmt.Sprintf(`        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_session_cache off;
        ssl_session_tickets off;
        ssl_conf_command NumTickets 0;
        ssl_conf_command Ciphersuites %s;
        ssl_ciphers %s;
`, s.certs[kind].Cert, s.certs[kind].Key, tls13Suites, tls12Suites)
		case kindUDPFlow:
			// reuseport: the kernel hands each flow to one worker, as nginx
			// recommends for UDP; without it both workers take datagrams of one
			// flow and each opens its own session for it.
			listen, extra = " udp reuseport", "        proxy_timeout 10s;\n"
		case kindUDPOnce:
			listen, extra = " udp reuseport", "        proxy_timeout 10s;\n        proxy_responses 1;\n"
		}
		errorLog := filepath.Join(prefix, "error.log")
		cfg := fmt.Sprintf(`# Written by the benchmark harness.
load_module %s;
daemon off;
worker_processes 2;
pid %s;
error_log %s warn;

events {
    worker_connections 9000;
}

stream {
    upstream backend {
        server %s;
    }
    server {
        listen %s%s;
%s        proxy_pass backend;
    }
}
`, streamModule, filepath.Join(prefix, "nginx.pid"), errorLog, s.backendOf(kind), addr, listen, extra)
		path := filepath.Join(prefix, "nginx.conf")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			return "", err
		}
		// -e sets the log nginx writes before it has read the config (else /var/log/nginx).
		p, err := s.procs.start(nginx+" "+kind, prefix, errorLog, nil, nil, bin, "-p", prefix, "-c", path, "-e", errorLog)
		if err != nil {
			return "", err
		}
		return addr, s.waitReady(p, kind, addr)
	}, output(s.ctx, bin, "-v"), nil
}

func (s *stage) prepareMincopy() (launcher, string, error) {
	bin := filepath.Join(s.dir, "mincopy")
	if err := s.build(bin, "github.com/gobetween/gobetween/e2e/bench/mincopy"); err != nil {
		return nil, "", err
	}
	return func(kind string) (string, error) {
		addr := make(chan string, 1)
		p, err := s.procs.start(mincopy, s.dir, filepath.Join(s.dir, "mincopy.log"), nil, addr, bin, "-backend", s.backend)
		if err != nil {
			return "", err
		}
		a, err := firstLine(s.ctx, p, addr)
		if err != nil {
			return "", err
		}
		return a, s.waitReady(p, kind, a)
	}, "io.Copy proxy, " + runtime.Version(), nil
}

// startBackends builds the backend and starts it once per network the kinds
// need: TCP for the plain and TLS listeners, UDP for the UDP ones.
func (s *stage) startBackends(kinds []string) error {
	bin := filepath.Join(s.dir, "backend")
	if err := s.build(bin, "github.com/gobetween/gobetween/e2e/bench/backend"); err != nil {
		return err
	}
	start := func(kind string, args ...string) (string, error) {
		name := "backend " + network(kind)
		addr := make(chan string, 1)
		p, err := s.procs.start(name, s.dir, filepath.Join(s.dir, "backend-"+network(kind)+".log"), nil, addr, append([]string{bin}, args...)...)
		if err != nil {
			return "", err
		}
		a, err := firstLine(s.ctx, p, addr)
		if err != nil {
			return "", err
		}
		return a, s.waitReady(p, kind, a)
	}
	var err error
	if slices.ContainsFunc(kinds, func(k string) bool { return !isUDP(k) }) {
		if s.backend, err = start(kindTCP); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(kinds, isUDP) {
		if s.udpBackend, err = start(kindUDPFlow, "-udp"); err != nil {
			return err
		}
	}
	return nil
}

// writeCerts generates the certificates of the TLS kinds among kinds.
func (s *stage) writeCerts(kinds []string) error {
	s.certs = map[string]certFiles{}
	for kind, alg := range map[string]string{kindTLSECDSA: "ecdsa", kindTLSRSA: "rsa"} {
		if !slices.Contains(kinds, kind) {
			continue
		}
		f, err := writeCert(s.dir, kind, alg)
		if err != nil {
			return err
		}
		s.certs[kind] = f
	}
	return nil
}

// build compiles a package of this module into out.
func (s *stage) build(out, pkg string) error {
	cmd := exec.CommandContext(s.ctx, "go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 4 {
			lines = append(lines[:4], "...")
		}
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, strings.Join(lines, "\n"))
	}
	return nil
}

// lookTool finds a Debian-installed tool; sbin is often not on a user's PATH.
func lookTool(name, packages string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed: run `make bench` (it installs it) or apt-get install -y %s", name, packages)
}

// freePort asks the kernel for a free loopback port. Another process could take
// it before the contender binds it; the readiness check would then fail loudly.
func freePort(network string) (string, error) {
	var addr net.Addr
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer c.Close()
		addr = c.LocalAddr()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		defer ln.Close()
		addr = ln.Addr()
	}
	_, port, err := net.SplitHostPort(addr.String())
	return port, err
}

// firstLine waits for the address a helper prints on start.
func firstLine(ctx context.Context, p *proc, ch <-chan string) (string, error) {
	select {
	case a := <-ch:
		if a == "" {
			return "", fmt.Errorf("%s printed no address:\n%s", p.name, tail(p.log, 10))
		}
		return a, nil
	case <-p.done:
		return "", fmt.Errorf("%s exited on start:\n%s", p.name, tail(p.log, 10))
	case <-time.After(10 * time.Second):
		return "", fmt.Errorf("%s printed no address within 10s", p.name)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// waitReady polls until an echo round trip through addr, a listener of kind,
// succeeds, the process exits, or 10 seconds pass.
func (s *stage) waitReady(p *proc, kind, addr string) error {
	return waitReady(s.ctx, p, addr, s.check(kind))
}

// check is the readiness probe of a listener kind: one echo round trip, over a
// TLS handshake for the TLS kinds, as a datagram for the UDP ones.
func (s *stage) check(kind string) func(addr string, timeout time.Duration) error {
	switch {
	case isTLS(kind):
		return checkTLS(s.tlsVersion)
	case isUDP(kind):
		return wire.CheckUDP
	}
	return wire.Check
}

// waitReady polls until check(addr) succeeds, the process exits, or 10 seconds
// pass.
func waitReady(ctx context.Context, p *proc, addr string, check func(addr string, timeout time.Duration) error) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check(addr, time.Second)
		if err == nil {
			return nil
		}
		if done, why := p.exited(); done {
			return fmt.Errorf("%s %v on start:\n%s", p.name, why, tail(p.log, 10))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s within 10s: %w\n%s", p.name, addr, err, tail(p.log, 10))
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
