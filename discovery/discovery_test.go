package discovery

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

var errFetch = errors.New("endpoint down")

// step is one scripted Fetch result; block waits for the context to end.
type step struct {
	list  []config.Backend
	err   error
	block bool
}

// fakeProvider is the in-memory twin of a Provider: it plays its steps in
// order, then repeats the last one.
type fakeProvider struct {
	mu        sync.Mutex
	steps     []step
	calls     int
	starts    []time.Time
	deadlines []time.Duration // time left at the start of each Fetch; -1 without deadline
	ctxErrs   []error         // ctx.Err() when a blocking step returned
}

func (f *fakeProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	f.mu.Lock()
	s := f.steps[min(f.calls, len(f.steps)-1)]
	f.calls++
	f.starts = append(f.starts, time.Now())
	left := time.Duration(-1)
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
	}
	f.deadlines = append(f.deadlines, left)
	f.mu.Unlock()
	if s.block {
		<-ctx.Done()
		f.mu.Lock()
		f.ctxErrs = append(f.ctxErrs, ctx.Err())
		f.mu.Unlock()
		return nil, ctx.Err()
	}
	return slices.Clone(s.list), s.err
}

func (f *fakeProvider) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// recorder collects the lists delivered to update.
type recorder struct {
	mu    sync.Mutex
	lists [][]config.Backend
}

func (r *recorder) update(list []config.Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lists = append(r.lists, list)
}

func (r *recorder) get() [][]config.Backend {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lists)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runSource starts s.Run and returns a channel closed when Run returns; the
// test's cleanup cancels the context and waits for it.
func runSource(t *testing.T, s *Source, r *recorder) (context.CancelFunc, <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, r.update)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cancel, done
}

func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return: %s", what)
	}
}

func fastSource(cfg config.Discovery, p Provider, logger *slog.Logger) *Source {
	s := NewSource(cfg, p, logger)
	s.minBackoff, s.maxBackoff = time.Millisecond, 4*time.Millisecond
	return s
}

var (
	bA  = backend("10.0.0.1", "80", 1, 1)
	bA5 = backend("10.0.0.1", "80", 5, 1)
	bB  = backend("10.0.0.2", "80", 1, 1)
	bC  = backend("10.0.0.3", "80", 1, 1)
)

func list(bs ...config.Backend) []config.Backend { return bs }

func TestSourceDeliveries(t *testing.T) {
	tests := []struct {
		name       string
		failpolicy string
		steps      []step
		want       [][]config.Backend
	}{
		{"first list and changes only", "keeplast",
			[]step{{list: list(bA)}, {list: list(bA)}, {list: list(bA, bB)}, {list: list(bB, bA)}, {list: list(bB)}},
			[][]config.Backend{list(bA), list(bA, bB), list(bB)}},
		{"a changed property is a change", "keeplast",
			[]step{{list: list(bA)}, {list: list(bA5)}},
			[][]config.Backend{list(bA), list(bA5)}},
		{"empty success is delivered", "keeplast",
			[]step{{list: list(bA)}, {list: nil}, {list: list(bA)}},
			[][]config.Backend{list(bA), {}, list(bA)}},
		{"keeplast keeps on errors", "keeplast",
			[]step{{list: list(bA)}, {err: errFetch}, {err: errFetch}, {list: list(bA)}, {list: list(bA, bC)}},
			[][]config.Backend{list(bA), list(bA, bC)}},
		{"setempty empties once", "setempty",
			[]step{{list: list(bA)}, {err: errFetch}, {err: errFetch}, {err: errFetch}, {list: list(bA)}},
			[][]config.Backend{list(bA), {}, list(bA)}},
		{"keeplast first fetch fails", "keeplast",
			[]step{{err: errFetch}, {list: list(bA)}},
			[][]config.Backend{list(bA)}},
		{"setempty first fetch fails", "setempty",
			[]step{{err: errFetch}, {list: list(bA)}},
			[][]config.Backend{{}, list(bA)}},
		{"duplicates delivered once, first kept", "keeplast",
			[]step{{list: list(bA, bB, bA5)}},
			[][]config.Backend{list(bA, bB)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &fakeProvider{steps: tc.steps}
			cfg := config.Discovery{Kind: "fake", Failpolicy: tc.failpolicy, Interval: config.Dur(time.Millisecond)}
			var r recorder
			runSource(t, fastSource(cfg, p, nil), &r)
			// Every step has run, and the last one twice more.
			eventually(t, "the steps to run", func() bool { return p.callCount() >= len(tc.steps)+2 })
			got := r.get()
			if len(got) != len(tc.want) {
				t.Fatalf("delivered %v, want %v", got, tc.want)
			}
			for i := range got {
				if !slices.Equal(got[i], tc.want[i]) {
					t.Fatalf("delivery %d = %v, want %v (all: %v)", i, got[i], tc.want[i], got)
				}
			}
		})
	}
}

