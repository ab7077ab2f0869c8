package discovery

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/gobetween/gobetween/config"
)

func backend(host, port string, weight, priority int) config.Backend {
	return config.Backend{Target: config.Target{Host: host, Port: port}, Weight: weight, Priority: priority}
}

func TestStatic(t *testing.T) {
	tests := []struct {
		name    string
		lines   []string
		want    []config.Backend
		wantErr []string // substrings of the error
	}{
		{"empty list", nil, []config.Backend{}, nil},
		{"defaults", []string{"localhost:8000"}, []config.Backend{backend("localhost", "8000", 1, 1)}, nil},
		{"options in 0.8 order", []string{"10.0.0.1:80 weight=5 priority=2 max_connections=10 sni=a.example"},
			[]config.Backend{{Target: config.Target{Host: "10.0.0.1", Port: "80"}, Weight: 5, Priority: 2, MaxConnections: 10, Sni: "a.example"}}, nil},
		{"options in any order", []string{"10.0.0.1:80 sni=a.example max_connections=10 priority=2 weight=5"},
			[]config.Backend{{Target: config.Target{Host: "10.0.0.1", Port: "80"}, Weight: 5, Priority: 2, MaxConnections: 10, Sni: "a.example"}}, nil},
		{"ipv6 and order kept", []string{"[::1]:9000 weight=2", "127.0.0.1:9001"},
			[]config.Backend{backend("::1", "9000", 2, 1), backend("127.0.0.1", "9001", 1, 1)}, nil},
		{"duplicates are left to the source", []string{"a:1", "a:1 weight=3"},
			[]config.Backend{backend("a", "1", 1, 1), backend("a", "1", 3, 1)}, nil},
		{"bad line named", []string{"a:1", "b:2 weight=x"}, nil, []string{`static_list[1]`, `"b:2 weight=x"`}},
		{"every bad line named", []string{"nohost", "a:1", "c:3 colour=red"}, nil,
			[]string{`static_list[0]`, `"nohost"`, `static_list[2]`, `colour`}},
		{"empty line", []string{""}, nil, []string{`static_list[0]`, "empty"}},
	}
	reg := NewRegistry()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := reg.New(config.Discovery{Kind: "static", StaticList: tc.lines})
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Fetch(context.Background())
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Fetch = %v, want an error", got)
				}
				for _, part := range tc.wantErr {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("error %q does not mention %q", err, part)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Fetch = %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("config list not aliased", func(t *testing.T) {
		lines := []string{"a:1"}
		p, err := reg.New(config.Discovery{Kind: "static", StaticList: lines})
		if err != nil {
			t.Fatal(err)
		}
		lines[0] = "b:2"
		got, err := p.Fetch(context.Background())
		if err != nil || len(got) != 1 || got[0].Host != "a" {
			t.Fatalf("Fetch = %v, %v after the caller changed its slice", got, err)
		}
	})
}
