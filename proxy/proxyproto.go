package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/gobetween/gobetween/config"
)

// proxyHeaderMax bounds a received PROXY header: v1 is at most 107 bytes, a v2
// header 16 bytes plus its TLVs. A longer one fails the connection.
const proxyHeaderMax = 4096

// acceptProxy is a server's accept_proxy_protocol: the header's timeout and the
// sources allowed to send one.
type acceptProxy struct {
	timeout time.Duration
	allow   []netip.Prefix // empty: any source
}

func newAcceptProxy(a *config.AcceptProxyProtocol) (*acceptProxy, error) {
	ap := &acceptProxy{timeout: dur(&a.Timeout)}
	if ap.timeout <= 0 {
		ap.timeout = config.DefaultProxyHeaderTimeout
	}
	for _, s := range a.Allow {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("accept_proxy_protocol: allow: %w", err)
		}
		ap.allow = append(ap.allow, p)
	}
	return ap, nil
}

func (a *acceptProxy) allows(ip netip.Addr) bool {
	if len(a.allow) == 0 {
		return true
	}
	for _, p := range a.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

var errProxySource = errors.New("PROXY header from a source not in accept_proxy_protocol.allow")

// readProxyHeader reads the PROXY protocol header (v1 or v2) at the start of c
// within the timeout. It returns the client's source and the address it
// connected to as the header gives them (c's own addresses for a LOCAL header,
// as a balancer in front sends for its health checks), and appends the bytes
// read past the header to rest. br is a pooled reader; the caller resets it.
func (a *acceptProxy) read(c net.Conn, br *bufio.Reader, rest []byte) (src, dst net.Addr, _ []byte, err error) {
	if ip := addrIP(c.RemoteAddr()); !a.allows(ip) {
		return nil, nil, rest, fmt.Errorf("%w: %s", errProxySource, ip)
	}
	if err := c.SetReadDeadline(time.Now().Add(a.timeout)); err != nil {
		return nil, nil, rest, err
	}
	h, err := proxyproto.Read(br)
	if err != nil {
		return nil, nil, rest, fmt.Errorf("PROXY header: %w", err)
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return nil, nil, rest, err
	}
	src, dst = c.RemoteAddr(), c.LocalAddr()
	if h.Command.IsProxy() {
		if s, d, ok := h.TCPAddrs(); ok {
			src, dst = s, d
		}
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		rest = append(rest, b...)
	}
	return src, dst, rest, nil
}

// writeProxyHeader sends a PROXY protocol header of version (1 or 2) for a
// client at src that connected to dst. An error fails the connection (0.8
// ignored it, so a backend expecting the header got plain bytes).
func writeProxyHeader(w io.Writer, version byte, src, dst net.Addr) error {
	h := proxyproto.HeaderProxyFromAddrs(version, src, dst)
	if _, err := h.WriteTo(w); err != nil {
		return fmt.Errorf("PROXY header: %w", err)
	}
	return nil
}

func addrIP(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}

// prefixConn replays bytes already read from a connection before reading on.
// It is used only until the bytes are consumed by a TLS handshake or a
// ClientHello read; relaying uses the connection itself.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
