package balance

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/gobetween/gobetween/config"
)

const (
	// sniNameCacheSize bounds the regexp strategy's cache of requested names;
	// when full it starts over, so a flood of random names costs a recompute
	// per miss, never memory.
	sniNameCacheSize = 256
	// sniUnionCacheSize bounds the balancers built for names that match
	// several backend patterns; each holds up to every candidate.
	sniUnionCacheSize = 16
	// sniMaxCachedName is the longest name cached (a DNS name has at most 253
	// characters); longer ones are matched on every pick.
	sniMaxCachedName = 255
)

// sniRoute is where the requests for one outcome of matching go: a balancer
// over the matching candidates, or an error.
type sniRoute struct {
	bal Balancer
	err error
}

func (r *sniRoute) pick(req *Request) (*Candidate, error) {
	if r.err != nil {
		return nil, r.err
	}
	return r.bal.Pick(req)
}

// sniGroup is the candidates that share one backend sni value.
type sniGroup struct {
	sni   string         // as configured (exact: lowercased)
	re    *regexp.Regexp // regexp strategy only: sni anchored
	cands []*Candidate
	route *sniRoute
}

// sniBalancer routes by the requested server name to a balancer per group of
// backends, all built at New. Exact matching is a map lookup. Regexp matching
// caches name -> route in a copy-on-write map read with one atomic load; a
// miss matches the name against each distinct pattern, compiled once and
// anchored (0.8 matched unanchored, so "example.com" let through
// "evil-example.com.attacker").
type sniBalancer struct {
	build   builder
	regexp  bool
	groups  []*sniGroup
	byName  map[string]*sniRoute // exact: lowercased sni -> route
	named   *sniRoute            // a non-empty name that matched nothing
	unnamed *sniRoute            // no name sent, and no sni-less backend

	names  atomic.Pointer[map[string]*sniRoute] // regexp: requested name -> route
	unions atomic.Pointer[map[string]*sniRoute] // regexp: matched group indexes -> route
}

func newSni(conf *config.Sni, build builder, cands []*Candidate) (Balancer, error) {
	b := &sniBalancer{build: build}
	switch conf.HostnameMatchingStrategy {
	case "", "exact":
	case "regexp":
		b.regexp = true
	default:
		return nil, fmt.Errorf("balance: sni: unknown hostname_matching_strategy %q", conf.HostnameMatchingStrategy)
	}
	strategy := conf.UnexpectedHostnameStrategy
	switch strategy {
	case "", "default", "reject", "any":
	default:
		return nil, fmt.Errorf("balance: sni: unknown unexpected_hostname_strategy %q", strategy)
	}
	if len(cands) == 0 {
		return build(nil)
	}

	bySni := map[string]*sniGroup{}
	for _, c := range cands {
		key := c.Backend.Sni
		if !b.regexp {
			key = strings.ToLower(key)
		}
		g := bySni[key]
		if g == nil {
			g = &sniGroup{sni: key}
			bySni[key] = g
			b.groups = append(b.groups, g)
		}
		g.cands = append(g.cands, c)
	}
	slices.SortFunc(b.groups, func(x, y *sniGroup) int { return strings.Compare(x.sni, y.sni) })
	if !b.regexp {
		b.byName = make(map[string]*sniRoute, len(b.groups))
	}
	for _, g := range b.groups {
		if b.regexp {
			re, err := regexp.Compile(`^(?:` + g.sni + `)$`)
			if err != nil {
				return nil, fmt.Errorf("balance: sni regexp %q: %w", g.sni, err)
			}
			g.re = re
		}
		bal, err := build(slices.Clone(g.cands))
		if err != nil {
			return nil, err
		}
		g.route = &sniRoute{bal: bal}
		if !b.regexp {
			b.byName[g.sni] = g.route
		}
	}

	// When nothing matches (0.8 §5.7): reject, any backend, or by default the
	// sni-less backends for a named request and an error for an unnamed one.
	reject := &sniRoute{err: ErrSniReject}
	b.named, b.unnamed = reject, reject
	switch strategy {
	case "any":
		bal, err := build(cands)
		if err != nil {
			return nil, err
		}
		b.named = &sniRoute{bal: bal}
		b.unnamed = b.named
	case "", "default":
		if g := bySni[""]; g != nil {
			b.named = g.route
		}
	}
	return b, nil
}

