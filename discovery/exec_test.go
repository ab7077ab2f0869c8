//go:build unix

package discovery

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// execScript writes an executable /bin/sh script and returns its path.
func execScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func execFetch(t *testing.T, timeout time.Duration, argv ...string) ([]config.Backend, error) {
	t.Helper()
	p, err := NewRegistry().New(config.Discovery{Kind: "exec", ExecCommand: argv})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Fetch(ctx)
}

func TestExec(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		argv    []string
		want    []config.Backend
		wantErr []string // substrings of the error
	}{
		{"lines, blank lines skipped", []string{execScript(t, dir, "ok", `printf 'a:1\n\n   \n\r\nb:2 weight=3 priority=2\n[::1]:9000 sni=x.example max_connections=4'`)},
			[]config.Backend{backend("a", "1", 1, 1), backend("b", "2", 3, 2),
				{Target: config.Target{Host: "::1", Port: "9000"}, Weight: 1, Priority: 1, MaxConnections: 4, Sni: "x.example"}}, nil},
		{"CRLF lines", []string{execScript(t, dir, "crlf", `printf 'a:1 weight=2\r\nb:2\r\n'`)},
			[]config.Backend{backend("a", "1", 2, 1), backend("b", "2", 1, 1)}, nil},
		{"no output is an empty list", []string{execScript(t, dir, "empty", `exit 0`)}, []config.Backend{}, nil},
		{"arguments without a shell", []string{"printf", `%s\n`, "a:1 weight=7", "$(echo b:2)"},
			nil, []string{"line 2", `"$(echo b:2)"`}},
		{"arguments kept whole", []string{"printf", `%s\n`, "a:1 weight=7"}, []config.Backend{backend("a", "1", 7, 1)}, nil},
		{"bad line named", []string{execScript(t, dir, "bad", `printf 'a:1\nnohost\nb:2\n'`)}, nil,
			[]string{"line 2", `"nohost"`, "missing port"}},
		{"many bad lines counted", []string{execScript(t, dir, "many", `for i in 1 2 3 4 5 6 7 8; do echo "x$i"; done`)}, nil,
			[]string{"line 1", "line 5", "and 3 more"}},
		{"long line not quoted whole", []string{execScript(t, dir, "long", `head -c 5000 /dev/zero | tr '\0' a`)}, nil,
			[]string{"line 1", "5000 bytes long"}},
		{"non-zero exit with stderr", []string{execScript(t, dir, "fail", `echo a:1; echo '  no backends today  ' >&2; exit 3`)}, nil,
			[]string{"exit status 3", `stderr "no backends today"`}},
		{"killed by a signal", []string{execScript(t, dir, "sig", `kill -9 $$`)}, nil, []string{"signal: killed"}},
		{"missing program", []string{filepath.Join(dir, "does-not-exist")}, nil, []string{"does-not-exist"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := execFetch(t, 10*time.Second, tc.argv...)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Fetch = %v, want an error", got)
				}
				for _, part := range tc.wantErr {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("error %q does not mention %q", err, part)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Fetch = %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("output over maxPayload", func(t *testing.T) {
		// yes never stops by itself: the fetch must end at the cap, not at the
		// deadline.
		start := time.Now()
		_, err := execFetch(t, 20*time.Second, "yes", "10.0.0.1:80")
		if !errors.Is(err, errPayloadTooLarge) {
			t.Fatalf("Fetch error %v, want %v", err, errPayloadTooLarge)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("Fetch took %v", d)
		}
	})

	t.Run("timeout kills the process group", func(t *testing.T) {
		pidFile := filepath.Join(dir, "child.pid")
		// The child sleep inherits stdout; only killing the group ends it.
		argv := execScript(t, dir, "slow", `sleep 30 & echo $! > `+pidFile+`; echo a:1; wait`)
		start := time.Now()
		_, err := execFetch(t, 300*time.Millisecond, argv)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("Fetch error %v, want a kill at the deadline", err)
		}
		// The wait for stdout (execWaitDelay) must not be needed: the group died.
		if d := time.Since(start); d >= 300*time.Millisecond+execWaitDelay {
			t.Fatalf("Fetch returned after %v", d)
		}
		eventually(t, "the child sleep to die", func() bool { return execProcessGone(t, pidFile) })
	})

	t.Run("a background process holding stdout fails the fetch and is killed", func(t *testing.T) {
		pidFile := filepath.Join(dir, "straggler.pid")
		argv := execScript(t, dir, "straggler", `sleep 30 & echo $! > `+pidFile+`; echo a:1`)
		_, err := execFetch(t, 20*time.Second, argv)
		if err == nil || !strings.Contains(err.Error(), "kept stdout open") {
			t.Fatalf("Fetch error %v, want the straggler reported", err)
		}
		eventually(t, "the straggler to die", func() bool { return execProcessGone(t, pidFile) })
	})

	t.Run("factory rejects an empty command", func(t *testing.T) {
		for _, argv := range [][]string{nil, {""}} {
			if _, err := NewRegistry().New(config.Discovery{Kind: "exec", ExecCommand: argv}); err == nil {
				t.Errorf("New(%q) succeeded", argv)
			}
		}
	})
}

// execProcessGone reports whether the process whose pid is in pidFile no longer
// runs (missing, or a zombie no one has reaped yet, as when the test runs as
// the child of a pid 1 that does not reap).
func execProcessGone(t *testing.T, pidFile string) bool {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(stat) // the state follows the parenthesised command name
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

// TestExecFailpolicy runs a real command through a Source: the command lists
// the backends of a state file, or fails while the file says so.
func TestExecFailpolicy(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	count := filepath.Join(dir, "count")
	argv := execScript(t, dir, "list", `echo x >> `+count+`
if [ "$(cat `+state+`)" = fail ]; then echo 'registry down' >&2; exit 1; fi
cat `+state)
	setState := func(s string) {
		tmp := state + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, state); err != nil {
			t.Fatal(err)
		}
	}
	fetches := func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "x")
	}
	testFailpolicies(t, failpolicyCase{
		cfg: config.Discovery{Kind: "exec", ExecCommand: []string{argv}},
		serve: func(lines []string) {
			if lines == nil {
				setState("fail")
				return
			}
			setState(strings.Join(lines, "\n"))
		},
		fetches: fetches,
	})
}
