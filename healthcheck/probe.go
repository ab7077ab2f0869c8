package healthcheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"time"

	"github.com/gobetween/gobetween/config"
)

// probeChecker sends probe_send and judges the reply. Everything derived from the
// config (unquoted bytes, compiled regexp) is computed once in newProbeChecker;
// the checker is immutable afterwards.
type probeChecker struct {
	protocol string         // tcp, udp, tls
	send     []byte         // probe_send, unquoted
	prefix   []byte         // starts_with: probe_recv, unquoted
	re       *regexp.Regexp // regexp: probe_recv compiled; nil for starts_with
	readLen  int            // bytes to read: len(prefix) or probe_recv_len
}

func newProbeChecker(cfg config.Healthcheck) (*probeChecker, error) {
	c := &probeChecker{protocol: cfg.ProbeProtocol}
	switch c.protocol {
	case "tcp", "udp", "tls":
	default:
		return nil, fmt.Errorf("probe: unknown probe_protocol %q (want tcp, udp or tls)", cfg.ProbeProtocol)
	}
	send, err := config.UnquoteProbe(cfg.ProbeSend)
	if err != nil {
		return nil, fmt.Errorf("probe: probe_send: %w", err)
	}
	c.send = []byte(send)
	switch cfg.ProbeStrategy {
	case "", "starts_with":
		recv, err := config.UnquoteProbe(cfg.ProbeRecv)
		if err != nil {
			return nil, fmt.Errorf("probe: probe_recv: %w", err)
		}
		c.prefix = []byte(recv)
		c.readLen = len(c.prefix)
	case "regexp":
		if cfg.ProbeRecvLen <= 0 {
			return nil, fmt.Errorf("probe: probe_recv_len must be > 0 with probe_strategy regexp, got %d", cfg.ProbeRecvLen)
		}
		re, err := regexp.Compile(cfg.ProbeRecv)
		if err != nil {
			return nil, fmt.Errorf("probe: probe_recv: bad regexp: %w", err)
		}
		c.re = re
		c.readLen = cfg.ProbeRecvLen
	default:
		return nil, fmt.Errorf("probe: unknown probe_strategy %q (want starts_with or regexp)", cfg.ProbeStrategy)
	}
	return c, nil
}

func (c *probeChecker) Check(ctx context.Context, t config.Target) error {
	conn, err := c.dial(ctx, t)
	if err != nil {
		return fmt.Errorf("probe %s: %w", c.protocol, err)
	}
	defer conn.Close()
	// The deadline bounds every read and write; cancelling ctx (a monitor being
	// closed) moves it to the past so a blocked read returns at once.
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := conn.Write(c.send); err != nil {
		return fmt.Errorf("probe %s: send: %w", c.protocol, err)
	}
	var reply []byte
	if c.protocol == "udp" {
		reply, err = readDatagram(conn, c.readLen)
	} else {
		reply, err = readStream(conn, c.readLen)
	}
	if err == nil && ctx.Err() == context.Canceled {
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("probe %s: receive: %w", c.protocol, err)
	}
	return c.judge(reply)
}

// dial opens the connection. For tls the certificate is deliberately not
// verified: a health probe asks whether the backend answers, not who it is, and
// gobetween 0.8 verified against the backend's IP address, which fails for every
// self-signed or IP-addressed backend. ServerName is still sent for SNI.
func (c *probeChecker) dial(ctx context.Context, t config.Target) (net.Conn, error) {
	switch c.protocol {
	case "tls":
		d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, ServerName: t.Host}}
		return d.DialContext(ctx, "tcp", t.Address())
	default:
		var d net.Dialer
		return d.DialContext(ctx, c.protocol, t.Address())
	}
}

// judge decides a check from the reply bytes.
func (c *probeChecker) judge(reply []byte) error {
	if c.re != nil {
		if !c.re.Match(reply) {
			return fmt.Errorf("probe %s: reply %s does not match %q", c.protocol, quoteShort(reply), c.re.String())
		}
		return nil
	}
	if !bytes.HasPrefix(reply, c.prefix) {
		return fmt.Errorf("probe %s: reply %s does not start with %s", c.protocol, quoteShort(reply), quoteShort(c.prefix))
	}
	return nil
}

// readStream reads until n bytes arrived or the peer closed its side or the
// deadline passed; the bytes read so far are the reply in every one of these
// cases (gobetween 0.8 failed a regexp probe whose reply was shorter than
// probe_recv_len). Any other error fails the check.
func readStream(conn net.Conn, n int) ([]byte, error) {
	buf := make([]byte, n)
	got := 0
	for got < n {
		k, err := conn.Read(buf[got:])
		got += k
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			return buf[:got], err
		}
	}
	return buf[:got], nil
}

// readDatagram reads one datagram, cut to n bytes (at least one byte is asked
// for, so that an empty expectation still needs an answer).
func readDatagram(conn net.Conn, n int) ([]byte, error) {
	buf := make([]byte, max(n, 1))
	k, err := conn.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:min(k, n)], nil
}