func (b *sniBalancer) Pick(req *Request) (*Candidate, error) {
	name := ""
	if req != nil {
		name = req.SNI
	}
	if b.regexp {
		return b.regexpRoute(name).pick(req)
	}
	return b.exactRoute(name).pick(req)
}

func (b *sniBalancer) noMatch(name string) *sniRoute {
	if name == "" {
		return b.unnamed
	}
	return b.named
}

// exactRoute compares case-insensitively. Names usually arrive lowercase and
// hit the first lookup; others are lowered into a stack buffer, which a map
// index by string(bytes) reads without allocating.
func (b *sniBalancer) exactRoute(name string) *sniRoute {
	if r, ok := b.byName[name]; ok {
		return r
	}
	var buf [sniMaxCachedName]byte
	if len(name) > len(buf) {
		return b.lookupLower(strings.ToLower(name), name)
	}
	upper := false
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch >= 0x80 {
			return b.lookupLower(strings.ToLower(name), name)
		}
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
			upper = true
		}
		buf[i] = ch
	}
	if !upper {
		return b.noMatch(name)
	}
	if r, ok := b.byName[string(buf[:len(name)])]; ok {
		return r
	}
	return b.noMatch(name)
}

func (b *sniBalancer) lookupLower(lower, name string) *sniRoute {
	if r, ok := b.byName[lower]; ok {
		return r
	}
	return b.noMatch(name)
}

func (b *sniBalancer) regexpRoute(name string) *sniRoute {
	if m := b.names.Load(); m != nil {
		if r, ok := (*m)[name]; ok {
			return r
		}
	}
	var matched []int
	for i, g := range b.groups {
		if g.re.MatchString(name) {
			matched = append(matched, i)
		}
	}
	var r *sniRoute
	switch len(matched) {
	case 0:
		r = b.noMatch(name)
	case 1:
		r = b.groups[matched[0]].route
	default:
		r = b.union(matched)
	}
	if len(name) <= sniMaxCachedName {
		// Clone: the name may be a slice of a connection's read buffer.
		cacheStore(&b.names, strings.Clone(name), r, sniNameCacheSize)
	}
	return r
}

// union returns the route over the candidates of several groups, built on
// first use and cached by the set of groups.
func (b *sniBalancer) union(matched []int) *sniRoute {
	var key strings.Builder
	for i, g := range matched {
		if i > 0 {
			key.WriteByte(',')
		}
		key.WriteString(strconv.Itoa(g))
	}
	k := key.String()
	if m := b.unions.Load(); m != nil {
		if r, ok := (*m)[k]; ok {
			return r
		}
	}
	var cands []*Candidate
	for _, g := range matched {
		cands = append(cands, b.groups[g].cands...)
	}
	r := &sniRoute{}
	r.bal, r.err = b.build(cands)
	cacheStore(&b.unions, k, r, sniUnionCacheSize)
	return r
}

// cacheStore adds key to a copy-on-write map holding at most size entries,
// starting over when full. One attempt only: if another pick replaced the map
// meanwhile, the entry is dropped and computed again on a later miss, so
// concurrent misses never spin.
func cacheStore(p *atomic.Pointer[map[string]*sniRoute], key string, r *sniRoute, size int) {
	old := p.Load()
	var m map[string]*sniRoute
	if old == nil || len(*old) >= size {
		m = make(map[string]*sniRoute, 1)
	} else {
		m = maps.Clone(*old)
	}
	m[key] = r
	p.CompareAndSwap(old, &m)
}
