package balance

import (
	"math/rand/v2"
	"sync/atomic"
)

// Up to leastExactMax candidates a pick scans them all: a few dozen atomic
// loads cost less than anything cleverer. Above it a pick is the best of
// leastSamples random candidates ("power of k choices"): its cost does not
// grow with n, and with reservations taken at pick time it keeps the spread
// close to an exact scan (the chance of landing on a loaded backend falls
// exponentially in k), while a small k keeps several concurrent picks from
// all converging on one momentarily idle backend when remote counts lag.
const (
	leastExactMax = 64
	leastSamples  = 8
	leastRounds   = 2 // sampling rounds before the exact scan (rare: most sampled candidates full or excluded)
	leastAttempts = 8 // scan passes whose best candidate got full under a concurrent pick, before first fit
)

// least picks the candidate with the fewest connections (leastconn) or the
// lowest bandwidth (leastbandwidth). Bandwidth is measured once a second, so
// leastbandwidth breaks its ties by connections: otherwise a burst on an
// idle pool would all go to one backend. Remaining ties go to the first from
// a rotating start, so a burst spreads.
type least struct {
	cands       []*Candidate
	byBandwidth bool
	next        atomic.Uint64
}

func newLeastConn(cands []*Candidate) (Balancer, error) {
	sortByAddr(cands)
	return &least{cands: cands}, nil
}

func newLeastBandwidth(cands []*Candidate) (Balancer, error) {
	sortByAddr(cands)
	return &least{cands: cands, byBandwidth: true}, nil
}

// rank is the load to minimise, compared as (primary, secondary).
func (b *least) rank(c *Candidate) (int64, int64) {
	if b.byBandwidth {
		return c.Load.Bandwidth(), c.Load.Conns()
	}
	return c.Load.Conns(), 0
}

func (b *least) Pick(req *Request) (*Candidate, error) {
	n := len(b.cands)
	if n == 0 {
		return nil, ErrNoBackends
	}
	if n > leastExactMax {
		for range leastRounds {
			if c := b.sample(req); c != nil && reserve(c) {
				return c, nil
			}
		}
	}
	return b.scan(req)
}

// sample returns the least loaded usable one of leastSamples random candidates.
func (b *least) sample(req *Request) *Candidate {
	var best *Candidate
	var bp, bs int64
	for range leastSamples {
		c := b.cands[rand.IntN(len(b.cands))]
		if excluded(req, c) || full(c) {
			continue
		}
		p, s := b.rank(c)
		if best == nil || p < bp || (p == bp && s < bs) {
			best, bp, bs = c, p, s
		}
	}
	return best
}

// scan is the exact pick: the least loaded usable candidate from a rotating
// start. A candidate that another pick filled in the meantime is marked failed
// and the scan repeats, a bounded number of times, then takes the first fit.
func (b *least) scan(req *Request) (*Candidate, error) {
	n := len(b.cands)
	start := int(b.next.Add(1) % uint64(n))
	var failed failedSet
	sawAvailable := false
	for range leastAttempts {
		best := -1
		var bp, bs int64
		i := start
		for range n {
			c := b.cands[i]
			if !failed.has(i) && !excluded(req, c) {
				sawAvailable = true
				if !full(c) {
					p, s := b.rank(c)
					if best < 0 || p < bp || (p == bp && s < bs) {
						best, bp, bs = i, p, s
					}
				}
			}
			i = next(i, n)
		}
		if best < 0 {
			return nil, noPick(sawAvailable)
		}
		if c := b.cands[best]; reserve(c) {
			return c, nil
		}
		failed.add(best, n)
	}
	i := start
	for range n {
		c := b.cands[i]
		if !failed.has(i) && !excluded(req, c) && reserve(c) {
			return c, nil
		}
		i = next(i, n)
	}
	return nil, noPick(sawAvailable)
}
