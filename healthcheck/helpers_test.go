package healthcheck

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// targetOf turns a listener address into a Target.
func targetOf(t *testing.T, addr string) config.Target {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return config.Target{Host: host, Port: port}
}

// closedTarget is a loopback address where nothing listens.
func closedTarget(t *testing.T) config.Target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return targetOf(t, addr)
}

// checkCtx is the context a Monitor would give a check with this timeout.
func checkCtx(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}
