package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// baseConfig is a valid config with one tcp server "web" and one udp server
// "dns"; the validation cases change it before defaults are applied.
func baseConfig(t *testing.T) *Config {
	t.Helper()
	c, unknown, err := Decode([]byte(`
[servers.web]
bind = "0.0.0.0:3000"
  [servers.web.discovery]
  kind = "static"
  static_list = ["10.0.0.1:80", "10.0.0.2:80 weight=2"]
  [servers.web.healthcheck]
  kind = "ping"
  interval = "1s"

[servers.dns]
bind = "0.0.0.0:5353"
protocol = "udp"
client_idle_timeout = "10s"
  [servers.dns.discovery]
  kind = "static"
  static_list = ["10.0.0.1:53"]
`), "toml")
	if err != nil || len(unknown) > 0 {
		t.Fatal(err, unknown)
	}
	return c
}

// edit changes server name of c in place.
func edit(c *Config, name string, f func(s *Server)) {
	s := c.Servers[name]
	f(&s)
	c.Servers[name] = s
}

func web(f func(s *Server)) func(c *Config) {
	return func(c *Config) { edit(c, "web", f) }
}

func dns(f func(s *Server)) func(c *Config) {
	return func(c *Config) { edit(c, "dns", f) }
}

func bad(s string) Duration { var d Duration; _ = d.UnmarshalText([]byte(s)); return d }

func disc(kind string, f func(d *Discovery)) func(c *Config) {
	return web(func(s *Server) {
		s.Discovery = &Discovery{Kind: kind}
		if f != nil {
			f(s.Discovery)
		}
	})
}

