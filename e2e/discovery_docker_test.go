package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// dockerKind is the real Docker engine behind an in-process proxy the test
// can make answer garbage, and a backend image built FROM scratch from
// discovery/testdata/dockerbackend (a TCP server that greets with
// "gbt-backend $GBT_NAME" and closes).
type dockerKind struct {
	t        *testing.T
	labelKey string
	image    string
	proxy    *httptest.Server
	garbage  atomic.Bool
}

func newDockerKind(t *testing.T) *dockerKind {
	t.Helper()
	sock := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		sock = strings.TrimPrefix(h, "unix://")
	}
	var id [4]byte
	_, _ = rand.Read(id[:])
	run := hex.EncodeToString(id[:])
	k := &dockerKind{t: t, labelKey: "gbt.test.e2e-discovery." + run, image: "gbt-e2e-discovery:" + run}
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("the docker discovery test needs a running engine and the docker CLI: %v: %s", err, out)
	}
	t.Cleanup(k.cleanup)
	k.buildImage()

	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: "docker"})
	rp.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	k.proxy = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k.garbage.Load() {
			_, _ = w.Write([]byte("<html>garbage: not the Docker API"))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(k.proxy.Close)
	return k
}

func (k *dockerKind) docker(args ...string) string {
	k.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		k.t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func (k *dockerKind) buildImage() {
	dir := k.t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "app"), "./discovery/testdata/dockerbackend")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		k.t.Fatalf("build the docker backend: %v: %s", err, out)
	}
	writeFile(k.t, filepath.Join(dir, "Dockerfile"), "FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n")
	k.docker("build", "-q", "-t", k.image, "--label", k.labelKey+"=image", dir)
}

func (k *dockerKind) cleanup() {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+k.labelKey).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		if out, err := exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
			k.t.Errorf("cleanup: docker rm: %v: %s", err, out)
		}
	}
	_ = exec.Command("docker", "rmi", "-f", k.image).Run()
}

// run starts a container labelled labelKey=a, port 8080 published on an
// engine-picked port of 127.0.0.1; it returns the id and that port.
func (k *dockerKind) run(name string) (string, string) {
	k.t.Helper()
	id := k.docker("run", "-d", "--label", k.labelKey+"=a", "-e", "GBT_NAME="+name, "-p", "127.0.0.1::8080", k.image)
	hostPort := k.docker("port", id, "8080/tcp")
	_, port, err := net.SplitHostPort(strings.Fields(hostPort)[0])
	if err != nil {
		k.t.Fatalf("docker port %s: %q: %v", id, hostPort, err)
	}
	return id, port
}

func (k *dockerKind) section() string {
	return fmt.Sprintf("kind = \"docker\"\ninterval = \"200ms\"\ntimeout = \"2s\"\ndocker_endpoint = %q\ndocker_container_label = %q\ndocker_container_private_port = 8080\n",
		"tcp://"+strings.TrimPrefix(k.proxy.URL, "http://"), k.labelKey+"=a")
}

// greeting connects to addr and reads the docker backend's one line.
func greeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read greeting: %w", err)
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "gbt-backend "), nil
}

func countGreetings(t *testing.T, addr string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		name, err := greeting(addr)
		if err != nil {
			t.Fatalf("through %s: %v", addr, err)
		}
		got[name]++
	}
	return got
}

// The docker kind against the real engine: running containers with the label
// are the backends (weight 1: the kind has no weight), traffic reaches them,
// a removed container disappears, an engine answering garbage keeps the set
// under keeplast and empties it under setempty.
func TestDiscoveryDockerSingleNode(t *testing.T) {
	t.Parallel()
	k := newDockerKind(t)
	_, pa := k.run("a")

	apiPort, keepPort, emptyPort := freePort(t), freePort(t), freePort(t)
	n := startNode(t, discoServers(apiPort, keepPort, emptyPort, k.section()))
	a := newAPI("127.0.0.1:" + strconv.Itoa(apiPort))
	keep := "127.0.0.1:" + strconv.Itoa(keepPort)
	a.wait(t, n)
	apis := []apiClient{a}
	waitDiscoLines(t, apis, 15*time.Second, "container a discovered", []string{pa + "/1"}, "keep", "empty")
	eventually(t, 5*time.Second, "traffic reaches container a", func() error {
		name, err := greeting(keep)
		if err == nil && name != "a" {
			err = fmt.Errorf("answered by %q", name)
		}
		return err
	})

	idB, pb := k.run("b")
	both := []string{pa + "/1", pb + "/1"}
	slices.Sort(both)
	d := waitDiscoLines(t, apis, 5*time.Second, "container b discovered", both, "keep", "empty")
	t.Logf("docker: a started container shown after %v", d)
	if got := countGreetings(t, keep, 20); got["a"] == 0 || got["b"] == 0 {
		t.Fatalf("traffic over containers a and b: %v", got)
	}

	k.docker("rm", "-f", idB)
	waitDiscoLines(t, apis, 5*time.Second, "removed container b gone", []string{pa + "/1"}, "keep", "empty")
	if got := countGreetings(t, keep, 5); got["a"] != 5 {
		t.Fatalf("traffic after b was removed: %v", got)
	}

	k.garbage.Store(true)
	waitDiscoLines(t, apis, 5*time.Second, "setempty emptied by an engine answering garbage", []string{}, "empty")
	waitDiscoLines(t, apis, time.Second, "keeplast keeps container a", []string{pa + "/1"}, "keep")
	if got := countGreetings(t, keep, 5); got["a"] != 5 {
		t.Fatalf("traffic through keeplast while the engine answers garbage: %v", got)
	}
	k.garbage.Store(false)
	waitDiscoLines(t, apis, 5*time.Second, "recovered engine followed", []string{pa + "/1"}, "keep", "empty")
}
