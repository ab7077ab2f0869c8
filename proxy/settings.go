package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/gobetween/gobetween/config"
)

// maxDialTimeout bounds a backend dial when backend_connection_timeout is 0
// ("no timeout"): without a bound a blackholed backend would hold a client and a
// server slot for the kernel's SYN retry time (about two minutes on Linux).
const maxDialTimeout = 30 * time.Second

// settings are the connection settings of one server, parsed once per config and
// swapped atomically on update. A connection reads them once, when it is
// accepted, and keeps them for its whole life. Immutable after newSettings.
type settings struct {
	maxConns int64         // server max_connections; 0 = unlimited
	idle     time.Duration // the connection's idle limit; 0 = none
	drain    time.Duration // drain_timeout
	dialer   net.Dialer
	access   *accessList // nil: every client is allowed
	// keepAlive enables TCP keep-alive on client connections (the dialer has the
	// same setting for backends). Only servers with no idle limit use it: there
	// it is what closes a connection whose peer vanished; with an idle limit the
	// limit does that, and a new connection saves the setsockopt calls.
	keepAlive bool

	acceptProxy *acceptProxy  // nil: clients connect directly
	tls         *serverTLS    // nil: no TLS termination
	sniRead     time.Duration // > 0: read the ClientHello (TLS passthrough with sni) for that long
	backendTLS  *backendTLS   // nil: plain connections to backends
	sendProxy   byte          // PROXY protocol version sent to backends; 0: none
	sniPatterns bool          // backends' sni options are regexps, not names
}

// newSettings parses s; acme serves the certificates of tls.acme_hosts (nil:
// none, and a server with acme_hosts is refused).
func newSettings(s config.Server, acme CertSource) (*settings, error) {
	st := &settings{
		idle:  idleLimit(dur(s.ClientIdleTimeout), dur(s.BackendIdleTimeout)),
		drain: dur(s.DrainTimeout),
	}
	if s.MaxConnections != nil && *s.MaxConnections > 0 {
		st.maxConns = int64(*s.MaxConnections)
	}
	st.keepAlive = st.idle == 0
	if !st.keepAlive {
		st.dialer.KeepAlive = -1
	}
	st.dialer.Timeout = dur(s.BackendConnectionTimeout)
	if st.dialer.Timeout <= 0 {
		st.dialer.Timeout = maxDialTimeout
	}
	if s.Access != nil {
		a, err := parseAccess(*s.Access)
		if err != nil {
			return nil, fmt.Errorf("access: %w", err)
		}
		st.access = a
	}
	var err error
	if s.AcceptProxyProtocol != nil {
		if st.acceptProxy, err = newAcceptProxy(s.AcceptProxyProtocol); err != nil {
			return nil, err
		}
	}
	// A [tls] section terminates TLS whatever the protocol says, as in
	// gobetween 0.8 (a tcp server with [tls] terminated too).
	if s.Tls != nil {
		if st.tls, err = newServerTLS(s.Tls, acme); err != nil {
			return nil, err
		}
	} else if s.Sni != nil {
		st.sniRead = dur(&s.Sni.ReadTimeout)
		if st.sniRead <= 0 {
			st.sniRead = config.DefaultSniReadTimeout
		}
	}
	st.sniPatterns = s.Sni != nil && s.Sni.HostnameMatchingStrategy == "regexp"
	if s.BackendsTls != nil {
		if st.backendTLS, err = newBackendTLS(s.BackendsTls); err != nil {
			return nil, err
		}
	}
	if s.ProxyProtocol != nil {
		switch s.ProxyProtocol.Version {
		case "1":
			st.sendProxy = 1
		case "2":
			st.sendProxy = 2
		default:
			return nil, fmt.Errorf("proxy_protocol: version %q is not 1 or 2", s.ProxyProtocol.Version)
		}
	}
	return st, nil
}

// idleLimit is the idle limit of a connection: it has one clock for both
// directions (no bytes either way), so of client_idle_timeout and
// backend_idle_timeout the smaller non-zero value applies.
func idleLimit(client, backend time.Duration) time.Duration {
	switch {
	case client <= 0:
		return max(backend, 0)
	case backend <= 0:
		return client
	default:
		return min(client, backend)
	}
}

func dur(d *config.Duration) time.Duration {
	if d == nil || d.Bad || d.D < 0 {
		return 0
	}
	return d.D
}

// accessList is a server's parsed access section: first matching rule wins,
// else the default.
type accessList struct {
	rules        []config.AccessRule
	allowDefault bool
}

func parseAccess(a config.Access) (*accessList, error) {
	l := &accessList{allowDefault: true}
	switch a.Default {
	case "", "allow":
	case "deny":
		l.allowDefault = false
	default:
		return nil, fmt.Errorf("default %q is not allow or deny", a.Default)
	}
	var errs []error
	for _, r := range a.Rules {
		rule, err := config.ParseAccessRule(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.rules = append(l.rules, rule)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// allows reports whether a client at ip may connect. ip is unmapped and has no
// zone (clientIP guarantees both).
func (l *accessList) allows(ip netip.Addr) bool {
	for i := range l.rules {
		if l.rules[i].Prefix.Contains(ip) {
			return l.rules[i].Allow
		}
	}
	return l.allowDefault
}

// clientIP is the address a client connects from, as access rules and balancers
// expect it: IPv4 as 4 bytes, no zone. The zero Addr when it is not TCP.
func clientIP(c net.Conn) netip.Addr {
	ta, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	return ta.AddrPort().Addr().Unmap().WithZone("")
}

// unsupported lists the features of s that this runtime cannot serve yet. A
// server using any of them does not start, rather than silently serving without
// them (a backend expecting TLS or a PROXY header would get plain bytes).
func unsupported(s config.Server) error {
	var errs []error
	switch s.Protocol {
	case "", "tcp", "tls", "udp":
	default:
		errs = append(errs, fmt.Errorf("protocol %q: %w", s.Protocol, ErrUnsupported))
	}
	return errors.Join(errs...)
}
