// Command backend is the benchmark's backend: it serves the wire protocol (echo,
// bulk download, bulk upload) on one TCP address, or with -udp echoes datagrams
// on one UDP address, and prints the address it listens on as its first line of
// standard output, so the harness can pass 127.0.0.1:0. It runs as its own
// process so that it shares no Go runtime with the load generator or with the
// proxies under test.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"

	"github.com/gobetween/gobetween/e2e/bench/wire"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	udp := flag.Bool("udp", false, "echo UDP datagrams instead of serving TCP")
	readers := flag.Int("readers", runtime.GOMAXPROCS(0), "goroutines serving the UDP socket")
	flag.Parse()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	if *udp {
		serveUDP(*listen, *readers, stop)
		return
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("backend: %v", err)
	}
	fmt.Println(ln.Addr())
	go func() {
		<-stop
		ln.Close()
	}()
	if err := wire.Serve(ln); err != nil {
		log.Fatalf("backend: %v", err)
	}
}

// serveUDP echoes datagrams on one socket served by several goroutines. The
// socket's reads are serialised by the runtime, but a goroutine writing a reply
// does not hold up the next read, and one echo (a read and a write) is half the
// work a proxy does per datagram (two of each), so the backend is not what
// limits a UDP workload. A large receive buffer absorbs bursts of new sessions.
func serveUDP(addr string, readers int, stop <-chan os.Signal) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		log.Fatalf("backend: %v", err)
	}
	c := pc.(*net.UDPConn)
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
	fmt.Println(c.LocalAddr())
	go func() {
		<-stop
		c.Close()
	}()
	var wg sync.WaitGroup
	for range max(readers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := wire.ServeUDP(c); err != nil {
				log.Fatalf("backend: %v", err)
			}
		}()
	}
	wg.Wait()
}
