package balance

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gobetween/gobetween/config"
)

// sniPicks returns the set of addresses picked for name over many picks, or
// the error of the first pick.
func sniPicks(t *testing.T, b Balancer, name string) (map[string]bool, error) {
	t.Helper()
	seen := map[string]bool{}
	for i := range 200 {
		c, err := b.Pick(&Request{SNI: name, ClientIP: ipv4(i)})
		if err != nil {
			return nil, err
		}
		seen[c.Addr] = true
		c.Load.Release()
	}
	return seen, nil
}

type sniCase struct {
	name string // requested server name
	want []string
	err  error
}

func runSniCases(t *testing.T, conf *config.Sni, specs []spec, cases []sniCase) {
	t.Helper()
	for _, strategy := range []string{"weight", "iphash1"} {
		b := mustNew(t, strategy, conf, newCands(t, specs...))
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%q", strategy, tc.name), func(t *testing.T) {
				seen, err := sniPicks(t, b, tc.name)
				if tc.err != nil || err != nil {
					if err != tc.err {
						t.Fatalf("error %v, want %v", err, tc.err)
					}
					return
				}
				want := map[string]bool{}
				for _, a := range tc.want {
					want[a] = true
				}
				if fmt.Sprint(seen) != fmt.Sprint(want) {
					t.Fatalf("picked %v, want %v", seen, want)
				}
			})
		}
	}
}

var sniSpecs = []spec{
	{addr: "10.0.0.1:443", weight: 1, sni: "a.example.com"},
	{addr: "10.0.0.2:443", weight: 1, sni: "B.Example.org"},
	{addr: "10.0.0.3:443", weight: 1, sni: "b.example.org"},
	{addr: "10.0.0.4:443", weight: 1},
}

func TestSniExact(t *testing.T) {
	all := []string{"10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443", "10.0.0.4:443"}
	matches := []sniCase{
		{name: "a.example.com", want: []string{"10.0.0.1:443"}},
		{name: "A.EXAMPLE.COM", want: []string{"10.0.0.1:443"}},
		{name: "b.example.org", want: []string{"10.0.0.2:443", "10.0.0.3:443"}},
		{name: "b.EXAMPLE.org", want: []string{"10.0.0.2:443", "10.0.0.3:443"}},
		{name: "", want: []string{"10.0.0.4:443"}}, // an empty sni matches only no name
	}
	tests := []struct {
		unexpected string
		unknown    sniCase
	}{
		{unexpected: "", unknown: sniCase{name: "c.example.com", want: []string{"10.0.0.4:443"}}},
		{unexpected: "default", unknown: sniCase{name: "c.example.com", want: []string{"10.0.0.4:443"}}},
		{unexpected: "reject", unknown: sniCase{name: "c.example.com", err: ErrSniReject}},
		{unexpected: "any", unknown: sniCase{name: "c.example.com", want: all}},
		{unexpected: "default", unknown: sniCase{name: "a.example.com.", want: []string{"10.0.0.4:443"}}},
		{unexpected: "default", unknown: sniCase{name: strings.Repeat("X", 300), want: []string{"10.0.0.4:443"}}},
		{unexpected: "default", unknown: sniCase{name: "Ä.example.com", want: []string{"10.0.0.4:443"}}},
	}
	for _, tt := range tests {
		t.Run(tt.unexpected, func(t *testing.T) {
			cases := append([]sniCase(nil), matches...)
			runSniCases(t, &config.Sni{HostnameMatchingStrategy: "exact", UnexpectedHostnameStrategy: tt.unexpected}, sniSpecs, append(cases, tt.unknown))
		})
	}
}

// TestSniNoSniLessBackends: without sni-less backends, an unmatched or absent
// name depends entirely on unexpected_hostname_strategy.
func TestSniNoSniLessBackends(t *testing.T) {
	specs := sniSpecs[:3]
	both := []string{"10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443"}
	for _, matching := range []string{"exact", "regexp"} {
		tests := []struct {
			unexpected string
			cases      []sniCase
		}{
			{unexpected: "default", cases: []sniCase{{name: "", err: ErrSniReject}, {name: "c.example.com", err: ErrSniReject}}},
			{unexpected: "reject", cases: []sniCase{{name: "", err: ErrSniReject}, {name: "c.example.com", err: ErrSniReject}}},
			{unexpected: "any", cases: []sniCase{{name: "", want: both}, {name: "c.example.com", want: both}}},
		}
		for _, tt := range tests {
			t.Run(matching+"/"+tt.unexpected, func(t *testing.T) {
				runSniCases(t, &config.Sni{HostnameMatchingStrategy: matching, UnexpectedHostnameStrategy: tt.unexpected}, specs, tt.cases)
			})
		}
	}
}

