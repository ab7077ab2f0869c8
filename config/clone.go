package config

import (
	"bytes"
	"encoding/json"
	"slices"
)

// RedactedValue is what Redacted writes in place of a secret.
const RedactedValue = "<redacted>"

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func (o ConnectionOptions) clone() ConnectionOptions {
	o.MaxConnections = clonePtr(o.MaxConnections)
	o.ClientIdleTimeout = clonePtr(o.ClientIdleTimeout)
	o.BackendIdleTimeout = clonePtr(o.BackendIdleTimeout)
	o.BackendConnectionTimeout = clonePtr(o.BackendConnectionTimeout)
	o.DrainTimeout = clonePtr(o.DrainTimeout)
	return o
}

// Clone returns a deep copy of s: no pointer, slice or map is shared with s.
func (s Server) Clone() Server {
	s.ConnectionOptions = s.ConnectionOptions.clone()
	s.Sni = clonePtr(s.Sni)
	if s.Tls != nil {
		t := *s.Tls
		t.AcmeHosts = slices.Clone(t.AcmeHosts)
		t.Ciphers = slices.Clone(t.Ciphers)
		s.Tls = &t
	}
	if s.BackendsTls != nil {
		t := *s.BackendsTls
		t.RootCaCertPath = clonePtr(t.RootCaCertPath)
		t.CertPath = clonePtr(t.CertPath)
		t.KeyPath = clonePtr(t.KeyPath)
		t.Ciphers = slices.Clone(t.Ciphers)
		s.BackendsTls = &t
	}
	s.Udp = clonePtr(s.Udp)
	if s.Access != nil {
		a := *s.Access
		a.Rules = slices.Clone(a.Rules)
		s.Access = &a
	}
	s.ProxyProtocol = clonePtr(s.ProxyProtocol)
	if s.AcceptProxyProtocol != nil {
		a := *s.AcceptProxyProtocol
		a.Allow = slices.Clone(a.Allow)
		s.AcceptProxyProtocol = &a
	}
	if s.Discovery != nil {
		d := *s.Discovery
		d.StaticList = slices.Clone(d.StaticList)
		d.ExecCommand = slices.Clone(d.ExecCommand)
		s.Discovery = &d
	}
	s.Healthcheck = clonePtr(s.Healthcheck)
	return s
}

// Clone returns a deep copy of c: no pointer, slice or map is shared with c.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	out := *c
	out.Api.BasicAuth = clonePtr(c.Api.BasicAuth)
	out.Api.Tls = clonePtr(c.Api.Tls)
	out.Defaults = c.Defaults.clone()
	out.Acme = clonePtr(c.Acme)
	if c.Cluster != nil {
		cl := *c.Cluster
		cl.Join = slices.Clone(cl.Join)
		cl.Tls = clonePtr(cl.Tls)
		out.Cluster = &cl
	}
	if c.Servers != nil {
		out.Servers = make(map[string]Server, len(c.Servers))
		for name, s := range c.Servers {
			out.Servers[name] = s.Clone()
		}
	}
	return &out
}

// Redacted returns a deep copy of s with every secret that is set (consul
// password and ACL token, LXD remote password) replaced by "<redacted>".
func (s Server) Redacted() Server {
	s = s.Clone()
	if d := s.Discovery; d != nil {
		redact(&d.ConsulAuthPassword)
		redact(&d.ConsulAclToken)
		redact(&d.LxdServerRemotePassword)
	}
	return s
}

// Redacted returns a deep copy of c with every secret that is set replaced by
// "<redacted>": the API basic-auth password, the cluster encryption key and the
// secrets of every server (see Server.Redacted). /dump and GET /servers show
// this copy.
func (c *Config) Redacted() *Config {
	out := c.Clone()
	if out == nil {
		return nil
	}
	if out.Api.BasicAuth != nil {
		redact(&out.Api.BasicAuth.Password)
	}
	if out.Cluster != nil {
		redact(&out.Cluster.EncryptKey)
	}
	for name, s := range out.Servers {
		out.Servers[name] = s.Redacted()
	}
	return out
}

func redact(s *string) {
	if *s != "" {
		*s = RedactedValue
	}
}

// Equal reports whether s and o define the same server: equal after encoding,
// so that a duration written "60s" equals one written "1m" and an empty list
// equals an absent one. Reload uses it to leave unchanged servers alone.
func (s Server) Equal(o Server) bool {
	a, errA := json.Marshal(s.withoutEmptyLists())
	b, errB := json.Marshal(o.withoutEmptyLists())
	return errA == nil && errB == nil && bytes.Equal(a, b)
}

func (s Server) withoutEmptyLists() Server {
	s = s.Clone()
	nilIfEmpty := func(l *[]string) {
		if len(*l) == 0 {
			*l = nil
		}
	}
	if s.Tls != nil {
		nilIfEmpty(&s.Tls.AcmeHosts)
		nilIfEmpty(&s.Tls.Ciphers)
	}
	if s.BackendsTls != nil {
		nilIfEmpty(&s.BackendsTls.Ciphers)
	}
	if s.Access != nil {
		nilIfEmpty(&s.Access.Rules)
	}
	if s.Discovery != nil {
		nilIfEmpty(&s.Discovery.StaticList)
		nilIfEmpty(&s.Discovery.ExecCommand)
	}
	return s
}
