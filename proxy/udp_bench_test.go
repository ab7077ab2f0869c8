package proxy

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// udpAckEvery is the window of BenchmarkUDPStream: the backend acknowledges
// every udpAckEvery-th datagram of a source with one byte.
const udpAckEvery = 32

// startUDPBenchBackend is a UDP backend for benchmarks: it echoes, or with
// ackEvery > 0 answers one byte per ackEvery datagrams of a source.
func startUDPBenchBackend(b *testing.B, ackEvery int) string {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	b.Cleanup(func() {
		pc.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, udpMaxDatagram)
		counts := make(map[netip.AddrPort]int)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if ackEvery == 0 {
				pc.WriteToUDPAddrPort(buf[:n], from)
				continue
			}
			if counts[from]++; counts[from]%ackEvery == 0 {
				pc.WriteToUDPAddrPort(buf[:1], from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// minUDPProxy is the smallest reasonable UDP proxy, a yardstick: one read
// loop, a map of sessions under a mutex, a connected socket and a reading
// goroutine with its own buffer per session, plain blocking writes. With
// oneShot a session ends after its first reply.
func minUDPProxy(b *testing.B, backend string, oneShot bool) string {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	baddr := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(backend))
	var mu sync.Mutex
	sessions := make(map[netip.AddrPort]*net.UDPConn)
	b.Cleanup(func() {
		pc.Close()
		mu.Lock()
		for _, c := range sessions {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		buf := make([]byte, udpMaxDatagram)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			bc := sessions[from]
			if bc == nil {
				if bc, err = net.DialUDP("udp", nil, baddr); err != nil {
					mu.Unlock()
					continue
				}
				sessions[from] = bc
				go func() {
					rb := make([]byte, udpMaxDatagram)
					for {
						n, err := bc.Read(rb)
						if err != nil {
							return
						}
						pc.WriteToUDPAddrPort(rb[:n], from)
						if oneShot {
							mu.Lock()
							delete(sessions, from)
							mu.Unlock()
							bc.Close()
							return
						}
					}
				}()
			}
			mu.Unlock()
			bc.Write(buf[:n])
		}
	}()
	return pc.LocalAddr().String()
}

// udpBenchTargets starts a backend and in front of it the yardstick and a
// udp server: "direct" is the backend alone.
func udpBenchTargets(b *testing.B, ackEvery int, oneShot bool) map[string]string {
	h := newHarness(b)
	be := startUDPBenchBackend(b, ackEvery)
	cfg := udpCfg([]string{be})
	if oneShot {
		cfg = udpCfg([]string{be}, withUDP(1, 1))
	}
	return map[string]string{
		"direct":   be,
		"minproxy": minUDPProxy(b, be, oneShot),
		"proxy":    h.startUDP("bench", cfg),
	}
}

var udpContenders = []string{"direct", "minproxy", "proxy"}

// BenchmarkUDPPingPong is one flow of request/response: a 64-byte datagram
// and its echo per op.
func BenchmarkUDPPingPong(b *testing.B) {
	targets := udpBenchTargets(b, 0, false)
	for _, name := range udpContenders {
		b.Run(name, func(b *testing.B) {
			c := udpDial(b, targets[name])
			msg := make([]byte, 64)
			buf := make([]byte, 2048)
			c.SetReadDeadline(time.Now().Add(time.Minute))
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUDPPingPongParallel is ping-pong on one flow per goroutine.
func BenchmarkUDPPingPongParallel(b *testing.B) {
	targets := udpBenchTargets(b, 0, false)
	for _, name := range udpContenders {
		b.Run(name, func(b *testing.B) {
			b.SetParallelism(4)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("udp", targets[name])
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(time.Minute))
				msg := make([]byte, 64)
				buf := make([]byte, 2048)
				for pb.Next() {
					if _, err := c.Write(msg); err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Read(buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkUDPStream is one flow one way: 64-byte datagrams to the backend,
// which acknowledges every 32nd (the window keeps socket buffers from
// overflowing). One op is one datagram.
func BenchmarkUDPStream(b *testing.B) {
	targets := udpBenchTargets(b, udpAckEvery, false)
	for _, name := range udpContenders {
		b.Run(name, func(b *testing.B) {
			c := udpDial(b, targets[name])
			msg := make([]byte, 64)
			buf := make([]byte, 2048)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			i := 0
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if i++; i%udpAckEvery == 0 {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if _, err := c.Read(buf); err != nil {
						b.Fatalf("ack after %d datagrams: %v", i, err)
					}
				}
			}
		})
	}
}

// BenchmarkUDPNewSession is one new session per op, DNS style: a new client
// socket sends one datagram and reads the answer; the proxy runs with
// max_requests = 1 and max_responses = 1 (the yardstick ends its sessions
// after one reply too).
func BenchmarkUDPNewSession(b *testing.B) {
	targets := udpBenchTargets(b, 0, true)
	for _, name := range udpContenders {
		b.Run(name, func(b *testing.B) {
			dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(targets[name]))
			msg := make([]byte, 64)
			buf := make([]byte, 2048)
			b.ReportAllocs()
			cpu := startCPU()
			defer cpu.report(b)
			for b.Loop() {
				c, err := net.DialUDP("udp", nil, dst)
				if err != nil {
					b.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