func TestSourceLogsDuplicates(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	p := &fakeProvider{steps: []step{{list: list(bA, bA5)}}}
	var r recorder
	_, done := runSource(t, fastSource(config.Discovery{Kind: "fake"}, p, logger), &r)
	waitDone(t, done, "interval 0 after a success")
	if !strings.Contains(logs.String(), "duplicate backend") || !strings.Contains(logs.String(), "10.0.0.1:80") {
		t.Fatalf("duplicate not logged:\n%s", logs.String())
	}
}

func TestSourceIntervalZero(t *testing.T) {
	for _, policy := range []string{"keeplast", "setempty"} {
		t.Run(policy, func(t *testing.T) {
			p := &fakeProvider{steps: []step{{err: errFetch}, {err: errFetch}, {list: list(bA)}, {list: list(bB)}}}
			var r recorder
			_, done := runSource(t, fastSource(config.Discovery{Kind: "fake", Failpolicy: policy}, p, nil), &r)
			waitDone(t, done, "interval 0 after a success")
			if n := p.callCount(); n != 3 {
				t.Fatalf("%d fetches, want 3 (retries until the first success, then none)", n)
			}
			got := r.get()
			if len(got) == 0 || !slices.Equal(got[len(got)-1], list(bA)) {
				t.Fatalf("delivered %v, want the first successful list last", got)
			}
		})
	}
}

func TestSourceBackoff(t *testing.T) {
	p := &fakeProvider{steps: []step{{err: errFetch}, {err: errFetch}, {err: errFetch}, {err: errFetch}, {err: errFetch},
		{list: list(bA)}, {err: errFetch}, {err: errFetch}}}
	cfg := config.Discovery{Kind: "fake", Interval: config.Dur(200 * time.Millisecond)}
	s := NewSource(cfg, p, nil)
	s.minBackoff, s.maxBackoff = 40*time.Millisecond, time.Hour // the interval caps
	var r recorder
	runSource(t, s, &r)
	eventually(t, "the retries", func() bool { return p.callCount() >= 9 })
	p.mu.Lock()
	starts := slices.Clone(p.starts)
	p.mu.Unlock()
	gaps := make([]time.Duration, 8)
	for i := range gaps {
		gaps[i] = starts[i+1].Sub(starts[i])
	}
	// Waits after each fetch: 40, 80, 160, 200 (capped by the interval), 200, then
	// the interval after the success, then 40 again: the backoff restarted.
	want := []time.Duration{40, 80, 160, 200, 200, 200, 40, 80}
	for i, w := range want {
		w *= time.Millisecond
		if gaps[i] < w {
			t.Errorf("gap %d = %v, want at least %v (all: %v)", i, gaps[i], w, gaps)
		}
	}
	// Upper bounds that a missing cap or a missing reset would exceed.
	if gaps[4] >= 400*time.Millisecond {
		t.Errorf("gap 4 = %v: backoff not capped by the interval", gaps[4])
	}
	if gaps[6] >= 160*time.Millisecond {
		t.Errorf("gap 6 = %v: backoff not reset after a success", gaps[6])
	}
}

func TestSourceBackoffLimit(t *testing.T) {
	tests := []struct {
		interval time.Duration
		want     time.Duration
	}{
		{0, 30 * time.Second},
		{5 * time.Second, 5 * time.Second},
		{500 * time.Millisecond, 500 * time.Millisecond},
		{time.Minute, 30 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.interval.String(), func(t *testing.T) {
			s := NewSource(config.Discovery{Interval: config.Dur(tc.interval)}, &fakeProvider{}, nil)
			if got := s.backoffLimit(); got != tc.want {
				t.Fatalf("backoffLimit = %v, want %v", got, tc.want)
			}
			if s.minBackoff != time.Second {
				t.Fatalf("minBackoff = %v, want 1s", s.minBackoff)
			}
		})
	}
}

