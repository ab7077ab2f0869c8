package config

import (
	"strings"
	"testing"
)

// TestValidateConsulLxd covers the consul and lxd rules beyond those in
// TestValidateProblems.
func TestValidateConsulLxd(t *testing.T) {
	consul := func(f func(d *Discovery)) func(c *Config) {
		return disc("consul", func(d *Discovery) {
			d.ConsulHost, d.ConsulServiceName = "h:8500", "web"
			if f != nil {
				f(d)
			}
		})
	}
	lxd := func(f func(d *Discovery)) func(c *Config) {
		return disc("lxd", func(d *Discovery) {
			d.LxdServerAddress, d.LxdContainerPort = "https://lxd.example.com:8443", 80
			if f != nil {
				f(d)
			}
		})
	}
	tests := []struct {
		name   string
		change func(c *Config)
		path   string // "" for a valid config
		msg    string
	}{
		{"consul ok", consul(nil), "", ""},
		{"consul IPv6 host", consul(func(d *Discovery) { d.ConsulHost = "[::1]:8500" }), "", ""},
		{"consul host without port", consul(func(d *Discovery) { d.ConsulHost = "consul.local" }), "servers.web.discovery.consul_host", "not host:port"},
		{"consul host as URL", consul(func(d *Discovery) { d.ConsulHost = "https://consul:8500" }), "servers.web.discovery.consul_host", "not host:port"},
		{"consul bad port", consul(func(d *Discovery) { d.ConsulHost = "h:0" }), "servers.web.discovery.consul_host", "from 1 to 65535"},
		{"lxd ok", lxd(nil), "", ""},
		{"lxd unix path", lxd(func(d *Discovery) { d.LxdServerAddress = "unix:/var/snap/lxd/common/lxd/unix.socket" }), "", ""},
		{"lxd https without host", lxd(func(d *Discovery) { d.LxdServerAddress = "https://" }), "servers.web.discovery.lxd_server_address", "not https://host"},
		{"lxd remote name with a slash", lxd(func(d *Discovery) { d.LxdServerRemoteName = "../x" }), "servers.web.discovery.lxd_server_remote_name", "cannot name a file"},
		{"lxd remote name dot-dot", lxd(func(d *Discovery) { d.LxdServerRemoteName = ".." }), "servers.web.discovery.lxd_server_remote_name", "cannot name a file"},
		{"lxd label value alone", lxd(func(d *Discovery) { d.LxdContainerLabelValue = "web" }), "servers.web.discovery.lxd_container_label_value", "needs lxd_container_label_key"},
		{"lxd label key and value", lxd(func(d *Discovery) { d.LxdContainerLabelKey, d.LxdContainerLabelValue = "user.lb", "web" }), "", ""},
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
			if len(ps) != 1 || ps[0].Path != tt.path || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Fatalf("want one problem at %s containing %q, got:\n%v", tt.path, tt.msg, err)
			}
		})
	}
}
