package config

import (
	"testing"
	"time"
)

func mustLoad(t *testing.T, doc string) *Config {
	t.Helper()
	c, _, err := Load([]byte(doc), LoadOptions{})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return c
}

func durOf(d *Duration) time.Duration {
	if d == nil {
		return -1
	}
	return d.D
}

func TestDefaultsMerge(t *testing.T) {
	c := mustLoad(t, `
[defaults]
max_connections = 50
client_idle_timeout = "1m"
backend_connection_timeout = ""

[servers.inherits]
bind = ":1"
  [servers.inherits.discovery]
  kind = "static"
  static_list = ["a:1"]

[servers.overrides]
bind = ":2"
max_connections = 0
client_idle_timeout = "0"
backend_idle_timeout = "5s"
backend_connection_timeout = "2s"
drain_timeout = "1s"
  [servers.overrides.discovery]
  kind = "static"
  static_list = ["a:1"]
`)
	d := c.Defaults
	if *d.MaxConnections != 50 || durOf(d.ClientIdleTimeout) != time.Minute || durOf(d.BackendIdleTimeout) != 0 ||
		durOf(d.BackendConnectionTimeout) != 0 || durOf(d.DrainTimeout) != DefaultDrainTimeout {
		t.Errorf("defaults not completed: %+v", d)
	}
	in := c.Servers["inherits"]
	if *in.MaxConnections != 50 || durOf(in.ClientIdleTimeout) != time.Minute || durOf(in.BackendIdleTimeout) != 0 ||
		durOf(in.BackendConnectionTimeout) != 0 || durOf(in.DrainTimeout) != 30*time.Second {
		t.Errorf("inherits: %+v", in.ConnectionOptions)
	}
	ov := c.Servers["overrides"]
	// An explicit 0 is a value, not "unset".
	if *ov.MaxConnections != 0 || durOf(ov.ClientIdleTimeout) != 0 || durOf(ov.BackendIdleTimeout) != 5*time.Second ||
		durOf(ov.BackendConnectionTimeout) != 2*time.Second || durOf(ov.DrainTimeout) != time.Second {
		t.Errorf("overrides: %+v", ov.ConnectionOptions)
	}
	// Servers get copies, never the [defaults] pointers.
	if in.MaxConnections == c.Defaults.MaxConnections || in.ClientIdleTimeout == c.Defaults.ClientIdleTimeout {
		t.Error("a server shares a pointer with [defaults]")
	}
}

func TestDefaultsServer(t *testing.T) {
	c := mustLoad(t, `
[acme]
[cluster]
[servers.web]
bind = ":1"
  [servers.web.sni]
  [servers.web.access]
  rules = ["deny 10.0.0.1"]
  [servers.web.discovery]
  kind = "static"
  static_list = ["a:1"]
  [servers.web.healthcheck]
  kind = "probe"
  interval = "1s"
  fails = -3
  probe_protocol = "tcp"
  probe_send = "x"
  probe_recv = "y"

[servers.dns]
bind = ":2"
protocol = "udp"
client_idle_timeout = "1s"
  [servers.dns.discovery]
  kind = "srv"
  srv_lookup_server = "127.0.0.1:53"
  srv_lookup_pattern = "_x._udp.example."
`)
	if c.Logging != (Logging{Level: "info", Output: "stdout", Format: "text"}) {
		t.Errorf("logging %+v", c.Logging)
	}
	if *c.Acme != (Acme{Challenge: "http", HttpBind: "0.0.0.0:80", CacheDir: "/tmp", DirectoryURL: "https://acme-v02.api.letsencrypt.org/directory"}) {
		t.Errorf("acme %+v", c.Acme)
	}
	if c.Cluster.MaxVoters != 5 {
		t.Errorf("cluster %+v", c.Cluster)
	}
	web := c.Servers["web"]
	if web.Protocol != "tcp" || web.Balance != "weight" {
		t.Errorf("web %q %q", web.Protocol, web.Balance)
	}
	if *web.Sni != (Sni{ReadTimeout: Dur(2 * time.Second), UnexpectedHostnameStrategy: "default", HostnameMatchingStrategy: "exact"}) {
		t.Errorf("sni %+v", web.Sni)
	}
	if web.Access.Default != "allow" {
		t.Errorf("access %+v", web.Access)
	}
	if web.Udp != nil {
		t.Errorf("udp section on a tcp server: %+v", web.Udp)
	}
	h := web.Healthcheck
	if h.Fails != 1 || h.Passes != 1 || h.InitialStatus != "healthy" || h.ProbeStrategy != "starts_with" || h.Timeout.D != 0 {
		t.Errorf("healthcheck %+v", h)
	}
	dns := c.Servers["dns"]
	if dns.Udp == nil || *dns.Udp != (Udp{}) {
		t.Errorf("udp section not created: %+v", dns.Udp)
	}
	if hc := dns.Healthcheck; hc == nil || hc.Kind != "none" || hc.Fails != 1 || hc.InitialStatus != "healthy" || hc.ProbeStrategy != "" {
		t.Errorf("absent healthcheck: %+v", hc)
	}
	if d := dns.Discovery; d.Failpolicy != "keeplast" || d.Interval.D != 0 || d.Timeout.D != 5*time.Second || d.SrvDnsProtocol != "udp" {
		t.Errorf("discovery %+v", d)
	}
}

