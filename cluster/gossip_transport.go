package cluster

import (
	"context"
	"fmt"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// meteredTransport is memberlist's NetTransport with its traffic counted:
// packets written and received, and the bytes of every stream connection both
// ways. It stays a NodeAwareTransport, as NetTransport is. It dials streams
// itself (as NetTransport does) so that Shutdown cancels dials in flight, and
// it closes the stream connections still open at Shutdown.
type meteredTransport struct {
	inner *memberlist.NetTransport

	sent, received atomic.Uint64

	packets chan *memberlist.Packet
	streams chan net.Conn
	ctx     context.Context // cancelled by Shutdown: ends dials and the forwarders
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu     sync.Mutex
	conns  map[*meteredConn]struct{}
	closed bool // Shutdown ran: connections are closed as they come
}

var _ memberlist.NodeAwareTransport = (*meteredTransport)(nil)

// newMeteredTransport binds a NetTransport to host:port. Port 0 picks one free
// for both TCP and UDP (retried, as memberlist does, when the kernel's TCP pick
// is taken for UDP).
func newMeteredTransport(host string, port int, logger *log.Logger) (*meteredTransport, error) {
	cfg := &memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: logger}
	tries := 1
	if port == 0 {
		tries = 10
	}
	var inner *memberlist.NetTransport
	var err error
	for range tries {
		if inner, err = memberlist.NewNetTransport(cfg); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gossip transport: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &meteredTransport{
		inner: inner, packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
		ctx: ctx, cancel: cancel, conns: map[*meteredConn]struct{}{},
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t, nil
}

// port is the bound port.
func (t *meteredTransport) port() int { return t.inner.GetAutoBindPort() }

func (t *meteredTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.inner.PacketCh():
			t.received.Add(uint64(len(p.Buf)))
			select {
			case t.packets <- p:
			case <-t.ctx.Done():
				return
			}
		case <-t.ctx.Done():
			return
		}
	}
}

func (t *meteredTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case c := <-t.inner.StreamCh():
			mc := t.track(c)
			select {
			case t.streams <- mc:
			case <-t.ctx.Done():
				_ = mc.Close()
				return
			}
		case <-t.ctx.Done():
			return
		}
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *meteredTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *meteredTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	ts, err := t.inner.WriteTo(b, addr)
	if err == nil {
		t.sent.Add(uint64(len(b)))
	}
	return ts, err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *meteredTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ts, err := t.inner.WriteToAddress(b, a)
	if err == nil {
		t.sent.Add(uint64(len(b)))
	}
	return ts, err
}

// PacketCh implements memberlist.Transport.
func (t *meteredTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *meteredTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *meteredTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(t.ctx, "tcp", a.Addr)
	if err != nil {
		return nil, err
	}
	return t.track(c), nil
}

// StreamCh implements memberlist.Transport.
func (t *meteredTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport. memberlist calls it while it still
// reads PacketCh and StreamCh, so the forwarders keep forwarding until the
// listeners are down.
func (t *meteredTransport) Shutdown() error {
	err := t.inner.Shutdown()
	t.cancel()
	t.wg.Wait()
	t.mu.Lock()
	t.closed = true
	open := make([]*meteredConn, 0, len(t.conns))
	for c := range t.conns {
		open = append(open, c)
	}
	t.mu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
	return err
}

func (t *meteredTransport) track(c net.Conn) *meteredConn {
	mc := &meteredConn{Conn: c, t: t}
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.conns[mc] = struct{}{}
	}
	t.mu.Unlock()
	if closed {
		_ = c.Close()
	}
	return mc
}

// meteredConn counts a stream connection's bytes into its transport.
type meteredConn struct {
	net.Conn
	t    *meteredTransport
	once sync.Once
}

func (c *meteredConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.received.Add(uint64(n))
	return n, err
}

func (c *meteredConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.sent.Add(uint64(n))
	return n, err
}

func (c *meteredConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}
