package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// manyErrorPaths are the bad keys of testdata/many-errors.toml.
var manyErrorPaths = []string{
	"defaults.client_idle_timeout",
	"servers.web.balance",
	"servers.web.discovery.static_list",
	"servers.web.healthcheck.interval",
	"servers.db.bind",
	"servers.db.protocol",
	"servers.db.backend_connection_timeout",
	"servers.db.discovery.kind",
	"servers.db.access.default",
	"servers.db.access.rules",
}

func manyErrorsFile(t *testing.T) (path string, webAddr string) {
	t.Helper()
	webAddr = freeAddr(t)
	_, webPort, _ := strings.Cut(webAddr, ":")
	path = filepath.Join(t.TempDir(), "bad.toml")
	writeFile(t, path, testdata(t, "many-errors.toml", map[string]string{
		"PORT_WEB": webPort, "PORT_BACKEND": strconv.Itoa(freePort(t)),
	}))
	return path, webAddr
}

// requireEachOnALine checks that every path is named, each on a line of its own.
func requireEachOnALine(t *testing.T, out string, paths []string) {
	t.Helper()
	seen := map[int]string{}
	lines := strings.Split(out, "\n")
	for _, p := range paths {
		found := false
		for i, l := range lines {
			if namesPath(l, p) {
				if other, dup := seen[i]; dup && other != p {
					continue
				}
				seen[i], found = p, true
				break
			}
		}
		if !found {
			t.Errorf("problem at %s not reported on a line of its own", p)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestConfigManyErrorsRefusesToStart(t *testing.T) {
	t.Parallel()
	path, _ := manyErrorsFile(t)
	stdout, stderr, code := runGobetween(t, 15*time.Second, nil, "-c", path)
	if code == 0 {
		t.Fatalf("a config with many errors started (exit 0)\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	requireEachOnALine(t, stderr, manyErrorPaths)
}

func TestValidate(t *testing.T) {
	t.Parallel()
	t.Run("many errors", func(t *testing.T) {
		path, _ := manyErrorsFile(t)
		stdout, stderr, code := runGobetween(t, 15*time.Second, nil, "validate", "-c", path)
		if code != 1 {
			t.Errorf("validate of a bad config: exit %d, want 1", code)
		}
		if strings.Contains(stdout, "configuration is valid") {
			t.Errorf("validate said valid:\n%s", stdout)
		}
		requireEachOnALine(t, stderr, manyErrorPaths)
		want := `servers.web.healthcheck.interval: invalid duration "5"`
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	})
	t.Run("0.8 toml", func(t *testing.T) {
		vars := map[string]string{"API_BIND": freeAddr(t)}
		for i := 1; i <= 12; i++ {
			vars[fmt.Sprintf("BIND_%02d", i)] = freeAddr(t)
		}
		path := filepath.Join(t.TempDir(), "gobetween.toml")
		writeFile(t, path, testdata(t, "valid-0.8.toml", vars))
		stdout, stderr, code := runGobetween(t, 15*time.Second, nil, "validate", "-c", path)
		if code != 0 || !strings.Contains(stdout, "configuration is valid") {
			t.Fatalf("validate of a valid 0.8 config: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if strings.Contains(stderr, "warning") {
			t.Errorf("a config with only known keys got warnings:\n%s", stderr)
		}
	})
	t.Run("0.8 json", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gobetween.json")
		writeFile(t, path, testdata(t, "valid-0.8.json", map[string]string{
			"API_BIND": freeAddr(t), "SAMPLE_BIND": freeAddr(t), "BACKEND": freeAddr(t),
		}))
		stdout, stderr, code := runGobetween(t, 15*time.Second, nil, "validate", "-c", path, "-f", "json")
		if code != 0 || !strings.Contains(stdout, "configuration is valid") {
			t.Fatalf("validate -f json: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})
}

var unknownKeyPaths = []string{
	"logging.colour",
	"defaults.protocol",
	"servers.web.transparent",
	"servers.web.healthcheck.ping_timeout_duration",
}

// Unknown keys: a warning naming each path (and the node runs), an error with
// --strict (and the node does not start).
func TestConfigUnknownKeys(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	addr := freeAddr(t)
	cfg := testdata(t, "unknown-keys.toml", map[string]string{"BIND": addr, "BACKEND": b.addr})
	path := filepath.Join(t.TempDir(), "gobetween.toml")
	writeFile(t, path, cfg)

	t.Run("validate warns", func(t *testing.T) {
		stdout, stderr, code := runGobetween(t, 15*time.Second, nil, "validate", "-c", path)
		if code != 0 || !strings.Contains(stdout, "configuration is valid") {
			t.Fatalf("unknown keys without --strict: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		requireEachOnALine(t, stderr, unknownKeyPaths)
	})
	t.Run("validate strict fails", func(t *testing.T) {
		stdout, stderr, code := runGobetween(t, 15*time.Second, nil, "validate", "-c", path, "--strict")
		if code != 1 || strings.Contains(stdout, "configuration is valid") {
			t.Fatalf("unknown keys with --strict: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		requireEachOnALine(t, stderr, unknownKeyPaths)
	})
	t.Run("run strict refuses", func(t *testing.T) {
		_, stderr, code := runGobetween(t, 15*time.Second, nil, "-c", path, "--strict")
		if code == 0 {
			t.Fatal("started with unknown keys and --strict")
		}
		requireEachOnALine(t, stderr, unknownKeyPaths)
	})
	t.Run("run warns and serves", func(t *testing.T) {
		n := startNode(t, cfg)
		n.waitServing(addr)
		eventually(t, 5*time.Second, "warnings in the output", func() error {
			out := n.output()
			for _, p := range unknownKeyPaths {
				if !strings.Contains(out, p) {
					return &missingError{p}
				}
			}
			return nil
		})
	})
}

// namesPath reports whether line contains path as a whole path: the next
// character is not part of a key name ("servers.web.bind" is not named by
// "servers.web.bind_port: ...").
func namesPath(line, path string) bool {
	for off := 0; ; {
		i := strings.Index(line[off:], path)
		if i < 0 {
			return false
		}
		end := off + i + len(path)
		if end == len(line) {
			return true
		}
		c := line[end]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return true
		}
		off = end
	}
}

type missingError struct{ what string }

func (e *missingError) Error() string { return e.what + " not in the output" }

// -e replaces ${VAR} from the environment; the node is started as `from-file`.
func TestConfigEnvSubstitution(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	n := startNodeWith(t, testdata(t, "env.toml", nil), nodeOptions{
		useSub: true,
		args:   []string{"-e"},
		env: []string{
			"GBT_E2E_PORT=" + strconv.Itoa(port),
			"GBT_E2E_BACKEND1=" + bs[0].addr,
			"GBT_E2E_BACKEND2=" + bs[1].addr,
			"GBT_E2E_LOG_LEVEL=debug",
		},
	})
	n.waitServing(addr)
	counts := countWho(t, addr, 10)
	if counts["b1"] == 0 || counts["b2"] == 0 {
		t.Fatalf("substituted backends not both used: %v", counts)
	}
}

// A JSON config (-f json) and the same config in TOML balance alike.
func TestConfigJSONEqualsTOML(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 5)
	type discovery struct {
		Kind       string   `json:"kind"`
		StaticList []string `json:"static_list"`
	}
	type srv struct {
		Bind      string    `json:"bind"`
		Protocol  string    `json:"protocol"`
		Balance   string    `json:"balance"`
		Discovery discovery `json:"discovery"`
	}
	rrLines := lines(bs[0], bs[1], bs[2])
	prioLines := []string{bs[3].line("weight=1", "priority=1"), bs[4].line("priority=2", "weight=5"), bs[0].line("priority=3")}

	run := func(format string) map[string]map[string]int {
		rr, prio := freeAddr(t), freeAddr(t)
		var cfg string
		if format == "json" {
			doc := map[string]any{
				"logging":  map[string]string{"level": "debug", "output": "stdout"},
				"defaults": map[string]string{"drain_timeout": "1s"},
				"servers": map[string]srv{
					"rr":   {Bind: rr, Protocol: "tcp", Balance: "roundrobin", Discovery: discovery{"static", rrLines}},
					"prio": {Bind: prio, Protocol: "tcp", Balance: "weight", Discovery: discovery{"static", prioLines}},
				},
			}
			b, err := json.MarshalIndent(doc, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			cfg = string(b)
		} else {
			cfg = config("",
				server{name: "rr", bind: rr, balance: "roundrobin", lines: rrLines},
				server{name: "prio", bind: prio, balance: "weight", lines: prioLines})
		}
		n := startNodeWith(t, cfg, nodeOptions{format: format})
		n.waitServing(rr)
		n.waitServing(prio)
		return map[string]map[string]int{"rr": countWho(t, rr, 30), "prio": countWho(t, prio, 20)}
	}
	for _, format := range []string{"toml", "json"} {
		got := run(format)
		for _, name := range []string{"b1", "b2", "b3"} {
			if c := got["rr"][name]; c < 9 || c > 11 {
				t.Errorf("%s: roundrobin share of %s = %d of 30, want 10±1 (%v)", format, name, c, got["rr"])
			}
		}
		if got["prio"]["b4"] != 20 {
			t.Errorf("%s: weight/priority: want all 20 on the priority 1 backend b4, got %v", format, got["prio"])
		}
	}
}

func TestVersionFlag(t *testing.T) {
	t.Parallel()
	stdout, stderr, code := runGobetween(t, 10*time.Second, nil, "-v")
	if code != 0 || !strings.Contains(stdout, "gobetween") {
		t.Fatalf("gobetween -v: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// -p writes the pid file, refuses to start while it names a live process, and
// removes it at exit.
func TestPidfile(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	pidfile := filepath.Join(t.TempDir(), "run", "gobetween.pid")
	addr := freeAddr(t)
	n := startNodeWith(t, config("", server{name: "web", bind: addr, lines: lines(b)}), nodeOptions{args: []string{"-p", pidfile}})
	n.waitServing(addr)
	got, err := os.ReadFile(pidfile)
	if err != nil {
		t.Fatalf("pid file: %v", err)
	}
	if strings.TrimSpace(string(got)) != strconv.Itoa(n.pid()) {
		t.Fatalf("pid file says %q, process is %d", got, n.pid())
	}

	second := filepath.Join(t.TempDir(), "second.toml")
	writeFile(t, second, config("", server{name: "web", bind: freeAddr(t), lines: lines(b)}))
	stdout, stderr, code := runGobetween(t, 15*time.Second, nil, "-c", second, "-p", pidfile)
	if code == 0 {
		t.Fatalf("a second gobetween started with the pid file of a live one\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	if got2, _ := os.ReadFile(pidfile); string(got2) != string(got) {
		t.Fatalf("the refused process rewrote the pid file: %q -> %q", got, got2)
	}

	n.signal(syscall.SIGTERM)
	if code := n.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if _, err := os.Stat(pidfile); !os.IsNotExist(err) {
		t.Fatalf("pid file left behind after exit: %v", err)
	}
}
