//go:build unix

package healthcheck

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// script writes an executable shell script with body into dir.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func execCfg(command string) config.Healthcheck {
	return config.Healthcheck{Kind: "exec", ExecCommand: command,
		ExecExpectedPositiveOutput: "1", ExecExpectedNegativeOutput: "0"}
}

func TestExec(t *testing.T) {
	dir := t.TempDir()
	target := config.Target{Host: "10.1.2.3", Port: "8080"}
	tests := []struct {
		name    string
		body    string
		pass    bool
		errPart string
	}{
		{"positive", `printf 1`, true, ""},
		{"host and port arguments", `[ "$1" = 10.1.2.3 ] && [ "$2" = 8080 ] && [ $# -eq 2 ] && printf 1`, true, ""},
		{"negative", `printf 0`, false, "negative output"},
		{"other output", `printf maybe`, false, "unexpected output"},
		{"trailing newline is other output", `echo 1`, false, "unexpected output"},
		{"non-zero exit with positive output", `printf 1; echo broken >&2; exit 3`, false, "exit status 3"},
		{"output too long", `head -c 100000 /dev/zero`, false, "output longer"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checker, err := NewChecker(execCfg(script(t, dir, "check"+strconv.Itoa(i), tc.body)))
			if err != nil {
				t.Fatal(err)
			}
			err = checker.Check(checkCtx(t, 5*time.Second), target)
			if (err == nil) != tc.pass {
				t.Fatalf("Check = %v, want pass %v", err, tc.pass)
			}
			if err != nil && !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("Check = %v, want it to mention %q", err, tc.errPart)
			}
		})
	}

	t.Run("missing command", func(t *testing.T) {
		checker, err := NewChecker(execCfg(filepath.Join(dir, "does-not-exist")))
		if err != nil {
			t.Fatal(err)
		}
		if err := checker.Check(checkCtx(t, time.Second), target); err == nil {
			t.Fatal("Check passed with a missing command")
		}
	})

	t.Run("timeout kills the process group", func(t *testing.T) {
		pidFile := filepath.Join(dir, "child.pid")
		// The child sleep inherits stdout; only killing the group ends it.
		body := `sleep 30 & echo $! > ` + pidFile + `; wait; printf 1`
		checker, err := NewChecker(execCfg(script(t, dir, "slow", body)))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = checker.Check(checkCtx(t, 300*time.Millisecond), target)
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("Check = %v, want a kill", err)
		}
		// The wait for stdout (execWaitDelay) must not be needed: the group died.
		if d := time.Since(start); d >= 300*time.Millisecond+execWaitDelay {
			t.Fatalf("Check returned after %v", d)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "the child sleep to die", func() bool { return processGone(pid) })
	})
}

// processGone reports whether pid no longer runs (missing or a zombie that no
// one has reaped yet, which happens when the test runs as pid 1's child).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}
