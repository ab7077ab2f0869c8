package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pkgUnitFile is the shipped systemd unit, relative to e2e/.
const pkgUnitFile = "../deploy/systemd/gobetween.service"

// The paths the shipped unit names, which the tests point at their own files.
const (
	pkgUnitBinary = "/usr/local/bin/gobetween"
	pkgUnitConfig = "/etc/gobetween/gobetween.toml"
	pkgUnitData   = "/var/lib/gobetween"
)

// pkgUnit is a parsed unit file: "Section.Key" to its values in file order
// (a key may repeat, as ExecReload= does).
type pkgUnit map[string][]string

func pkgReadUnit(t *testing.T, path string) pkgUnit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("unit file: %v", err)
	}
	defer f.Close()
	u := pkgUnit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", path, line)
			}
			key := section + "." + strings.TrimSpace(k)
			u[key] = append(u[key], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return u
}

// one is the single value of key, failing the test when it is set other than once.
func (u pkgUnit) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s set %d times (%q), want once", key, len(u[key]), u[key])
	}
	return u[key][0]
}

// pkgUnitCopy writes the shipped unit into a temp directory with the paths it
// names replaced (the binary must exist for systemd-analyze verify).
func pkgUnitCopy(t *testing.T, r *strings.Replacer) string {
	t.Helper()
	b, err := os.ReadFile(pkgUnitFile)
	if err != nil {
		t.Fatalf("unit file: %v", err)
	}
	path := filepath.Join(t.TempDir(), "gobetween.service")
	writeFile(t, path, r.Replace(string(b)))
	return path
}

// pkgRunArgv runs one Exec*= command line of the unit (no quoting, no
// specifiers in the shipped unit) to completion and returns its exit code.
func pkgRunArgv(t *testing.T, line string) (int, string) {
	t.Helper()
	argv := strings.Fields(line)
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	case err != nil:
		t.Fatalf("%s: %v", line, err)
	}
	return 0, string(out)
}

// The unit passes systemd's own checks: systemd-analyze verify says nothing
// (it warns about unknown keys and bad values without failing), and its
// sandboxing rates as exposed as little as an L4 balancer can be.
func TestPackagingSystemdVerify(t *testing.T) {
	t.Parallel()
	pkgRequireTools(t, "systemd-analyze")
	unit := pkgUnitCopy(t, strings.NewReplacer(pkgUnitBinary, binPath))

	cmd := exec.Command("systemd-analyze", "verify", "--man=no", unit)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 || stdout.Len() > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\nstdout:\n%s\nstderr:\n%s", unit, err, stdout.String(), stderr.String())
	}

	out, err := exec.Command("systemd-analyze", "security", "--offline=true", unit).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=true %s: %v\n%s", unit, err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for gobetween\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: no overall exposure level in:\n%s", out)
	}
	exposure, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("exposure level %q: %v", m[1], err)
	}
	t.Logf("systemd-analyze security: exposure %.1f of 10", exposure)
	// 1.6 today; systemd calls up to 4.9 "OK". A rise past 2.5 means a
	// sandboxing directive was lost.
	if exposure > 2.5 {
		t.Errorf("exposure %.1f > 2.5:\n%s", exposure, out)
	}
}

// The directives the unit promises: reload is validate-then-SIGHUP, restart
// on failure only, no root and only the capability to bind low ports, a
// read-only system.
func TestPackagingSystemdDirectives(t *testing.T) {
	t.Parallel()
	u := pkgReadUnit(t, pkgUnitFile)
	for _, tc := range []struct{ key, want string }{
		{"Service.Restart", "on-failure"},
		{"Service.ProtectSystem", "strict"},
		{"Service.NoNewPrivileges", "yes"},
		{"Service.AmbientCapabilities", "CAP_NET_BIND_SERVICE"},
		{"Service.CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"},
		{"Service.DynamicUser", "yes"},
		{"Service.StateDirectory", "gobetween"},
		{"Service.KillSignal", "SIGTERM"},
		{"Install.WantedBy", "multi-user.target"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			if got := u.one(t, tc.key); got != tc.want {
				t.Errorf("%s=%s, want %s", tc.key, got, tc.want)
			}
		})
	}
	if got := u["Service.User"]; len(got) > 0 {
		t.Errorf("User=%v: the unit runs as a dynamic user, never a fixed (or root) one", got)
	}
	reload := u["Service.ExecReload"]
	if len(reload) != 2 || reload[0] != pkgUnitBinary+" validate -c "+pkgUnitConfig || reload[1] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%q, want validate the config, then /bin/kill -HUP $MAINPID", reload)
	}
	// Longer than the default drain_timeout (30s): systemd must not kill a drain.
	stop, err := time.ParseDuration(u.one(t, "Service.TimeoutStopSec"))
	if err != nil || stop <= 30*time.Second {
		t.Errorf("TimeoutStopSec=%s (%v), want more than 30s", u.one(t, "Service.TimeoutStopSec"), err)
	}
	if got, want := u.one(t, "Service.ExecStart"), pkgUnitBinary+" -c "+pkgUnitConfig+" --data-dir "+pkgUnitData; got != want {
		t.Errorf("ExecStart=%s, want %s", got, want)
	}
}

