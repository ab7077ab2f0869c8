package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The first byte a dialer writes on a connection to the cluster port says which
// protocol follows (as rqlite's tcp mux does): Raft's stream layer or the
// cluster's own RPC (forwarded writes, status).
const (
	muxRaft byte = 1
	muxRPC  byte = 2
)

// muxHeaderTimeout bounds how long an accepted connection may take to finish the
// TLS handshake and send its header byte.
const muxHeaderTimeout = 5 * time.Second

var (
	errMuxClosed  = errors.New("cluster listener closed")
	errRaftClosed = errors.New("raft connections of the cluster port closed: the node is stopping")
)

// mux accepts connections on the cluster port (mutual TLS when configured) and
// hands each to the sub-listener its first byte names. Each connection's
// handshake and header read run in their own goroutine, so a slow or hostile
// peer cannot stall the others.
type mux struct {
	ln   net.Listener // TLS-wrapped when tls is set
	adv  net.Addr     // the address peers dial
	cli  *tls.Config  // client side of mutual TLS; nil for plain TCP
	log  *slog.Logger
	subs map[byte]*subListener

	// ctx ends at Close and cancels dials in progress; raftCtx, its child, ends
	// at closeRaft, so that raft's dials to a peer whose host is gone (the
	// connect neither succeeds nor fails until the transport's 10 s timeout)
	// do not hold up raft's shutdown.
	ctx        context.Context
	cancel     context.CancelFunc
	raftCtx    context.Context
	raftCancel context.CancelFunc

	// The raft connections dialed and accepted, closed by closeRaft: an RPC
	// waiting for the answer of a lost peer otherwise holds raft's shutdown
	// until its deadline (10 s), and a follower installing a snapshot from a
	// lost leader reads without one.
	raftMu     sync.Mutex
	raftConns  map[*raftConn]struct{}
	raftClosed bool

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// newMux listens on bind. advertise (host:port) is what peers dial; empty means
// the bound address, which must then not be a wildcard.
func newMux(bind, advertise string, tc *tls.Config, lg *slog.Logger) (*mux, error) {
	var adv net.Addr
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			return nil, fmt.Errorf("advertise address: %w", err)
		}
		if a.IP == nil || a.IP.IsUnspecified() {
			return nil, fmt.Errorf("advertise address %q is not a dialable host:port", advertise)
		}
		adv = a
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", bind, err)
	}
	if adv == nil {
		a := ln.Addr().(*net.TCPAddr)
		if a.IP.IsUnspecified() {
			_ = ln.Close()
			return nil, fmt.Errorf("raft bind %s is a wildcard address: set the advertise address", bind)
		}
		adv = a
	}
	m := &mux{ln: ln, adv: adv, log: lg, closed: make(chan struct{}), subs: map[byte]*subListener{}, raftConns: map[*raftConn]struct{}{}}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.raftCtx, m.raftCancel = context.WithCancel(m.ctx)
	if tc != nil {
		srv, cli, err := mutualTLS(tc)
		if err != nil {
			_ = ln.Close()
			m.cancel()
			return nil, err
		}
		m.ln = tls.NewListener(ln, srv)
		m.cli = cli
	}
	for _, b := range []byte{muxRaft, muxRPC} {
		m.subs[b] = &subListener{m: m, ch: make(chan net.Conn), done: make(chan struct{})}
	}
	m.wg.Add(1)
	go m.serve()
	return m, nil
}

func (m *mux) serve() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.closed:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			m.log.Error("cluster listener stopped accepting", "err", err)
			return
		}
		m.wg.Add(1)
		go m.route(c)
	}
}

// route reads the header byte (for TLS this runs the handshake, which verifies
// the client certificate) and passes the connection on.
func (m *mux) route(c net.Conn) {
	defer m.wg.Done()
	_ = c.SetDeadline(time.Now().Add(muxHeaderTimeout))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		m.log.Debug("cluster connection dropped before its header", "remote", c.RemoteAddr(), "err", err)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	sub, ok := m.subs[b[0]]
	if !ok {
		m.log.Debug("cluster connection with an unknown header", "remote", c.RemoteAddr(), "header", b[0])
		_ = c.Close()
		return
	}
	select {
	case sub.ch <- c:
	case <-sub.done:
		_ = c.Close()
	case <-m.closed:
		_ = c.Close()
	}
}