func TestSourceTimeout(t *testing.T) {
	t.Run("applied to Fetch", func(t *testing.T) {
		p := &fakeProvider{steps: []step{{block: true}, {list: list(bA)}}}
		cfg := config.Discovery{Kind: "fake", Failpolicy: "keeplast", Timeout: config.Dur(50 * time.Millisecond)}
		var r recorder
		_, done := runSource(t, fastSource(cfg, p, nil), &r)
		waitDone(t, done, "after the fetch that followed the timeout")
		p.mu.Lock()
		defer p.mu.Unlock()
		if left := p.deadlines[0]; left <= 0 || left > 50*time.Millisecond {
			t.Fatalf("first Fetch had %v left, want at most 50ms", left)
		}
		if len(p.ctxErrs) != 1 || !errors.Is(p.ctxErrs[0], context.DeadlineExceeded) {
			t.Fatalf("blocking Fetch ended with %v, want deadline exceeded", p.ctxErrs)
		}
		if got := r.get(); len(got) != 1 || !slices.Equal(got[0], list(bA)) {
			t.Fatalf("delivered %v, want only [A]", got)
		}
	})
	t.Run("zero means none", func(t *testing.T) {
		p := &fakeProvider{steps: []step{{list: list(bA)}}}
		var r recorder
		_, done := runSource(t, fastSource(config.Discovery{Kind: "static"}, p, nil), &r)
		waitDone(t, done, "interval 0")
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.deadlines[0] != -1 {
			t.Fatalf("Fetch had a deadline %v with timeout 0", p.deadlines[0])
		}
	})
}

func TestSourceStopsOnCancel(t *testing.T) {
	tests := []struct {
		name  string
		cfg   config.Discovery
		steps []step
		calls int // fetches started before cancelling
	}{
		{"during a fetch", config.Discovery{Kind: "fake"}, []step{{block: true}}, 1},
		{"during the interval", config.Discovery{Kind: "fake", Interval: config.Dur(time.Hour)}, []step{{list: list(bA)}}, 1},
		{"during a backoff", config.Discovery{Kind: "fake", Interval: config.Dur(time.Hour)}, []step{{err: errFetch}}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &fakeProvider{steps: tc.steps}
			s := NewSource(tc.cfg, p, nil) // real backoff: 1s, far longer than the test waits
			var r recorder
			cancel, done := runSource(t, s, &r)
			eventually(t, "the fetches", func() bool { return p.callCount() >= tc.calls })
			start := time.Now()
			cancel()
			waitDone(t, done, "after cancel")
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Fatalf("Run returned %v after cancel", d)
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if _, err := r.New(config.Discovery{Kind: "static", StaticList: []string{"a:1"}}); err != nil {
		t.Fatalf("static: %v", err)
	}
	_, err := r.New(config.Discovery{Kind: "kubernetes"})
	if err == nil || !strings.Contains(err.Error(), `"kubernetes"`) || !strings.Contains(err.Error(), "static") {
		t.Fatalf("unknown kind: %v, want an error naming it and the known kinds", err)
	}
	// Every kind config validation knows is built in.
	for _, kind := range config.DiscoveryKinds() {
		if _, ok := builtinKinds[kind]; !ok {
			t.Errorf("kind %q validates but has no provider", kind)
		}
	}

	want := &fakeProvider{steps: []step{{list: list(bA)}}}
	var got config.Discovery
	r.Register("fake", func(cfg config.Discovery) (Provider, error) { got = cfg; return want, nil })
	p, err := r.New(config.Discovery{Kind: "fake", JsonEndpoint: "http://x"})
	if err != nil || p != want || got.JsonEndpoint != "http://x" {
		t.Fatalf("registered kind: %v, %v, cfg %+v", p, err, got)
	}

	r.Register("fake", func(config.Discovery) (Provider, error) { return nil, errors.New("bad setting") })
	if _, err := r.New(config.Discovery{Kind: "fake"}); err == nil || !strings.Contains(err.Error(), "discovery fake: bad setting") {
		t.Fatalf("replaced kind: %v", err)
	}
	r.Register("fake", func(config.Discovery) (Provider, error) { return nil, nil })
	if _, err := r.New(config.Discovery{Kind: "fake"}); err == nil {
		t.Fatal("a nil provider was accepted")
	}
	r.Register("fake", nil)
	if _, err := r.New(config.Discovery{Kind: "fake"}); err == nil {
		t.Fatal("a removed kind still builds")
	}
	if _, err := NewRegistry().New(config.Discovery{Kind: "fake"}); err == nil {
		t.Fatal("registries share state")
	}
}
