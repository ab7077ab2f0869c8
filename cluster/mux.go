package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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

var errMuxClosed = errors.New("cluster listener closed")

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
	m := &mux{ln: ln, adv: adv, log: lg, closed: make(chan struct{}), subs: map[byte]*subListener{}}
	if tc != nil {
		srv, cli, err := mutualTLS(tc)
		if err != nil {
			_ = ln.Close()
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

// dial connects to a peer's cluster port and writes the header byte.
func (m *mux) dial(addr string, header byte, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	var c net.Conn
	var err error
	if m.cli != nil {
		td := &tls.Dialer{NetDialer: d, Config: m.cli}
		c, err = td.Dial("tcp", addr)
	} else {
		c, err = d.Dial("tcp", addr)
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

func (m *mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.closed)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
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

// raftLayer is raft's StreamLayer on the shared port.
type raftLayer struct{ *subListener }

func (l raftLayer) Dial(a raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.m.dial(string(a), muxRaft, timeout)
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
