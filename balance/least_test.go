package balance

import (
	"fmt"
	"testing"
)

// hold takes n reservations on c without a limit, as open connections would.
func hold(c *Candidate, n int) {
	for range n {
		c.Load.Reserve(0)
	}
}

func TestLeastConnPicksLeastLoaded(t *testing.T) {
	tests := []struct {
		name   string
		active []int
		remote []int
		want   int
	}{
		{name: "local", active: []int{3, 1, 2}, want: 1},
		{name: "remote counts", active: []int{3, 1, 2}, remote: []int{0, 5, 0}, want: 2},
		{name: "last", active: []int{4, 4, 4, 0}, want: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := uniformCands(t, len(tt.active))
			orig := append([]*Candidate(nil), cands...)
			for i, a := range tt.active {
				hold(orig[i], a)
				if tt.remote != nil {
					orig[i].Load.SetRemote(int64(tt.remote[i]), 0)
				}
			}
			b := mustNew(t, "leastconn", nil, cands)
			for range 10 {
				if got := pickAddr(t, b, &Request{}); got != orig[tt.want].Addr {
					t.Fatalf("picked %s, want %s", got, orig[tt.want].Addr)
				}
			}
		})
	}
}

// TestLeastBurstSpreads: a burst on an idle pool, none released, must spread
// evenly because each pick reserves before the next one ranks.
func TestLeastBurstSpreads(t *testing.T) {
	for _, strategy := range []string{"leastconn", "leastbandwidth"} {
		for _, n := range []int{4, 64, 65, 300} {
			t.Run(fmt.Sprintf("%s/n=%d", strategy, n), func(t *testing.T) {
				cands := uniformCands(t, n)
				orig := append([]*Candidate(nil), cands...)
				b := mustNew(t, strategy, nil, cands)
				const perBackend = 10
				for range n * perBackend {
					if _, err := b.Pick(&Request{}); err != nil {
						t.Fatal(err)
					}
				}
				lo, hi := int64(1<<62), int64(0)
				for _, c := range orig {
					lo, hi = min(lo, c.Load.Active()), max(hi, c.Load.Active())
				}
				// Exact below 65; best of 8 random choices above keeps
				// the spread within a couple of connections.
				limit := int64(0)
				if n > leastExactMax {
					limit = 3
				}
				if hi-lo > limit {
					t.Fatalf("active connections range %d..%d after %d picks, want a spread of at most %d", lo, hi, n*perBackend, limit)
				}
			})
		}
	}
}

func TestLeastConnLargeFindsTheOnlyFree(t *testing.T) {
	for _, strategy := range []string{"leastconn", "leastbandwidth"} {
		t.Run(strategy, func(t *testing.T) {
			specs := make([]spec, 1000)
			for i := range specs {
				specs[i] = spec{addr: portAddr(i), weight: 1, max: 2}
			}
			cands := newCands(t, specs...)
			orig := append([]*Candidate(nil), cands...)
			b := mustNew(t, strategy, nil, cands)
			for i, c := range orig {
				if i != 777 {
					fill(t, c)
				}
			}
			for range 20 {
				if got := pickAddr(t, b, &Request{}); got != orig[777].Addr {
					t.Fatalf("picked %s, want the only free %s", got, orig[777].Addr)
				}
			}
			req := &Request{}
			req.Exclude(orig[777])
			wantErr(t, b, req, ErrAllFull)
		})
	}
}

func TestLeastConnLargePrefersIdle(t *testing.T) {
	cands := uniformCands(t, 1000)
	orig := append([]*Candidate(nil), cands...)
	for i, c := range orig {
		if i%2 == 0 {
			hold(c, 50)
		}
	}
	b := mustNew(t, "leastconn", nil, cands)
	busy := 0
	for range 2000 {
		c, err := b.Pick(&Request{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Load.Active() > 50 {
			busy++
		}
		c.Load.Release()
	}
	// Eight samples all busy: 1/256 of picks.
	if busy > 40 {
		t.Fatalf("%d of 2000 picks went to a busy backend, want about 8", busy)
	}
}

func TestLeastBandwidth(t *testing.T) {
	tests := []struct {
		name string
		bw   []int64
		conn []int
		rbw  []int64
		want int
	}{
		{name: "lowest", bw: []int64{300, 100, 200}, want: 1},
		{name: "remote counts", bw: []int64{300, 100, 200}, rbw: []int64{0, 500, 0}, want: 2},
		{name: "ties by connections", bw: []int64{100, 100, 200}, conn: []int{3, 1, 0}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := uniformCands(t, len(tt.bw))
			orig := append([]*Candidate(nil), cands...)
			for i, c := range orig {
				c.Load.SetBandwidth(tt.bw[i])
				if tt.rbw != nil {
					c.Load.SetRemote(0, tt.rbw[i])
				}
				if tt.conn != nil {
					hold(c, tt.conn[i])
				}
			}
			b := mustNew(t, "leastbandwidth", nil, cands)
			for range 5 {
				if got := pickAddr(t, b, &Request{}); got != orig[tt.want].Addr {
					t.Fatalf("picked %s, want %s", got, orig[tt.want].Addr)
				}
			}
		})
	}
}
