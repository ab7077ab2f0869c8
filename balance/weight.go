package balance

import (
	"cmp"
	"math/rand/v2"
	"slices"
)

// weightRedraws bounds the random draws inside one priority group before the
// group is scanned; with a few full members a redraw almost always succeeds.
const weightRedraws = 3

// maxWeight caps one backend's weight so a group's sum cannot overflow.
const maxWeight = 1 << 31

// weightBalancer is the 0.8 default: the lowest priority group that has an
// available member, then random with probability weight/sum inside it.
type weightBalancer struct {
	groups []weightGroup // ascending priority
}

// weightGroup holds the members of one priority with a positive weight (or all
// of them, counted as weight 1, when every weight is 0) and their running sums.
type weightGroup struct {
	cands []*Candidate
	cum   []uint64 // cum[i] = weight of cands[0..i]
}

func newWeight(cands []*Candidate) (Balancer, error) {
	// Negative weights or priorities are invalid (0.8 skipped them too, but
	// could then panic on an empty group).
	valid := slices.DeleteFunc(cands, func(c *Candidate) bool {
		return c.Backend.Priority < 0 || c.Backend.Weight < 0
	})
	slices.SortStableFunc(valid, func(a, b *Candidate) int {
		return cmp.Or(cmp.Compare(a.Backend.Priority, b.Backend.Priority), compareCandidates(a, b))
	})
	b := &weightBalancer{}
	for start := 0; start < len(valid); {
		end := start + 1
		for end < len(valid) && valid[end].Backend.Priority == valid[start].Backend.Priority {
			end++
		}
		b.groups = append(b.groups, newWeightGroup(valid[start:end]))
		start = end
	}
	return b, nil
}

func newWeightGroup(members []*Candidate) weightGroup {
	weighted := make([]*Candidate, 0, len(members))
	for _, c := range members {
		if c.Backend.Weight > 0 {
			weighted = append(weighted, c)
		}
	}
	uniform := len(weighted) == 0
	if uniform {
		weighted = append(weighted, members...)
	}
	g := weightGroup{cands: weighted, cum: make([]uint64, len(weighted))}
	var sum uint64
	for i, c := range weighted {
		w := uint64(1)
		if !uniform {
			w = uint64(min(c.Backend.Weight, maxWeight))
		}
		sum += w
		g.cum[i] = sum
	}
	return g
}

func (b *weightBalancer) Pick(req *Request) (*Candidate, error) {
	sawAvailable := false
	for i := range b.groups {
		c, avail := b.groups[i].pick(req)
		if c != nil {
			return c, nil
		}
		sawAvailable = sawAvailable || avail
	}
	return nil, noPick(sawAvailable)
}

// pick returns a reserved member, or nil and whether any member was not
// excluded (so the group was full rather than used up).
func (g *weightGroup) pick(req *Request) (*Candidate, bool) {
	n := len(g.cands)
	total := g.cum[n-1]
	avail := false
	i := 0
	for range weightRedraws {
		i = g.search(rand.Uint64N(total))
		c := g.cands[i]
		if excluded(req, c) {
			continue
		}
		avail = true
		if reserve(c) {
			return c, true
		}
	}
	// Rare path: most of the weight is full or excluded; take the first
	// usable member after the last draw.
	for range n {
		c := g.cands[i]
		if !excluded(req, c) {
			avail = true
			if reserve(c) {
				return c, true
			}
		}
		i = next(i, n)
	}
	return nil, avail
}

// search returns the member whose weight interval holds r: the first i with
// cum[i] > r.
func (g *weightGroup) search(r uint64) int {
	lo, hi := 0, len(g.cum)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if g.cum[m] <= r {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