// dial connects to a peer's cluster port and writes the header byte. It gives
// up at timeout, when ctx ends, or when the mux closes.
func (m *mux) dial(ctx context.Context, addr string, header byte, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	d := &net.Dialer{}
	var c net.Conn
	var err error
	if m.cli != nil {
		td := &tls.Dialer{NetDialer: d, Config: m.cli}
		c, err = td.DialContext(ctx, "tcp", addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{header}); err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// trackRaft registers a raft connection for closeRaft, or closes it when
// closeRaft has run.
func (m *mux) trackRaft(c net.Conn, accepted bool) (net.Conn, error) {
	rc := &raftConn{Conn: c, m: m, accepted: accepted}
	m.raftMu.Lock()
	defer m.raftMu.Unlock()
	if m.raftClosed {
		_ = abortConn(c)
		return nil, errRaftClosed
	}
	m.raftConns[rc] = struct{}{}
	return rc, nil
}

// closeRaft cancels raft's dials in progress, makes new ones fail, and closes
// every raft connection, so that raft's RPCs fail at once. Node.Close calls it
// right after raft.Shutdown, which then completes without waiting for any
// peer. Idempotent.
func (m *mux) closeRaft() {
	m.raftMu.Lock()
	m.raftClosed = true
	conns := m.raftConns
	m.raftConns = map[*raftConn]struct{}{}
	m.raftMu.Unlock()
	m.raftCancel()
	for rc := range conns {
		_ = abortConn(rc.Conn)
	}
}

// abortConn closes the TCP connection under c without TLS's close_notify,
// whose write may block for 5 s on a connection whose peer stopped reading.
func abortConn(c net.Conn) error {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn()
	}
	return c.Close()
}

func (m *mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		m.cancel()
		m.closeRaft()
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

// raftConn is a raft connection that closeRaft can close. Once it has, the
// connection's errors say so: raft logs the error of an RPC it sent, and logs
// any error but io.EOF of a connection it accepted, which every follower
// would otherwise do at each stop.
type raftConn struct {
	net.Conn
	m        *mux
	accepted bool
}

func (c *raftConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	return n, c.closedErr(err)
}

func (c *raftConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	return n, c.closedErr(err)
}

func (c *raftConn) closedErr(err error) error {
	if err == nil || c.m.raftCtx.Err() == nil {
		return err
	}
	if c.accepted {
		return io.EOF
	}
	return errRaftClosed
}

func (c *raftConn) Close() error {
	c.m.raftMu.Lock()
	delete(c.m.raftConns, c)
	c.m.raftMu.Unlock()
	return c.Conn.Close()
}

// subListener is the net.Listener of one protocol on the shared port.
type subListener struct {
	m        *mux
	ch       chan net.Conn
	doneOnce sync.Once
	done     chan struct{}
}

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.done:
		return nil, errMuxClosed
	case <-s.m.closed:
		return nil, errMuxClosed
	}
}

func (s *subListener) Close() error {
	s.doneOnce.Do(func() { close(s.done) })
	return nil
}

func (s *subListener) Addr() net.Addr { return s.m.adv }

// raftLayer is raft's StreamLayer on the shared port. Its connections, both
// ways, are tracked for closeRaft.
type raftLayer struct{ *subListener }

func (l raftLayer) Accept() (net.Conn, error) {
	for {
		c, err := l.subListener.Accept()
		if err != nil {
			return nil, err
		}
		// After closeRaft a connection is refused here, but Accept goes on
		// until the transport closes the listener: an error would have it log
		// and retry.
		if rc, err := l.m.trackRaft(c, true); err == nil {
			return rc, nil
		}
	}
}

func (l raftLayer) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.m.dial(l.m.raftCtx, string(a), muxRaft, timeout)
	if err != nil {
		if l.m.raftCtx.Err() != nil {
			return nil, fmt.Errorf("dial %s: %w", a, errRaftClosed)
		}
		return nil, err
	}
	return l.m.trackRaft(c, false)
}

// mutualTLS derives the server and client sides from the configured tls.Config:
// both present its certificate, both require the peer's certificate and verify
// it against the cluster CA (RootCAs, or ClientCAs for the server side when
// set), TLS 1.3 only. Peers are dialled by IP, so unless ServerName is set the
// client checks the chain against the CA but not a host name: the CA is the
// cluster's identity, as in Nomad and Vault.
func mutualTLS(tc *tls.Config) (srv, cli *tls.Config, err error) {
	if len(tc.Certificates) == 0 && tc.GetCertificate == nil {
		return nil, nil, errors.New("cluster tls: no certificate")
	}
	if tc.RootCAs == nil && tc.ClientCAs == nil {
		return nil, nil, errors.New("cluster tls: no CA pool (RootCAs)")
	}
	roots := tc.RootCAs
	if roots == nil {
		roots = tc.ClientCAs
	}
	clientCAs := tc.ClientCAs
	if clientCAs == nil {
		clientCAs = roots
	}
	srv = tc.Clone()
	srv.ClientAuth = tls.RequireAndVerifyClientCert
	srv.ClientCAs = clientCAs
	srv.MinVersion = tls.VersionTLS13

	cli = tc.Clone()
	cli.MinVersion = tls.VersionTLS13
	cli.RootCAs = roots
	if cli.GetClientCertificate == nil && len(cli.Certificates) == 0 && tc.GetCertificate != nil {
		cli.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return tc.GetCertificate(&tls.ClientHelloInfo{})
		}
	}
	if cli.ServerName == "" {
		// Verified below against the CA instead of by name.
		cli.InsecureSkipVerify = true
		cli.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("cluster tls: the peer sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("cluster tls: peer certificate: %w", err)
			}
			return nil
		}
	}
	return srv, cli, nil
}
