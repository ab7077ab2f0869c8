package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	dto "github.com/prometheus/client_model/go"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pkgComposeFile is the shipped compose file, relative to e2e/.
const pkgComposeFile = "../deploy/compose/docker-compose.yml"

// pkgRequireTools fails the test when a command it drives is missing.
func pkgRequireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (make test installs it): %v", tool, err)
		}
	}
}

// pkgRunID is a random suffix that keeps this run's images, containers,
// networks and volumes apart from the user's and from other runs.
func pkgRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pkgCmd runs a command to completion, failing the test when it fails.
func pkgCmd(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// pkgFreeSubnet picks a /24 (as the compose file's GOBETWEEN_SUBNET, "a.b.c")
// that overlaps no existing Docker network: the user's own compose cluster may
// be up on the default one.
func pkgFreeSubnet(t *testing.T) string {
	t.Helper()
	out := pkgCmd(t, nil, "docker", "network", "ls", "-q")
	var used []*net.IPNet
	if ids := strings.Fields(out); len(ids) > 0 {
		args := append([]string{"network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, ids...)
		for _, s := range strings.Fields(pkgCmd(t, nil, "docker", args...)) {
			if _, n, err := net.ParseCIDR(s); err == nil {
				used = append(used, n)
			}
		}
	}
	for range 200 {
		prefix := fmt.Sprintf("172.30.%d", mrand.IntN(256))
		_, cand, _ := net.ParseCIDR(prefix + ".0/24")
		free := true
		for _, u := range used {
			if u.Contains(cand.IP) || cand.Contains(u.IP) {
				free = false
				break
			}
		}
		if free {
			return prefix
		}
	}
	t.Fatalf("no free /24 in 172.30.0.0/16 among the Docker networks %v", used)
	return ""
}

// pkgCompose drives docker-compose on the shipped file under one project name.
type pkgCompose struct {
	t       *testing.T
	project string
	env     []string
}

func (c *pkgCompose) run(args ...string) string {
	c.t.Helper()
	return pkgCmd(c.t, c.env, "docker-compose", append([]string{"-p", c.project, "-f", pkgComposeFile}, args...)...)
}

// container is the id of the service's container.
func (c *pkgCompose) container(service string) string {
	c.t.Helper()
	id := c.run("ps", "-q", service)
	if id == "" {
		c.t.Fatalf("compose service %s has no container", service)
	}
	return id
}

// pkgHTTP sends one HTTP/1.0 request on a new connection through addr and
// returns the demo backend's answer line.
func pkgHTTP(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: demo\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !strings.HasPrefix(string(b), "HTTP/1.0 200") || !ok || !strings.HasPrefix(body, "hello from demo backend ") {
		return "", fmt.Errorf("unexpected answer %q", b)
	}
	return strings.TrimSpace(body), nil
}

// Phases of pkgTraffic: before n1's stop, while docker-compose stops it, after.
const (
	pkgBefore = iota
	pkgStopping
	pkgAfter
	pkgPhases
)

var pkgPhaseNames = [pkgPhases]string{"before n1's stop", "while n1 stopped", "after n1's stop"}

// pkgTraffic sends requests through one address in a loop and counts the
// answers and failures by the phase in which each request started.
type pkgTraffic struct {
	addr       string
	phase      *atomic.Int32
	ok, failed [pkgPhases]atomic.Int64
	mu         sync.Mutex
	firstErr   [pkgPhases]string
}

func (p *pkgTraffic) loop(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-stop:
			return
		default:
		}
		ph := p.phase.Load()
		if _, err := pkgHTTP(p.addr); err != nil {
			p.failed[ph].Add(1)
			p.mu.Lock()
			if p.firstErr[ph] == "" {
				p.firstErr[ph] = err.Error()
			}
			p.mu.Unlock()
		} else {
			p.ok[ph].Add(1)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// counts is "answers/failures" for each phase.
func (p *pkgTraffic) counts() string {
	var parts []string
	for ph := range pkgPhases {
		parts = append(parts, fmt.Sprintf("%d/%d", p.ok[ph].Load(), p.failed[ph].Load()))
	}
	return strings.Join(parts, " ")
}

// The shipped packaging end to end: `make docker` builds both images FROM
// scratch (static binaries, version from the build), deploy/compose brings up
// three nodes and the demo backend on a private network, the image's
// HEALTHCHECK turns every node healthy, and with one node stopped under
// traffic the other two serve every request, see it dead, and still accept a
// write (two of three voters are a quorum).
func TestPackagingComposeCluster(t *testing.T) {
	t.Parallel()
	pkgRequireTools(t, "docker", "docker-compose", "make")
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("the compose test needs a running Docker engine: %v: %s", err, out)
	}
	run := pkgRunID()
	repo := "gbt-e2e-pkg-" + run
	version := "e2e-" + run
	image, demo := repo+":latest", repo+"-demo:latest"

	// The images are removed even when the build stopped half-way.
	t.Cleanup(func() {
		for _, img := range []string{repo + ":" + run, image, repo + "-demo:" + run, demo} {
			_ = exec.Command("docker", "rmi", "-f", img).Run()
		}
	})
	start := time.Now()
	pkgCmd(t, nil, "make", "-C", "..", "docker", "DOCKER_REPO="+repo, "DOCKER_TAG="+run,
		"VERSION="+version, "DOCKER_BUILD_DIR="+filepath.Join(t.TempDir(), "build"))
	t.Logf("make docker: %v", time.Since(start).Round(time.Millisecond))

	var img struct {
		Config struct {
			User        string
			Labels      map[string]string
			Healthcheck struct{ Test []string }
			Volumes     map[string]struct{}
		}
	}
	if err := json.Unmarshal([]byte(pkgCmd(t, nil, "docker", "image", "inspect", "--format", "{{json .}}", image)), &img); err != nil {
		t.Fatalf("docker image inspect %s: %v", image, err)
	}
	if got := img.Config.Labels["org.opencontainers.image.version"]; got != version {
		t.Errorf("image label org.opencontainers.image.version = %q, want %q", got, version)
	}
	if img.Config.User != "65532:65532" {
		t.Errorf("image user = %q, want 65532:65532", img.Config.User)
	}
	if got := strings.Join(img.Config.Healthcheck.Test, " "); !strings.Contains(got, "/gobetween health") {
		t.Errorf("image HEALTHCHECK = %q, want the binary's health probe", got)
	}
	if _, ok := img.Config.Volumes["/var/lib/gobetween"]; !ok {
		t.Errorf("image volumes = %v, want /var/lib/gobetween", img.Config.Volumes)
	}

	lbPorts := [3]int{freePort(t), freePort(t), freePort(t)}
	apiPorts := [3]int{freePort(t), freePort(t), freePort(t)}
	metricsPorts := [3]int{freePort(t), freePort(t), freePort(t)}
	c := &pkgCompose{t: t, project: "gbt-e2e-pkg-" + run, env: []string{
		"GOBETWEEN_IMAGE=" + image, "GOBETWEEN_DEMO_IMAGE=" + demo, "GOBETWEEN_SUBNET=" + pkgFreeSubnet(t),
	}}
	for i := range 3 {
		c.env = append(c.env,
			fmt.Sprintf("GOBETWEEN_N%d_PORT=%d", i+1, lbPorts[i]),
			fmt.Sprintf("GOBETWEEN_N%d_API_PORT=%d", i+1, apiPorts[i]),
			fmt.Sprintf("GOBETWEEN_N%d_METRICS_PORT=%d", i+1, metricsPorts[i]))
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("docker-compose", "-p", c.project, "-f", pkgComposeFile, "logs", "--no-color", "--tail", "60").CombinedOutput()
			t.Logf("docker-compose logs:\n%s", out)
		}
		cmd := exec.Command("docker-compose", "-p", c.project, "-f", pkgComposeFile, "down", "-v", "--remove-orphans", "-t", "2")
		cmd.Env = append(os.Environ(), c.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cleanup: docker-compose down: %v\n%s", err, out)
		}
	})
	start = time.Now()
	c.run("up", "-d")

	nodes := []string{"n1", "n2", "n3"}
	ids := map[string]string{}
	for _, n := range nodes {
		ids[n] = c.container(n)
	}
	eventually(t, 40*time.Second, "three nodes healthy (the image's HEALTHCHECK)", func() error {
		for _, n := range nodes {
			out, err := exec.Command("docker", "inspect", "--format", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}} {{json .State.Health.Log}}{{end}}", ids[n]).CombinedOutput()
			if err != nil {
				return fmt.Errorf("docker inspect %s: %v: %s", n, err, out)
			}
			if f := strings.Fields(string(out)); len(f) < 2 || f[0] != "running" || f[1] != "healthy" {
				return fmt.Errorf("%s: %s", n, out)
			}
		}
		return nil
	})
	t.Logf("compose up to three healthy nodes: %v", time.Since(start).Round(time.Millisecond))

	apis := make([]apiClient, 3)
	for i := range apis {
		apis[i] = newAPI("127.0.0.1:" + strconv.Itoa(apiPorts[i]))
	}
	eventually(t, 30*time.Second, "one cluster of three voters", func() error {
		leaders := map[string]bool{}
		for i, a := range apis {
			s, err := clusterStatusOf(a)
			if err != nil {
				return fmt.Errorf("%s: %v", nodes[i], err)
			}
			if s.LeaderID == "" || countVoters(s) != 3 {
				return fmt.Errorf("%s: leader %q, %d voters", nodes[i], s.LeaderID, countVoters(s))
			}
			leaders[s.LeaderID] = true
		}
		if len(leaders) != 1 {
			return fmt.Errorf("the nodes name different leaders: %v", leaders)
		}
		return nil
	})
	for i, a := range apis {
		var root struct {
			Version string `json:"version"`
		}
		if err := a.getJSON("/", &root); err != nil {
			t.Fatalf("GET / on %s: %v", nodes[i], err)
		}
		if root.Version != version {
			t.Errorf("GET / on %s: version %q, want %q (make docker's VERSION)", nodes[i], root.Version, version)
		}
		out := pkgCmd(t, nil, "docker", "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", ids[nodes[i]])
		if out != "65532:65532 true" {
			t.Errorf("container %s: user and read-only root = %q, want \"65532:65532 true\"", nodes[i], out)
		}
	}

	// Prometheus reaches each node's metrics through the published port: one
	// leader among the three, three alive gossip members seen by each.
	eventually(t, 20*time.Second, "metrics of the three nodes", func() error {
		leaders := 0.0
		for i := range 3 {
			fams, err := metricsScrape("127.0.0.1:" + strconv.Itoa(metricsPorts[i]))
			if err != nil {
				return fmt.Errorf("%s: %v", nodes[i], err)
			}
			v, err := metricsFind(fams, "gobetween_cluster_raft_state", dto.MetricType_GAUGE, map[string]string{"state": "leader"})
			if err != nil {
				return fmt.Errorf("%s: %v", nodes[i], err)
			}
			leaders += v
			if alive, err := metricsFind(fams, "gobetween_cluster_gossip_members", dto.MetricType_GAUGE, map[string]string{"state": "alive"}); err != nil || alive != 3 {
				return fmt.Errorf("%s: gossip members alive %v, %v; want 3", nodes[i], alive, err)
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%v nodes report being leader, want 1", leaders)
		}
		return nil
	})

	traffic := make([]*pkgTraffic, 3)
	var phase atomic.Int32
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range traffic {
		traffic[i] = &pkgTraffic{addr: "127.0.0.1:" + strconv.Itoa(lbPorts[i]), phase: &phase}
		wg.Add(1)
		go traffic[i].loop(stop, &wg)
	}
	stopTraffic := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopTraffic)
	eventually(t, 15*time.Second, "traffic through every node", func() error {
		for i, p := range traffic {
			if p.ok[pkgBefore].Load() < 20 {
				return fmt.Errorf("%s: answers/failures %s (%s)", nodes[i], p.counts(), p.firstErr[pkgBefore])
			}
		}
		return nil
	})

	// n1 stops (SIGTERM, a drain, exit) while the clients keep going.
	start = time.Now()
	phase.Store(pkgStopping)
	c.run("stop", "-t", "10", "n1")
	phase.Store(pkgAfter)
	t.Logf("docker-compose stop n1: %v", time.Since(start).Round(time.Millisecond))
	for _, i := range []int{1, 2} {
		eventually(t, 20*time.Second, nodes[i]+" sees n1 dead, three voters kept", func() error {
			s, err := clusterStatusOf(apis[i])
			if err != nil {
				return err
			}
			for _, m := range s.Members {
				if m.ID == "n1" && (m.Gossip == "dead" || m.Gossip == "failed") && countVoters(s) == 3 {
					return nil
				}
			}
			return fmt.Errorf("members %+v", s.Members)
		})
	}
	// The write may meet an election when n1 led: 503 until a survivor leads.
	// A retry after a lost answer finds the server already there (409).
	body := `{"bind":":3100","discovery":{"kind":"static","static_list":["demo:8002"]}}`
	eventually(t, 15*time.Second, "a write on n2 with n1 down", func() error {
		code, b, err := apis[1].do("POST", "/servers/pkg-after-stop", body)
		if err != nil {
			return err
		}
		if code/100 != 2 && code != 409 {
			return fmt.Errorf("POST /servers/pkg-after-stop: %d %s", code, b)
		}
		return nil
	})
	eventually(t, 5*time.Second, "the write applied on n3", func() error {
		code, b, err := apis[2].do("GET", "/servers/pkg-after-stop", "")
		if err == nil && code != 200 {
			err = fmt.Errorf("GET /servers/pkg-after-stop: %d %s", code, b)
		}
		return err
	})
	eventually(t, 10*time.Second, "more traffic through n2 and n3 after the stop", func() error {
		for _, i := range []int{1, 2} {
			if n := traffic[i].ok[pkgAfter].Load(); n < 50 {
				return fmt.Errorf("%s: %d answers since n1 stopped", nodes[i], n)
			}
		}
		return nil
	})
	stopTraffic()

	// Counts are answers/failures before, during and after the stop.
	for i, p := range traffic {
		t.Logf("%s: %s", nodes[i], p.counts())
	}
	for _, i := range []int{1, 2} {
		p := traffic[i]
		for ph := range pkgPhases {
			if f := p.failed[ph].Load(); f != 0 {
				t.Errorf("%s failed %d requests %s (first: %s); a surviving node must serve every one", nodes[i], f, pkgPhaseNames[ph], p.firstErr[ph])
			}
		}
	}
	// n1 may fail only what it was serving while it stopped.
	p := traffic[0]
	if f := p.failed[pkgBefore].Load(); f != 0 {
		t.Errorf("n1 failed %d requests before it was stopped (first: %s)", f, p.firstErr[pkgBefore])
	}
	if n := p.ok[pkgAfter].Load(); n != 0 {
		t.Errorf("n1 answered %d requests after docker-compose stop returned", n)
	}
	if p.failed[pkgAfter].Load() == 0 {
		t.Errorf("no request through n1 was tried after its stop: the test proves nothing about it")
	}
}
