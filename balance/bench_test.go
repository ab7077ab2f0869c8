package balance

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/gobetween/gobetween/config"
)

var benchSizes = []int{10, 100, 1000, 10000}

// benchBalancer builds a strategy over n backends; "sni-exact" is the weight
// strategy behind exact SNI routing over 4 names.
func benchBalancer(b *testing.B, strategy string, n int) (Balancer, string) {
	b.Helper()
	cands := uniformCands(b, n)
	if strategy != "sni-exact" {
		return mustNew(b, strategy, nil, cands), ""
	}
	for i, c := range cands {
		c.Backend.Sni = fmt.Sprintf("host%d.example.com", i%4)
	}
	return mustNew(b, "weight", &config.Sni{HostnameMatchingStrategy: "exact"}, cands), "Host2.Example.com"
}

// benchIPs are varied client addresses, so hashing strategies touch the
// whole structure rather than one cached path.
func benchIPs() []netip.Addr {
	ips := make([]netip.Addr, 4096)
	for i := range ips {
		ips[i] = ipv4(int(mix64(uint64(i))))
	}
	return ips
}

func BenchmarkPick(b *testing.B) {
	ips := benchIPs()
	for _, strategy := range append(strategies, "sni-exact") {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/n=%d", strategy, n), func(b *testing.B) {
				bal, sni := benchBalancer(b, strategy, n)
				req := &Request{SNI: sni}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					req.ClientIP = ips[i&(len(ips)-1)]
					c, err := bal.Pick(req)
					if err != nil {
						b.Fatal(err)
					}
					c.Load.Release()
				}
			})
		}
	}
}

func BenchmarkPickParallel(b *testing.B) {
	ips := benchIPs()
	for _, strategy := range append(strategies, "sni-exact") {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/n=%d", strategy, n), func(b *testing.B) {
				bal, sni := benchBalancer(b, strategy, n)
				var seq atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					req := &Request{SNI: sni}
					i := int(seq.Add(1)) * 997
					for pb.Next() {
						i++
						req.ClientIP = ips[i&(len(ips)-1)]
						c, err := bal.Pick(req)
						if err != nil {
							b.Error(err)
							return
						}
						c.Load.Release()
					}
				})
			})
		}
	}
}

// BenchmarkNew measures building a Balancer, which happens on every change
// of the candidate set.
func BenchmarkNew(b *testing.B) {
	for _, strategy := range strategies {
		for _, n := range []int{100, 10000} {
			b.Run(fmt.Sprintf("%s/n=%d", strategy, n), func(b *testing.B) {
				cands := uniformCands(b, n)
				work := make([]*Candidate, n)
				b.ReportAllocs()
				for b.Loop() {
					copy(work, cands)
					if _, err := New(strategy, nil, work); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
