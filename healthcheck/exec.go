package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"time"

	"github.com/gobetween/gobetween/config"
)

// maxExecOutput bounds what a check script may write to stdout; the expected
// outputs are a few bytes, so more than this is an unexpected output anyway.
const maxExecOutput = 64 << 10

// execWaitDelay bounds how long a check waits for stdout to close after the
// script exited or was killed, in case a process that left the script's group
// still holds the pipe.
const execWaitDelay = time.Second

// execChecker runs exec_command with the target's host and port as arguments
// (no shell) and compares its stdout with the expected outputs. The script is
// killed with its whole process group when ctx ends; the Monitor gives every
// check a deadline (timeout, or interval when timeout is 0), so a script never
// outlives its check (gobetween 0.8 had a timer race with timeout 0).
type execChecker struct {
	command  string
	positive []byte
	negative []byte
}

func newExecChecker(cfg config.Healthcheck) (*execChecker, error) {
	if cfg.ExecCommand == "" {
		return nil, errors.New("exec: exec_command is empty")
	}
	return &execChecker{
		command:  cfg.ExecCommand,
		positive: []byte(cfg.ExecExpectedPositiveOutput),
		negative: []byte(cfg.ExecExpectedNegativeOutput),
	}, nil
}

func (c *execChecker) Check(ctx context.Context, t config.Target) error {
	cmd := exec.CommandContext(ctx, c.command, t.Host, t.Port)
	var stdout, stderr cappedBuffer
	stdout.max, stderr.max = maxExecOutput, 512
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	killProcessGroup(cmd)
	cmd.WaitDelay = execWaitDelay

	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("exec %s: killed: %w", c.command, ctx.Err())
	}
	if err != nil {
		if msg := bytes.TrimSpace(stderr.buf.Bytes()); len(msg) > 0 {
			return fmt.Errorf("exec %s: %w (stderr %s)", c.command, err, quoteShort(msg))
		}
		return fmt.Errorf("exec %s: %w", c.command, err)
	}
	out := stdout.buf.Bytes()
	switch {
	case stdout.overflow:
		return fmt.Errorf("exec %s: output longer than %d bytes", c.command, maxExecOutput)
	case bytes.Equal(out, c.positive):
		return nil
	case bytes.Equal(out, c.negative):
		return fmt.Errorf("exec %s: negative output %s", c.command, quoteShort(out))
	default:
		// gobetween 0.8 marked the backend down at once here, bypassing fails;
		// this is an ordinary failed check.
		return fmt.Errorf("exec %s: unexpected output %s", c.command, quoteShort(out))
	}
}

// cappedBuffer keeps the first max bytes written and notes whether more came; it
// never fails a write, so the script is not killed by a broken pipe.
type cappedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := b.max - b.buf.Len()
	if len(p) > room {
		b.overflow = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}