func TestDiscoveryDefaults(t *testing.T) {
	tests := []struct {
		kind    string
		timeout string // as written; "" is unset
		want    time.Duration
		check   func(d *Discovery) bool
	}{
		{"static", "", 0, nil},
		{"exec", "", 3 * time.Second, nil},
		{"consul", "", 2 * time.Second, nil},
		{"docker", "", 5 * time.Second, nil},
		{"plaintext", "", 5 * time.Second, func(d *Discovery) bool { return d.PlaintextRegexPattern == "" }},
		{"srv", "", 5 * time.Second, func(d *Discovery) bool { return d.SrvDnsProtocol == "udp" }},
		{"lxd", "", 5 * time.Second, func(d *Discovery) bool {
			return d.LxdServerRemoteName == "local" && d.LxdConfigDirectory == "$HOME/.config/lxc" &&
				d.LxdContainerInterface == "eth0" && d.LxdContainerAddressType == "IPv4"
		}},
		{"json", "", 5 * time.Second, func(d *Discovery) bool {
			return d.JsonHostPattern == "host" && d.JsonPortPattern == "port" && d.JsonWeightPattern == "weight" &&
				d.JsonPriorityPattern == "priority" && d.JsonSniPattern == "sni" && d.JsonMaxConnectionsPattern == "max_connections"
		}},
		// A timeout written by the user stays, "0" (no timeout) included.
		{"json", "0", 0, nil},
		{"consul", "7s", 7 * time.Second, nil},
		// Unknown kind: no default, and no panic.
		{"kubernetes", "", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"/"+tt.timeout, func(t *testing.T) {
			d := &Discovery{Kind: tt.kind}
			if tt.timeout != "" {
				_ = d.Timeout.UnmarshalText([]byte(tt.timeout))
			}
			d.applyDefaults()
			if d.Timeout.D != tt.want || d.Timeout.Bad {
				t.Errorf("timeout %v, want %v", d.Timeout, tt.want)
			}
			if d.Failpolicy != "keeplast" {
				t.Errorf("failpolicy %q", d.Failpolicy)
			}
			if tt.check != nil && !tt.check(d) {
				t.Errorf("kind defaults missing: %+v", d)
			}
		})
	}
	t.Run("json patterns only for kind json", func(t *testing.T) {
		d := &Discovery{Kind: "static"}
		d.applyDefaults()
		if d.JsonHostPattern != "" || d.SrvDnsProtocol != "" || d.LxdContainerInterface != "" {
			t.Errorf("other kinds' defaults: %+v", d)
		}
	})
}

// A bad [defaults] value is reported once, at its own path, and not copied into
// the servers.
func TestBadDefaultsReportedOnce(t *testing.T) {
	_, _, err := Load([]byte(`
[defaults]
max_connections = -5
client_idle_timeout = "5"
[servers.web]
bind = ":1"
  [servers.web.discovery]
  kind = "static"
  static_list = ["a:1"]
`), LoadOptions{})
	got := paths(Problems(err))
	want := []string{"defaults.client_idle_timeout", "defaults.max_connections"}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("problems %v", err)
	}
}

func TestNormalizeServer(t *testing.T) {
	defaults := ConnectionOptions{ClientIdleTimeout: DurPtr(time.Minute)}
	s := Server{Bind: ":1", Discovery: &Discovery{Kind: "static", StaticList: []string{"a:1"}}}
	if err := NormalizeServer("api1", &s, defaults); err != nil {
		t.Fatal(err)
	}
	if s.Protocol != "tcp" || durOf(s.ClientIdleTimeout) != time.Minute || durOf(s.DrainTimeout) != DefaultDrainTimeout ||
		s.Healthcheck.Kind != "none" || *s.MaxConnections != 0 {
		t.Fatalf("not normalized: %+v", s)
	}
	if defaults.MaxConnections != nil {
		t.Fatal("NormalizeServer changed the defaults it was given")
	}

	bad := Server{Protocol: "udp", Healthcheck: &Healthcheck{Kind: "ping", Interval: Dur(time.Second)}}
	err := NormalizeServer("a.b", &bad, ConnectionOptions{})
	want := []string{`servers."a.b".bind`, `servers."a.b".discovery`, `servers."a.b".healthcheck.kind`, `servers."a.b".udp`}
	if got := paths(Problems(err)); len(got) != len(want) {
		t.Fatalf("problems %v", err)
	} else {
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("problems %q, want %q", got, want)
			}
		}
	}
	// The same definition in a file gives the same problems.
	_, _, fileErr := Load([]byte(`
[servers."a.b"]
protocol = "udp"
  [servers."a.b".healthcheck]
  kind = "ping"
  interval = "1s"
`), LoadOptions{})
	if fileErr == nil || fileErr.Error() != err.Error() {
		t.Fatalf("file:\n%v\nNormalizeServer:\n%v", fileErr, err)
	}
	if err := NormalizeServer("x", nil, ConnectionOptions{}); err == nil {
		t.Fatal("nil server accepted")
	}
}
