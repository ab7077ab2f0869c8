package balance

import (
	"fmt"
	"math/bits"
	"slices"
)

// iphash1 is a consistent hash ring with virtual nodes in proportion to weight.
//
// A backend's virtual nodes sit at mix64(fnv1a64("host:port") + k*golden) for
// k = 0..v-1: they depend only on its address and its vnode count, never on the
// rest of the set, and a client goes to the first vnode at or after the hash of
// its IP. Hence, exactly: removing a backend (or marking it full or excluded)
// moves only the clients whose vnode it owned, adding one moves only clients to
// it (about 1/(n+1) of them), and two nodes with the same set choose alike. A
// pick is one hash and a binary search in a bucket, not n hashes as with 0.8's
// rendezvous hashing. Maglev was not chosen: its lookup table is filled by all
// backends' permutations together, so removing one also shuffles some entries
// among the survivors; it keeps the removal property only approximately.
//
// Vnode count: ringVnodesPerWeight per unit of weight. A backend's share of
// the ring then deviates by about 1/sqrt(v) (8% at 160) from its weight's
// share. The ring costs 8 bytes per vnode, so it is capped at ringMaxPoints
// (16 MiB; 10,000 weight-1 backends fit exactly). A larger set halves every
// backend's count (never below 1) until the ring fits. The vnode sets are
// nested (k = 0..v-1), so the properties above stay exact for every change
// that keeps the same halving; a change that crosses a halving boundary also
// moves the clients of the dropped or added vnodes, about half of them.
const (
	ringVnodesPerWeight = 160
	ringMaxPoints       = 1 << 21
	ringMaxWeightUnits  = 1 << 32

	// A point is a ring position in its top 40 bits and the owner's index
	// (into the set sorted by "host:port") in its low 24 bits, so the ring is
	// one sorted []uint64. Two positions equal in their top 40 bits are
	// ordered by owner index; removal keeps the survivors' relative order, so
	// this tie-break is stable too.
	ringOwnerBits = 24
	ringOwnerMask = 1<<ringOwnerBits - 1
	ringMaxOwners = 1 << ringOwnerBits

	// The bucket index narrows the binary search to about 4 points, so a pick
	// touches the (L2-sized) index and a cache line or two of the ring
	// instead of ~21 scattered lines at 10,000 backends.
	ringPointsPerBucket = 4
	ringMaxBucketBits   = 18
)

type ring struct {
	cands  []*Candidate // sorted by "host:port"; the owner index points here
	points []uint64     // sorted

	// buckets[b] is the index of the first point whose top bucketBits bits
	// are >= b; len(buckets) = 1<<bucketBits + 1. Nil for small rings.
	buckets    []uint32
	bucketBits uint
}

func newRing(cands []*Candidate) (Balancer, error) {
	// Members are those with a positive weight; when none has one, all
	// count as weight 1 (a negative weight counts as 0).
	members := slices.DeleteFunc(slices.Clone(cands), func(c *Candidate) bool { return c.Backend.Weight <= 0 })
	if len(members) == 0 {
		members = cands
	}
	if len(members) > ringMaxOwners {
		return nil, fmt.Errorf("balance: iphash1 supports at most %d backends, got %d", ringMaxOwners, len(members))
	}
	sortByAddr(members)

	units := make([]uint64, len(members))
	var total uint64
	for i, c := range members {
		units[i] = uint64(min(max(int64(c.Backend.Weight), 1), ringMaxWeightUnits)) * ringVnodesPerWeight
		total += units[i]
	}
	// Halve until the ring fits; a backend keeps at least one vnode.
	shift := uint(0)
	for total > ringMaxPoints && shift < 63 {
		shift++
		total = 0
		for _, u := range units {
			total += max(u>>shift, 1)
		}
	}

	r := &ring{cands: members, points: make([]uint64, 0, total)}
	for i, c := range members {
		h := fnv1a64(c.Addr)
		v := max(units[i]>>shift, 1)
		for k := range v {
			r.points = append(r.points, mix64(h+k*golden)&^ringOwnerMask|uint64(i))
		}
	}
	slices.Sort(r.points)
	r.buildBuckets()
	return r, nil
}

func (r *ring) buildBuckets() {
	n := len(r.points)
	if n < 64 {
		return
	}
	b := uint(bits.Len(uint(n/ringPointsPerBucket))) - 1
	b = min(b, ringMaxBucketBits)
	r.bucketBits = b
	r.buckets = make([]uint32, 1<<b+1)
	p := 0
	for bucket := range 1 << b {
		for p < n && r.points[p]>>(64-b) < uint64(bucket) {
			p++
		}
		r.buckets[bucket] = uint32(p)
	}
	r.buckets[1<<b] = uint32(n)
}

// search returns the index of the first point at or after the client's hash,
// wrapping to 0 past the last one.
func (r *ring) search(h uint64) int {
	q := h &^ ringOwnerMask
	lo, hi := 0, len(r.points)
	if r.buckets != nil {
		b := q >> (64 - r.bucketBits)
		lo, hi = int(r.buckets[b]), int(r.buckets[b+1])
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if r.points[m] < q {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(r.points) {
		return 0
	}
	return lo
}

func (r *ring) Pick(req *Request) (*Candidate, error) {
	n := len(r.cands)
	if n == 0 {
		return nil, ErrNoBackends
	}
	np := len(r.points)
	i := r.search(hashIP(clientIP(req)))
	// Walk clockwise to the first owner that is usable. Each owner is tried
	// once; the walk ends when every owner failed or the ring is done.
	var failed failedSet
	nfailed := 0
	sawAvailable := false
	for range np {
		o := int(r.points[i] & ringOwnerMask)
		if !failed.has(o) {
			c := r.cands[o]
			if !excluded(req, c) {
				sawAvailable = true
				if reserve(c) {
					return c, nil
				}
			}
			failed.add(o, n)
			nfailed++
			if nfailed == n {
				break
			}
		}
		i = next(i, np)
	}
	return nil, noPick(sawAvailable)
}
