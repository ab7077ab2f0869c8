package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// ringWorld is a random candidate set for the iphash1 property tests.
type ringWorld struct {
	specs   []spec
	clients []netip.Addr
}

func newRingWorld(rng *rand.Rand, n, clients int, weighted bool) ringWorld {
	w := ringWorld{}
	seen := map[string]bool{}
	for len(w.specs) < n {
		s := spec{addr: fmt.Sprintf("10.%d.%d.%d:%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), 1+rng.IntN(65535)), weight: 1}
		if rng.IntN(4) == 0 {
			s.addr = fmt.Sprintf("[fd00::%x]:%d", rng.Uint32(), 1+rng.IntN(65535))
		}
		if weighted {
			s.weight = 1 + rng.IntN(4)
		}
		if !seen[s.addr] {
			seen[s.addr] = true
			w.specs = append(w.specs, s)
		}
	}
	for range clients {
		if rng.IntN(3) == 0 {
			var a [16]byte
			for i := range a {
				a[i] = byte(rng.Uint32())
			}
			w.clients = append(w.clients, netip.AddrFrom16(a))
		} else {
			w.clients = append(w.clients, ipv4(int(rng.Uint32())))
		}
	}
	return w
}

// assign maps every client to the address iphash1 picks for it over specs.
func assign(t *testing.T, specs []spec, clients []netip.Addr) []string {
	t.Helper()
	b := mustNew(t, "iphash1", nil, newCands(t, specs...))
	out := make([]string, len(clients))
	for i, ip := range clients {
		out[i] = pickAddr(t, b, &Request{ClientIP: ip})
	}
	return out
}

var ringSizes = []int{1, 2, 3, 5, 8, 13, 40, 150}

func TestRingRemovalMovesOnlyItsClients(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range ringSizes[1:] {
		for trial := range 3 {
			t.Run(fmt.Sprintf("n=%d/%d", n, trial), func(t *testing.T) {
				w := newRingWorld(rng, n, 3000, trial%2 == 1)
				before := assign(t, w.specs, w.clients)
				gone := rng.IntN(n)
				after := assign(t, slices.Delete(slices.Clone(w.specs), gone, gone+1), w.clients)
				moved := 0
				for i := range w.clients {
					switch {
					case before[i] == w.specs[gone].addr:
						moved++
						if after[i] == before[i] {
							t.Fatalf("client %s still on removed %s", w.clients[i], before[i])
						}
					case after[i] != before[i]:
						t.Fatalf("client %s moved %s -> %s though %s was removed", w.clients[i], before[i], after[i], w.specs[gone].addr)
					}
				}
				t.Logf("%d of %d clients moved", moved, len(w.clients))
			})
		}
	}
}

func TestRingAdditionMovesAboutOneInNPlusOne(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const clients = 20000
	for _, n := range ringSizes {
		for trial := range 3 {
			t.Run(fmt.Sprintf("n=%d/%d", n, trial), func(t *testing.T) {
				w := newRingWorld(rng, n+1, clients, false)
				added := w.specs[n]
				before := assign(t, w.specs[:n], w.clients)
				after := assign(t, w.specs, w.clients)
				moved := 0
				for i := range w.clients {
					if after[i] == before[i] {
						continue
					}
					if after[i] != added.addr {
						t.Fatalf("client %s moved %s -> %s, not to the added %s", w.clients[i], before[i], after[i], added.addr)
					}
					moved++
				}
				// A backend's share deviates by ~1/sqrt(160) from its
				// weight's; allow 4 sd of that plus 4 sd of sampling.
				want := float64(clients) / float64(n+1)
				tol := 4*want/math.Sqrt(ringVnodesPerWeight) + 4*math.Sqrt(want)
				if math.Abs(float64(moved)-want) > tol {
					t.Fatalf("%d clients moved, want %.0f ± %.0f", moved, want, tol)
				}
			})
		}
	}
}

func TestRingDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range ringSizes {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			w := newRingWorld(rng, n, 2000, true)
			shuffled := slices.Clone(w.specs)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			// Separate candidates and loads, as on another node.
			a, b := assign(t, w.specs, w.clients), assign(t, shuffled, w.clients)
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("client %s: %s vs %s", w.clients[i], a[i], b[i])
				}
			}
		})
	}
}

func TestRingWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const clients = 60000
	for trial := range 3 {
		t.Run(fmt.Sprint(trial), func(t *testing.T) {
			w := newRingWorld(rng, 20, clients, false)
			for i := range w.specs {
				if i%2 == 1 {
					w.specs[i].weight = 3
				}
			}
			counts := map[string]int{}
			for _, a := range assign(t, w.specs, w.clients) {
				counts[a]++
			}
			var heavy, light float64
			for _, s := range w.specs {
				if s.weight == 3 {
					heavy += float64(counts[s.addr])
				} else {
					light += float64(counts[s.addr])
				}
			}
			if r := heavy / light; r < 2.6 || r > 3.4 {
				t.Fatalf("weight-3 backends got %.2fx the clients of weight-1 ones, want about 3", r)
			}
			for _, s := range w.specs {
				want := float64(clients) * float64(s.weight) / 40
				if c := float64(counts[s.addr]); c < 0.6*want || c > 1.4*want {
					t.Errorf("%s (weight %d) got %.0f clients, want about %.0f", s.addr, s.weight, c, want)
				}
			}
		})
	}
}

