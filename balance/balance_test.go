package balance

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gobetween/gobetween/config"
)

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name     string
		strategy string
		sni      *config.Sni
		cands    []*Candidate
		want     string
	}{
		{name: "unknown strategy", strategy: "random", want: `unknown strategy "random"`},
		{name: "case matters", strategy: "Weight", want: `unknown strategy "Weight"`},
		{name: "nil candidate", strategy: "weight", cands: []*Candidate{nil}, want: "candidate 0 has no load"},
		{name: "nil load", strategy: "weight", cands: []*Candidate{{Addr: "a:1"}}, want: "candidate 0 has no load"},
		{name: "sni matching", strategy: "weight", sni: &config.Sni{HostnameMatchingStrategy: "glob"}, want: `hostname_matching_strategy "glob"`},
		{name: "sni unexpected", strategy: "weight", sni: &config.Sni{UnexpectedHostnameStrategy: "drop"}, want: `unexpected_hostname_strategy "drop"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.strategy, tt.sni, tt.cands)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewStrategies(t *testing.T) {
	for _, s := range append([]string{""}, strategies...) {
		t.Run("strategy="+s, func(t *testing.T) {
			b := mustNew(t, s, nil, uniformCands(t, 3))
			if got := pickAddr(t, b, &Request{}); got == "" {
				t.Fatal("empty address")
			}
		})
	}
}

// TestPickErrors checks exclusion and the two errors for every strategy.
func TestPickErrors(t *testing.T) {
	tests := []struct {
		name     string
		n        int
		excluded []int
		full     []int
		want     error // nil: a pick must succeed and return one of wantAny
		wantAny  []int
	}{
		{name: "empty set", n: 0, want: ErrNoBackends},
		{name: "all excluded", n: 3, excluded: []int{0, 1, 2}, want: ErrNoBackends},
		{name: "all full", n: 3, full: []int{0, 1, 2}, want: ErrAllFull},
		{name: "excluded and full", n: 3, excluded: []int{0, 2}, full: []int{1}, want: ErrAllFull},
		{name: "one left", n: 3, excluded: []int{0, 2}, wantAny: []int{1}},
		{name: "one not full", n: 3, full: []int{0, 1}, wantAny: []int{2}},
		{name: "one excluded one full", n: 3, excluded: []int{0}, full: []int{2}, wantAny: []int{1}},
	}
	for _, strategy := range strategies {
		for _, tt := range tests {
			t.Run(strategy+"/"+tt.name, func(t *testing.T) {
				specs := make([]spec, tt.n)
				for i := range specs {
					specs[i] = spec{addr: portAddr(i), weight: 1, max: 2}
				}
				cands := newCands(t, specs...)
				orig := append([]*Candidate(nil), cands...)
				b := mustNew(t, strategy, nil, cands)
				for _, i := range tt.full {
					fill(t, orig[i])
				}
				// Several client IPs so hashing strategies start at every backend.
				for ip := range 20 {
					req := &Request{ClientIP: ipv4(ip * 7919)}
					for _, i := range tt.excluded {
						req.Exclude(orig[i])
					}
					c, err := b.Pick(req)
					if tt.want != nil {
						if !errors.Is(err, tt.want) {
							t.Fatalf("Pick = %v, %v; want %v", c, err, tt.want)
						}
						continue
					}
					if err != nil {
						t.Fatalf("Pick: %v", err)
					}
					ok := false
					for _, i := range tt.wantAny {
						ok = ok || c == orig[i]
					}
					if !ok {
						t.Fatalf("picked %s", c.Addr)
					}
					c.Load.Release()
				}
			})
		}
	}
}

func TestPickNilRequest(t *testing.T) {
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			b := mustNew(t, strategy, nil, uniformCands(t, 3))
			c, err := b.Pick(nil)
			if err != nil {
				t.Fatal(err)
			}
			c.Load.Release()
		})
	}
}

// TestPickReserves checks that a pick holds one reservation until Release.
func TestPickReserves(t *testing.T) {
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			cands := uniformCands(t, 1)
			l := cands[0].Load
			b := mustNew(t, strategy, nil, cands)
			c, err := b.Pick(&Request{})
			if err != nil {
				t.Fatal(err)
			}
			if got := l.Active(); got != 1 {
				t.Fatalf("active after pick = %d, want 1", got)
			}
			c.Load.Release()
			if got := l.Active(); got != 0 {
				t.Fatalf("active after release = %d, want 0", got)
			}
		})
	}
}

// TestMaxConnectionsConcurrent hammers every strategy from many goroutines and
// checks, with a shadow count per backend, that no backend ever holds more
// than its max_connections and that every slot is given back.
func TestMaxConnectionsConcurrent(t *testing.T) {
	const (
		backends   = 6
		max        = 3
		goroutines = 16
		picks      = 300
	)
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			specs := make([]spec, backends)
			for i := range specs {
				specs[i] = spec{addr: portAddr(i), weight: 1 + i%3, priority: i % 2, max: max}
			}
			cands := newCands(t, specs...)
			orig := append([]*Candidate(nil), cands...)
			shadow := map[*Candidate]*atomic.Int64{}
			for _, c := range orig {
				shadow[c] = &atomic.Int64{}
			}
			b := mustNew(t, strategy, nil, cands)
			var wg sync.WaitGroup
			var picked, full atomic.Int64
			errs := make(chan error, goroutines)
			for g := range goroutines {
				wg.Go(func() {
					for i := range picks {
						c, err := b.Pick(&Request{ClientIP: ipv4(g*picks + i)})
						if errors.Is(err, ErrAllFull) {
							full.Add(1)
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						if n := shadow[c].Add(1); n > max {
							errs <- errors.New(c.Addr + " exceeded max_connections")
							return
						}
						picked.Add(1)
						shadow[c].Add(-1)
						c.Load.Release()
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for _, c := range orig {
				if a := c.Load.Active(); a != 0 {
					t.Fatalf("%s active = %d after all releases", c.Addr, a)
				}
			}
			if picked.Load() == 0 {
				t.Fatal("no pick succeeded")
			}
			t.Logf("picked %d, all full %d", picked.Load(), full.Load())
		})
	}
}

func TestRemoteConnsCountTowardMax(t *testing.T) {
	cands := newCands(t, spec{addr: "10.0.0.1:80", weight: 1, max: 5}, spec{addr: "10.0.0.2:80", weight: 1, max: 5})
	a, other := cands[0], cands[1]
	a.Load.SetRemote(5, 0)
	b := mustNew(t, "roundrobin", nil, cands)
	for range 4 {
		if got := pickAddr(t, b, &Request{}); got != other.Addr {
			t.Fatalf("picked %s, whose remote connections reach its max", got)
		}
	}
}

// TestNegativeValues: invalid weights and priorities (possible through JSON
// discovery) never panic, in any strategy.
func TestNegativeValues(t *testing.T) {
	sets := map[string][]spec{
		"all negative": {{addr: "10.0.0.1:80", weight: -1, priority: -1, max: -3}, {addr: "10.0.0.2:80", weight: -5}},
		"mixed":        {{addr: "10.0.0.1:80", weight: -1, priority: 2}, {addr: "10.0.0.2:80", weight: 0, priority: -7}, {addr: "10.0.0.3:80", weight: 2}},
	}
	for _, strategy := range strategies {
		for name, specs := range sets {
			t.Run(strategy+"/"+name, func(t *testing.T) {
				b := mustNew(t, strategy, nil, newCands(t, specs...))
				for i := range 50 {
					c, err := b.Pick(&Request{ClientIP: ipv4(i)})
					if err != nil {
						if !errors.Is(err, ErrNoBackends) || strategy != "weight" || name != "all negative" {
							t.Fatalf("Pick: %v", err)
						}
						continue
					}
					c.Load.Release()
				}
			})
		}
	}
}

// TestPickAllocsWithUnusable: a full or excluded backend in a large set (a
// retry after a failed dial, a backend at its limit) costs no allocation. The
// hashing strategies are driven with clients whose first choice is unusable.
func TestPickAllocsWithUnusable(t *testing.T) {
	for _, strategy := range strategies {
		t.Run(strategy, func(t *testing.T) {
			specs := make([]spec, 1000)
			for i := range specs {
				specs[i] = spec{addr: portAddr(i), weight: 1, max: 1}
			}
			cands := newCands(t, specs...)
			orig := append([]*Candidate(nil), cands...)
			b := mustNew(t, strategy, nil, cands)
			unusable := map[string]bool{}
			for i := 100; i < 1000; i += 50 {
				unusable[orig[i].Addr] = true
			}
			var ips []int
			for ip := 0; len(ips) < 300 && ip < 100000; ip++ {
				if strategy != "iphash" && strategy != "iphash1" || unusable[pickAddr(t, b, &Request{ClientIP: ipv4(ip)})] {
					ips = append(ips, ip)
				}
			}
			for i := 100; i < 1000; i += 50 {
				fill(t, orig[i])
			}
			req := &Request{}
			req.Exclude(orig[500])
			req.Exclude(orig[950])
			// testing.AllocsPerRun averages over the runs, so a stray allocation of
			// another goroutine (the race runtime, GC) does not count as the pick's.
			i := 0
			allocs := testing.AllocsPerRun(len(ips), func() {
				req.ClientIP = ipv4(ips[i%len(ips)])
				i++
				c, err := b.Pick(req)
				if err != nil {
					t.Fatal(err)
				}
				if unusable[c.Addr] {
					t.Fatalf("picked unusable %s", c.Addr)
				}
				c.Load.Release()
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per pick, want 0", allocs)
			}
		})
	}
}

func TestFailedSet(t *testing.T) {
	const n = 5000
	var f failedSet
	marked := map[int]bool{}
	for _, i := range []int{0, 63, 64, 4999, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1, 2} {
		f.add(i, n)
		marked[i] = true
		for j := range n {
			if f.has(j) != marked[j] {
				t.Fatalf("after adding %d: has(%d) = %v", i, j, f.has(j))
			}
		}
	}
}
