// Package healthcheck decides, per backend of one server, whether the backend is
// healthy on this node. A Checker runs one check of one target (ping, probe,
// exec); a Monitor runs the checks on a schedule, counts consecutive results and
// reports flips of the verdict.
package healthcheck

import (
	"context"
	"fmt"

	"github.com/gobetween/gobetween/config"
)

// Checker runs one check of a target; a nil error is a pass. Implementations
// honour ctx: its deadline is the check timeout, and cancelling it aborts the
// check. A Checker is safe for concurrent use on different targets.
type Checker interface {
	Check(ctx context.Context, t config.Target) error
}

// NewChecker builds the checker of cfg.Kind ("ping", "probe", "exec"). Kind
// "none" or "" returns (nil, nil): no checks, every target healthy. Settings that
// validation normally rejects (unknown kind or protocol, bad escapes, bad regexp)
// are errors, never panics.
func NewChecker(cfg config.Healthcheck) (Checker, error) {
	switch cfg.Kind {
	case "", "none":
		return nil, nil
	case "ping":
		return pingChecker{}, nil
	case "probe":
		c, err := newProbeChecker(cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	case "exec":
		c, err := newExecChecker(cfg)
		if err != nil {
			return nil, err
		}
		return c, nil
	default:
		return nil, fmt.Errorf("unknown healthcheck kind %q (want none, ping, probe or exec)", cfg.Kind)
	}
}

// quoteShort quotes b for an error message, cut to a readable length.
func quoteShort(b []byte) string {
	const max = 64
	if len(b) > max {
		return fmt.Sprintf("%q...", b[:max])
	}
	return fmt.Sprintf("%q", b)
}
