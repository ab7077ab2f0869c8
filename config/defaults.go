package config

import "time"

// Fallbacks of the connection options when neither the server nor [defaults]
// sets them (gobetween 0.8's, plus the new drain_timeout).
const (
	DefaultDrainTimeout   = 30 * time.Second
	DefaultSniReadTimeout = 2 * time.Second
	DefaultMaxVoters      = 5
	DefaultReportInterval = time.Second
	// DefaultProxyHeaderTimeout is accept_proxy_protocol.timeout's default.
	DefaultProxyHeaderTimeout = 5 * time.Second
	// DefaultTLSHandshakeTimeout is tls.handshake_timeout's default.
	DefaultTLSHandshakeTimeout = 10 * time.Second
	// DefaultACMEDirectory is acme.directory_url's default: Let's Encrypt's
	// production directory, the CA gobetween 0.8 always used.
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
)

// ApplyDefaults fills every default of gobetween 0.8 and of the new keys into c.
// [defaults] is completed first, then merged into every server that leaves a
// connection option unset. A value of [defaults] that is invalid is not copied
// into servers (its own path reports it once); they get the fallback instead.
// ApplyDefaults never fails; Validate reports what is wrong afterwards.
func (c *Config) ApplyDefaults() {
	if c.Logging.Level == "" {
		c.Logging.Level = "info"
	}
	if c.Logging.Output == "" {
		c.Logging.Output = "stdout"
	}
	if c.Logging.Format == "" {
		c.Logging.Format = "text"
	}
	if c.Acme != nil {
		setString(&c.Acme.Challenge, "http")
		setString(&c.Acme.HttpBind, "0.0.0.0:80")
		setString(&c.Acme.CacheDir, "/tmp")
		setString(&c.Acme.DirectoryURL, DefaultACMEDirectory)
	}
	if c.Cluster != nil {
		if c.Cluster.MaxVoters == 0 {
			c.Cluster.MaxVoters = DefaultMaxVoters
		}
		setDur(&c.Cluster.ReportInterval, DefaultReportInterval)
	}
	completeConnectionOptions(&c.Defaults)
	for name, s := range c.Servers {
		s.applyDefaults(c.Defaults)
		c.Servers[name] = s
	}
}

// completeConnectionOptions fills the unset options of o with the fallbacks.
func completeConnectionOptions(o *ConnectionOptions) {
	if o.MaxConnections == nil {
		o.MaxConnections = new(int)
	}
	setDurPtr(&o.ClientIdleTimeout, 0)
	setDurPtr(&o.BackendIdleTimeout, 0)
	setDurPtr(&o.BackendConnectionTimeout, 0)
	setDurPtr(&o.DrainTimeout, DefaultDrainTimeout)
}

// usableDefaults is d completed, with every invalid value replaced by its
// fallback, so that a bad [defaults] value is reported only at its own path.
func usableDefaults(d ConnectionOptions) ConnectionOptions {
	d = d.clone()
	completeConnectionOptions(&d)
	if *d.MaxConnections < 0 {
		d.MaxConnections = new(int)
	}
	fix := func(p **Duration, fallback time.Duration) {
		if (*p).Err() != nil {
			*p = DurPtr(fallback)
		}
	}
	fix(&d.ClientIdleTimeout, 0)
	fix(&d.BackendIdleTimeout, 0)
	fix(&d.BackendConnectionTimeout, 0)
	fix(&d.DrainTimeout, DefaultDrainTimeout)
	return d
}

// applyDefaults fills the defaults of one server; defaults is the [defaults]
// section (complete or not).
func (s *Server) applyDefaults(defaults ConnectionOptions) {
	d := usableDefaults(defaults)
	merge := func(dst **Duration, from *Duration) {
		if *dst == nil || unsetDur(**dst) {
			v := *from
			*dst = &v
		}
	}
	if s.MaxConnections == nil {
		v := *d.MaxConnections
		s.MaxConnections = &v
	}
	merge(&s.ClientIdleTimeout, d.ClientIdleTimeout)
	merge(&s.BackendIdleTimeout, d.BackendIdleTimeout)
	merge(&s.BackendConnectionTimeout, d.BackendConnectionTimeout)
	merge(&s.DrainTimeout, d.DrainTimeout)

	setString(&s.Protocol, "tcp")
	setString(&s.Balance, "weight")
	if s.Tls != nil {
		setDur(&s.Tls.HandshakeTimeout, DefaultTLSHandshakeTimeout)
	}
	if s.AcceptProxyProtocol != nil {
		setDur(&s.AcceptProxyProtocol.Timeout, DefaultProxyHeaderTimeout)
	}
	if s.Sni != nil {
		setDur(&s.Sni.ReadTimeout, DefaultSniReadTimeout)
		setString(&s.Sni.HostnameMatchingStrategy, "exact")
		setString(&s.Sni.UnexpectedHostnameStrategy, "default")
	}
	if s.Udp == nil && s.Protocol == "udp" {
		s.Udp = &Udp{}
	}
	if s.Access != nil {
		setString(&s.Access.Default, "allow")
	}
	if s.Healthcheck == nil {
		s.Healthcheck = &Healthcheck{Kind: "none"}
	}
	s.Healthcheck.applyDefaults()
	if s.Discovery != nil {
		s.Discovery.applyDefaults()
	}
}

func (h *Healthcheck) applyDefaults() {
	setDur(&h.Interval, 0)
	setDur(&h.Timeout, 0)
	if h.Fails <= 0 {
		h.Fails = 1
	}
	if h.Passes <= 0 {
		h.Passes = 1
	}
	setString(&h.InitialStatus, "healthy")
	setString(&h.ClusterVerdict, "majority")
	if k, ok := healthcheckKinds[h.Kind]; ok && k.defaults != nil {
		k.defaults(h)
	}
}

func (d *Discovery) applyDefaults() {
	setString(&d.Failpolicy, "keeplast")
	setDur(&d.Interval, 0)
	k, ok := discoveryKinds[d.Kind]
	if !ok {
		setDur(&d.Timeout, 0)
		return
	}
	// gobetween 0.8 defaulted the timeout to "0" before looking up the kind's
	// default, so the kind defaults never applied; here an unset timeout gets it.
	setDur(&d.Timeout, k.timeout)
	if k.defaults != nil {
		k.defaults(d)
	}
}

// unsetDur reports whether d was not written, or written as "" (which gobetween
// 0.8 treated as unset) or as JSON null.
func unsetDur(d Duration) bool {
	return d.Raw == "" && (d.Bad || d.D == 0)
}

func setDur(d *Duration, v time.Duration) {
	if unsetDur(*d) {
		*d = Dur(v)
	}
}

func setDurPtr(d **Duration, v time.Duration) {
	if *d == nil || unsetDur(**d) {
		*d = DurPtr(v)
	}
}

func setString(s *string, v string) {
	if *s == "" {
		*s = v
	}
}
