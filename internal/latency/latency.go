// Package latency is the duration histogram gobetween's metrics share: health
// checks (proxy) and Raft applies (cluster). Both are observed off the
// connection path, so a mutex per histogram is cheap enough; Prometheus reads
// a Snapshot at scrape time.
package latency

import (
	"sync"
	"time"
)

// Bounds are the bucket upper bounds in seconds: from a loopback check or a
// one-node commit (1 ms) to an operation running into a long timeout (10 s).
var Bounds = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Histogram counts durations into Bounds. The zero value is ready.
type Histogram struct {
	mu     sync.Mutex
	counts [len(Bounds) + 1]uint64 // per bucket, the last one above every bound
	sum    float64
}

// Observe counts one duration.
func (h *Histogram) Observe(d time.Duration) {
	v := d.Seconds()
	i := 0
	for i < len(Bounds) && v > Bounds[i] {
		i++
	}
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.mu.Unlock()
}

// Snapshot is a histogram in seconds: Buckets maps each upper bound to the
// count of observations at or below it (cumulative), as Prometheus wants it.
type Snapshot struct {
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

// Snapshot returns the histogram with cumulative bucket counts.
func (h *Histogram) Snapshot() Snapshot {
	h.mu.Lock()
	counts, sum := h.counts, h.sum
	h.mu.Unlock()
	out := Snapshot{Sum: sum, Buckets: make(map[float64]uint64, len(Bounds))}
	for i, b := range Bounds {
		out.Count += counts[i]
		out.Buckets[b] = out.Count
	}
	out.Count += counts[len(Bounds)]
	return out
}
