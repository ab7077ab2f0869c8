package proxy

import (
	"sync"
	"time"
)

// latencyBounds are the upper bounds, in seconds, of the latency histograms:
// from a loopback check (1 ms) to one that runs into a long timeout (10 s).
var latencyBounds = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// latencyHistogram counts durations into latencyBounds. Observed off the
// connection path (health checks), so a mutex is cheap enough.
type latencyHistogram struct {
	mu     sync.Mutex
	counts [len(latencyBounds) + 1]uint64 // per bucket, the last one above every bound
	sum    float64
}

func (h *latencyHistogram) observe(d time.Duration) {
	v := d.Seconds()
	i := 0
	for i < len(latencyBounds) && v > latencyBounds[i] {
		i++
	}
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.mu.Unlock()
}

// snapshot returns the histogram with cumulative bucket counts.
func (h *latencyHistogram) snapshot() Histogram {
	h.mu.Lock()
	counts, sum := h.counts, h.sum
	h.mu.Unlock()
	out := Histogram{Sum: sum, Buckets: make(map[float64]uint64, len(latencyBounds))}
	for i, b := range latencyBounds {
		out.Count += counts[i]
		out.Buckets[b] = out.Count
	}
	out.Count += counts[len(latencyBounds)]
	return out
}
