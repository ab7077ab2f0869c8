package discovery

import (
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// LastFetch counts every completed fetch and the failed ones, also fetches
// whose list did not change (nothing delivered).
func TestSourceFetchCounts(t *testing.T) {
	tests := []struct {
		name         string
		steps        []step
		fetches      int // wait for at least this many calls
		wantAllFails bool
	}{
		{"all succeed", []step{{list: list(bA)}}, 5, false},
		{"fail then succeed", []step{{err: errFetch}, {err: errFetch}, {list: list(bA)}}, 5, false},
		{"all fail", []step{{err: errFetch}}, 5, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProvider{steps: tt.steps}
			s := fastSource(config.Discovery{Kind: "fake", Interval: config.Duration{D: time.Millisecond}}, p, nil)
			if _, ok := s.LastFetch(); ok {
				t.Fatal("LastFetch ok before any fetch")
			}
			cancel, done := runSource(t, s, &recorder{})
			eventually(t, "fetches", func() bool {
				r, ok := s.LastFetch()
				return ok && r.Fetches >= uint64(tt.fetches)
			})
			cancel()
			waitDone(t, done, "cancelled")

			r, _ := s.LastFetch()
			wantFails := uint64(0)
			for i := 0; i < p.callCount(); i++ {
				if tt.steps[min(i, len(tt.steps)-1)].err != nil {
					wantFails++
				}
			}
			// The call cancelled by the test may have started without
			// completing: it is not counted.
			if calls := uint64(p.callCount()); r.Fetches != calls && r.Fetches != calls-1 {
				t.Fatalf("Fetches = %d after %d calls", r.Fetches, calls)
			}
			if tt.wantAllFails && r.Errors != r.Fetches {
				t.Fatalf("Errors = %d, Fetches = %d: every fetch failed", r.Errors, r.Fetches)
			}
			if !tt.wantAllFails && (r.Errors > wantFails || r.Errors >= r.Fetches) {
				t.Fatalf("Errors = %d of %d fetches; %d of the calls failed", r.Errors, r.Fetches, wantFails)
			}
			if tt.name == "fail then succeed" && r.Errors != 2 {
				t.Fatalf("Errors = %d, want the 2 scripted failures", r.Errors)
			}
		})
	}
}
