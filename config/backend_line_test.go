package config

import (
	"strings"
	"testing"
)

func TestParseBackend(t *testing.T) {
	tests := []struct {
		line string
		want Backend
	}{
		{"10.0.0.1:80", Backend{Target: Target{"10.0.0.1", "80"}, Weight: 1, Priority: 1}},
		{"  localhost:8000\t", Backend{Target: Target{"localhost", "8000"}, Weight: 1, Priority: 1}},
		{"h:1 weight=5 priority=2 max_connections=10 sni=a.example.com",
			Backend{Target: Target{"h", "1"}, Weight: 5, Priority: 2, MaxConnections: 10, Sni: "a.example.com"}},
		// Any order, which gobetween 0.8 rejected.
		{"h:1 sni=x max_connections=5", Backend{Target: Target{"h", "1"}, Weight: 1, Priority: 1, MaxConnections: 5, Sni: "x"}},
		{"h:1 priority=3 weight=0", Backend{Target: Target{"h", "1"}, Weight: 0, Priority: 3}},
		// Any run of blanks.
		{"h:1 \t  weight=2\t\tpriority=0", Backend{Target: Target{"h", "1"}, Weight: 2, Priority: 0}},
		{"[::1]:8080 weight=2", Backend{Target: Target{"::1", "8080"}, Weight: 2, Priority: 1}},
		{"[fe80::1%eth0]:80", Backend{Target: Target{"fe80::1%eth0", "80"}, Weight: 1, Priority: 1}},
		{"[::ffff:10.0.0.1]:80", Backend{Target: Target{"::ffff:10.0.0.1", "80"}, Weight: 1, Priority: 1}},
		// The port is canonical, so "h:080" and "h:80" are one backend.
		{"h:080", Backend{Target: Target{"h", "80"}, Weight: 1, Priority: 1}},
		{"h:65535 weight=2147483647", Backend{Target: Target{"h", "65535"}, Weight: 2147483647, Priority: 1}},
		{"h:1 sni=a=b", Backend{Target: Target{"h", "1"}, Weight: 1, Priority: 1, Sni: "a=b"}},
		{"h:1 sni=^.*\\.example\\.com$", Backend{Target: Target{"h", "1"}, Weight: 1, Priority: 1, Sni: `^.*\.example\.com$`}},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := ParseBackend(tt.line)
			if err != nil {
				t.Fatalf("ParseBackend(%q): %v", tt.line, err)
			}
			if got != tt.want {
				t.Fatalf("ParseBackend(%q) = %+v, want %+v", tt.line, got, tt.want)
			}
			again, err := ParseBackend(FormatBackend(got))
			if err != nil || again != got {
				t.Fatalf("FormatBackend %q does not parse back: %+v %v", FormatBackend(got), again, err)
			}
		})
	}
}

func TestParseBackendErrors(t *testing.T) {
	tests := []struct{ line, want string }{
		{"", "empty backend line"},
		{" \t ", "empty backend line"},
		{"10.0.0.1", `missing port in "10.0.0.1"`},
		{"10.0.0.1: weight=1", "missing port"},
		{":80", `missing host in ":80"`},
		{"h:http", `port "http" is not a number`},
		{"h:0", `port "0" is not a number from 1 to 65535`},
		{"h:65536", `port "65536"`},
		{"h:+80", `port "+80"`},
		{"::1:80", "IPv6 address needs brackets"},
		{"[::1]", "bad address"},
		{"[10.0.0.1]:80", "brackets are only for IPv6"},
		{"[host]:80", "brackets are only for IPv6"},
		{"h:1 weight", `option "weight" is not key=value`},
		{"h:1 weight=", "weight: missing number"},
		{"h:1 weight=-1", `weight: "-1" is not a non-negative integer`},
		{"h:1 weight=1.5", `weight: "1.5" is not a non-negative integer`},
		{"h:1 priority=x", `priority: "x" is not a non-negative integer`},
		{"h:1 max_connections=99999999999", "max_connections: \"99999999999\" is too large"},
		{"h:1 weight=1 weight=2", `duplicate option "weight"`},
		{"h:1 sni=a sni=b", `duplicate option "sni"`},
		{"h:1 sni=", "sni: empty value"},
		{"h:1 color=blue", `unknown option "color"`},
		{"h:1 Weight=2", `unknown option "Weight"`},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			b, err := ParseBackend(tt.line)
			if err == nil {
				t.Fatalf("ParseBackend(%q) = %+v, want an error", tt.line, b)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseBackend(%q) error %q, want it to contain %q", tt.line, err, tt.want)
			}
			if tt.line != "" && strings.TrimSpace(tt.line) != "" && !strings.Contains(err.Error(), strings.TrimSpace(tt.line)) {
				t.Errorf("error %q does not quote the line", err)
			}
		})
	}
}

func TestFormatBackend(t *testing.T) {
	tests := []struct {
		b    Backend
		want string
	}{
		{Backend{Target: Target{"h", "80"}, Weight: 1, Priority: 1}, "h:80 weight=1 priority=1"},
		{Backend{Target: Target{"::1", "80"}, Weight: 2, Priority: 0, MaxConnections: 3, Sni: "x"}, "[::1]:80 weight=2 priority=0 max_connections=3 sni=x"},
	}
	for _, tt := range tests {
		if got := FormatBackend(tt.b); got != tt.want {
			t.Errorf("FormatBackend(%+v) = %q, want %q", tt.b, got, tt.want)
		}
	}
}

func FuzzParseBackend(f *testing.F) {
	for _, s := range []string{
		"10.0.0.1:80", "h:1 weight=5 priority=2 max_connections=10 sni=a", "[::1]:80 sni=x weight=0",
		"h:1 sni=a=b", "::1:80", "h:1 weight=1 weight=2", "\t h:65535 \r", "[fe80::1%eth0]:80",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		b, err := ParseBackend(line)
		if err != nil {
			if b != (Backend{}) {
				t.Fatalf("error %v with a non-zero backend %+v", err, b)
			}
			return
		}
		if b.Host == "" || b.Port == "" || b.Weight < 0 || b.Priority < 0 || b.MaxConnections < 0 {
			t.Fatalf("ParseBackend(%q) = %+v", line, b)
		}
		line2 := FormatBackend(b)
		b2, err := ParseBackend(line2)
		if err != nil {
			t.Fatalf("FormatBackend(%+v) = %q does not parse: %v", b, line2, err)
		}
		if b2 != b {
			t.Fatalf("round trip of %q: %+v != %+v", line, b2, b)
		}
		if FormatBackend(b2) != line2 {
			t.Fatalf("FormatBackend is not stable for %q", line)
		}
	})
}
