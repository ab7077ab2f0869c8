package healthcheck

import (
	"context"
	"fmt"
	"net"

	"github.com/gobetween/gobetween/config"
)

// pingChecker passes when a TCP connection to the target opens before ctx ends.
type pingChecker struct{}

func (pingChecker) Check(ctx context.Context, t config.Target) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", t.Address())
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	conn.Close()
	return nil
}
