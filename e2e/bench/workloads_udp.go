package main

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/gobetween/gobetween/e2e/bench/wire"
)

// lossTimeout is how long the UDP workloads wait for a reply before counting
// the datagram as lost. Replies on loopback take microseconds; a lost one
// costs its worker this long, so it stays short.
const lossTimeout = 200 * time.Millisecond

// runUDPFlow measures one UDP flow: one client socket, so one session at the
// proxy and one socket pair it relays between, the case where the proxy cannot
// spread the load over cores. It is a ping-pong with p.window datagrams in
// flight rather than a one-way stream: a stream measures how fast the client
// can send and how many datagrams the kernel drops once the proxy falls behind,
// while the window keeps the proxy always busy (a datagram waits whenever it
// wakes) without overflowing any buffer, and counts only datagrams that made
// the whole round trip. Per datagram the client does one send and one receive,
// the proxy two of each, so the proxy saturates first; the direct contender
// shows the client and backend's own ceiling. The rate is replies per second.
func runUDPFlow(ctx context.Context, addr string, p params) measurement {
	rate, errs, err := measure(ctx, p, 1, func(ctx context.Context, c *counters) {
		for ctx.Err() == nil {
			conn, err := net.Dial("udp", addr)
			if err != nil {
				fail(ctx, c, err)
				continue
			}
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			err = pingPong(conn.(*net.UDPConn), p.window, c)
			stop()
			conn.Close()
			fail(ctx, c, err)
		}
	})
	return result(rate, errs, err)
}

// pingPong keeps window echo requests in flight on conn, sending one for each
// correct reply, until a read or write fails (conn closed, ICMP unreachable).
// A reply that does not come within lossTimeout counts every datagram in
// flight as lost (an error) and the window is sent again.
func pingPong(conn *net.UDPConn, window int, c *counters) error {
	req := wire.Message(wire.ModeEcho)
	var rep [wire.Size + 1]byte // one byte more, to see a longer reply
	inflight := 0
	send := func(n int) error {
		for range n {
			if _, err := conn.Write(req[:]); err != nil {
				return err
			}
			inflight++
		}
		return nil
	}
	if err := send(window); err != nil {
		return err
	}
	for {
		if err := conn.SetReadDeadline(time.Now().Add(lossTimeout)); err != nil {
			return err
		}
		n, err := conn.Read(rep[:])
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.errs.Add(int64(inflight))
			inflight = 0
			if err := send(window); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if inflight > 0 {
			inflight-- // a late reply after a refill can make this 0 early: no matter
		}
		if n == wire.Size && [wire.Size]byte(rep[:wire.Size]) == req {
			c.done.Add(1)
		} else {
			c.errs.Add(1)
		}
		if err := send(1); err != nil {
			return err
		}
	}
}

// runUDPSessions measures new UDP sessions: every request comes from a new
// socket, so a new source port and a new session at the proxy, which the
// contender ends after the backend's one reply (see kindUDPOnce). A session
// counts once its echo came back.
func runUDPSessions(ctx context.Context, addr string, p params) measurement {
	rate, errs, err := measure(ctx, p, p.workers, func(ctx context.Context, c *counters) {
		req := wire.Message(wire.ModeEcho)
		var rep [wire.Size + 1]byte
		for ctx.Err() == nil {
			conn, err := net.Dial("udp", addr)
			if err != nil {
				fail(ctx, c, err)
				continue
			}
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			var n int
			if err = conn.SetDeadline(time.Now().Add(lossTimeout)); err == nil {
				if _, err = conn.Write(req[:]); err == nil {
					if n, err = conn.Read(rep[:]); err == nil && (n != wire.Size || [wire.Size]byte(rep[:wire.Size]) != req) {
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
