package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gobetween/gobetween/e2e/bench/wire"
)

// runTLSHandshake is runConnect over TLS terminated by the contender: each
// worker connects, completes a full handshake (clientTLS: no resumption),
// sends one echo request, checks the reply and closes. A connection counts only
// once its echo came back through the proxy to the plain backend.
func runTLSHandshake(ctx context.Context, addr string, p params) measurement {
	cfg := clientTLS(p.tlsVersion)
	rate, errs, err := measure(ctx, p, p.workers, func(ctx context.Context, c *counters) {
		var d net.Dialer
		req := wire.Message(wire.ModeEcho)
		var rep [wire.Size]byte
		for ctx.Err() == nil {
			raw, stop, err := dial(ctx, &d, addr)
			if err != nil {
				fail(ctx, c, err)
				continue
			}
			conn := tls.Client(raw, cfg)
			if err = conn.HandshakeContext(ctx); err == nil {
				if _, err = conn.Write(req[:]); err == nil {
					if _, err = io.ReadFull(conn, rep[:]); err == nil && rep != req {
						err = errors.New("reply differs from the request")
					}
				}
			}
			stop()
			conn.Close()
			if err != nil {
				fail(ctx, c, err)
				continue
			}
			c.done.Add(1)
		}
	})
	return result(rate, errs, err)
}

// checkTLS does one handshake and echo round trip through addr, as
// runTLSHandshake does: the proof that a TLS listener is up, relays, and
// negotiates what every contender must (the version asked for, X25519, no
// resumption).
func checkTLS(version uint16) func(addr string, timeout time.Duration) error {
	cfg := clientTLS(version)
	return func(addr string, timeout time.Duration) error {
		d := &net.Dialer{Timeout: timeout}
		conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		if cs := conn.ConnectionState(); cs.Version != version || cs.CurveID != tls.X25519 || cs.DidResume {
			return fmt.Errorf("negotiated %s with %v (resumed: %v), want %s with X25519 and a full handshake",
				tlsName(cs.Version), cs.CurveID, cs.DidResume, tlsName(version))
		}
		conn.SetDeadline(time.Now().Add(timeout))
		req := wire.Message(wire.ModeEcho)
		if _, err := conn.Write(req[:]); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		var rep [wire.Size]byte
		if _, err := io.ReadFull(conn, rep[:]); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if rep != req {
			return errors.New("reply differs from the request")
		}
		return nil
	}
}

// tlsName is how tables name a TLS version.
func tlsName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	}
	return fmt.Sprintf("TLS %#04x", v)
}
