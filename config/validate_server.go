package config

import (
	"slices"
	"strings"
)

var balanceNames = []string{"weight", "roundrobin", "leastconn", "leastbandwidth", "iphash", "iphash1"}

// validate checks one server, after defaults, under "servers.<name>".
func (s *Server) validate(name string, ps *problems) {
	path := serverPath(name)
	switch {
	case name == "":
		ps.add(path, "a server name must not be empty")
	case strings.Contains(name, "/"):
		ps.add(path, "a server name must not contain '/'")
	}
	if s.Bind == "" {
		ps.add(sub(path, "bind"), `required: the listen address as host:port, as in "0.0.0.0:3000"`)
	} else if err := checkHostPort(s.Bind, false); err != nil {
		ps.add(sub(path, "bind"), "%v", err)
	}
	protocolOK := true
	switch s.Protocol {
	case "tcp", "tls", "udp":
	default:
		protocolOK = false
		ps.add(sub(path, "protocol"), "unknown protocol %q (want tcp, tls or udp)", s.Protocol)
	}
	if !slices.Contains(balanceNames, s.Balance) {
		ps.add(sub(path, "balance"), "unknown balance %q (want %s)", s.Balance, strings.Join(balanceNames, ", "))
	}
	s.ConnectionOptions.validate(path, ps)
	udp := s.Protocol == "udp"

	switch {
	case s.Tls != nil && udp:
		ps.add(sub(path, "tls"), "not supported with protocol udp")
	case s.Tls != nil:
		s.Tls.validate(sub(path, "tls"), ps)
	case s.Protocol == "tls":
		ps.add(sub(path, "tls"), "required with protocol tls: cert_path and key_path, or acme_hosts")
	}
	if s.BackendsTls != nil {
		if udp {
			ps.add(sub(path, "backends_tls"), "not supported with protocol udp")
		} else {
			s.BackendsTls.validate(sub(path, "backends_tls"), ps)
		}
	}
	if s.Udp != nil && !udp && protocolOK {
		ps.add(sub(path, "udp"), "only with protocol udp")
	}
	if udp && !s.endsUdpSessions() {
		// gobetween 0.8 ran this check before merging [defaults]; it runs after
		// here, and asks for a non-zero value since every timeout is set by now.
		ps.add(sub(path, "udp"), "protocol udp needs a non-zero client_idle_timeout, backend_idle_timeout, udp.max_requests or udp.max_responses to end sessions")
	}
	if s.Access != nil {
		s.Access.validate(sub(path, "access"), ps)
	}
	if s.ProxyProtocol != nil {
		p := sub(path, "proxy_protocol")
		switch s.ProxyProtocol.Version {
		case "1", "2":
		case "":
			ps.add(sub(p, "version"), `required: "1" or "2"`)
		default:
			ps.add(sub(p, "version"), `unknown version %q (want "1" or "2")`, s.ProxyProtocol.Version)
		}
		if udp {
			ps.add(p, "only with protocol tcp or tls")
		}
	}
	if a := s.AcceptProxyProtocol; a != nil {
		p := sub(path, "accept_proxy_protocol")
		if udp {
			ps.add(p, "only with protocol tcp or tls")
		}
		if err := a.Timeout.Err(); err != nil {
			ps.add(sub(p, "timeout"), "%v", err)
		} else if a.Timeout.D <= 0 {
			ps.add(sub(p, "timeout"), "must be > 0, got %s", a.Timeout.D)
		}
		for i, src := range a.Allow {
			if _, err := ParsePrefix(src); err != nil {
				ps.add(at(sub(p, "allow"), i), "%v", err)
			}
		}
	}
	if s.Sni != nil {
		s.Sni.validate(sub(path, "sni"), ps)
		if udp {
			ps.add(sub(path, "sni"), "only with protocol tcp or tls")
		}
	}
	if s.Discovery == nil {
		ps.add(sub(path, "discovery"), "required: a [discovery] section with a kind, as in kind = \"static\"")
	} else {
		s.Discovery.validate(sub(path, "discovery"), ps)
	}
	if s.Healthcheck != nil {
		s.Healthcheck.validate(s.Protocol, sub(path, "healthcheck"), ps)
	}
}

