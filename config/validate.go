package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Validate checks c, after ApplyDefaults, and returns every problem at once: an
// errors.Join of Problem values sorted by path (see Problems), or nil.
func (c *Config) Validate() error {
	var ps problems
	c.Logging.validate("logging", &ps)
	c.Api.validate("api", &ps)
	checkOptionalBind(c.Metrics.Bind, "metrics.bind", &ps)
	checkOptionalBind(c.Profiler.Bind, "profiler.bind", &ps)
	c.Defaults.validate("defaults", &ps)
	if c.Acme != nil {
		c.Acme.validate("acme", &ps)
	}
	if c.Cluster != nil {
		c.Cluster.validate("cluster", &ps)
	}
	for _, name := range sortedNames(c.Servers) {
		s := c.Servers[name]
		s.validate(name, &ps)
	}
	c.validateAcrossServers(&ps)
	return ps.err()
}

func sortedNames(m map[string]Server) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// validateAcrossServers checks what no single server can: two servers on the
// same bind address and protocol family, ACME hosts claimed twice, ACME hosts
// without an [acme] section.
func (c *Config) validateAcrossServers(ps *problems) {
	binds := make(map[string]string)
	acmeHosts := make(map[string]string)
	for _, name := range sortedNames(c.Servers) {
		s := c.Servers[name]
		path := serverPath(name)
		if s.Bind != "" {
			family := "tcp"
			if s.Protocol == "udp" {
				family = "udp"
			}
			key := family + " " + s.Bind
			if other, taken := binds[key]; taken {
				ps.add(sub(path, "bind"), "%q is also the bind of server %q", s.Bind, other)
			} else {
				binds[key] = name
			}
		}
		if s.Tls == nil {
			continue
		}
		if len(s.Tls.AcmeHosts) > 0 && c.Acme == nil {
			ps.add(sub(sub(path, "tls"), "acme_hosts"), "needs an [acme] section")
		}
		for i, h := range s.Tls.AcmeHosts {
			if other, taken := acmeHosts[h]; taken {
				ps.add(at(sub(sub(path, "tls"), "acme_hosts"), i), "host %q is also an acme host of server %q", h, other)
			} else {
				acmeHosts[h] = name
			}
		}
	}
}

var logLevels = []string{"panic", "fatal", "error", "warn", "warning", "info", "debug", "trace"}

func (l *Logging) validate(path string, ps *problems) {
	if !slices.Contains(logLevels, l.Level) {
		ps.add(sub(path, "level"), "unknown level %q (want %s)", l.Level, strings.Join(logLevels, ", "))
	}
	if l.Format != "text" && l.Format != "json" {
		ps.add(sub(path, "format"), "unknown format %q (want text or json)", l.Format)
	}
	if l.Output == "" {
		ps.add(sub(path, "output"), "required: stdout, stderr or a file path")
	}
}

func (a *Api) validate(path string, ps *problems) {
	checkOptionalBind(a.Bind, sub(path, "bind"), ps)
	if a.BasicAuth != nil {
		p := sub(path, "basic_auth")
		if a.BasicAuth.Login == "" {
			ps.add(sub(p, "login"), "required with basic_auth")
		}
		if a.BasicAuth.Password == "" {
			ps.add(sub(p, "password"), "required with basic_auth")
		}
	}
	if a.Tls != nil {
		requireCertAndKey(a.Tls.CertPath, a.Tls.KeyPath, sub(path, "tls"), ps)
	}
}

func (a *Acme) validate(path string, ps *problems) {
	if a.Challenge != "http" {
		ps.add(sub(path, "challenge"), "unsupported challenge %q (only http, as in gobetween 0.8)", a.Challenge)
	}
	if err := checkHostPort(a.HttpBind, true); err != nil {
		ps.add(sub(path, "http_bind"), "%v", err)
	}
	if a.CacheDir == "" {
		ps.add(sub(path, "cache_dir"), "required")
	}
	if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
		ps.add(sub(path, "directory_url"), "%q is not an https URL", a.DirectoryURL)
	}
}

