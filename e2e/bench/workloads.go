package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobetween/gobetween/e2e/bench/wire"
)

// workload is one kind of load. run drives addr, the contender's listener of
// kind Listener, for a warm-up, then measures for a fixed duration, and returns
// the rate in unit.
type workload struct {
	Name     string `json:"name"`
	Title    string `json:"title"`
	Unit     string `json:"unit"`
	Listener string `json:"listener"` // a listener kind (kindTCP, …)
	run      func(ctx context.Context, addr string, p params) measurement
}

// params are the load settings from the command line.
type params struct {
	warmup   time.Duration
	duration time.Duration
	conns    int // keep-alive connections
	workers  int // new-connection workers
	streams  int // bulk connections
	// tlsVersion is the one TLS version the load generator offers.
	tlsVersion uint16
	// window is how many datagrams the UDP flow keeps in flight.
	window int
}

// measurement is one run of one workload against one contender.
type measurement struct {
	Value  float64 `json:"value"`
	Errors int64   `json:"errors"`
	Err    string  `json:"error,omitempty"` // set when the run measured nothing
	// ConntrackFull is set when netfilter's connection-tracking table was full
	// at the end of the run (see conntrackAdvice).
	ConntrackFull bool `json:"conntrack_full,omitempty"`
}

func workloads(p params) []workload {
	return []workload{
		{
			Name:     "keepalive",
			Title:    fmt.Sprintf("keep-alive requests/s (%d connections, %d B request, %d B reply)", p.conns, wire.Size, wire.Size),
			Unit:     "req/s",
			Listener: kindTCP,
			run:      runKeepalive,
		},
		{
			Name:     "connect",
			Title:    fmt.Sprintf("new TCP connections/s (%d workers: connect, %d B request, %d B reply, close)", p.workers, wire.Size, wire.Size),
			Unit:     "conn/s",
			Listener: kindTCP,
			run:      runConnect,
		},
		{
			Name:     "bulk",
			Title:    fmt.Sprintf("bulk throughput Gbit/s, backend to client (%d connections)", p.streams),
			Unit:     "Gbit/s",
			Listener: kindTCP,
			run: func(ctx context.Context, addr string, p params) measurement {
				return runBulk(ctx, addr, p, wire.ModeDown)
			},
		},
		{
			Name:     "bulk-up",
			Title:    fmt.Sprintf("bulk throughput Gbit/s, client to backend (%d connections)", p.streams),
			Unit:     "Gbit/s",
			Listener: kindTCP,
			run: func(ctx context.Context, addr string, p params) measurement {
				return runBulk(ctx, addr, p, wire.ModeUp)
			},
		},
		{
			Name: "tls-handshake",
			Title: fmt.Sprintf("new TLS connections/s, ECDSA P-256 (%d workers: full %s handshake, X25519, %d B request, %d B reply, close)",
				p.workers, tlsName(p.tlsVersion), wire.Size, wire.Size),
			Unit:     "conn/s",
			Listener: kindTLSECDSA,
			run:      runTLSHandshake,
		},
		{
			Name: "tls-handshake-rsa",
			Title: fmt.Sprintf("new TLS connections/s, RSA 2048 (%d workers: full %s handshake, X25519, %d B request, %d B reply, close)",
				p.workers, tlsName(p.tlsVersion), wire.Size, wire.Size),
			Unit:     "conn/s",
			Listener: kindTLSRSA,
			run:      runTLSHandshake,
		},
		{
			Name:     "udp-flow",
			Title:    fmt.Sprintf("one UDP flow: echoed datagrams/s (1 socket, %d datagrams of %d B in flight)", p.window, wire.Size),
			Unit:     "dgram/s",
			Listener: kindUDPFlow,
			run:      runUDPFlow,
		},
		{
			Name:     "udp-sessions",
			Title:    fmt.Sprintf("new UDP sessions/s (%d workers: new socket, %d B request, %d B reply, close)", p.workers, wire.Size, wire.Size),
			Unit:     "sess/s",
			Listener: kindUDPOnce,
			run:      runUDPSessions,
		},
	}
}

// defaultWorkloads is what -workloads selects unless told otherwise: everything
// but bulk-up, about 9 minutes with the defaults on 2 cores.
const defaultWorkloads = "keepalive,connect,bulk,tls-handshake,tls-handshake-rsa,udp-flow,udp-sessions"

