package balance

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/gobetween/gobetween/config"
)

// spec describes a test backend.
type spec struct {
	addr     string
	weight   int
	priority int
	max      int
	sni      string
}

func newCand(t testing.TB, s spec) *Candidate {
	t.Helper()
	host, port, err := net.SplitHostPort(s.addr)
	if err != nil {
		t.Fatalf("bad test address %q: %v", s.addr, err)
	}
	return NewCandidate(config.Backend{
		Target:         config.Target{Host: host, Port: port},
		Weight:         s.weight,
		Priority:       s.priority,
		MaxConnections: s.max,
		Sni:            s.sni,
	}, &Load{})
}

func newCands(t testing.TB, specs ...spec) []*Candidate {
	t.Helper()
	out := make([]*Candidate, len(specs))
	for i, s := range specs {
		out[i] = newCand(t, s)
	}
	return out
}

// uniformCands is n weight-1 backends 10.x.y.z:80.
func uniformCands(t testing.TB, n int) []*Candidate {
	t.Helper()
	out := make([]*Candidate, n)
	for i := range out {
		out[i] = newCand(t, spec{addr: fmt.Sprintf("10.%d.%d.%d:80", i>>16&255, i>>8&255, i&255), weight: 1})
	}
	return out
}

func mustNew(t testing.TB, strategy string, sni *config.Sni, cands []*Candidate) Balancer {
	t.Helper()
	b, err := New(strategy, sni, cands)
	if err != nil {
		t.Fatalf("New(%q): %v", strategy, err)
	}
	return b
}

// pickAddr picks, releases at once and returns the address.
func pickAddr(t testing.TB, b Balancer, req *Request) string {
	t.Helper()
	c, err := b.Pick(req)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	c.Load.Release()
	return c.Addr
}

// fill takes every slot of c (which must have a max).
func fill(t testing.TB, c *Candidate) {
	t.Helper()
	for c.Load.Reserve(int64(c.Backend.MaxConnections)) {
	}
}

func wantErr(t testing.TB, b Balancer, req *Request, want error) {
	t.Helper()
	c, err := b.Pick(req)
	if !errors.Is(err, want) {
		t.Fatalf("Pick = %v, %v; want error %v", c, err, want)
	}
}

func ipv4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
}

var strategies = []string{"weight", "roundrobin", "iphash", "iphash1", "leastconn", "leastbandwidth"}

func portAddr(i int) string { return "192.0.2.1:" + strconv.Itoa(1000+i) }
