// Command mincopy is the smallest useful TCP proxy in Go, the benchmark's yardstick
// for what the Go runtime alone costs: accept, dial the one backend, and copy both
// ways with io.Copy between *net.TCPConn (so Linux splice applies), forwarding
// half-close. No timeouts, no balancing, no counters. It prints the address it
// listens on as its first line of standard output.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	backend := flag.String("backend", "", "backend address, host:port")
	flag.Parse()
	if *backend == "" {
		log.Fatal("mincopy: -backend is required")
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("mincopy: %v", err)
	}
	fmt.Println(ln.Addr())

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()

	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go relay(c.(*net.TCPConn), *backend)
	}
}

// relay owns client and closes it.
func relay(client *net.TCPConn, addr string) {
	defer client.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	backend := c.(*net.TCPConn)
	defer backend.Close()

	done := make(chan struct{})
	go func() {
		io.Copy(backend, client)
		backend.CloseWrite()
		close(done)
	}()
	io.Copy(client, backend)
	client.CloseWrite()
	<-done
}
