// Command backend is the benchmark's backend: it serves the wire protocol (echo,
// bulk download, bulk upload) on one TCP address and prints the address it listens
// on as its first line of standard output, so the harness can pass 127.0.0.1:0.
// It runs as its own process so that it shares no Go runtime with the load
// generator or with the proxies under test.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/gobetween/gobetween/e2e/bench/wire"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("backend: %v", err)
	}
	fmt.Println(ln.Addr())

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		ln.Close()
	}()
	if err := wire.Serve(ln); err != nil {
		log.Fatalf("backend: %v", err)
	}
}
