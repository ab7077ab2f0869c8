package balance

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/gobetween/gobetween/config"
)

// Strategy names as a server's balance key spells them.
const (
	strategyWeight         = "weight"
	strategyRoundRobin     = "roundrobin"
	strategyIPHash         = "iphash"
	strategyIPHash1        = "iphash1"
	strategyLeastConn      = "leastconn"
	strategyLeastBandwidth = "leastbandwidth"
)

// builder builds one strategy over cands, which it owns afterwards.
type builder func(cands []*Candidate) (Balancer, error)

// New builds an immutable Balancer over cands (healthy, enabled backends of one server) for strategy
// ("weight" default when "", "roundrobin", "iphash", "iphash1", "leastconn", "leastbandwidth"), wrapped in the
// SNI middleware when sni != nil and in max-connections handling always. New owns cands afterwards (may sort/reorder).
// An unknown strategy or an SNI regexp that does not compile is an error. Building may be O(n log n); Pick must not be O(n) at scale.
func New(strategy string, sni *config.Sni, cands []*Candidate) (Balancer, error) {
	build, err := builderFor(strategy)
	if err != nil {
		return nil, err
	}
	for i, c := range cands {
		if c == nil || c.Load == nil {
			return nil, fmt.Errorf("balance: candidate %d has no load", i)
		}
	}
	if sni == nil {
		return build(cands)
	}
	return newSni(sni, build, cands)
}

func builderFor(strategy string) (builder, error) {
	switch strategy {
	case "", strategyWeight:
		return newWeight, nil
	case strategyRoundRobin:
		return newRoundRobin, nil
	case strategyIPHash:
		return newIPHash, nil
	case strategyIPHash1:
		return newRing, nil
	case strategyLeastConn:
		return newLeastConn, nil
	case strategyLeastBandwidth:
		return newLeastBandwidth, nil
	}
	return nil, fmt.Errorf("balance: unknown strategy %q", strategy)
}

// excluded tolerates a nil request: nothing is excluded then.
func excluded(req *Request, c *Candidate) bool {
	return req != nil && req.Excluded(c)
}

// reserve takes one connection slot on c within its max_connections.
func reserve(c *Candidate) bool {
	return c.Load.Reserve(int64(c.Backend.MaxConnections))
}

// full is the lock-free pre-check of Reserve, used to rank without reserving;
// Reserve stays the authority since the load may change in between.
func full(c *Candidate) bool {
	max := c.Backend.MaxConnections
	return max > 0 && c.Load.Conns() >= int64(max)
}

// noPick is the error of a pick that found nothing: ErrAllFull when some
// candidate was not excluded (so it was full), else ErrNoBackends.
func noPick(sawAvailable bool) error {
	if sawAvailable {
		return ErrAllFull
	}
	return ErrNoBackends
}

// compareCandidates orders by "host:port" and then by every other property, so
// a set sorts the same on every node whatever order discovery returned.
func compareCandidates(a, b *Candidate) int {
	return cmp.Or(
		cmp.Compare(a.Addr, b.Addr),
		cmp.Compare(a.Backend.Sni, b.Backend.Sni),
		cmp.Compare(a.Backend.Weight, b.Backend.Weight),
		cmp.Compare(a.Backend.Priority, b.Backend.Priority),
		cmp.Compare(a.Backend.MaxConnections, b.Backend.MaxConnections),
	)
}

func sortByAddr(cands []*Candidate) {
	slices.SortStableFunc(cands, compareCandidates)
}

// failedSet remembers candidate indexes that a pick already found unusable.
// Indexes below 64 live in a word and the first few larger ones in an array,
// both on the caller's stack; only a pick that meets many unusable candidates
// (the rare path where most of a large set is full) allocates a bitmap.
type failedSet struct {
	small uint64
	few   [8]int
	nfew  int
	big   []uint64
}

func (f *failedSet) has(i int) bool {
	if i < 64 {
		return f.small&(1<<uint(i)) != 0
	}
	for _, j := range f.few[:f.nfew] {
		if j == i {
			return true
		}
	}
	w := i / 64
	return w < len(f.big) && f.big[w]&(1<<uint(i%64)) != 0
}

// add marks i, n being the number of candidates (the bitmap's size).
func (f *failedSet) add(i, n int) {
	switch {
	case i < 64:
		f.small |= 1 << uint(i)
	case f.nfew < len(f.few):
		f.few[f.nfew] = i
		f.nfew++
	default:
		if f.big == nil {
			f.big = make([]uint64, (n+63)/64)
		}
		f.big[i/64] |= 1 << uint(i%64)
	}
}

// next returns i+1 wrapped to [0, n) without a division.
func next(i, n int) int {
	i++
	if i == n {
		return 0
	}
	return i
}