func TestRingZeroAndNegativeWeights(t *testing.T) {
	clients := make([]netip.Addr, 2000)
	for i := range clients {
		clients[i] = ipv4(i * 2654435761)
	}
	t.Run("zero weight unused beside positive", func(t *testing.T) {
		for i, a := range assign(t, []spec{{addr: "10.0.0.1:80", weight: 0}, {addr: "10.0.0.2:80", weight: -2}, {addr: "10.0.0.3:80", weight: 1}}, clients) {
			if a != "10.0.0.3:80" {
				t.Fatalf("client %s on %s", clients[i], a)
			}
		}
	})
	t.Run("all zero count as one", func(t *testing.T) {
		counts := map[string]int{}
		for _, a := range assign(t, []spec{{addr: "10.0.0.1:80"}, {addr: "10.0.0.2:80", weight: -1}}, clients) {
			counts[a]++
		}
		if len(counts) != 2 || counts["10.0.0.1:80"] < 600 || counts["10.0.0.2:80"] < 600 {
			t.Fatalf("counts %v, want both used about evenly", counts)
		}
	})
}

// TestRingUnavailableIsLikeRemoved: a client of an excluded or full backend
// goes where it would go if that backend were removed (the next owner on the
// ring), and every other client stays.
func TestRingUnavailableIsLikeRemoved(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, mode := range []string{"excluded", "full"} {
		for _, n := range ringSizes[1:] {
			t.Run(fmt.Sprintf("%s/n=%d", mode, n), func(t *testing.T) {
				w := newRingWorld(rng, n, 2000, true)
				gone := rng.IntN(n)
				w.specs[gone].max = 1
				cands := newCands(t, w.specs...)
				target := cands[gone]
				b := mustNew(t, "iphash1", nil, cands)
				before := make([]string, len(w.clients))
				for i, ip := range w.clients {
					before[i] = pickAddr(t, b, &Request{ClientIP: ip})
				}
				removed := assign(t, slices.Delete(slices.Clone(w.specs), gone, gone+1), w.clients)
				if mode == "full" {
					fill(t, target)
				}
				for i, ip := range w.clients {
					req := &Request{ClientIP: ip}
					if mode == "excluded" {
						req.Exclude(target)
					}
					got := pickAddr(t, b, req)
					if got != removed[i] {
						t.Fatalf("client %s: got %s, want %s as with %s removed", ip, got, removed[i], target.Addr)
					}
					if before[i] != target.Addr && got != before[i] {
						t.Fatalf("client %s moved %s -> %s", ip, before[i], got)
					}
				}
			})
		}
	}
}

func TestRingSpread(t *testing.T) {
	const clients = 50000
	cands := uniformCands(t, 10)
	b := mustNew(t, "iphash1", nil, cands)
	counts := map[string]int{}
	for i := range clients {
		counts[pickAddr(t, b, &Request{ClientIP: ipv4(0x0a000000 + i)})]++
	}
	for a, c := range counts {
		if c < clients/10*7/10 || c > clients/10*13/10 {
			t.Fatalf("%s got %d of %d clients, want %d ± 30%%", a, c, clients, clients/10)
		}
	}
}

func TestRingLarge(t *testing.T) {
	start := time.Now()
	cands := uniformCands(t, 10000)
	b := mustNew(t, "iphash1", nil, cands)
	t.Logf("built in %v", time.Since(start))
	r := b.(*ring)
	if len(r.points) != 10000*ringVnodesPerWeight {
		t.Fatalf("%d points, want exactly %d (no halving at 10,000 weight-1 backends)", len(r.points), 10000*ringVnodesPerWeight)
	}
	// Heavier sets are halved to fit.
	for _, c := range cands {
		c.Backend.Weight = 5
	}
	r = mustNew(t, "iphash1", nil, cands).(*ring)
	if len(r.points) > ringMaxPoints {
		t.Fatalf("%d points, over the cap %d", len(r.points), ringMaxPoints)
	}
	if !slices.IsSorted(r.points) {
		t.Fatal("ring not sorted")
	}
	for i := range 1000 {
		pickAddr(t, r, &Request{ClientIP: ipv4(i)})
	}
}

// TestRingSearch checks the bucketed search against a plain one.
func TestRingSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, n := range []int{1, 3, 50, 400} {
		r := mustNew(t, "iphash1", nil, uniformCands(t, n)).(*ring)
		for range 20000 {
			h := rng.Uint64()
			q := h &^ ringOwnerMask
			want, found := slices.BinarySearch(r.points, q)
			_ = found
			if want == len(r.points) {
				want = 0
			}
			if got := r.search(h); got != want {
				t.Fatalf("n=%d: search(%x) = %d, want %d", n, h, got, want)
			}
		}
	}
}
