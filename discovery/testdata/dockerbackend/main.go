// Command dockerbackend is the backend the docker discovery tests run in
// containers built FROM scratch: it accepts TCP connections on -addr and
// writes "gbt-backend $GBT_NAME\n" to each, then closes it. It exits on
// SIGTERM, which a process running as PID 1 would otherwise ignore.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	greeting := fmt.Sprintf("gbt-backend %s\n", os.Getenv("GBT_NAME"))
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		c.Write([]byte(greeting))
		c.Close()
	}
}
