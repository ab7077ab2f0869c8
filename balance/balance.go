// Package balance holds the balancing strategies and middlewares of gobetween. A
// Balancer is built once per candidate set (when discovery, health or an override
// changes the set) and is then immutable: Pick is lock-free, allocation-free and
// safe for concurrent use by every connection of a server.
package balance

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/gobetween/gobetween/config"
)

// Sentinel errors of Pick; the proxy counts and logs them.
var (
	ErrNoBackends = errors.New("no healthy backends")
	ErrAllFull    = errors.New("all backends have reached max connections limit")
	ErrSniReject  = errors.New("no backend for the requested server name")
)

// Load is the live load of one backend. One Load lives as long as the backend is
// known to its server and is shared by every Balancer built over it, so counts
// survive a rebuild of the candidate set. All methods are safe for concurrent use.
type Load struct {
	active    atomic.Int64 // local open connections plus in-flight reservations
	remote    atomic.Int64 // other nodes' open connections (cluster gossip)
	bandwidth atomic.Int64 // local rx+tx bytes per second
	remoteBW  atomic.Int64 // other nodes' rx+tx bytes per second
}

// Active is the number of local open or reserved connections.
func (l *Load) Active() int64 { return l.active.Load() }

// Conns is the number of connections the strategies rank by: local plus remote.
func (l *Load) Conns() int64 { return l.active.Load() + l.remote.Load() }

// Bandwidth is the bytes per second the strategies rank by: local plus remote.
func (l *Load) Bandwidth() int64 { return l.bandwidth.Load() + l.remoteBW.Load() }

// SetBandwidth records the local rx+tx bytes per second.
func (l *Load) SetBandwidth(bps int64) { l.bandwidth.Store(bps) }

// SetRemote records the sum of the other live nodes' last reports.
func (l *Load) SetRemote(conns, bps int64) { l.remote.Store(conns); l.remoteBW.Store(bps) }

// Release ends one reservation or connection taken by Reserve.
func (l *Load) Release() { l.active.Add(-1) }

// Reserve takes one connection slot if fewer than max (0 = unlimited) are taken,
// counting other nodes' connections toward max. It is the only way the active
// count goes up, so a backend's max_connections is never exceeded locally.
func (l *Load) Reserve(max int64) bool {
	if max <= 0 {
		l.active.Add(1)
		return true
	}
	for {
		cur := l.active.Load()
		if cur+l.remote.Load() >= max {
			return false
		}
		if l.active.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// Candidate is one backend as the strategies see it. Candidates are immutable once
// handed to New; Load is shared and live.
type Candidate struct {
	Backend config.Backend
	Addr    string // Backend.Address(), computed once
	Load    *Load
}

// NewCandidate builds a candidate for b with its load.
func NewCandidate(b config.Backend, l *Load) *Candidate {
	return &Candidate{Backend: b, Addr: b.Address(), Load: l}
}

// MaxTries bounds how many candidates one connection may try (dial failures).
const MaxTries = 3

// Request is what a pick knows about the client. The proxy keeps one per
// connection (on its stack); Exclude marks candidates already tried.
type Request struct {
	ClientIP netip.Addr // unmapped (IPv4 as 4 bytes)
	SNI      string     // requested server name, "" when none or not sniffed

	tried  [MaxTries]*Candidate
	ntried int
}

// Exclude records that c was tried and failed; later picks skip it.
func (r *Request) Exclude(c *Candidate) {
	if r.ntried < len(r.tried) {
		r.tried[r.ntried] = c
		r.ntried++
	}
}

// Excluded reports whether c was excluded.
func (r *Request) Excluded(c *Candidate) bool {
	for i := 0; i < r.ntried; i++ {
		if r.tried[i] == c {
			return true
		}
	}
	return false
}

// Tries is how many candidates were excluded so far.
func (r *Request) Tries() int { return r.ntried }

// Balancer picks a backend for a request. On success the returned candidate
// holds one reservation on its Load (Reserve with its max_connections); the
// caller must Release it when the connection ends or the dial fails.
type Balancer interface {
	Pick(req *Request) (*Candidate, error)
}
