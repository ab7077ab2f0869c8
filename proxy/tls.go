package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gobetween/gobetween/config"
)

// serverTLS terminates TLS on a server's listener. It is part of the server's
// settings: built (and the certificate read from disk) when the server starts,
// is updated, or the runtime reloads certificates; a connection keeps the one
// it started with.
type serverTLS struct {
	config  *tls.Config
	timeout time.Duration // handshake_timeout
}

// newServerTLS reads the certificate of t and builds the listener's config.
// With acme_hosts the certificate is chosen per handshake (see pickCertificate);
// acme supplies theirs, and without it such a server is refused.
func newServerTLS(t *config.Tls, acme CertSource) (*serverTLS, error) {
	if len(t.AcmeHosts) > 0 && acme == nil {
		return nil, fmt.Errorf("tls.acme_hosts: no [acme] section: %w", ErrUnsupported)
	}
	cfg, err := tlsCommon(t.MinVersion, t.MaxVersion, t.Ciphers, t.SessionTickets)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	var static *tls.Certificate
	if len(t.AcmeHosts) == 0 || t.CertPath != "" || t.KeyPath != "" {
		cert, err := tls.LoadX509KeyPair(t.CertPath, t.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("tls: certificate: %w", err)
		}
		static = &cert
	}
	if len(t.AcmeHosts) == 0 {
		cfg.Certificates = []tls.Certificate{*static}
	} else {
		p := &pickCertificate{acmeHosts: make(map[string]struct{}, len(t.AcmeHosts)), acme: acme, static: static}
		for _, h := range t.AcmeHosts {
			p.acmeHosts[normalHost(h)] = struct{}{}
		}
		cfg.GetCertificate = p.get
	}
	timeout := dur(&t.HandshakeTimeout)
	if timeout <= 0 {
		timeout = config.DefaultTLSHandshakeTimeout
	}
	return &serverTLS{config: cfg, timeout: timeout}, nil
}

// pickCertificate chooses the certificate of a server with acme_hosts: a
// ClientHello naming one of them (case-insensitive, a trailing dot ignored)
// gets the ACME certificate; any other name, or none, gets the static
// certificate when cert_path and key_path are set, else the handshake fails.
// Immutable; used concurrently by every handshake.
type pickCertificate struct {
	acmeHosts map[string]struct{}
	acme      CertSource
	static    *tls.Certificate // nil: ACME only
}

func (p *pickCertificate) get(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if _, ok := p.acmeHosts[normalHost(hello.ServerName)]; ok && hello.ServerName != "" {
		return p.acme.GetCertificate(hello)
	}
	if p.static != nil {
		return p.static, nil
	}
	if hello.ServerName == "" {
		return nil, errors.New("tls: the client sent no server name, and the server has certificates only for its acme_hosts")
	}
	return nil, fmt.Errorf("tls: no certificate for %q: not one of the server's acme_hosts", hello.ServerName)
}

// normalHost is a host name as acme_hosts are matched: lower case, without a
// trailing dot. It allocates only for a name that has upper case letters.
func normalHost(h string) string {
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// handshake completes the client's TLS handshake on raw within the handshake
// timeout. raw is the client connection (possibly replaying bytes already
// read); the caller keeps owning it.
func (t *serverTLS) handshake(raw net.Conn) (*tls.Conn, error) {
	tc := tls.Server(raw, t.config)
	if err := raw.SetDeadline(time.Now().Add(t.timeout)); err != nil {
		return nil, err
	}
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return tc, nil
}

// backendTLS is TLS from gobetween to the backends of a server. The name a
// backend's certificate is verified against is its sni option when set, else
// its host (gobetween 0.8 always used the host).
type backendTLS struct {
	base *tls.Config
	// byName caches base cloned with each ServerName (a server's backends are
	// few; the cache lives as long as the settings).
	byName sync.Map // string → *tls.Config
}

func newBackendTLS(b *config.BackendsTls) (*backendTLS, error) {
	cfg, err := tlsCommon(b.MinVersion, b.MaxVersion, b.Ciphers, b.SessionTickets)
	if err != nil {
		return nil, fmt.Errorf("backends_tls: %w", err)
	}
	cfg.InsecureSkipVerify = b.IgnoreVerify
	if b.RootCaCertPath != nil {
		pem, err := os.ReadFile(*b.RootCaCertPath)
		if err != nil {
			return nil, fmt.Errorf("backends_tls: root_ca_cert_path: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("backends_tls: root_ca_cert_path: no PEM certificate in %s", *b.RootCaCertPath)
		}
		cfg.RootCAs = pool
	}
	if b.CertPath != nil && b.KeyPath != nil {
		cert, err := tls.LoadX509KeyPair(*b.CertPath, *b.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("backends_tls: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if b.SessionTickets {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	return &backendTLS{base: cfg}, nil
}

// client starts TLS over the backend connection raw, verified against name, and
// completes the handshake by deadline.
func (t *backendTLS) client(raw net.Conn, name string, deadline time.Time) (*tls.Conn, error) {
	v, ok := t.byName.Load(name)
	if !ok {
		c := t.base.Clone()
		c.ServerName = name
		v, _ = t.byName.LoadOrStore(name, c)
	}
	tc := tls.Client(raw, v.(*tls.Config))
	if err := raw.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("backend tls handshake: %w", err)
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return tc, nil
}

// tlsCommon is the part of a TLS config both sides share: versions, cipher
// suites (TLS 1.0–1.2; Go does not let TLS 1.3 suites be chosen) and session
// tickets (off unless session_tickets, as in gobetween 0.8). Unknown names are
// errors; config validation reports them first, with their paths.
func tlsCommon(minV, maxV string, ciphers []string, tickets bool) (*tls.Config, error) {
	lo, ok := config.TLSVersion(minV)
	if !ok {
		return nil, fmt.Errorf("min_version: unknown version %q", minV)
	}
	hi, ok := config.TLSVersion(maxV)
	if !ok {
		return nil, fmt.Errorf("max_version: unknown version %q", maxV)
	}
	cfg := &tls.Config{MinVersion: lo, MaxVersion: hi, SessionTicketsDisabled: !tickets}
	var errs []error
	for _, name := range ciphers {
		id, ok := config.CipherSuiteID(name)
		if !ok {
			errs = append(errs, fmt.Errorf("ciphers: unknown cipher suite %q", name))
			continue
		}
		cfg.CipherSuites = append(cfg.CipherSuites, id)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}
