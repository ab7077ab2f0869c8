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

// contender is one path from the load generator to the backend.
type contender struct {
	Name    string `json:"name"`
	Addr    string `json:"addr,omitempty"`    // where the load generator connects
	Version string `json:"version,omitempty"` // what ran, as the tool reports itself
	Skip    string `json:"skip,omitempty"`    // why it was not measured
}

// stage holds what starting the contenders needs.
type stage struct {
	ctx      context.Context
	dir      string // work directory: configs, logs, built helpers
	procs    *procs
	backend  string // the backend's address
	gobinary string // -bin
	splice   bool   // -haproxy-splice
}

// startContender starts the named contender and waits until a request relayed
// through it reaches the backend. A contender that cannot run is returned with
// Skip set, never an error: the others are still measured.
func (s *stage) startContender(name string) contender {
	c := contender{Name: name}
	var err error
	switch name {
	case direct:
		c.Addr, c.Version = s.backend, "no proxy"
		return c
	case gobetween:
		err = s.startGobetween(&c)
	case haproxy:
		err = s.startHAProxy(&c)
	case nginx:
		err = s.startNginx(&c)
	case mincopy:
		err = s.startMincopy(&c)
	default:
		err = fmt.Errorf("unknown contender %q (known: %s)", name, strings.Join(allContenders, ", "))
	}
	if err != nil {
		c.Addr, c.Skip = "", err.Error()
	}
	return c
}

func (s *stage) startGobetween(c *contender) error {
	bin := s.gobinary
	if _, err := os.Stat(bin); err != nil {
		bin = filepath.Join(s.dir, "gobetween")
		fmt.Printf("gobetween: %s not found, building it\n", s.gobinary)
		if err := s.build(bin, "github.com/gobetween/gobetween/cmd/gobetween"); err != nil {
			return err
		}
	}
	if abs, err := filepath.Abs(bin); err == nil {
		bin = abs
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	c.Addr = net.JoinHostPort("127.0.0.1", port)
	cfg := fmt.Sprintf(`# Written by the benchmark harness: one TCP server, one static backend.
[logging]
level = "warn"
output = "stderr"

[defaults]
drain_timeout = "1s"

[servers.bench]
bind = %q
protocol = "tcp"
balance = "roundrobin"

  [servers.bench.discovery]
  kind = "static"
  static_list = [%q]
`, c.Addr, s.backend)
	path := filepath.Join(s.dir, "gobetween.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	c.Version = output(s.ctx, bin, "-v")
	p, err := s.procs.start(gobetween, s.dir, filepath.Join(s.dir, "gobetween.log"), nil, bin, "-c", path)
	if err != nil {
		return err
	}
	return waitReady(s.ctx, p, c.Addr)
}

func (s *stage) startHAProxy(c *contender) error {
	bin, err := lookTool("haproxy", "haproxy")
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	c.Addr = net.JoinHostPort("127.0.0.1", port)
	splice := ""
	if s.splice {
		splice = "    option splice-auto\n"
	}
	// maxconn stays below this machine's 20,000 descriptors (two per connection).
	cfg := fmt.Sprintf(`# Written by the benchmark harness.
global
    maxconn 9000
    nbthread 2

defaults
    mode tcp
    maxconn 9000
    timeout connect 5s
    timeout client 1m
    timeout server 1m
%s
frontend bench
    bind %s
    default_backend backend

backend backend
    server b1 %s
`, splice, c.Addr, s.backend)
	path := filepath.Join(s.dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	if v := output(s.ctx, bin, "-v"); v != "" {
		c.Version, _, _ = strings.Cut(v, "\n")
	}
	p, err := s.procs.start(haproxy, s.dir, filepath.Join(s.dir, "haproxy.log"), nil, bin, "-db", "-f", path)
	if err != nil {
		return err
	}
	return waitReady(s.ctx, p, c.Addr)
}

// streamModule is where Debian's libnginx-mod-stream puts the stream module.
const streamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

func (s *stage) startNginx(c *contender) error {
	bin, err := lookTool("nginx", "nginx libnginx-mod-stream")
	if err != nil {
		return err
	}
	if _, err := os.Stat(streamModule); err != nil {
		return fmt.Errorf("%s missing: run `make bench` (it installs it) or apt-get install -y libnginx-mod-stream", streamModule)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	c.Addr = net.JoinHostPort("127.0.0.1", port)
	prefix := filepath.Join(s.dir, "nginx")
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return err
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
        listen %s;
        proxy_pass backend;
    }
}
`, streamModule, filepath.Join(prefix, "nginx.pid"), errorLog, s.backend, c.Addr)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	c.Version = output(s.ctx, bin, "-v")
	// -e sets the log nginx writes before it has read the config (else /var/log/nginx).
	p, err := s.procs.start(nginx, prefix, errorLog, nil, bin, "-p", prefix, "-c", path, "-e", errorLog)
	if err != nil {
		return err
	}
	return waitReady(s.ctx, p, c.Addr)
}

func (s *stage) startMincopy(c *contender) error {
	bin := filepath.Join(s.dir, "mincopy")
	if err := s.build(bin, "github.com/gobetween/gobetween/e2e/bench/mincopy"); err != nil {
		return err
	}
	c.Version = "io.Copy proxy, " + runtime.Version()
	addr := make(chan string, 1)
	p, err := s.procs.start(mincopy, s.dir, filepath.Join(s.dir, "mincopy.log"), addr, bin, "-backend", s.backend)
	if err != nil {
		return err
	}
	if c.Addr, err = firstLine(s.ctx, p, addr); err != nil {
		return err
	}
	return waitReady(s.ctx, p, c.Addr)
}

// startBackend builds and starts the backend every contender relays to.
func (s *stage) startBackend() error {
	bin := filepath.Join(s.dir, "backend")
	if err := s.build(bin, "github.com/gobetween/gobetween/e2e/bench/backend"); err != nil {
		return err
	}
	addr := make(chan string, 1)
	p, err := s.procs.start("backend", s.dir, filepath.Join(s.dir, "backend.log"), addr, bin)
	if err != nil {
		return err
	}
	if s.backend, err = firstLine(s.ctx, p, addr); err != nil {
		return err
	}
	return waitReady(s.ctx, p, s.backend)
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
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
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

// waitReady polls until an echo round trip through addr succeeds, the process
// exits, or 10 seconds pass.
func waitReady(ctx context.Context, p *proc, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := wire.Check(addr, time.Second)
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
