package config

import (
	"strings"
	"testing"
)

func TestLoadDropsSectionsIgnoredBy08(t *testing.T) {
	const text = `
[servers.web]
bind = "127.0.0.1:3000"
  [servers.web.udp]
  max_responses = 1
  [servers.web.discovery]
  kind = "static"
  static_list = ["127.0.0.1:8000"]

[servers.dns]
bind = "127.0.0.1:5353"
protocol = "udp"
client_idle_timeout = "10s"
  [servers.dns.tls]
  cert_path = "c.pem"
  key_path = "k.pem"
  [servers.dns.discovery]
  kind = "static"
  static_list = ["127.0.0.1:53"]
`
	tests := []struct {
		name   string
		strict bool
	}{
		{"warning", false},
		{"strict", true},
	}
	want := []string{
		"servers.dns.tls: ignored: not supported with protocol udp",
		"servers.web.udp: ignored: only with protocol udp",
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, warnings, err := Load([]byte(text), LoadOptions{Strict: tt.strict})
			var got []Problem
			if tt.strict {
				if err == nil {
					t.Fatal("strict load succeeded")
				}
				got = Problems(err)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				got = warnings
				if c.Servers["web"].Udp != nil || c.Servers["dns"].Tls != nil {
					t.Fatal("ignored sections were kept")
				}
			}
			if len(got) != len(want) {
				t.Fatalf("problems %v, want %d", got, len(want))
			}
			for i, w := range want {
				if !strings.HasPrefix(got[i].Error(), w) {
					t.Errorf("problem %d = %q, want prefix %q", i, got[i].Error(), w)
				}
			}
		})
	}
}
