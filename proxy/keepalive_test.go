//go:build unix

package proxy

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// Keep-alive is on for clients of servers without an idle limit (it is what
// ends a connection whose client vanished) and off with one.
func TestClientKeepAlive(t *testing.T) {
	for _, tc := range []struct {
		name string
		idle time.Duration
		want int
	}{
		{"no idle limit", 0, 1},
		{"idle limit", time.Minute, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			be := startBackend(t, echo)
			addr := h.start("web", serverCfg([]string{be.addr()}, withIdle(tc.idle, 0)))
			mustRelay(t, dial(t, addr), "keep-alive")
			var clients []net.Conn
			h.server("web").conns.each(func(c *conn) { clients = append(clients, c.client) })
			if len(clients) != 1 {
				t.Fatalf("%d live connections, want 1", len(clients))
			}
			rc, err := clients[0].(*net.TCPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			got := -1
			rc.Control(func(fd uintptr) { got, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
			if got != tc.want {
				t.Errorf("SO_KEEPALIVE = %d, want %d", got, tc.want)
			}
		})
	}
}
