package discovery

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/gobetween/gobetween/config"
)

func TestDockerEndpoint(t *testing.T) {
	tests := []struct {
		in      string
		want    dockerEndpoint
		wantErr string
	}{
		{"unix:///var/run/docker.sock", dockerEndpoint{host: "unix:///var/run/docker.sock", engineHost: "127.0.0.1"}, ""},
		{"tcp://docker.example:2375", dockerEndpoint{host: "tcp://docker.example:2375", engineHost: "docker.example"}, ""},
		{"tcp://10.0.0.5:2375/", dockerEndpoint{host: "tcp://10.0.0.5:2375", engineHost: "10.0.0.5"}, ""},
		{"tcp://[fd00::5]:2375", dockerEndpoint{host: "tcp://[fd00::5]:2375", engineHost: "fd00::5"}, ""},
		{"http://localhost:2375", dockerEndpoint{host: "tcp://localhost:2375", engineHost: "localhost"}, ""},
		{"https://docker.example:2376", dockerEndpoint{host: "tcp://docker.example:2376", tls: true, engineHost: "docker.example"}, ""},
		{"", dockerEndpoint{}, "want a unix://"},
		{"docker.example:2375", dockerEndpoint{}, "want a unix://"},
		{"ftp://docker.example:2375", dockerEndpoint{}, "want a unix://"},
		{"unix://var/run/docker.sock", dockerEndpoint{}, "want unix:///path"},
		{"unix://", dockerEndpoint{}, "want unix:///path"},
		{"tcp://docker.example", dockerEndpoint{}, "want tcp://host:port"},
		{"tcp://:2375", dockerEndpoint{}, "want tcp://host:port"},
		{"tcp://h:2375/v1.41", dockerEndpoint{}, "want tcp://host:port"},
		{"tcp://h:0", dockerEndpoint{}, "from 1 to 65535"},
		{"tcp://h:x", dockerEndpoint{}, "bad URL"},
		{"tcp://h%zz:1", dockerEndpoint{}, "bad URL"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseDockerEndpoint(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseDockerEndpoint(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseDockerEndpoint(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestDockerFactoryRejects(t *testing.T) {
	base := func(change func(d *config.Discovery)) config.Discovery {
		d := config.Discovery{Kind: "docker", DockerEndpoint: "tcp://127.0.0.1:2375", DockerContainerPrivatePort: 80}
		change(&d)
		return d
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name    string
		cfg     config.Discovery
		wantErr string
	}{
		{"no endpoint", base(func(d *config.Discovery) { d.DockerEndpoint = "" }), "docker_endpoint"},
		{"port 0", base(func(d *config.Discovery) { d.DockerContainerPrivatePort = 0 }), "docker_container_private_port"},
		{"port too large", base(func(d *config.Discovery) { d.DockerContainerPrivatePort = 65536 }), "got 65536"},
		{"label without key", base(func(d *config.Discovery) { d.DockerContainerLabel = "=x" }), "docker_container_label"},
		{"tls on unix", base(func(d *config.Discovery) {
			d.DockerEndpoint = "unix:///var/run/docker.sock"
			d.DockerTlsEnabled = true
		}), "needs a tcp://"},
		{"cert without key", base(func(d *config.Discovery) {
			d.DockerTlsEnabled = true
			d.DockerTlsCertPath = missing
		}), "both or neither"},
		{"unreadable ca", base(func(d *config.Discovery) {
			d.DockerTlsEnabled = true
			d.DockerTlsCacertPath = missing
		}), "missing.pem"},
		{"https implies tls", base(func(d *config.Discovery) {
			d.DockerEndpoint = "https://127.0.0.1:2376"
			d.DockerTlsCertPath, d.DockerTlsKeyPath = missing, missing
		}), "missing.pem"},
	}
	reg := NewRegistry()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := reg.New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New = %v, %v; want an error with %q", p, err, tc.wantErr)
			}
		})
	}
	// The paths without docker_tls_enabled are ignored, as in 0.8.
	if _, err := reg.New(base(func(d *config.Discovery) { d.DockerTlsCacertPath = missing })); err != nil {
		t.Fatalf("TLS paths without docker_tls_enabled: %v", err)
	}
}

func dockerPort(ip string, private, public uint16, proto string) container.Port {
	return container.Port{IP: ip, PrivatePort: private, PublicPort: public, Type: proto}
}

func dockerNets(nets map[string]*network.EndpointSettings) *container.NetworkSettingsSummary {
	return &container.NetworkSettingsSummary{Networks: nets}
}

func dockerBridge(ip string) *container.NetworkSettingsSummary {
	return dockerNets(map[string]*network.EndpointSettings{"bridge": {IPAddress: ip}})
}

func withSni(b config.Backend, sni string) config.Backend {
	b.Sni = sni
	return b
}

func TestDockerBackends(t *testing.T) {
	v := dockerView{privatePort: 80, engineHost: "docker.example"}
	hostMode := container.Summary{ID: "h", NetworkSettings: dockerNets(map[string]*network.EndpointSettings{"host": {}})}
	hostMode.HostConfig.NetworkMode = "host"
	tests := []struct {
		name     string
		list     []container.Summary
		envHosts map[string]string
		want     []config.Backend
	}{
		{"none", nil, nil, []config.Backend{}},
		{"published on every interface, v4 and v6, once", []container.Summary{{
			ID:     "a",
			Labels: map[string]string{"sni": "a.example"},
			Ports: []container.Port{
				dockerPort("0.0.0.0", 80, 32768, "tcp"), dockerPort("::", 80, 32768, "tcp"),
				dockerPort("0.0.0.0", 443, 32769, "tcp"),
			},
			NetworkSettings: dockerBridge("172.17.0.2"),
		}}, nil, []config.Backend{withSni(backend("docker.example", "32768", 1, 1), "a.example")}},
		{"v4 and v6 wildcards on different host ports: the v4 one", []container.Summary{{
			ID:              "a",
			Ports:           []container.Port{dockerPort("::", 80, 32776, "tcp"), dockerPort("0.0.0.0", 80, 32775, "tcp")},
			NetworkSettings: dockerBridge("172.17.0.2"),
		}}, nil, []config.Backend{backend("docker.example", "32775", 1, 1)}},
		{"only a v6 wildcard", []container.Summary{{
			ID: "a", Ports: []container.Port{dockerPort("::", 80, 32776, "tcp")}, NetworkSettings: dockerBridge("172.17.0.2"),
		}}, nil, []config.Backend{backend("docker.example", "32776", 1, 1)}},
		{"published on one address", []container.Summary{{
			ID: "a", Ports: []container.Port{dockerPort("10.1.2.3", 80, 8080, "tcp")}, NetworkSettings: dockerBridge("172.17.0.2"),
		}}, nil, []config.Backend{backend("10.1.2.3", "8080", 1, 1)}},
		{"published twice, tcp and udp", []container.Summary{{
			ID: "a",
			Ports: []container.Port{
				dockerPort("0.0.0.0", 80, 8081, "tcp"), dockerPort("0.0.0.0", 80, 8082, "tcp"), dockerPort("0.0.0.0", 80, 8081, "udp"),
			},
		}}, nil, []config.Backend{backend("docker.example", "8081", 1, 1), backend("docker.example", "8082", 1, 1)}},
		{"env host wins for a published port", []container.Summary{{
			ID: "a", Ports: []container.Port{dockerPort("10.1.2.3", 80, 8080, "tcp")},
		}}, map[string]string{"a": "node7.example"}, []config.Backend{backend("node7.example", "8080", 1, 1)}},
		{"env host ignored for an unpublished port", []container.Summary{{
			ID: "a", NetworkSettings: dockerBridge("172.17.0.2"),
		}}, map[string]string{"a": "node7.example"}, []config.Backend{backend("172.17.0.2", "80", 1, 1)}},
		{"exposed, not published: own address (0.8 #46, #47 gave port 0)", []container.Summary{{
			ID: "a", Ports: []container.Port{dockerPort("", 80, 0, "tcp")}, NetworkSettings: dockerBridge("172.17.0.3"),
		}}, nil, []config.Backend{backend("172.17.0.3", "80", 1, 1)}},
		{"not listed: own address", []container.Summary{{
			ID: "a", Ports: []container.Port{dockerPort("0.0.0.0", 9090, 9090, "tcp")}, NetworkSettings: dockerBridge("172.17.0.4"),
		}}, nil, []config.Backend{backend("172.17.0.4", "80", 1, 1)}},
		{"first network by name with IPv4", []container.Summary{{
			ID: "a", NetworkSettings: dockerNets(map[string]*network.EndpointSettings{
				"zeta": {IPAddress: "10.0.0.9"}, "beta": {IPAddress: "10.0.0.5"}, "alpha": {GlobalIPv6Address: "fd00::7"}, "nil": nil,
			}),
		}}, nil, []config.Backend{backend("10.0.0.5", "80", 1, 1)}},
		{"IPv6 only", []container.Summary{{
			ID: "a", NetworkSettings: dockerNets(map[string]*network.EndpointSettings{"v6": {GlobalIPv6Address: "fd00::7"}}),
		}}, nil, []config.Backend{backend("fd00::7", "80", 1, 1)}},
		{"host network", []container.Summary{hostMode}, nil, []config.Backend{backend("docker.example", "80", 1, 1)}},
		{"no address", []container.Summary{
			{ID: "a"},
			{ID: "b", NetworkSettings: dockerNets(map[string]*network.EndpointSettings{"none": {}})},
			{ID: "c", NetworkSettings: dockerBridge("not-an-ip")},
		}, nil, []config.Backend{}},
		{"several containers in order", []container.Summary{
			{ID: "a", NetworkSettings: dockerBridge("172.17.0.2")},
			{ID: "b", Ports: []container.Port{dockerPort("0.0.0.0", 80, 8080, "tcp")}},
			{ID: "c", NetworkSettings: dockerBridge("172.17.0.2")},
		}, nil, []config.Backend{
			backend("172.17.0.2", "80", 1, 1), backend("docker.example", "8080", 1, 1), backend("172.17.0.2", "80", 1, 1),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := v.backends(tc.list, tc.envHosts)
			if got == nil || !slices.Equal(got, tc.want) {
				t.Fatalf("backends =\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func TestDockerEnvValue(t *testing.T) {
	env := []string{"PATH=/bin", "HOSTISH", "GBT_HOST= 10.0.0.1 ", "V6=[fd00::1]", "EMPTY="}
	for name, want := range map[string]string{"GBT_HOST": "10.0.0.1", "V6": "fd00::1", "EMPTY": "", "HOSTISH": "", "NONE": ""} {
		if got := envValue(env, name); got != want {
			t.Errorf("envValue(%s) = %q, want %q", name, got, want)
		}
	}
}

// TestDockerFetchHonoursContext uses an engine that accepts and never answers.
func TestDockerFetchHonoursContext(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	p := newDockerForTest(t, config.Discovery{Kind: "docker", DockerEndpoint: "unix://" + sock, DockerContainerPrivatePort: 80})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	got, err := p.Fetch(ctx)
	if err == nil {
		t.Fatalf("Fetch = %v, want an error", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Fetch returned after %s, the context ended after 200ms", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "unix://"+sock) {
		t.Fatalf("Fetch error %q: want a deadline error naming the endpoint", err)
	}

	// No engine at all: an error naming the endpoint.
	gone := "unix://" + filepath.Join(t.TempDir(), "none.sock")
	p = newDockerForTest(t, config.Discovery{Kind: "docker", DockerEndpoint: gone, DockerContainerPrivatePort: 80})
	if got, err := p.Fetch(context.Background()); err == nil || !strings.Contains(err.Error(), gone) {
		t.Fatalf("Fetch without an engine = %v, %v; want an error naming %s", got, err, gone)
	}
}

func newDockerForTest(t *testing.T, cfg config.Discovery) *dockerProvider {
	t.Helper()
	p, err := newDocker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dp := p.(*dockerProvider)
	t.Cleanup(func() { dp.Close() })
	return dp
}

// dockerEngine is the real engine the test talks to, with the test's image and
// a label key unique to the run that marks (and cleans up) its containers.
type dockerEngine struct {
	t        *testing.T
	cli      *client.Client
	endpoint string
	labelKey string
	image    string
	prefix   string
}

// newDockerEngine connects to DOCKER_HOST or the default socket, fails the test
// if no engine answers, and builds the backend image FROM scratch.
func newDockerEngine(t *testing.T) *dockerEngine {
	t.Helper()
	endpoint := os.Getenv("DOCKER_HOST")
	if endpoint == "" {
		endpoint = "unix:///var/run/docker.sock"
	}
	cli, err := client.NewClientWithOpts(client.WithHost(endpoint), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client for %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		t.Fatalf("docker engine not reachable at %s: %v\n"+
			"the docker discovery tests need a running engine (../shared/TESTING.md); DOCKER_HOST selects another one", endpoint, err)
	}
	var id [4]byte
	rand.Read(id[:])
	run := hex.EncodeToString(id[:])
	e := &dockerEngine{
		t:        t,
		cli:      cli,
		endpoint: endpoint,
		labelKey: "gbt.test.docker-discovery." + run,
		image:    "gbt-docker-discovery:" + run,
		prefix:   "gbt-dd-" + run + "-",
	}
	t.Cleanup(e.cleanup)
	e.buildImage()
	return e
}

// cleanup removes the run's containers (by label) and then its image.
func (e *dockerEngine) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", e.labelKey))})
	if err != nil {
		e.t.Errorf("cleanup: list containers: %v", err)
	}
	for _, c := range list {
		if err := e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
			e.t.Errorf("cleanup: remove container %s: %v", c.ID, err)
		}
	}
	if _, err := e.cli.ImageRemove(ctx, e.image, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !strings.Contains(err.Error(), "No such image") {
		e.t.Errorf("cleanup: remove image %s: %v", e.image, err)
	}
}

// buildImage compiles testdata/dockerbackend statically and builds an image
// FROM scratch around it (there is no registry to pull from here).
func (e *dockerEngine) buildImage() {
	t := e.t
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool for the backend image: %v", err)
	}
	cmd := exec.Command(goBin, "build", "-o", app, "./testdata/dockerbackend")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build backend: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(app)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{
		{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n")},
		{"app", 0o755, bin},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := e.cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags: []string{e.image}, NoCache: true, Remove: true, ForceRemove: true, Labels: map[string]string{e.labelKey: "image"},
	})
	if err != nil {
		t.Fatalf("docker build %s: %v", e.image, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("docker build %s: reading the answer: %v", e.image, err)
		}
		if m.Error != "" {
			t.Fatalf("docker build %s: %s", e.image, m.Error)
		}
	}
	if _, err := e.cli.ImageInspect(ctx, e.image); err != nil {
		t.Fatalf("docker build %s: image missing afterwards: %v", e.image, err)
	}
}

// dockerRun describes one test container; the backend listens on 8080.
type dockerRun struct {
	name    string
	label   string // value of the run's label key
	labels  map[string]string
	env     []string
	expose  bool // EXPOSE 8080 (listed in the container's ports, unpublished)
	publish bool // publish 8080 on a port the engine picks, every interface
	noStart bool
}

// dockerStarted is a started container as the test expects to discover it.
type dockerStarted struct {
	id, name   string
	ip         string // on the default bridge
	publicPort string // "" when not published
}

func (e *dockerEngine) run(r dockerRun) dockerStarted {
	t := e.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	labels := map[string]string{e.labelKey: r.label}
	for k, v := range r.labels {
		labels[k] = v
	}
	cfg := &container.Config{Image: e.image, Labels: labels, Env: append([]string{"GBT_NAME=" + r.name}, r.env...)}
	host := &container.HostConfig{}
	if r.expose || r.publish {
		cfg.ExposedPorts = nat.PortSet{"8080/tcp": {}}
	}
	if r.publish {
		host.PortBindings = nat.PortMap{"8080/tcp": {{}}}
	}
	created, err := e.cli.ContainerCreate(ctx, cfg, host, nil, nil, e.prefix+r.name)
	if err != nil {
		t.Fatalf("create container %s: %v", r.name, err)
	}
	s := dockerStarted{id: created.ID, name: r.name}
	if r.noStart {
		return s
	}
	if err := e.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container %s: %v", r.name, err)
	}
	info, err := e.cli.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatalf("inspect container %s: %v", r.name, err)
	}
	if ep := info.NetworkSettings.Networks["bridge"]; ep != nil {
		s.ip = ep.IPAddress
	}
	if s.ip == "" {
		t.Fatalf("container %s has no address on the bridge network", r.name)
	}
	if r.publish {
		// Docker may give 0.0.0.0 and :: different host ports; the provider
		// lists the IPv4 one.
		for _, b := range info.NetworkSettings.Ports["8080/tcp"] {
			if ip := net.ParseIP(b.HostIP); s.publicPort == "" || (ip != nil && ip.To4() != nil) {
				s.publicPort = b.HostPort
			}
		}
		if s.publicPort == "" {
			t.Fatalf("container %s: port 8080 not published: %v", r.name, info.NetworkSettings.Ports)
		}
	}
	return s
}

func (e *dockerEngine) stop(s dockerStarted) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	timeout := 5
	if err := e.cli.ContainerStop(ctx, s.id, container.StopOptions{Timeout: &timeout}); err != nil {
		e.t.Fatalf("stop container %s: %v", s.name, err)
	}
}

// waitDocker polls Fetch until it returns want (in any order) or 20s pass.
func waitDocker(t *testing.T, p Provider, want ...config.Backend) []config.Backend {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got []config.Backend
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err = p.Fetch(ctx)
		cancel()
		if err == nil && slices.Equal(sortedCopy(got), sortedCopy(want)) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("Fetch = %v, %v\nwant (any order) %v", got, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dialDocker checks that b answers as the backend named name. A container is
// listed as running before its process listens, so a refused dial is retried
// for a while.
func dialDocker(t *testing.T, b config.Backend, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var c net.Conn
	var err error
	for {
		if c, err = net.DialTimeout("tcp", b.Address(), 5*time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s (%s): %v", b.Address(), name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if want := "gbt-backend " + name + "\n"; err != nil || line != want {
		t.Fatalf("%s answered %q, %v; want %q", b.Address(), line, err, want)
	}
}

// TestDockerEngine runs the provider against the real engine of this machine.
func TestDockerEngine(t *testing.T) {
	e := newDockerEngine(t)
	ep, err := parseDockerEndpoint(e.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	cfg := func(label, envVar string) config.Discovery {
		return config.Discovery{
			Kind: "docker", DockerEndpoint: e.endpoint, DockerContainerLabel: label,
			DockerContainerPrivatePort: 8080, DockerContainerHostEnvVar: envVar,
		}
	}
	pub := e.run(dockerRun{name: "pub", label: "a", labels: map[string]string{"sni": "pub.example"}, publish: true})
	exposed := e.run(dockerRun{name: "exposed", label: "a", expose: true})
	other := e.run(dockerRun{name: "other", label: "b"})
	e.run(dockerRun{name: "idle", label: "a", publish: true, noStart: true})

	pubBackend := withSni(backend(ep.engineHost, pub.publicPort, 1, 1), "pub.example")
	exposedBackend := backend(exposed.ip, "8080", 1, 1)
	otherBackend := backend(other.ip, "8080", 1, 1)

	p := newDockerForTest(t, cfg(e.labelKey+"=a", ""))
	waitDocker(t, p, pubBackend, exposedBackend)
	dialDocker(t, pubBackend, "pub")
	dialDocker(t, exposedBackend, "exposed")

	t.Run("label key only", func(t *testing.T) {
		all := newDockerForTest(t, cfg(e.labelKey, ""))
		waitDocker(t, all, pubBackend, exposedBackend, otherBackend)
		dialDocker(t, otherBackend, "other")
	})

	t.Run("stopped container disappears, started one appears", func(t *testing.T) {
		e.stop(exposed)
		waitDocker(t, p, pubBackend)
		late := e.run(dockerRun{name: "late", label: "a"})
		lateBackend := backend(late.ip, "8080", 1, 1)
		waitDocker(t, p, pubBackend, lateBackend)
		dialDocker(t, lateBackend, "late")
	})

	t.Run("host from env var", func(t *testing.T) {
		envPub := e.run(dockerRun{name: "envpub", label: "c", env: []string{"GBT_HOST=127.0.0.2"}, publish: true})
		plainPub := e.run(dockerRun{name: "plainpub", label: "c", publish: true})
		envUnpub := e.run(dockerRun{name: "envunpub", label: "c", env: []string{"GBT_HOST=127.0.0.2"}})
		pe := newDockerForTest(t, cfg(e.labelKey+"=c", "GBT_HOST"))
		got := waitDocker(t, pe,
			backend("127.0.0.2", envPub.publicPort, 1, 1),
			backend(ep.engineHost, plainPub.publicPort, 1, 1),
			backend(envUnpub.ip, "8080", 1, 1))
		names := map[string]string{envPub.publicPort: "envpub", plainPub.publicPort: "plainpub", "8080": "envunpub"}
		for _, b := range got {
			dialDocker(t, b, names[b.Port])
		}
	})

	t.Run("through a Source", func(t *testing.T) {
		src := NewSource(config.Discovery{Kind: "docker", Interval: config.Duration{D: 100 * time.Millisecond}, Timeout: config.Duration{D: 5 * time.Second}}, p, nil)
		ctx, cancel := context.WithCancel(context.Background())
		lists := make(chan []config.Backend, 16)
		done := make(chan struct{})
		go func() {
			defer close(done)
			src.Run(ctx, func(l []config.Backend) { lists <- l })
		}()
		defer func() { cancel(); <-done }()
		next := func() []config.Backend {
			select {
			case l := <-lists:
				return l
			case <-time.After(20 * time.Second):
				t.Fatal("no list from the Source within 20s")
				return nil
			}
		}
		first := next()
		if len(first) != 2 || !slices.Contains(first, pubBackend) {
			t.Fatalf("first list %v: want pub and late", first)
		}
		e.stop(pub)
		if l := next(); slices.Contains(l, pubBackend) || len(l) != 1 {
			t.Fatalf("after stopping pub: %v", l)
		}
	})
}

// FuzzDockerBackends feeds arbitrary container lists (as the engine's JSON)
// to the conversion: it must not panic, must be deterministic and must only
// produce usable targets.
func FuzzDockerBackends(f *testing.F) {
	seeds, err := filepath.Glob("testdata/docker/*.json")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds in testdata/docker: %v", err)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint16(8080), "127.0.0.1", "")
		f.Add(data, uint16(80), "docker.example", "10.9.9.9")
	}
	f.Add([]byte(`[{"Id":"a","Ports":[{"PrivatePort":80,"PublicPort":1,"IP":"::"}],"HostConfig":{"NetworkMode":"host"},"NetworkSettings":{"Networks":{"x":null}}}]`), uint16(80), "h", "")
	f.Fuzz(func(t *testing.T, data []byte, port uint16, engineHost, envHost string) {
		var list []container.Summary
		if json.Unmarshal(data, &list) != nil || port == 0 {
			return
		}
		if engineHost == "" {
			engineHost = "127.0.0.1" // parseDockerEndpoint never gives ""
		}
		var env map[string]string
		if len(list) > 0 && envHost != "" {
			env = map[string]string{list[0].ID: envHost}
		}
		v := dockerView{privatePort: port, engineHost: engineHost}
		got := v.backends(list, env)
		if again := v.backends(list, env); !slices.Equal(got, again) {
			t.Fatalf("not deterministic: %v then %v", got, again)
		}
		limit := 0
		for _, c := range list {
			limit += 1 + len(c.Ports)
		}
		if len(got) > limit {
			t.Fatalf("%d backends from %d containers", len(got), len(list))
		}
		for _, b := range got {
			n, err := strconv.Atoi(b.Port)
			if b.Host == "" || err != nil || n < 1 || n > 65535 || b.Weight != 1 || b.Priority != 1 {
				t.Fatalf("unusable backend %+v", b)
			}
			if _, _, err := net.SplitHostPort(b.Address()); err != nil {
				t.Fatalf("backend %+v: address %q: %v", b, b.Address(), err)
			}
		}
	})
}

// TestDockerSeeds checks the conversion of the captured engine answers the
// fuzzer starts from, so that the seeds are known to mean something.
func TestDockerSeeds(t *testing.T) {
	data, err := os.ReadFile("testdata/docker/containers.json")
	if err != nil {
		t.Fatal(err)
	}
	var list []container.Summary
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	got := dockerView{privatePort: 8080, engineHost: "127.0.0.1"}.backends(list, nil)
	var lines []string
	for _, b := range got {
		lines = append(lines, fmt.Sprintf("%s sni=%q", b.Address(), b.Sni))
	}
	// Captured from Docker 20.10 (API 1.41): "late" (no port listed), "exposed"
	// (8080 listed, unpublished), "pub" (published on 0.0.0.0 and ::).
	want := []string{`172.17.0.4:8080 sni=""`, `172.17.0.3:8080 sni=""`, `127.0.0.1:32771 sni="pub.example"`}
	if !slices.Equal(lines, want) {
		t.Fatalf("backends of containers.json:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}
