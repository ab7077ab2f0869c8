// Command demo-backend is the tiny HTTP server that `make run` starts three times
// behind the example gobetween config. Every request, whatever its method or path,
// is answered with one line naming the backend, so `curl localhost:3000` shows
// which backend gobetween picked. Connections are kept alive as HTTP/1.1 allows.
//
//	demo-backend -listen 127.0.0.1:8001 [-listen ADDR | -listen ADDR,ADDR] [-name NAME]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// addrList collects -listen values; each may also be a comma-separated list.
type addrList []string

func (l *addrList) String() string { return strings.Join(*l, ",") }

func (l *addrList) Set(v string) error {
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			*l = append(*l, a)
		}
	}
	return nil
}

func main() {
	var addrs addrList
	flag.Var(&addrs, "listen", "address to listen on, host:port (repeatable, or a comma-separated list)")
	name := flag.String("name", "", "name to answer with (default: the listen address)")
	flag.Parse()
	if len(addrs) == 0 {
		addrs = addrList{"127.0.0.1:8001"}
	}
	if err := run(addrs, *name); err != nil {
		log.Printf("demo-backend: %v", err)
		os.Exit(1)
	}
}

func run(addrs []string, name string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	servers := make([]*http.Server, 0, len(addrs))
	errc := make(chan error, len(addrs))
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return fmt.Errorf("listen: %w", err)
		}
		who := name
		if who == "" {
			who = ln.Addr().String()
		}
		srv := &http.Server{
			Handler:           hello(who),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		}
		servers = append(servers, srv)
		log.Printf("demo backend %s listening on %s", who, ln.Addr())
		go func() { errc <- srv.Serve(ln) }()
	}

	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(shutdown)
	}
	return nil
}

// hello answers every request with one line naming the backend.
func hello(name string) http.Handler {
	body := "hello from demo backend " + name + "\n"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Backend", name)
		if r.Method == http.MethodHead {
			return
		}
		fmt.Fprint(w, body)
	})
}
