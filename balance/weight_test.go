package balance

import (
	"errors"
	"math"
	"testing"
)

// share picks n times (releasing each time) and returns each address's share.
func share(t *testing.T, b Balancer, n int) map[string]float64 {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		counts[pickAddr(t, b, &Request{ClientIP: ipv4(i)})]++
	}
	out := map[string]float64{}
	for a, c := range counts {
		out[a] = float64(c) / float64(n)
	}
	return out
}

func TestWeightDistribution(t *testing.T) {
	const picks = 120000
	tests := []struct {
		name  string
		specs []spec
		want  map[string]float64 // addresses absent here must never be picked
	}{
		{
			name: "weighted, lowest priority only",
			specs: []spec{
				{addr: "10.0.0.1:80", weight: 1}, {addr: "10.0.0.2:80", weight: 2}, {addr: "10.0.0.3:80", weight: 3},
				{addr: "10.0.0.4:80", weight: 0}, {addr: "10.0.0.5:80", weight: 10, priority: 1},
			},
			want: map[string]float64{"10.0.0.1:80": 1.0 / 6, "10.0.0.2:80": 2.0 / 6, "10.0.0.3:80": 3.0 / 6},
		},
		{
			name:  "all zero weights are uniform",
			specs: []spec{{addr: "10.0.0.1:80"}, {addr: "10.0.0.2:80"}, {addr: "10.0.0.3:80"}, {addr: "10.0.0.9:80", weight: 5, priority: 2}},
			want:  map[string]float64{"10.0.0.1:80": 1.0 / 3, "10.0.0.2:80": 1.0 / 3, "10.0.0.3:80": 1.0 / 3},
		},
		{
			name: "negative values are skipped",
			specs: []spec{
				{addr: "10.0.0.1:80", weight: -1, priority: -5}, {addr: "10.0.0.2:80", weight: -3},
				{addr: "10.0.0.3:80", weight: 1, priority: -1}, {addr: "10.0.0.4:80", weight: 1, priority: 3},
			},
			want: map[string]float64{"10.0.0.4:80": 1},
		},
		{
			name:  "single member",
			specs: []spec{{addr: "10.0.0.1:80", weight: 7}},
			want:  map[string]float64{"10.0.0.1:80": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := share(t, mustNew(t, "weight", nil, newCands(t, tt.specs...)), picks)
			for a, g := range got {
				w, ok := tt.want[a]
				if !ok {
					t.Fatalf("%s picked (share %.4f), want never", a, g)
				}
				// The sd of a share is at most 0.0015 at this sample size.
				if math.Abs(g-w) > 0.01 {
					t.Errorf("%s share = %.4f, want %.4f ± 0.01", a, g, w)
				}
			}
			for a := range tt.want {
				if _, ok := got[a]; !ok {
					t.Errorf("%s never picked", a)
				}
			}
		})
	}
}

func TestWeightPriorityFallback(t *testing.T) {
	specs := []spec{
		{addr: "10.0.0.1:80", weight: 5, max: 1}, {addr: "10.0.0.2:80", weight: 1, max: 1},
		{addr: "10.0.0.3:80", weight: 0}, // weight 0 in a weighted group: never picked
		{addr: "10.0.1.1:80", weight: 1, priority: 1, max: 1},
		{addr: "10.0.2.1:80", weight: 1, priority: 2},
	}
	tests := []struct {
		name     string
		excluded []int
		full     []int
		want     []string
	}{
		{name: "lowest group", want: []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{name: "heavy member full", full: []int{0}, want: []string{"10.0.0.2:80"}},
		{name: "lowest group full", full: []int{0, 1}, want: []string{"10.0.1.1:80"}},
		{name: "lowest group excluded", excluded: []int{0, 1}, want: []string{"10.0.1.1:80"}},
		{name: "two groups unusable", excluded: []int{0}, full: []int{1, 3}, want: []string{"10.0.2.1:80"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := newCands(t, specs...)
			orig := append([]*Candidate(nil), cands...)
			b := mustNew(t, "weight", nil, cands)
			for _, i := range tt.full {
				fill(t, orig[i])
			}
			seen := map[string]bool{}
			for range 2000 {
				req := &Request{}
				for _, i := range tt.excluded {
					req.Exclude(orig[i])
				}
				seen[pickAddr(t, b, req)] = true
			}
			if len(seen) != len(tt.want) {
				t.Fatalf("picked %v, want exactly %v", seen, tt.want)
			}
			for _, a := range tt.want {
				if !seen[a] {
					t.Fatalf("picked %v, want exactly %v", seen, tt.want)
				}
			}
		})
	}
}

// TestWeightGroupScan covers the rare path: the draws keep hitting full
// members, so the group is scanned.
func TestWeightGroupScan(t *testing.T) {
	cands := make([]*Candidate, 0, 200)
	for i := range 200 {
		cands = append(cands, newCand(t, spec{addr: portAddr(i), weight: 1000, max: 1}))
	}
	cands = append(cands, newCand(t, spec{addr: "10.9.9.9:80", weight: 1, max: 1}))
	orig := append([]*Candidate(nil), cands...)
	b := mustNew(t, "weight", nil, cands)
	for _, c := range orig[:200] {
		fill(t, c)
	}
	for range 50 {
		if got := pickAddr(t, b, &Request{}); got != "10.9.9.9:80" {
			t.Fatalf("picked %s, want the only free member", got)
		}
	}
	fill(t, orig[200])
	if _, err := b.Pick(&Request{}); !errors.Is(err, ErrAllFull) {
		t.Fatalf("Pick = %v, want ErrAllFull", err)
	}
}

func TestWeightHugeWeights(t *testing.T) {
	b := mustNew(t, "weight", nil, newCands(t,
		spec{addr: "10.0.0.1:80", weight: math.MaxInt}, spec{addr: "10.0.0.2:80", weight: math.MaxInt}))
	got := share(t, b, 20000)
	if math.Abs(got["10.0.0.1:80"]-0.5) > 0.03 {
		t.Fatalf("shares %v, want about even", got)
	}
}