func (c *Cluster) validate(path string, ps *problems) {
	for _, f := range []struct{ key, val string }{
		{"bind", c.Bind}, {"raft_bind", c.RaftBind}, {"advertise", c.Advertise},
	} {
		checkOptionalBind(f.val, sub(path, f.key), ps)
	}
	for i, j := range c.Join {
		if err := checkHostPort(j, false); err != nil {
			ps.add(at(sub(path, "join"), i), "%v", err)
		}
	}
	if c.ServersHost != "" {
		if _, _, err := net.SplitHostPort(c.ServersHost); err == nil || strings.ContainsAny(c.ServersHost, " /") {
			ps.add(sub(path, "servers_host"), "%q must be a host without a port, as in \"127.0.0.2\"", c.ServersHost)
		}
	}
	if c.BootstrapExpect < 0 {
		ps.add(sub(path, "bootstrap_expect"), "must be >= 0, got %d", c.BootstrapExpect)
	}
	if c.MaxVoters < 1 {
		ps.add(sub(path, "max_voters"), "must be >= 1, got %d", c.MaxVoters)
	}
	if err := c.ReportInterval.Err(); err != nil {
		ps.add(sub(path, "report_interval"), "%v", err)
	} else if d := c.ReportInterval.D; d < 50*time.Millisecond || d > time.Minute {
		ps.add(sub(path, "report_interval"), "must be between 50ms and 1m, got %s", d)
	}
	if c.EncryptKey != "" {
		key, err := base64.StdEncoding.DecodeString(c.EncryptKey)
		if err != nil || (len(key) != 16 && len(key) != 24 && len(key) != 32) {
			ps.add(sub(path, "encrypt_key"), "must be the base64 of 16, 24 or 32 bytes")
		}
	}
	if c.Tls != nil {
		p := sub(path, "tls")
		for _, f := range []struct{ key, val string }{
			{"cert_path", c.Tls.CertPath}, {"key_path", c.Tls.KeyPath}, {"ca_path", c.Tls.CaPath},
		} {
			if f.val == "" {
				ps.add(sub(p, f.key), "required for mutual TLS")
			}
		}
	}
}

func (o *ConnectionOptions) validate(path string, ps *problems) {
	if o.MaxConnections != nil && *o.MaxConnections < 0 {
		ps.add(sub(path, "max_connections"), "must be >= 0 (0 is no limit), got %d", *o.MaxConnections)
	}
	for _, f := range []struct {
		key string
		d   *Duration
	}{
		{"client_idle_timeout", o.ClientIdleTimeout},
		{"backend_idle_timeout", o.BackendIdleTimeout},
		{"backend_connection_timeout", o.BackendConnectionTimeout},
		{"drain_timeout", o.DrainTimeout},
	} {
		if f.d == nil {
			continue
		}
		if err := f.d.Err(); err != nil {
			ps.add(sub(path, f.key), "%v", err)
		}
	}
}

// checkHostPort checks "host:port" with a decimal port from 1 (0 too with
// zeroPort) to 65535; the host may be empty (every address).
func checkHostPort(s string, zeroPort bool) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if zeroPort && port == "0" {
		return nil
	}
	if _, err := parsePort(port); err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	return nil
}

// checkOptionalBind checks a listen address that may be empty (the listener's
// own default) and may use port 0 (any free port).
func checkOptionalBind(s, path string, ps *problems) {
	if s == "" {
		return
	}
	if err := checkHostPort(s, true); err != nil {
		ps.add(path, "%v", err)
	}
}

// requireCertAndKey reports a missing certificate or key path of a TLS section
// that needs both.
func requireCertAndKey(cert, key, path string, ps *problems) {
	if cert == "" {
		ps.add(sub(path, "cert_path"), "required")
	}
	if key == "" {
		ps.add(sub(path, "key_path"), "required")
	}
}
