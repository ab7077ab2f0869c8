package latency

import (
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	var h Histogram
	if s := h.Snapshot(); s.Count != 0 || s.Sum != 0 || len(s.Buckets) != len(Bounds) {
		t.Fatalf("empty: %+v", s)
	}
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Second, time.Minute} {
		h.Observe(d)
	}
	s := h.Snapshot()
	tests := []struct {
		le   float64
		want uint64
	}{
		{0.001, 2}, // a bound includes observations equal to it
		{0.0025, 2},
		{0.005, 3},
		{2.5, 4},
		{10, 4}, // the minute is only in the count (+Inf)
	}
	for _, tt := range tests {
		if got := s.Buckets[tt.le]; got != tt.want {
			t.Errorf("le=%v: %d, want %d", tt.le, got, tt.want)
		}
	}
	if s.Count != 5 {
		t.Errorf("count %d, want 5", s.Count)
	}
	if want := 0.0005 + 0.001 + 0.003 + 2 + 60; s.Sum < want-1e-9 || s.Sum > want+1e-9 {
		t.Errorf("sum %v, want %v", s.Sum, want)
	}
}
