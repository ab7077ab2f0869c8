package balance

import (
	"net/netip"
	"testing"
)

func TestRoundRobinOrder(t *testing.T) {
	// Given out of order; "host:port" order is lexicographic on the string.
	cands := newCands(t,
		spec{addr: "10.0.0.2:80"}, spec{addr: "10.0.0.10:80"}, spec{addr: "10.0.0.1:80"}, spec{addr: "[::1]:80"})
	b := mustNew(t, "roundrobin", nil, cands)
	want := []string{"10.0.0.10:80", "10.0.0.1:80", "10.0.0.2:80", "[::1]:80"} // ":" sorts after "0"
	for round := range 3 {
		for i, w := range want {
			if got := pickAddr(t, b, &Request{}); got != w {
				t.Fatalf("round %d pick %d = %s, want %s", round, i, got, w)
			}
		}
	}
}

func TestRoundRobinSkips(t *testing.T) {
	cands := newCands(t, spec{addr: "10.0.0.1:80"}, spec{addr: "10.0.0.2:80", max: 1}, spec{addr: "10.0.0.3:80"})
	orig := append([]*Candidate(nil), cands...)
	b := mustNew(t, "roundrobin", nil, cands)
	fill(t, orig[1])
	counts := map[string]int{}
	for range 30 {
		req := &Request{}
		req.Exclude(orig[2])
		counts[pickAddr(t, b, req)]++
	}
	if counts["10.0.0.1:80"] != 30 {
		t.Fatalf("picks %v, want every pick on the only usable backend", counts)
	}
	counts = map[string]int{}
	for range 30 {
		counts[pickAddr(t, b, &Request{})]++
	}
	if counts["10.0.0.2:80"] != 0 || counts["10.0.0.1:80"] == 0 || counts["10.0.0.3:80"] == 0 {
		t.Fatalf("picks %v, want the full backend skipped and the others used", counts)
	}
}

func TestIPHash(t *testing.T) {
	specs := make([]spec, 7)
	for i := range specs {
		specs[i] = spec{addr: portAddr(i)}
	}
	b := mustNew(t, "iphash", nil, newCands(t, specs...))

	t.Run("same ip same backend", func(t *testing.T) {
		for i := range 200 {
			ip := ipv4(i * 104729)
			first := pickAddr(t, b, &Request{ClientIP: ip})
			for range 5 {
				if got := pickAddr(t, b, &Request{ClientIP: ip}); got != first {
					t.Fatalf("%s: %s then %s", ip, first, got)
				}
			}
		}
	})
	t.Run("ipv4 and ipv4-mapped alike", func(t *testing.T) {
		for i := range 200 {
			v4 := ipv4(i * 104729)
			mapped := netip.AddrFrom16(v4.As16())
			if !mapped.Is4In6() {
				t.Fatalf("%s is not mapped", mapped)
			}
			if a, m := pickAddr(t, b, &Request{ClientIP: v4}), pickAddr(t, b, &Request{ClientIP: mapped}); a != m {
				t.Fatalf("%s -> %s but %s -> %s", v4, a, mapped, m)
			}
		}
	})
	t.Run("independent of input order", func(t *testing.T) {
		other := newCands(t, specs...)
		for i, j := 0, len(other)-1; i < j; i, j = i+1, j-1 {
			other[i], other[j] = other[j], other[i]
		}
		b2 := mustNew(t, "iphash", nil, other)
		for i := range 200 {
			req := &Request{ClientIP: ipv4(i * 15485863)}
			if a, c := pickAddr(t, b, req), pickAddr(t, b2, req); a != c {
				t.Fatalf("%s: %s vs %s", req.ClientIP, a, c)
			}
		}
	})
	t.Run("spread", func(t *testing.T) {
		counts := map[string]int{}
		const clients = 7000
		for i := range clients {
			counts[pickAddr(t, b, &Request{ClientIP: ipv4(0x0a000000 + i)})]++
		}
		for a, c := range counts {
			if c < 800 || c > 1200 {
				t.Fatalf("%s got %d of %d consecutive clients, want about 1000", a, c, clients)
			}
		}
	})
	t.Run("excluded moves to next", func(t *testing.T) {
		cands := newCands(t, specs...)
		orig := append([]*Candidate(nil), cands...)
		b := mustNew(t, "iphash", nil, cands)
		for i := range 100 {
			ip := ipv4(i * 7)
			first, err := b.Pick(&Request{ClientIP: ip})
			if err != nil {
				t.Fatal(err)
			}
			first.Load.Release()
			req := &Request{ClientIP: ip}
			req.Exclude(first)
			second := pickAddr(t, b, req)
			// Candidates sort by address, which portAddr makes the input order.
			var idx int
			for k, c := range orig {
				if c == first {
					idx = k
				}
			}
			if want := orig[(idx+1)%len(orig)].Addr; second != want {
				t.Fatalf("%s: after excluding %s got %s, want %s", ip, first.Addr, second, want)
			}
		}
	})
}

// A skipped full backend must not make its successor come up twice in a row.
func TestRoundRobinAlternatesAroundAFullBackend(t *testing.T) {
	cands := newCands(t, spec{addr: "10.0.0.1:80"}, spec{addr: "10.0.0.2:80", max: 1}, spec{addr: "10.0.0.3:80"})
	orig := append([]*Candidate(nil), cands...)
	b := mustNew(t, "roundrobin", nil, cands)
	fill(t, orig[1])
	prev := ""
	for i := range 30 {
		got := pickAddr(t, b, &Request{})
		if got == prev {
			t.Fatalf("pick %d: %s twice in a row", i, got)
		}
		prev = got
	}
}
