package balance

import "sync/atomic"

// roundRobin hands out candidates in "host:port" order. The counter belongs to
// one Balancer, so a rebuilt set starts a new cycle; full or excluded
// candidates are skipped by advancing to the next one.
type roundRobin struct {
	cands []*Candidate
	next  atomic.Uint64
}

func newRoundRobin(cands []*Candidate) (Balancer, error) {
	sortByAddr(cands)
	return &roundRobin{cands: cands}, nil
}

func (b *roundRobin) Pick(req *Request) (*Candidate, error) {
	n := len(b.cands)
	if n == 0 {
		return nil, ErrNoBackends
	}
	start := int((b.next.Add(1) - 1) % uint64(n))
	c, steps, err := walkFrom(req, b.cands, start)
	if steps > 0 {
		// Skipped full or excluded candidates: move the cycle past the one
		// chosen, or the next pick would choose it again.
		b.next.Add(uint64(steps))
	}
	return c, err
}

// ipHash maps a client to hash(IP) mod n over the candidates in "host:port"
// order, like 0.8 but hashing the 16-byte form so IPv4 and IPv4-mapped IPv6
// clients land alike. Any change of the set remaps most clients; iphash1 is
// the consistent variant.
type ipHash struct {
	cands []*Candidate
}

func newIPHash(cands []*Candidate) (Balancer, error) {
	sortByAddr(cands)
	return &ipHash{cands: cands}, nil
}

func (b *ipHash) Pick(req *Request) (*Candidate, error) {
	n := len(b.cands)
	if n == 0 {
		return nil, ErrNoBackends
	}
	return walk(req, b.cands, int(hashIP(clientIP(req))%uint64(n)))
}

// walk reserves the first usable candidate from start on, wrapping around.
func walk(req *Request, cands []*Candidate, start int) (*Candidate, error) {
	c, _, err := walkFrom(req, cands, start)
	return c, err
}

// walkFrom is walk that also says how many candidates it skipped.
func walkFrom(req *Request, cands []*Candidate, start int) (*Candidate, int, error) {
	n := len(cands)
	sawAvailable := false
	i := start
	for steps := range n {
		c := cands[i]
		if !excluded(req, c) {
			sawAvailable = true
			if reserve(c) {
				return c, steps, nil
			}
		}
		i = next(i, n)
	}
	return nil, 0, noPick(sawAvailable)
}
