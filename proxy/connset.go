package proxy

import (
	"sync"
	"sync/atomic"
)

// connShards spreads the live connections of a server over this many locks, so
// that connections starting and ending on different cores rarely meet.
const connShards = 16

// connSet holds the live connections of a server so that a drain can close the
// ones left. Membership is an intrusive list per shard: adding and removing
// allocate nothing and take only the shard's lock.
type connSet struct {
	next   atomic.Uint32
	shards [connShards]connShard
}

type connShard struct {
	mu   sync.Mutex
	head *conn
	_    [40]byte // keep neighbouring shards' locks on separate cache lines
}

func (s *connSet) add(c *conn) {
	sh := &s.shards[s.next.Add(1)%connShards]
	sh.mu.Lock()
	c.shard = sh
	c.prev, c.next = nil, sh.head
	if sh.head != nil {
		sh.head.prev = c
	}
	sh.head = c
	sh.mu.Unlock()
}

func (s *connSet) remove(c *conn) {
	sh := c.shard
	sh.mu.Lock()
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		sh.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next, c.shard = nil, nil, nil
	sh.mu.Unlock()
}

// each calls fn for every live connection while holding that connection's shard
// lock: fn must not add or remove connections.
func (s *connSet) each(fn func(*conn)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for c := sh.head; c != nil; c = c.next {
			fn(c)
		}
		sh.mu.Unlock()
	}
}