// counters are what workers report: completed units of work and failures.
type counters struct {
	done atomic.Int64
	errs atomic.Int64
}

// measure starts n workers, lets them warm up, and returns done per second over
// the measured window. Workers stop when their context is cancelled, and must
// not block past that: they close their connections on cancellation.
func measure(ctx context.Context, p params, n int, worker func(ctx context.Context, c *counters)) (rate float64, errs int64, err error) {
	wctx, cancel := context.WithCancel(ctx)
	var c counters
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker(wctx, &c)
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()

	if !sleep(ctx, p.warmup) {
		return 0, 0, ctx.Err()
	}
	d0, e0, t0 := c.done.Load(), c.errs.Load(), time.Now()
	if !sleep(ctx, p.duration) {
		return 0, 0, ctx.Err()
	}
	d1, e1, t1 := c.done.Load(), c.errs.Load(), time.Now()
	return float64(d1-d0) / t1.Sub(t0).Seconds(), e1 - e0, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dial connects to addr; the connection is closed when ctx is cancelled, which
// unblocks any read or write on it. The returned stop must be called once the
// caller has closed the connection itself.
func dial(ctx context.Context, d *net.Dialer, addr string) (net.Conn, func() bool, error) {
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	return conn, context.AfterFunc(ctx, func() { conn.Close() }), nil
}

// fail counts err unless the run is over (errors caused by cancellation are not
// the contender's) and waits a little so a refusing contender is not spun on.
func fail(ctx context.Context, c *counters, err error) {
	if ctx.Err() != nil || err == nil {
		return
	}
	c.errs.Add(1)
	sleep(ctx, 10*time.Millisecond)
}

func runKeepalive(ctx context.Context, addr string, p params) measurement {
	rate, errs, err := measure(ctx, p, p.conns, func(ctx context.Context, c *counters) {
		var d net.Dialer
		req := wire.Message(wire.ModeEcho)
		var rep [wire.Size]byte
		for ctx.Err() == nil {
			conn, stop, err := dial(ctx, &d, addr)
			if err != nil {
				fail(ctx, c, err)
				continue
			}
			for {
				if _, err = conn.Write(req[:]); err != nil {
					break
				}
				if _, err = io.ReadFull(conn, rep[:]); err != nil {
					break
				}
				if rep != req {
					err = errors.New("reply differs from the request")
					break
				}
				c.done.Add(1)
			}
			stop()
			conn.Close()
			fail(ctx, c, err)
		}
	})
	return result(rate, errs, err)
}

func runConnect(ctx context.Context, addr string, p params) measurement {
	rate, errs, err := measure(ctx, p, p.workers, func(ctx context.Context, c *counters) {
		var d net.Dialer
		req := wire.Message(wire.ModeEcho)
		var rep [wire.Size]byte
		for ctx.Err() == nil {
			conn, stop, err := dial(ctx, &d, addr)
			if err != nil {
				fail(ctx, c, err)
				continue
			}
			if _, err = conn.Write(req[:]); err == nil {
				if _, err = io.ReadFull(conn, rep[:]); err == nil && rep != req {
					err = errors.New("reply differs from the request")
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

// runBulk streams in one direction over p.streams connections and reports Gbit/s
// of payload: received by the client for ModeDown, written by it for ModeUp.
func runBulk(ctx context.Context, addr string, p params, mode byte) measurement {
	rate, errs, err := measure(ctx, p, p.streams, func(ctx context.Context, c *counters) {
		var d net.Dialer
		req := wire.Message(mode)
		buf := make([]byte, 256<<10)
		for ctx.Err() == nil {
			conn, stop, err := dial(ctx, &d, addr)
			if err != nil {
				fail(ctx, c, err)
				continue
			}
			if _, err = conn.Write(req[:]); err == nil {
				for {
					var n int
					if mode == wire.ModeDown {
						n, err = conn.Read(buf)
					} else {
						n, err = conn.Write(buf)
					}
					c.done.Add(int64(n))
					if err != nil {
						break
					}
				}
			}
			stop()
			conn.Close()
			fail(ctx, c, err)
		}
	})
	return result(rate*8/1e9, errs, err)
}

func result(rate float64, errs int64, err error) measurement {
	m := measurement{Value: rate, Errors: errs}
	if err != nil {
		m.Err = err.Error()
	}
	return m
}