func TestSniRegexp(t *testing.T) {
	specs := []spec{
		{addr: "10.0.0.1:443", weight: 1, sni: `example\.com`},
		{addr: "10.0.0.2:443", weight: 1, sni: `.*\.example\.org`},
		{addr: "10.0.0.3:443", weight: 1, sni: `a.*`},
		{addr: "10.0.0.4:443", weight: 1},
		{addr: "10.0.0.5:443", weight: 1, sni: `Upper\.com|x|y`},
	}
	cases := []sniCase{
		{name: "example.com", want: []string{"10.0.0.1:443"}},
		// Anchored: 0.8 let these through to the example.com backend.
		{name: "evil-example.com.attacker", want: []string{"10.0.0.4:443"}},
		{name: "example.com.attacker", want: []string{"10.0.0.4:443"}},
		{name: "www.example.org", want: []string{"10.0.0.2:443"}},
		// Several patterns: the union.
		{name: "a.example.org", want: []string{"10.0.0.2:443", "10.0.0.3:443"}},
		{name: "abc", want: []string{"10.0.0.3:443"}},
		{name: "", want: []string{"10.0.0.4:443"}},
		// Alternation stays inside the anchors.
		{name: "xylophone", want: []string{"10.0.0.4:443"}},
		{name: "x", want: []string{"10.0.0.5:443"}},
		{name: "Upper.com", want: []string{"10.0.0.5:443"}},
	}
	for _, unexpected := range []string{"default", "any"} {
		t.Run(unexpected, func(t *testing.T) {
			cs := append([]sniCase(nil), cases...)
			if unexpected == "any" {
				all := []string{"10.0.0.1:443", "10.0.0.2:443", "10.0.0.3:443", "10.0.0.4:443", "10.0.0.5:443"}
				for i := range cs {
					if len(cs[i].want) == 1 && cs[i].want[0] == "10.0.0.4:443" && cs[i].name != "" {
						cs[i].want = all
					}
				}
			}
			// Twice: the second round is served from the caches.
			conf := &config.Sni{HostnameMatchingStrategy: "regexp", UnexpectedHostnameStrategy: unexpected}
			runSniCases(t, conf, specs, append(cs, cs...))
		})
	}
}

func TestSniRegexpBad(t *testing.T) {
	_, err := New("weight", &config.Sni{HostnameMatchingStrategy: "regexp"}, newCands(t, spec{addr: "10.0.0.1:443", sni: "(unclosed"}))
	if err == nil || !strings.Contains(err.Error(), `sni regexp "(unclosed"`) {
		t.Fatalf("New = %v, want an sni regexp error", err)
	}
	// The same value is a plain name under exact matching.
	if _, err := New("weight", &config.Sni{}, newCands(t, spec{addr: "10.0.0.1:443", sni: "(unclosed"})); err != nil {
		t.Fatalf("exact: %v", err)
	}
}

// TestSniRegexpCacheBounded: far more names than the cache holds stay correct.
func TestSniRegexpCacheBounded(t *testing.T) {
	b := mustNew(t, "roundrobin", &config.Sni{HostnameMatchingStrategy: "regexp", UnexpectedHostnameStrategy: "reject"},
		newCands(t, spec{addr: "10.0.0.1:443", sni: `even\d*0`}, spec{addr: "10.0.0.2:443", sni: `\d+`}))
	s := b.(*sniBalancer)
	for round := range 2 {
		for i := range 3 * sniNameCacheSize {
			name := fmt.Sprintf("even%d", i)
			c, err := b.Pick(&Request{SNI: name})
			if i%10 != 0 {
				if err != ErrSniReject {
					t.Fatalf("round %d %s: %v, %v; want rejected", round, name, c, err)
				}
				continue
			}
			if err != nil || c.Addr != "10.0.0.1:443" {
				t.Fatalf("round %d %s: %v, %v", round, name, c, err)
			}
			c.Load.Release()
		}
		if m := s.names.Load(); m == nil || len(*m) > sniNameCacheSize {
			t.Fatalf("name cache holds %d entries, cap %d", len(*m), sniNameCacheSize)
		}
	}
}

func TestSniEmptySet(t *testing.T) {
	b := mustNew(t, "weight", &config.Sni{UnexpectedHostnameStrategy: "reject"}, nil)
	wantErr(t, b, &Request{SNI: "a.example.com"}, ErrNoBackends)
}

// TestSniSharesLoads: the sub-balancers see the reservations of each other.
func TestSniSharesLoads(t *testing.T) {
	cands := newCands(t, spec{addr: "10.0.0.1:443", sni: "a.com", max: 1}, spec{addr: "10.0.0.2:443", max: 1})
	b := mustNew(t, "roundrobin", &config.Sni{UnexpectedHostnameStrategy: "any"}, cands)
	c, err := b.Pick(&Request{SNI: "a.com"})
	if err != nil {
		t.Fatal(err)
	}
	// "other.com" routes to all; 10.0.0.1 is full through the a.com route.
	for range 5 {
		if got := pickAddr(t, b, &Request{SNI: "other.com"}); got != "10.0.0.2:443" {
			t.Fatalf("picked %s, which is full", got)
		}
	}
	wantErr(t, b, &Request{SNI: "a.com"}, ErrAllFull)
	c.Load.Release()
}

func TestSniAllocs(t *testing.T) {
	cands := func() []*Candidate {
		return newCands(t, spec{addr: "10.0.0.1:443", sni: "a.example.com"}, spec{addr: "10.0.0.2:443", sni: "b.example.com"}, spec{addr: "10.0.0.3:443", sni: `.*\.example\.org`})
	}
	tests := []struct {
		name     string
		matching string
		sni      string
	}{
		{name: "exact lowercase", matching: "exact", sni: "a.example.com"},
		{name: "exact mixed case", matching: "exact", sni: "B.Example.COM"},
		{name: "exact no match", matching: "exact", sni: "Z.example.com"},
		{name: "regexp cached", matching: "regexp", sni: "x.example.org"},
		{name: "regexp cached no match", matching: "regexp", sni: "nowhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustNew(t, "roundrobin", &config.Sni{HostnameMatchingStrategy: tt.matching, UnexpectedHostnameStrategy: "any"}, cands())
			req := &Request{SNI: tt.sni}
			pickAddr(t, b, req) // fills the regexp cache
			if n := testing.AllocsPerRun(200, func() {
				c, err := b.Pick(req)
				if err != nil {
					t.Fatal(err)
				}
				c.Load.Release()
			}); n != 0 {
				t.Fatalf("%v allocations per pick, want 0", n)
			}
		})
	}
}