// endsUdpSessions reports whether something ends the UDP sessions of s.
func (s *Server) endsUdpSessions() bool {
	nonZero := func(d *Duration) bool { return d != nil && d.D != 0 }
	if nonZero(s.ClientIdleTimeout) || nonZero(s.BackendIdleTimeout) {
		return true
	}
	return s.Udp != nil && (s.Udp.MaxRequests > 0 || s.Udp.MaxResponses > 0)
}

func (t *Tls) validate(path string, ps *problems) {
	if len(t.AcmeHosts) == 0 {
		switch {
		case t.CertPath == "" && t.KeyPath == "":
			ps.add(path, "needs cert_path and key_path, or acme_hosts")
		case t.CertPath == "":
			ps.add(sub(path, "cert_path"), "required with key_path")
		case t.KeyPath == "":
			ps.add(sub(path, "key_path"), "required with cert_path")
		}
	}
	for i, h := range t.AcmeHosts {
		if h == "" {
			ps.add(at(sub(path, "acme_hosts"), i), "empty host name")
		}
	}
	validateTLSCommon(t.MinVersion, t.MaxVersion, t.Ciphers, path, ps)
	if err := t.HandshakeTimeout.Err(); err != nil {
		ps.add(sub(path, "handshake_timeout"), "%v", err)
	} else if t.HandshakeTimeout.D <= 0 {
		ps.add(sub(path, "handshake_timeout"), "must be > 0, got %s", t.HandshakeTimeout.D)
	}
}

func (t *BackendsTls) validate(path string, ps *problems) {
	bothOrNeither(deref(t.CertPath), deref(t.KeyPath), path, "cert_path", "key_path", ps)
	if t.RootCaCertPath != nil && *t.RootCaCertPath == "" {
		ps.add(sub(path, "root_ca_cert_path"), "empty path")
	}
	validateTLSCommon(t.MinVersion, t.MaxVersion, t.Ciphers, path, ps)
}

func validateTLSCommon(minVersion, maxVersion string, ciphers []string, path string, ps *problems) {
	lo, okLo := TLSVersion(minVersion)
	if !okLo {
		ps.add(sub(path, "min_version"), "unknown version %q (want tls1, tls1.1, tls1.2 or tls1.3)", minVersion)
	}
	hi, okHi := TLSVersion(maxVersion)
	if !okHi {
		ps.add(sub(path, "max_version"), "unknown version %q (want tls1, tls1.1, tls1.2 or tls1.3)", maxVersion)
	}
	if okLo && okHi && lo != 0 && hi != 0 && lo > hi {
		ps.add(sub(path, "min_version"), "%q is above max_version %q", minVersion, maxVersion)
	}
	for i, c := range ciphers {
		if _, ok := CipherSuiteID(c); !ok {
			ps.add(at(sub(path, "ciphers"), i), "unknown cipher suite %q (Go names, as in TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)", c)
		}
	}
}

func (a *Access) validate(path string, ps *problems) {
	if a.Default != "allow" && a.Default != "deny" {
		ps.add(sub(path, "default"), "unknown default %q (want allow or deny)", a.Default)
	}
	for i, r := range a.Rules {
		if _, err := ParseAccessRule(r); err != nil {
			ps.add(at(sub(path, "rules"), i), "%v", err)
		}
	}
}

func (s *Sni) validate(path string, ps *problems) {
	if err := s.ReadTimeout.Err(); err != nil {
		ps.add(sub(path, "read_timeout"), "%v", err)
	}
	switch s.HostnameMatchingStrategy {
	case "exact", "regexp":
	default:
		ps.add(sub(path, "hostname_matching_strategy"), "unknown strategy %q (want exact or regexp)", s.HostnameMatchingStrategy)
	}
	switch s.UnexpectedHostnameStrategy {
	case "default", "reject", "any":
	default:
		ps.add(sub(path, "unexpected_hostname_strategy"), "unknown strategy %q (want default, reject or any)", s.UnexpectedHostnameStrategy)
	}
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
