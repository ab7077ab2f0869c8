package discovery

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// fakeWatcher is the in-memory twin of a Watcher whose source ignores the wait
// and answers at once, the case the Source's rate limit is for.
type fakeWatcher struct {
	mu             sync.Mutex
	watches, fetch int
	starts         []time.Time
}

func (f *fakeWatcher) Fetch(context.Context) ([]config.Backend, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetch++
	return list(bA), nil
}

func (f *fakeWatcher) Watch(context.Context) ([]config.Backend, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watches++
	f.starts = append(f.starts, time.Now())
	if f.watches%2 == 0 {
		return list(bB), nil
	}
	return list(bA), nil
}

func (f *fakeWatcher) state() (watches, fetches int, starts []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches, f.fetch, append([]time.Time(nil), f.starts...)
}

// TestSourceWatcher: a Watcher is watched, not polled and not stopped after
// its first list with interval 0, and its calls are spaced by at least
// max(interval, minWatchGap).
func TestSourceWatcher(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		gap      time.Duration
	}{
		{"interval 0: the minimum gap", 0, 40 * time.Millisecond},
		{"an interval above the gap", 80 * time.Millisecond, 20 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &fakeWatcher{}
			s := fastSource(config.Discovery{Kind: "fake", Failpolicy: "keeplast", Interval: config.Dur(tc.interval)}, w, nil)
			s.minWatchGap = tc.gap
			var r recorder
			runSource(t, s, &r)
			eventually(t, "five watches", func() bool { n, _, _ := w.state(); return n >= 5 })
			watches, fetches, starts := w.state()
			if fetches != 0 {
				t.Fatalf("Fetch called %d times; a Watcher is watched", fetches)
			}
			want := max(tc.interval, tc.gap)
			for i := 1; i < len(starts); i++ {
				if d := starts[i].Sub(starts[i-1]); d < want {
					t.Fatalf("watches %d and %d started %s apart, want at least %s", i-1, i, d, want)
				}
			}
			if got := len(r.get()); got < watches-1 {
				t.Fatalf("%d lists delivered for %d alternating answers", got, watches)
			}
		})
	}
}