// The unit's command lines work with the binary: ExecStartPre validates,
// ExecStart runs, ExecReload applies a changed config and refuses a broken
// one without signalling the process.
func TestPackagingSystemdCommandsRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgPath, data := filepath.Join(dir, "gobetween.toml"), filepath.Join(dir, "data")
	u := pkgReadUnit(t, pkgUnitFile)
	r := strings.NewReplacer(pkgUnitBinary, binPath, pkgUnitConfig, cfgPath, pkgUnitData, data)

	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	apiAddr, bind1, bind2 := freeAddr(t), freeAddr(t), freeAddr(t)
	s1 := server{name: "one", bind: bind1, lines: lines(b1)}
	writeFile(t, cfgPath, config(apiAddr, s1))

	if code, out := pkgRunArgv(t, r.Replace(u.one(t, "Service.ExecStartPre"))); code != 0 {
		t.Fatalf("ExecStartPre exit %d:\n%s", code, out)
	}
	argv := strings.Fields(r.Replace(u.one(t, "Service.ExecStart")))
	if argv[0] != binPath {
		t.Fatalf("ExecStart runs %s, not the binary", argv[0])
	}
	n := &node{t: t, dir: dir, cfgPath: cfgPath, done: make(chan struct{})}
	n.launch(argv[1:], nil)
	a := newAPI(apiAddr)
	a.wait(t, n)
	n.waitServing(bind1)
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("--data-dir from ExecStart: %v", err)
	}

	reload := func() (int, string) {
		for _, line := range u["Service.ExecReload"] {
			line = strings.ReplaceAll(r.Replace(line), "$MAINPID", strconv.Itoa(n.pid()))
			// systemd runs the lines in order and stops at the first failure.
			if code, out := pkgRunArgv(t, line); code != 0 {
				return code, out
			}
		}
		return 0, ""
	}

	writeFile(t, cfgPath, config(apiAddr, s1, server{name: "two", bind: bind2, lines: lines(b2)}))
	if code, out := reload(); code != 0 {
		t.Fatalf("ExecReload with a valid config: exit %d:\n%s", code, out)
	}
	n.waitServing(bind2)
	if got := mustWho(t, bind2); got != "b2" {
		t.Fatalf("server two after reload answered by %q, want b2", got)
	}

	writeFile(t, cfgPath, config(apiAddr, s1)+"[servers.broken]\nbind = \"nowhere\"\n")
	if code, _ := reload(); code == 0 {
		t.Fatalf("ExecReload with a broken config exited 0: systemd would have sent SIGHUP")
	}
	// The running process never saw the broken file: server two is still up.
	n.requireRunning()
	if got := mustWho(t, bind2); got != "b2" {
		t.Fatalf("server two after a refused reload answered by %q, want b2", got)
	}
	if strings.Contains(n.output(), "nowhere") {
		t.Errorf("the process read the broken config; ExecReload must validate before SIGHUP")
	}
}

// Version information comes from the build: a binary built by `make build`
// carries the Makefile's VERSION, REVISION and BRANCH in --version, and GET /
// reports the same version.
func TestPackagingVersionFromBuild(t *testing.T) {
	t.Parallel()
	pkgRequireTools(t, "make")
	run := pkgRunID()
	version, revision, branch := "9.8.7-e2e."+run, "r"+run, "b-"+run
	bin := t.TempDir()
	pkgCmd(t, nil, "make", "-C", "..", "build", "BIN="+bin, "VERSION="+version, "REVISION="+revision, "BRANCH="+branch)
	exe := filepath.Join(bin, "gobetween")

	for _, flag := range []string{"--version", "-v"} {
		out := pkgCmd(t, nil, exe, flag)
		if want := fmt.Sprintf("gobetween %s (%s, %s)", version, revision, branch); out != want {
			t.Errorf("gobetween %s = %q, want %q", flag, out, want)
		}
	}

	dir := t.TempDir()
	apiAddr := freeAddr(t)
	cfg := filepath.Join(dir, "gobetween.toml")
	writeFile(t, cfg, header(apiAddr))
	cmd := exec.Command(exe, "-c", cfg)
	cmd.Dir = dir
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("gobetween output:\n%s", out.String())
		}
	})
	var root struct {
		Version string `json:"version"`
	}
	eventually(t, 15*time.Second, "GET / on the make-built binary", func() error {
		select {
		case <-exited:
			t.Fatalf("gobetween exited: %v", waitErr)
		default:
		}
		return newAPI(apiAddr).getJSON("/", &root)
	})
	if root.Version != version {
		t.Errorf("GET / version = %q, want %q", root.Version, version)
	}
}
