package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliResult is one finished run of a client command.
type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("gobetween %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// cliAPI is the --api URL of node i of c.
func cliAPI(c *testCluster, i int) string {
	return "http://" + c.host(i) + ":" + strconv.Itoa(c.apiPort)
}

// cliRun runs a client command to completion with env (KEY=VALUE) and returns
// what it printed and its exit code.
func cliRun(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	stdout, stderr, code := runGobetween(t, 30*time.Second, env, args...)
	return cliResult{args: args, stdout: stdout, stderr: stderr, code: code}
}

// cliMust runs a client command that must exit 0 and print every one of want
// on stdout.
func cliMust(t testing.TB, args []string, want ...string) cliResult {
	t.Helper()
	r := cliRun(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	for _, w := range want {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("stdout lacks %q: %v", w, r)
		}
	}
	return r
}

// cliEventually polls a client command until it exits 0 and check accepts its
// stdout.
func cliEventually(t testing.TB, timeout time.Duration, what string, args []string, check func(stdout string) error) cliResult {
	t.Helper()
	var last cliResult
	eventually(t, timeout, what, func() error {
		last = cliRun(t, nil, args...)
		if last.code != 0 {
			return errors.New(last.String())
		}
		if err := check(last.stdout); err != nil {
			return fmt.Errorf("%w\n%s", err, last.stdout)
		}
		return nil
	})
	return last
}

// cliRow is a cliEventually check: a line of stdout (a table row) starts with
// fields, whatever the spaces between them.
func cliRow(fields ...string) func(string) error {
	want := strings.Join(fields, " ")
	return func(stdout string) error {
		for line := range strings.SplitSeq(stdout, "\n") {
			got := strings.Join(strings.Fields(line), " ")
			if got == want || strings.HasPrefix(got, want+" ") {
				return nil
			}
		}
		return fmt.Errorf("no line starting with %q", want)
	}
}

// cliProcess is a client command running in the background.
type cliProcess struct {
	args           []string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	exited         time.Time
	code           int
}

// cliStart starts a client command; it is killed in t.Cleanup if still running.
func cliStart(t testing.TB, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{args: args, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = os.Environ()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start gobetween %v: %v", args, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.exited = time.Now()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			p.code = ee.ExitCode()
		case err != nil:
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
	return p
}

func (p *cliProcess) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits up to d for the command to exit and returns how it ended.
func (p *cliProcess) wait(t testing.TB, d time.Duration) cliResult {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("gobetween %s still running after %v; stdout:\n%s\nstderr:\n%s", strings.Join(p.args, " "), d, p.stdout.String(), p.stderr.String())
	}
	return cliResult{args: p.args, stdout: p.stdout.String(), stderr: p.stderr.String(), code: p.code}
}
