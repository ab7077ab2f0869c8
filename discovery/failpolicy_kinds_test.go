package discovery

import (
	"slices"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// failpolicyCase is a real source of backend lines for one kind: serve makes
// the next fetches see lines (nil: fail), fetches counts the fetches so far.
type failpolicyCase struct {
	cfg     config.Discovery
	serve   func(lines []string)
	fetches func() int
}

// testFailpolicies runs the kind through a Source under keeplast and
// setempty: backends appear, change weight, disappear; then the source fails,
// and keeplast keeps the last good list while setempty empties it once; then
// the source recovers.
func testFailpolicies(t *testing.T, c failpolicyCase) {
	first := []string{"10.0.0.1:80", "10.0.0.2:80 weight=2"}
	changed := []string{"10.0.0.1:80 weight=5", "10.0.0.2:80 weight=2", "10.0.0.3:80"}
	shrunk := []string{"10.0.0.3:80"}
	want := func(lines []string) []config.Backend {
		out := make([]config.Backend, 0, len(lines))
		for _, l := range lines {
			b, err := config.ParseBackend(l)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
		return out
	}
	for _, policy := range []string{"keeplast", "setempty"} {
		t.Run(policy, func(t *testing.T) {
			c.serve(first)
			cfg := c.cfg
			cfg.Failpolicy = policy
			cfg.Interval = config.Dur(5 * time.Millisecond)
			cfg.Timeout = config.Dur(5 * time.Second)
			p, err := NewRegistry().New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var r recorder
			runSource(t, fastSource(cfg, p, nil), &r)
			last := func(lines []string) func() bool {
				return func() bool {
					got := r.get()
					return len(got) > 0 && slices.Equal(sortedCopy(got[len(got)-1]), sortedCopy(want(lines)))
				}
			}
			eventually(t, "the first list", last(first))
			c.serve(changed)
			eventually(t, "the changed list", last(changed))
			c.serve(shrunk)
			eventually(t, "the shrunk list", last(shrunk))

			delivered := len(r.get())
			c.serve(nil)
			n := c.fetches()
			eventually(t, "failed fetches", func() bool { return c.fetches() >= n+4 })
			got := r.get()
			switch policy {
			case "keeplast":
				if len(got) != delivered {
					t.Fatalf("keeplast delivered %v after failures", got[delivered:])
				}
			case "setempty":
				if len(got) != delivered+1 || len(got[delivered]) != 0 {
					t.Fatalf("setempty delivered %v after failures, want one empty list", got[delivered:])
				}
			}
			c.serve(first)
			eventually(t, "the recovered list", last(first))
		})
	}
}