func hc(f func(h *Healthcheck)) func(c *Config) {
	return web(func(s *Server) {
		s.Healthcheck = &Healthcheck{Kind: "probe", Interval: Dur(time.Second), ProbeProtocol: "tcp", ProbeSend: "PING", ProbeRecv: "PONG"}
		f(s.Healthcheck)
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		// path and message part of the one expected problem; "" for a valid config.
		path, msg string
	}{
		{"base is valid", func(c *Config) {}, "", ""},

		// Global sections.
		{"log level", func(c *Config) { c.Logging.Level = "verbose" }, "logging.level", `unknown level "verbose"`},
		{"log level warning", func(c *Config) { c.Logging.Level = "warning" }, "", ""},
		{"log format", func(c *Config) { c.Logging.Format = "xml" }, "logging.format", "want text or json"},
		{"log output file", func(c *Config) { c.Logging.Output = "/var/log/gobetween.log" }, "", ""},
		{"api bind", func(c *Config) { c.Api.Bind = "8888" }, "api.bind", "not host:port"},
		{"api bind port 0", func(c *Config) { c.Api.Bind = "127.0.0.1:0" }, "", ""},
		{"api login", func(c *Config) { c.Api.BasicAuth = &ApiBasicAuth{Password: "p"} }, "api.basic_auth.login", "required"},
		{"api password", func(c *Config) { c.Api.BasicAuth = &ApiBasicAuth{Login: "l"} }, "api.basic_auth.password", "required"},
		{"api tls key", func(c *Config) { c.Api.Tls = &ApiTls{CertPath: "c"} }, "api.tls.key_path", "required"},
		{"metrics bind", func(c *Config) { c.Metrics.Bind = "localhost:http" }, "metrics.bind", "not a number"},
		{"profiler bind", func(c *Config) { c.Profiler.Bind = "x" }, "profiler.bind", "not host:port"},
		{"defaults timeout", func(c *Config) { c.Defaults.BackendIdleTimeout = ptr(bad("1")) }, "defaults.backend_idle_timeout", `invalid duration "1"`},
		{"defaults drain negative", func(c *Config) { c.Defaults.DrainTimeout = DurPtr(-time.Second) }, "defaults.drain_timeout", "negative duration"},
		{"acme challenge", func(c *Config) { c.Acme = &Acme{Challenge: "dns"} }, "acme.challenge", "unsupported challenge"},
		{"acme http_bind", func(c *Config) { c.Acme = &Acme{HttpBind: "0.0.0.0"} }, "acme.http_bind", "not host:port"},
		{"acme directory default", func(c *Config) { c.Acme = &Acme{} }, "", ""},
		{"acme directory pebble", func(c *Config) { c.Acme = &Acme{DirectoryURL: "https://127.0.0.1:14000/dir"} }, "", ""},
		{"acme directory http", func(c *Config) { c.Acme = &Acme{DirectoryURL: "http://127.0.0.1:14000/dir"} }, "acme.directory_url", "not an https URL"},
		{"acme directory no host", func(c *Config) { c.Acme = &Acme{DirectoryURL: "https:///dir"} }, "acme.directory_url", "not an https URL"},
		{"acme directory garbage", func(c *Config) { c.Acme = &Acme{DirectoryURL: "%zz"} }, "acme.directory_url", `"%zz" is not an https URL`},
		{"cluster join", func(c *Config) { c.Cluster = &Cluster{Join: []string{"a:1", "b"}} }, "cluster.join[1]", "not host:port"},
		{"cluster bind", func(c *Config) { c.Cluster = &Cluster{Bind: "10.0.0.1"} }, "cluster.bind", "not host:port"},
		{"cluster bootstrap", func(c *Config) { c.Cluster = &Cluster{BootstrapExpect: -1} }, "cluster.bootstrap_expect", "must be >= 0"},
		{"cluster voters", func(c *Config) { c.Cluster = &Cluster{MaxVoters: -2} }, "cluster.max_voters", "must be >= 1"},
		{"cluster key", func(c *Config) { c.Cluster = &Cluster{EncryptKey: "c2hvcnQ="} }, "cluster.encrypt_key", "16, 24 or 32 bytes"},
		{"cluster servers_host", func(c *Config) { c.Cluster = &Cluster{ServersHost: "127.0.0.2:80"} }, "cluster.servers_host", "without a port"},
		{"cluster servers_host ipv6", func(c *Config) { c.Cluster = &Cluster{ServersHost: "::1"} }, "", ""},
		{"cluster key ok", func(c *Config) { c.Cluster = &Cluster{EncryptKey: "AAAAAAAAAAAAAAAAAAAAAA=="} }, "", ""},
		{"cluster tls", func(c *Config) { c.Cluster = &Cluster{Tls: &ClusterTls{CertPath: "c", KeyPath: "k"}} }, "cluster.tls.ca_path", "required"},

		// Server basics.
		{"empty name", func(c *Config) { c.Servers[""] = c.Servers["web"]; delete(c.Servers, "web") }, `servers.""`, "must not be empty"},
		{"name with slash", func(c *Config) { c.Servers["a/b"] = c.Servers["web"]; delete(c.Servers, "web") }, `servers."a/b"`, "must not contain '/'"},
		{"bind required", web(func(s *Server) { s.Bind = "" }), "servers.web.bind", "required"},
		{"bind no port", web(func(s *Server) { s.Bind = "0.0.0.0" }), "servers.web.bind", "not host:port"},
		{"bind port 0", web(func(s *Server) { s.Bind = ":0" }), "servers.web.bind", "from 1 to 65535"},
		{"bind port too big", web(func(s *Server) { s.Bind = ":65536" }), "servers.web.bind", "from 1 to 65535"},
		{"bind ipv6", web(func(s *Server) { s.Bind = "[::1]:3000" }), "", ""},
		{"bind twice", dns(func(s *Server) { s.Protocol = "tcp"; s.Bind = "0.0.0.0:3000" }), "servers.web.bind", `also the bind of server "dns"`},
		{"same bind tcp and udp", dns(func(s *Server) { s.Bind = "0.0.0.0:3000" }), "", ""},
		{"protocol", web(func(s *Server) { s.Protocol = "http" }), "servers.web.protocol", `unknown protocol "http"`},
		{"balance", web(func(s *Server) { s.Balance = "random" }), "servers.web.balance", `unknown balance "random"`},
		{"balance iphash1", web(func(s *Server) { s.Balance = "iphash1" }), "", ""},
		{"max_connections", web(func(s *Server) { s.MaxConnections = ptr(-1) }), "servers.web.max_connections", "must be >= 0"},
		{"timeout invalid", web(func(s *Server) { s.ClientIdleTimeout = ptr(bad("10")) }), "servers.web.client_idle_timeout", `invalid duration "10"`},
		{"timeout negative", web(func(s *Server) { s.BackendConnectionTimeout = DurPtr(-1) }), "servers.web.backend_connection_timeout", "negative"},

		// TLS.
		{"tls required", web(func(s *Server) { s.Protocol = "tls" }), "servers.web.tls", "required with protocol tls"},
		{"tls on tcp is allowed (0.8 quirk)", web(func(s *Server) { s.Tls = &Tls{CertPath: "c", KeyPath: "k"} }), "", ""},
		{"tls nothing", web(func(s *Server) { s.Protocol = "tls"; s.Tls = &Tls{} }), "servers.web.tls", "cert_path and key_path, or acme_hosts"},
		{"tls key", web(func(s *Server) { s.Protocol = "tls"; s.Tls = &Tls{CertPath: "c"} }), "servers.web.tls.key_path", "required with cert_path"},
		{"tls cert", web(func(s *Server) { s.Protocol = "tls"; s.Tls = &Tls{KeyPath: "k"} }), "servers.web.tls.cert_path", "required with key_path"},
		{"tls acme", func(c *Config) {
			c.Acme = &Acme{}
			edit(c, "web", func(s *Server) { s.Protocol = "tls"; s.Tls = &Tls{AcmeHosts: []string{"a.example"}} })
		}, "", ""},
		{"tls acme without [acme]", web(func(s *Server) { s.Protocol = "tls"; s.Tls = &Tls{AcmeHosts: []string{"a.example"}} }),
			"servers.web.tls.acme_hosts", "needs an [acme] section"},
		{"tls acme host twice", func(c *Config) {
			c.Acme = &Acme{}
			edit(c, "web", func(s *Server) { s.Tls = &Tls{AcmeHosts: []string{"a.example"}} })
			c.Servers["web2"] = Server{Bind: ":1", Tls: &Tls{AcmeHosts: []string{"b.example", "a.example"}},
				Discovery: &Discovery{Kind: "static", StaticList: []string{"a:1"}}}
		}, "servers.web2.tls.acme_hosts[1]", `also an acme host of server "web"`},
		{"tls version", web(func(s *Server) { s.Tls = &Tls{CertPath: "c", KeyPath: "k", MaxVersion: "tls1.4"} }), "servers.web.tls.max_version", `unknown version "tls1.4"`},
		{"tls min above max", web(func(s *Server) { s.Tls = &Tls{CertPath: "c", KeyPath: "k", MinVersion: "tls1.3", MaxVersion: "tls1.2"} }), "servers.web.tls.min_version", "above max_version"},
		{"tls cipher", web(func(s *Server) {
			s.Tls = &Tls{CertPath: "c", KeyPath: "k", Ciphers: []string{"TLS_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "RC4"}}
		}), "servers.web.tls.ciphers[2]", `unknown cipher suite "RC4"`},
		{"tls on udp", dns(func(s *Server) { s.Tls = &Tls{CertPath: "c", KeyPath: "k"} }), "servers.dns.tls", "not supported with protocol udp"},
		{"backends_tls key", web(func(s *Server) { s.BackendsTls = &BackendsTls{CertPath: ptr("c")} }), "servers.web.backends_tls.key_path", "required with cert_path"},
		{"backends_tls empty", web(func(s *Server) { s.BackendsTls = &BackendsTls{IgnoreVerify: true} }), "", ""},
		{"backends_tls cipher", web(func(s *Server) { s.BackendsTls = &BackendsTls{Ciphers: []string{"x"}} }), "servers.web.backends_tls.ciphers[0]", "unknown cipher suite"},
		{"backends_tls on udp", dns(func(s *Server) { s.BackendsTls = &BackendsTls{} }), "servers.dns.backends_tls", "not supported with protocol udp"},

		// UDP.
		{"udp timeouts from defaults (0.8 gotcha fixed)", func(c *Config) {
			c.Defaults.BackendIdleTimeout = DurPtr(time.Second)
			edit(c, "dns", func(s *Server) { s.ClientIdleTimeout = nil })
		}, "", ""},
		{"udp nothing ends sessions", dns(func(s *Server) { s.ClientIdleTimeout = DurPtr(0) }), "servers.dns.udp", "needs a non-zero"},
		{"udp max_responses", dns(func(s *Server) { s.ClientIdleTimeout = nil; s.Udp = &Udp{MaxResponses: 1} }), "", ""},
		{"udp max_requests", dns(func(s *Server) { s.ClientIdleTimeout = nil; s.Udp = &Udp{MaxRequests: 1} }), "", ""},
		{"udp section on tcp", web(func(s *Server) { s.Udp = &Udp{MaxRequests: 1} }), "servers.web.udp", "only with protocol udp"},
		{"ping on udp", dns(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "ping", Interval: Dur(time.Second)} }), "servers.dns.healthcheck.kind", "not supported with protocol udp"},
		{"probe udp on udp", dns(func(s *Server) {
			s.Healthcheck = &Healthcheck{Kind: "probe", Interval: Dur(time.Second), ProbeProtocol: "udp", ProbeSend: `\x00`, ProbeRecv: `\x00`}
		}), "", ""},

		// Access.
		{"access ok", web(func(s *Server) {
			s.Access = &Access{Default: "deny", Rules: []string{"allow 10.0.0.0/8", "allow  ::1", "deny 2001:db8::/32"}}
		}), "", ""},
		{"access default", web(func(s *Server) { s.Access = &Access{Default: "block"} }), "servers.web.access.default", `unknown default "block"`},
		{"access rule action", web(func(s *Server) { s.Access = &Access{Rules: []string{"allow 1.2.3.4", "block 1.2.3.4"}} }), "servers.web.access.rules[1]", `action "block"`},
		{"access rule ip", web(func(s *Server) { s.Access = &Access{Rules: []string{"deny 1.2.3"}} }), "servers.web.access.rules[0]", `bad ip address "1.2.3"`},
		{"access rule cidr", web(func(s *Server) { s.Access = &Access{Rules: []string{"deny 10.0.0.0/33"}} }), "servers.web.access.rules[0]", `bad cidr`},
		{"access rule words", web(func(s *Server) { s.Access = &Access{Rules: []string{"deny"}} }), "servers.web.access.rules[0]", `is not "allow|deny <ip or cidr>"`},

		// PROXY protocol.
		{"proxy v1", web(func(s *Server) { s.ProxyProtocol = &ProxyProtocol{Version: "1"} }), "", ""},
		{"proxy v2 tls", web(func(s *Server) {
			s.Protocol = "tls"
			s.Tls = &Tls{CertPath: "c", KeyPath: "k"}
			s.ProxyProtocol = &ProxyProtocol{Version: "2"}
		}), "", ""},
		{"proxy version", web(func(s *Server) { s.ProxyProtocol = &ProxyProtocol{Version: "3"} }), "servers.web.proxy_protocol.version", `unknown version "3"`},
		{"proxy version missing", web(func(s *Server) { s.ProxyProtocol = &ProxyProtocol{} }), "servers.web.proxy_protocol.version", "required"},
		{"proxy on udp", dns(func(s *Server) { s.ProxyProtocol = &ProxyProtocol{Version: "1"} }), "servers.dns.proxy_protocol", "only with protocol tcp or tls"},
		{"discovery scope", web(func(s *Server) { s.Discovery.Scope = "region" }), "servers.web.discovery.scope", `unknown scope "region"`},
		{"discovery scope node", web(func(s *Server) { s.Discovery.Scope = "node" }), "", ""},
		{"accept proxy defaults", web(func(s *Server) { s.AcceptProxyProtocol = &AcceptProxyProtocol{} }), "", ""},
		{"accept proxy allow", web(func(s *Server) {
			s.AcceptProxyProtocol = &AcceptProxyProtocol{Allow: []string{"10.0.0.0/8", "::1", "10.0.0.300"}}
		}), "servers.web.accept_proxy_protocol.allow[2]", `bad ip address "10.0.0.300"`},
		{"accept proxy timeout", web(func(s *Server) { s.AcceptProxyProtocol = &AcceptProxyProtocol{Timeout: Dur(-time.Second)} }), "servers.web.accept_proxy_protocol.timeout", "negative duration"},
		{"accept proxy on udp", dns(func(s *Server) { s.AcceptProxyProtocol = &AcceptProxyProtocol{} }), "servers.dns.accept_proxy_protocol", "only with protocol tcp or tls"},
		{"cluster verdict", web(func(s *Server) {
			s.Healthcheck = &Healthcheck{Kind: "ping", Interval: Dur(time.Second), ClusterVerdict: "most"}
		}), "servers.web.healthcheck.cluster_verdict", `unknown verdict "most"`},

		// SNI.
		{"sni ok", web(func(s *Server) {
			s.Sni = &Sni{HostnameMatchingStrategy: "regexp", UnexpectedHostnameStrategy: "reject"}
		}), "", ""},
		{"sni timeout", web(func(s *Server) { s.Sni = &Sni{ReadTimeout: bad("2")} }), "servers.web.sni.read_timeout", `invalid duration "2"`},
		{"sni matching", web(func(s *Server) { s.Sni = &Sni{HostnameMatchingStrategy: "glob"} }), "servers.web.sni.hostname_matching_strategy", `unknown strategy "glob"`},
		{"sni unexpected", web(func(s *Server) { s.Sni = &Sni{UnexpectedHostnameStrategy: "drop"} }), "servers.web.sni.unexpected_hostname_strategy", `unknown strategy "drop"`},
		{"sni on udp", dns(func(s *Server) { s.Sni = &Sni{} }), "servers.dns.sni", "only with protocol tcp or tls"},

		// Health checks.
		{"hc kind empty", web(func(s *Server) { s.Healthcheck = &Healthcheck{Interval: Dur(time.Second)} }), "servers.web.healthcheck.kind", "required when the section is present"},
		{"hc kind unknown", web(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "http", Interval: Dur(time.Second)} }), "servers.web.healthcheck.kind", `unknown kind "http"`},
		{"hc none needs nothing", web(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "none"} }), "", ""},
		{"hc interval required", web(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "ping"} }), "servers.web.healthcheck.interval", "required for kind ping"},
		{"hc interval invalid", web(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "ping", Interval: bad("5")} }), "servers.web.healthcheck.interval", `invalid duration "5"`},
		{"hc timeout negative", web(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "ping", Interval: Dur(1), Timeout: Dur(-1)} }), "servers.web.healthcheck.timeout", "negative"},
		{"hc initial status", web(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "ping", Interval: Dur(1), InitialStatus: "up"} }), "servers.web.healthcheck.initial_status", `unknown status "up"`},
		{"hc unhealthy", web(func(s *Server) {
			s.Healthcheck = &Healthcheck{Kind: "ping", Interval: Dur(1), InitialStatus: "unhealthy"}
		}), "", ""},
		{"probe ok", hc(func(h *Healthcheck) {}), "", ""},
		{"probe protocol", hc(func(h *Healthcheck) { h.ProbeProtocol = "" }), "servers.web.healthcheck.probe_protocol", "required for kind probe"},
		{"probe protocol unknown", hc(func(h *Healthcheck) { h.ProbeProtocol = "http" }), "servers.web.healthcheck.probe_protocol", `unknown protocol "http"`},
		{"probe send", hc(func(h *Healthcheck) { h.ProbeSend = "" }), "servers.web.healthcheck.probe_send", "required"},
		{"probe send escape", hc(func(h *Healthcheck) { h.ProbeSend = `\xZZ` }), "servers.web.healthcheck.probe_send", "bad escape sequence"},
		{"probe recv", hc(func(h *Healthcheck) { h.ProbeRecv = "" }), "servers.web.healthcheck.probe_recv", "required"},
		{"probe recv escape", hc(func(h *Healthcheck) { h.ProbeRecv = `\q` }), "servers.web.healthcheck.probe_recv", "bad escape sequence"},
		{"probe starts_with len", hc(func(h *Healthcheck) { h.ProbeRecvLen = 4 }), "servers.web.healthcheck.probe_recv_len", "must be 0 with probe_strategy starts_with"},
		{"probe regexp", hc(func(h *Healthcheck) { h.ProbeStrategy = "regexp"; h.ProbeRecv = `^\d+ OK`; h.ProbeRecvLen = 6 }), "", ""},
		{"probe regexp len", hc(func(h *Healthcheck) { h.ProbeStrategy = "regexp"; h.ProbeRecv = "OK" }), "servers.web.healthcheck.probe_recv_len", "must be > 0 with probe_strategy regexp"},
		{"probe regexp compile", hc(func(h *Healthcheck) { h.ProbeStrategy = "regexp"; h.ProbeRecv = "(x"; h.ProbeRecvLen = 2 }), "servers.web.healthcheck.probe_recv", "bad regexp"},
		{"probe strategy", hc(func(h *Healthcheck) { h.ProbeStrategy = "contains" }), "servers.web.healthcheck.probe_strategy", `unknown strategy "contains"`},
		{"probe negative len", hc(func(h *Healthcheck) { h.ProbeStrategy = "regexp"; h.ProbeRecvLen = -1 }), "servers.web.healthcheck.probe_recv_len", "must be > 0"},
		{"exec check", web(func(s *Server) { s.Healthcheck = &Healthcheck{Kind: "exec", Interval: Dur(1)} }), "servers.web.healthcheck.exec_command", "required for kind exec"},
		{"exec check ok", web(func(s *Server) {
			s.Healthcheck = &Healthcheck{Kind: "exec", Interval: Dur(1), ExecCommand: "/bin/check"}
		}), "", ""},

		// Discovery, common.
		{"discovery required", web(func(s *Server) { s.Discovery = nil }), "servers.web.discovery", "required"},
		{"discovery kind", disc("", nil), "servers.web.discovery.kind", "required"},
		{"discovery kind unknown", disc("kubernetes", nil), "servers.web.discovery.kind", `unknown kind "kubernetes"`},
		{"failpolicy", disc("static", func(d *Discovery) { d.StaticList = []string{"a:1"}; d.Failpolicy = "drop" }), "servers.web.discovery.failpolicy", `unknown policy "drop"`},
		{"discovery interval", disc("static", func(d *Discovery) { d.StaticList = []string{"a:1"}; d.Interval = bad("1") }), "servers.web.discovery.interval", `invalid duration "1"`},
		{"discovery timeout", disc("static", func(d *Discovery) { d.StaticList = []string{"a:1"}; d.Timeout = Dur(-1) }), "servers.web.discovery.timeout", "negative"},

		// Discovery kinds.
		{"static empty", disc("static", nil), "servers.web.discovery.static_list", "at least one backend"},
		{"static line", disc("static", func(d *Discovery) { d.StaticList = []string{"a:1", "b:2", "c:3 weight=x"} }), "servers.web.discovery.static_list[2]", `weight: "x"`},
		{"exec", disc("exec", nil), "servers.web.discovery.exec_command", "required for kind exec"},
		{"exec empty program", disc("exec", func(d *Discovery) { d.ExecCommand = []string{""} }), "servers.web.discovery.exec_command", "required"},
		{"exec ok", disc("exec", func(d *Discovery) { d.ExecCommand = []string{"/bin/list", "--all"} }), "", ""},
		{"json", disc("json", nil), "servers.web.discovery.json_endpoint", "required for kind json"},
		{"json url", disc("json", func(d *Discovery) { d.JsonEndpoint = "localhost:8080/x" }), "servers.web.discovery.json_endpoint", "not an http or https URL"},
		{"json ok", disc("json", func(d *Discovery) { d.JsonEndpoint = "https://example.com/backends" }), "", ""},
		{"plaintext", disc("plaintext", nil), "servers.web.discovery.plaintext_endpoint", "required for kind plaintext"},
		{"plaintext ok", disc("plaintext", func(d *Discovery) { d.PlaintextEndpoint = "http://h/x" }), "", ""},
		{"plaintext regexp", disc("plaintext", func(d *Discovery) { d.PlaintextEndpoint = "http://h/x"; d.PlaintextRegexPattern = "(" }), "servers.web.discovery.plaintext_regex_pattern", "bad regexp"},
		{"plaintext groups", disc("plaintext", func(d *Discovery) { d.PlaintextEndpoint = "http://h/x"; d.PlaintextRegexPattern = `(?P<host>\S+)` }), "servers.web.discovery.plaintext_regex_pattern", "named groups host and port"},
		{"srv server", disc("srv", func(d *Discovery) { d.SrvLookupPattern = "x." }), "servers.web.discovery.srv_lookup_server", "required for kind srv"},
		{"srv server port", disc("srv", func(d *Discovery) { d.SrvLookupServer = "8.8.8.8"; d.SrvLookupPattern = "x." }), "servers.web.discovery.srv_lookup_server", "not host:port"},
		{"srv pattern", disc("srv", func(d *Discovery) { d.SrvLookupServer = "8.8.8.8:53" }), "servers.web.discovery.srv_lookup_pattern", "required"},
		{"srv protocol", disc("srv", func(d *Discovery) {
			d.SrvLookupServer = "8.8.8.8:53"
			d.SrvLookupPattern = "x."
			d.SrvDnsProtocol = "tls"
		}), "servers.web.discovery.srv_dns_protocol", `unknown protocol "tls"`},
		{"consul host", disc("consul", func(d *Discovery) { d.ConsulServiceName = "s" }), "servers.web.discovery.consul_host", "required"},
		{"consul service", disc("consul", func(d *Discovery) { d.ConsulHost = "h:8500" }), "servers.web.discovery.consul_service_name", "required"},
		{"consul tls", disc("consul", func(d *Discovery) { d.ConsulHost = "h:8500"; d.ConsulServiceName = "s"; d.ConsulTlsKeyPath = "k" }), "servers.web.discovery.consul_tls_cert_path", "required with consul_tls_key_path"},
		{"docker endpoint", disc("docker", func(d *Discovery) { d.DockerContainerPrivatePort = 80 }), "servers.web.discovery.docker_endpoint", "required"},
		{"docker port", disc("docker", func(d *Discovery) { d.DockerEndpoint = "unix:///var/run/docker.sock" }), "servers.web.discovery.docker_container_private_port", "from 1 to 65535"},
		{"docker tls", disc("docker", func(d *Discovery) {
			d.DockerEndpoint = "tcp://h:2376"
			d.DockerContainerPrivatePort = 80
			d.DockerTlsCertPath = "c"
		}), "servers.web.discovery.docker_tls_key_path", "required with docker_tls_cert_path"},
		{"lxd address", disc("lxd", nil), "servers.web.discovery.lxd_server_address", "required"},
		{"lxd address scheme", disc("lxd", func(d *Discovery) { d.LxdServerAddress = "http://h:8443" }), "servers.web.discovery.lxd_server_address", "must start with unix: or https:"},
		{"lxd unix", disc("lxd", func(d *Discovery) { d.LxdServerAddress = "unix:" }), "", ""},
		{"lxd address type", disc("lxd", func(d *Discovery) { d.LxdServerAddress = "unix:"; d.LxdContainerAddressType = "ipv6" }), "servers.web.discovery.lxd_container_address_type", `unknown address type "ipv6"`},
		{"lxd port", disc("lxd", func(d *Discovery) { d.LxdServerAddress = "unix:"; d.LxdContainerPort = 70000 }), "servers.web.discovery.lxd_container_port", "from 0 to 65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := baseConfig(t)
			tt.change(c)
			c.ApplyDefaults()
			err := c.Validate()
			ps := Problems(err)
			if tt.path == "" {
				if err != nil {
					t.Fatalf("unexpected problems:\n%v", err)
				}
				return
			}
			if len(ps) != 1 {
				t.Fatalf("want one problem at %s, got %d:\n%v", tt.path, len(ps), err)
			}
			if ps[0].Path != tt.path || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Fatalf("got %q, want path %s and message containing %q", ps[0], tt.path, tt.msg)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestValidateReportsEverything(t *testing.T) {
	c := baseConfig(t)
	c.Logging.Level = "x"
	edit(c, "web", func(s *Server) { s.Balance = "x"; s.Healthcheck.Interval = bad("x") })
	edit(c, "dns", func(s *Server) { s.Discovery.StaticList = []string{"nope"} })
	c.ApplyDefaults()
	got := paths(Problems(c.Validate()))
	want := []string{"logging.level", "servers.dns.discovery.static_list[0]", "servers.web.balance", "servers.web.healthcheck.interval"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestUnquoteProbe(t *testing.T) {
	tests := []struct{ in, want string }{
		{"PING", "PING"},
		{`PING\r\n`, "PING\r\n"},
		{`\x00\x01\xff`, "\x00\x01\xff"},
		{`say "hi"`, `say "hi"`},
		{`\"quoted\"`, `"quoted"`},
		{`it\'s`, `it's`},
		{`back\\slash`, `back\slash`},
		{`\u00e9t\u00e9`, "été"},
		{"raw\nnewline", "raw\nnewline"},
		{"\xff\xfe", "\xff\xfe"}, // bytes that are not UTF-8 stay as they are
		{"", ""},
	}
	for _, tt := range tests {
		got, err := UnquoteProbe(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("UnquoteProbe(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{`\q`, `\x0`, `\xZZ`, `trailing\`, `\u12`} {
		if got, err := UnquoteProbe(in); err == nil {
			t.Errorf("UnquoteProbe(%q) = %q, want an error", in, got)
		}
	}
}

func TestParseAccessRule(t *testing.T) {
	tests := []struct {
		rule    string
		allow   bool
		prefix  string
		matches []string
		misses  []string
	}{
		{"allow 10.0.0.0/8", true, "10.0.0.0/8", []string{"10.1.2.3", "::ffff:10.0.0.1"}, []string{"11.0.0.1", "::1"}},
		{"deny 192.168.1.7", false, "192.168.1.7/32", []string{"192.168.1.7"}, []string{"192.168.1.8"}},
		{"allow ::1", true, "::1/128", []string{"::1"}, []string{"127.0.0.1"}},
		{"deny 2001:db8::/32", false, "2001:db8::/32", []string{"2001:db8::5"}, []string{"2001:db9::5"}},
		{"allow   10.1.2.3/8", true, "10.0.0.0/8", []string{"10.200.0.1"}, nil},
	}
	for _, tt := range tests {
		r, err := ParseAccessRule(tt.rule)
		if err != nil || r.Allow != tt.allow || r.Prefix.String() != tt.prefix {
			t.Errorf("ParseAccessRule(%q) = %+v, %v", tt.rule, r, err)
			continue
		}
		for _, a := range tt.matches {
			if !r.Matches(mustAddr(t, a)) {
				t.Errorf("%q does not match %s", tt.rule, a)
			}
		}
		for _, a := range tt.misses {
			if r.Matches(mustAddr(t, a)) {
				t.Errorf("%q matches %s", tt.rule, a)
			}
		}
	}
}

func TestTLSNames(t *testing.T) {
	if v, ok := TLSVersion("tls1.2"); !ok || v != 0x0303 {
		t.Errorf("tls1.2 = %x %v", v, ok)
	}
	if v, ok := TLSVersion(""); !ok || v != 0 {
		t.Errorf("empty = %x %v", v, ok)
	}
	if _, ok := TLSVersion("ssl3"); ok {
		t.Error("ssl3 accepted")
	}
	for _, name := range []string{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_SHA", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "TLS_AES_128_GCM_SHA256"} {
		if _, ok := CipherSuiteID(name); !ok {
			t.Errorf("%s unknown", name)
		}
	}
	if _, ok := CipherSuiteID("TLS_NOPE"); ok {
		t.Error("TLS_NOPE known")
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
