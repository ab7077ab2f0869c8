package e2e

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// HAProxy as the real receiver of the PROXY headers gobetween sends (v1 and
// v2): its accept-proxy frontend answers each HTTP request with the client
// address it took from the header, which must be the client's own
// (127.0.0.x:port) and the address it connected to (gobetween's listener).
func TestProxyProtocolToHAProxy(t *testing.T) {
	t.Parallel()
	haAddr := freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`
defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s

frontend whoami
  bind %s accept-proxy
  http-request return status 200 content-type text/plain lf-string "%%[src]:%%[src_port] %%[dst]:%%[dst_port]"
`, haAddr))
	waitTCP(t, haAddr)
	v1Addr, v2Addr := freeAddr(t), freeAddr(t)
	n := startNode(t, config("",
		server{name: "v1", bind: v1Addr, lines: []string{haAddr}, options: []string{`proxy_protocol = { version = "1" }`}},
		server{name: "v2", bind: v2Addr, lines: []string{haAddr}, options: []string{`proxy_protocol = { version = "2" }`}},
	))
	n.waitListening(v1Addr)
	n.waitListening(v2Addr)

	for _, tt := range []struct{ name, addr, src string }{
		{"v1", v1Addr, "127.0.0.7"},
		{"v2", v2Addr, "127.0.0.8"},
		{"v2 other source", v2Addr, "127.0.0.9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := dialFrom(tt.src, tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.c.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := io.WriteString(c.c, "GET / HTTP/1.0\r\nHost: whoami\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := io.ReadAll(c.r)
			if err != nil {
				t.Fatalf("read: %v (got %q)", err, resp)
			}
			head, body, _ := strings.Cut(string(resp), "\r\n\r\n")
			if !strings.HasPrefix(head, "HTTP/1.0 200") && !strings.HasPrefix(head, "HTTP/1.1 200") {
				t.Fatalf("haproxy answered %q", resp)
			}
			if want := c.c.LocalAddr().String() + " " + c.c.RemoteAddr().String(); body != want {
				t.Fatalf("haproxy saw client %q, want %q", body, want)
			}
		})
	}
	n.requireRunning()
}

// HAProxy in front of gobetween sending PROXY headers (send-proxy and
// send-proxy-v2) to a server with accept_proxy_protocol: access rules and
// iphash judge the client's own address, not HAProxy's; a connection from a
// source not in accept_proxy_protocol.allow, or without a header, is closed.
func TestAcceptProxyProtocolBehindHAProxy(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 3)
	ourAddr, f1, f2 := freeAddr(t), freeAddr(t), freeAddr(t)
	startHAProxy(t, fmt.Sprintf(`
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s

frontend v1
  bind %s
  default_backend gobetween_v1
backend gobetween_v1
  server s1 %s send-proxy

frontend v2
  bind %s
  default_backend gobetween_v2
backend gobetween_v2
  server s1 %s send-proxy-v2
`, f1, ourAddr, f2, ourAddr))
	n := startNode(t, config("",
		server{name: "behind", bind: ourAddr, balance: "iphash", lines: lines(bs...),
			options: []string{`accept_proxy_protocol = { timeout = "2s", allow = ["127.0.0.1"] }`},
			access:  []string{`default = "allow"`, `rules = ["deny 127.0.0.9", "deny 127.0.1.0/24"]`}},
	))
	n.waitListening(ourAddr)
	waitTCP(t, f1)
	waitTCP(t, f2)
	eventually(t, 10*time.Second, "served through haproxy", func() error {
		n.requireRunning()
		_, err := whoFrom("127.0.0.10", f2)
		return err
	})

	// Every source keeps its backend through either frontend; the sources
	// spread although every connection comes from HAProxy's 127.0.0.1.
	first := map[string]string{}
	used := map[string]bool{}
	for _, front := range []string{f2, f1, f2} {
		for i := 10; i < 22; i++ {
			src := fmt.Sprintf("127.0.0.%d", i)
			name, err := whoFrom(src, front)
			if err != nil {
				t.Fatalf("%s through %s: %v", src, front, err)
			}
			if prev, ok := first[src]; ok && prev != name {
				t.Fatalf("%s went to %s, then %s", src, prev, name)
			}
			first[src] = name
			used[name] = true
		}
	}
	if len(used) < 2 {
		t.Fatalf("12 client sources all went to %v: HAProxy's address was hashed, not the header's", used)
	}

	accepted := func() int64 {
		var sum int64
		for _, b := range bs {
			sum += b.accepted.Load()
		}
		return sum
	}
	before := accepted()
	for _, tt := range []struct{ name, src, addr string }{
		{"denied source through v1", "127.0.0.9", f1},
		{"denied source through v2", "127.0.0.9", f2},
		{"denied range through v2", "127.0.1.5", f2},
		{"direct, no header", "127.0.0.1", ourAddr},
		{"direct, source not allowed", "127.0.0.2", ourAddr},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := closedWithoutData(tt.src, tt.addr); err != nil {
				t.Fatal(err)
			}
		})
	}
	if got := accepted(); got != before {
		t.Fatalf("refused clients reached the backends (%d connections)", got-before)
	}
	n.requireRunning()
}
