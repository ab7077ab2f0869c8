package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["exec"] = newExec }

// execWaitDelay bounds how long a fetch waits for the command's stdout to
// close after the command exited or was killed, in case a process that left
// the command's group still holds the pipe.
const execWaitDelay = time.Second

// maxExecStderr is how much of the command's stderr is kept for the error.
const maxExecStderr = 1 << 10

// execProvider runs exec_command (no shell) and reads one backend line per
// stdout line. The command runs in a process group of its own; when the fetch
// context ends (the discovery timeout) the whole group is killed.
type execProvider struct {
	argv []string
}

func newExec(cfg config.Discovery) (Provider, error) {
	if len(cfg.ExecCommand) == 0 || cfg.ExecCommand[0] == "" {
		return nil, errors.New("exec_command is empty")
	}
	return &execProvider{argv: slices.Clone(cfg.ExecCommand)}, nil
}

// Fetch fails on a non-zero exit, a kill at the deadline, more than maxPayload
// bytes of output or any bad line (gobetween 0.8 skipped bad lines). Blank
// lines are skipped.
func (p *execProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	name := p.argv[0]
	cmd := exec.CommandContext(ctx, name, p.argv[1:]...)
	stdout := &execOutput{max: maxPayload, failOverflow: true}
	stderr := &execOutput{max: maxExecStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	execInOwnGroup(cmd)
	cmd.WaitDelay = execWaitDelay

	err := cmd.Run()
	switch {
	case stdout.overflow:
		// The copy stopped at the cap, so the command died of a broken pipe (or
		// was killed at the deadline); what is left of its group goes too.
		_ = cmd.Cancel()
		return nil, fmt.Errorf("exec %s: output: %w", name, errPayloadTooLarge)
	case err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("exec %s: killed with its process group: %w", name, ctx.Err())
	case errors.Is(err, exec.ErrWaitDelay):
		// The command exited but something it started still holds stdout, so
		// the output may be incomplete. That process is still in the group.
		_ = cmd.Cancel()
		return nil, fmt.Errorf("exec %s: exited, but a process it started kept stdout open for %s (killed)", name, execWaitDelay)
	case err != nil:
		if msg := bytes.TrimSpace(stderr.buf.Bytes()); len(msg) > 0 {
			return nil, fmt.Errorf("exec %s: %w (stderr %q)", name, err, msg)
		}
		return nil, fmt.Errorf("exec %s: %w", name, err)
	}
	list, err := parseBackendLines(stdout.buf.String(), config.ParseBackend)
	if err != nil {
		return nil, fmt.Errorf("exec %s: output %w", name, err)
	}
	return list, nil
}

// execOutput keeps the first max bytes written. Past max it either fails the
// write (failOverflow: the copy stops and the command gets a broken pipe) or
// drops the rest quietly, so that a chatty stderr does not kill the command.
type execOutput struct {
	buf          bytes.Buffer
	max          int
	failOverflow bool
	overflow     bool
}

func (o *execOutput) Write(p []byte) (int, error) {
	room := o.max - o.buf.Len()
	if len(p) <= room {
		return o.buf.Write(p)
	}
	o.overflow = true
	o.buf.Write(p[:max(room, 0)])
	if o.failOverflow {
		return max(room, 0), errPayloadTooLarge
	}
	return len(p), nil
}

// maxBadLines is how many bad lines (or JSON elements) one error names; the
// rest are counted, so that a garbage payload does not make a huge error.
const maxBadLines = 5

// maxLineQuote is how much of an over-long line an error quotes.
const maxLineQuote = 64

// maxBackendLine is longer than any sensible backend line; a longer line is
// reported by its length and a prefix instead of quoted whole.
const maxBackendLine = 1024

// badEntries collects the errors of one payload's bad lines or elements.
type badEntries struct {
	errs  []error
	extra int
}

func (b *badEntries) add(err error) {
	if len(b.errs) < maxBadLines {
		b.errs = append(b.errs, err)
		return
	}
	b.extra++
}

func (b *badEntries) err() error {
	if b.extra > 0 {
		b.errs = append(b.errs, fmt.Errorf("and %d more", b.extra))
	}
	return errors.Join(b.errs...)
}

// parseBackendLines parses every non-blank line of text with parse. Every bad
// line fails the whole payload and is named by its number (from 1); a list is
// never delivered half parsed.
func parseBackendLines(text string, parse func(line string) (config.Backend, error)) ([]config.Backend, error) {
	out := []config.Backend{}
	var bad badEntries
	n := 0
	for line := range strings.Lines(text) {
		n++
		if strings.TrimSpace(line) == "" {
			continue
		}
		if len(line) > maxBackendLine {
			bad.add(fmt.Errorf("line %d: %d bytes long, not a backend line (%q...)", n, len(line), line[:maxLineQuote]))
			continue
		}
		b, err := parse(line)
		if err != nil {
			bad.add(fmt.Errorf("line %d: %w", n, err))
			continue
		}
		out = append(out, b)
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	return out, nil
}
