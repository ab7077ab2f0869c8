package proxy

import (
	"fmt"
	"io"
	"net"
	"testing"
)

// benchTargets starts a backend and, in front of it, two minimal proxies and a
// proxy server: "direct" measures the backend alone, "mincopy" and "minbuf" the
// yardsticks, "proxy" the same traffic through the relay.
func benchTargets(b *testing.B, backend func(net.Conn)) map[string]string {
	h := newHarness(b)
	be := startBackend(b, backend)
	return map[string]string{
		"direct":  be.addr(),
		"mincopy": minCopyProxy(b, be.addr(), false),
		"minbuf":  minCopyProxy(b, be.addr(), true),
		"proxy":   h.start("bench", serverCfg([]string{be.addr()})),
	}
}

// minCopyProxy is the smallest correct TCP proxy (io.Copy each way, half-close),
// a yardstick for the relay's own overhead. buffered hides ReadFrom so that
// bytes go through user space instead of splice.
func minCopyProxy(b *testing.B, backend string, buffered bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	cp := func(dst, src *net.TCPConn) {
		if buffered {
			io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
		} else {
			io.Copy(dst, src)
		}
		dst.CloseWrite()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				bc, err := net.Dial("tcp", backend)
				if err != nil {
					c.Close()
					return
				}
				done := make(chan struct{})
				go func() { cp(c.(*net.TCPConn), bc.(*net.TCPConn)); close(done) }()
				cp(bc.(*net.TCPConn), c.(*net.TCPConn))
				<-done
				c.Close()
				bc.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkRelay is keep-alive ping-pong: one 64-byte request and its echo per
// op on one connection.
func BenchmarkRelay(b *testing.B) {
	targets := benchTargets(b, echo)
	for _, name := range []string{"direct", "mincopy", "minbuf", "proxy"} {
		b.Run(name, func(b *testing.B) {
			c := dial(b, targets[name])
			msg := make([]byte, 64)
			buf := make([]byte, 64)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRelayParallel is keep-alive ping-pong on one connection per
// goroutine: requests per second under concurrency.
func BenchmarkRelayParallel(b *testing.B) {
	targets := benchTargets(b, echo)
	for _, name := range []string{"direct", "mincopy", "minbuf", "proxy"} {
		b.Run(name, func(b *testing.B) {
			b.SetParallelism(8)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", targets[name])
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				msg := make([]byte, 64)
				buf := make([]byte, 64)
				for pb.Next() {
					if _, err := c.Write(msg); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// oneShot answers one byte with one byte and closes: the server ends the
// connection, as an HTTP/1.0 server does, so TIME_WAIT lands on listening ports
// and a benchmark of many short connections does not run out of ephemeral ports
// (which would measure the kernel's port search, not the proxy).
func oneShot(c net.Conn) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err == nil {
		c.Write(b[:])
	}
}

// shortConn is one short connection: connect, one byte each way, read to the
// end, close.
func shortConn(addr string, buf []byte) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(buf[:1]); err != nil {
		return err
	}
	n, err := io.ReadFull(c, buf)
	if n != 1 || err != io.ErrUnexpectedEOF {
		return fmt.Errorf("read %d bytes, %v; want 1 byte then EOF", n, err)
	}
	return nil
}

// BenchmarkNewConn is one short connection per op. Through the proxy that is
// accept, pick, dial, relay both ways, half-close, close.
func BenchmarkNewConn(b *testing.B) {
	targets := benchTargets(b, oneShot)
	for _, name := range []string{"direct", "mincopy", "proxy"} {
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 2)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			for b.Loop() {
				if err := shortConn(targets[name], buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBulk is one-way throughput: 1 MiB per op into a backend that discards.
func BenchmarkBulk(b *testing.B) {
	targets := benchTargets(b, func(c net.Conn) {
		io.Copy(io.Discard, c)
		c.Write([]byte{1})
	})
	for _, name := range []string{"direct", "mincopy", "minbuf", "proxy"} {
		b.Run(name, func(b *testing.B) {
			c := dial(b, targets[name])
			chunk := make([]byte, 1<<20)
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.CloseWrite()
			var ack [1]byte
			if _, err := io.ReadFull(c, ack[:]); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkNewConnParallel is BenchmarkNewConn from 8 goroutines per core: new
// connections per second when accepts queue up.
func BenchmarkNewConnParallel(b *testing.B) {
	targets := benchTargets(b, oneShot)
	for _, name := range []string{"direct", "mincopy", "proxy"} {
		b.Run(name, func(b *testing.B) {
			b.SetParallelism(8)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, 2)
				for pb.Next() {
					if err := shortConn(targets[name], buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
