package healthcheck

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

var errFake = errors.New("fake failure")

// fakeChecker is the in-memory twin of a Checker. Each target gets the results
// of its script in order ('S' pass, 'F' fail); once the script is used up, a
// check blocks until its context ends. delay makes each check slow.
type fakeChecker struct {
	delay time.Duration

	mu        sync.Mutex
	scripts   map[config.Target]string
	calls     map[config.Target]int
	inflight  map[config.Target]int
	overlap   bool            // two checks of one target ran at once
	deadlines []time.Duration // time left until the check deadline, per check
	active    atomic.Int64    // checks running, all targets
}

func newFake(scripts map[config.Target]string) *fakeChecker {
	return &fakeChecker{scripts: scripts, calls: map[config.Target]int{}, inflight: map[config.Target]int{}}
}

func (f *fakeChecker) Check(ctx context.Context, t config.Target) error {
	f.active.Add(1)
	defer f.active.Add(-1)
	f.mu.Lock()
	f.inflight[t]++
	if f.inflight[t] > 1 {
		f.overlap = true
	}
	n := f.calls[t]
	f.calls[t]++
	script := f.scripts[t]
	if d, ok := ctx.Deadline(); ok {
		f.deadlines = append(f.deadlines, time.Until(d))
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight[t]--
		f.mu.Unlock()
	}()

	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if n >= len(script) {
		<-ctx.Done()
		return ctx.Err()
	}
	if script[n] == 'F' {
		return errFake
	}
	return nil
}

func (f *fakeChecker) callCount(t config.Target) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[t]
}

// events records onChange calls.
type events struct {
	mu   sync.Mutex
	list []bool
	per  map[config.Target][]bool
}

func (e *events) onChange(t config.Target, healthy bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, healthy)
	if e.per == nil {
		e.per = map[config.Target][]bool{}
	}
	e.per[t] = append(e.per[t], healthy)
}

func (e *events) of(t config.Target) []bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.per[t])
}

var (
	tA = config.Target{Host: "10.0.0.1", Port: "80"}
	tB = config.Target{Host: "10.0.0.2", Port: "80"}
	tC = config.Target{Host: "10.0.0.3", Port: "80"}
)

// hcCfg is a healthcheck config with a fast interval and a long timeout, so the
// fake's blocking check at the end of a script never times out into a failure.
func hcCfg(fails, passes int, initial string) config.Healthcheck {
	return config.Healthcheck{Kind: "ping", Interval: config.Dur(time.Millisecond), Timeout: config.Dur(time.Minute),
		Fails: fails, Passes: passes, InitialStatus: initial}
}

func TestMonitorConsecutiveCounting(t *testing.T) {
	tests := []struct {
		name    string
		fails   int
		passes  int
		initial string
		script  string
		want    []bool // onChange verdicts in order
	}{
		{"interleaved failures never reach fails", 3, 1, "healthy", "FSFSF", nil},
		{"three consecutive failures", 3, 1, "healthy", "SFFF", []bool{false}},
		{"pass resets the fail streak", 3, 1, "healthy", "FFSFFSFFF", []bool{false}},
		{"down then up", 2, 2, "healthy", "FFSFSS", []bool{false, true}},
		{"unhealthy start needs passes", 1, 3, "unhealthy", "SSFSSS", []bool{true}},
		{"unhealthy start ignores failures", 1, 1, "unhealthy", "FF", nil},
		{"fails and passes of one flip every result", 1, 1, "healthy", "FSFS", []bool{false, true, false, true}},
		{"healthy stays healthy on passes", 2, 2, "healthy", "SSSS", nil},
		{"zero fails and passes mean one", 0, 0, "healthy", "FS", []bool{false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(map[config.Target]string{tA: tc.script})
			var ev events
			m := NewMonitor(hcCfg(tc.fails, tc.passes, tc.initial), fake, nil, ev.onChange)
			defer m.Close()
			m.SetTargets([]config.Target{tA})
			// The call after the script blocks, so every scripted result is recorded.
			eventually(t, "the script to run", func() bool { return fake.callCount(tA) > len(tc.script) })
			if got := ev.of(tA); !slices.Equal(got, tc.want) {
				t.Fatalf("verdicts %v, want %v", got, tc.want)
			}
			final := tc.initial != "unhealthy"
			if len(tc.want) > 0 {
				final = tc.want[len(tc.want)-1]
			}
			if got := m.Healthy(tA); got != final {
				t.Fatalf("Healthy = %v, want %v", got, final)
			}
		})
	}
}

func TestMonitorInitialStatus(t *testing.T) {
	tests := []struct {
		name    string
		initial string
		none    bool
		want    bool
	}{
		{"healthy", "healthy", false, true},
		{"unhealthy", "unhealthy", false, false},
		{"kind none ignores unhealthy", "unhealthy", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(nil) // every check blocks: the verdict stays initial
			var checker Checker = fake
			if tc.none {
				checker = nil
			}
			m := NewMonitor(hcCfg(1, 1, tc.initial), checker, nil, nil)
			defer m.Close()
			if m.Healthy(tA) {
				t.Fatal("unknown target is healthy")
			}
			m.SetTargets([]config.Target{tA})
			if got := m.Healthy(tA); got != tc.want {
				t.Fatalf("Healthy = %v, want %v", got, tc.want)
			}
			if !tc.none {
				eventually(t, "the first check to start at once", func() bool { return fake.callCount(tA) == 1 })
			}
		})
	}
}

func TestMonitorOneCheckInFlight(t *testing.T) {
	script := "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSS"
	fake := newFake(map[config.Target]string{tA: script, tB: script})
	fake.delay = 10 * time.Millisecond // ten times the interval
	m := NewMonitor(hcCfg(1, 1, "healthy"), fake, nil, nil)
	defer m.Close()
	m.SetTargets([]config.Target{tA, tB})
	for i := 0; i < 5; i++ {
		// New settings wake the worker while a check is under way.
		m.Reconfigure(hcCfg(1, 1, "healthy"), fake)
		time.Sleep(3 * time.Millisecond)
	}
	eventually(t, "many checks", func() bool { return fake.callCount(tA) > 10 && fake.callCount(tB) > 10 })
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.overlap {
		t.Fatal("two checks of one target overlapped")
	}
}

func TestMonitorCheckTimeout(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		timeout  time.Duration
		want     time.Duration
	}{
		{"timeout", time.Hour, 2 * time.Minute, 2 * time.Minute},
		{"zero timeout falls back to the interval", time.Hour, 0, time.Hour},
		{"zero interval and timeout still bounded", 0, 0, fallbackInterval},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(map[config.Target]string{tA: "S"})
			cfg := config.Healthcheck{Kind: "ping", Interval: config.Dur(tc.interval), Timeout: config.Dur(tc.timeout), Fails: 1, Passes: 1}
			m := NewMonitor(cfg, fake, nil, nil)
			defer m.Close()
			m.SetTargets([]config.Target{tA})
			eventually(t, "a check", func() bool { return fake.callCount(tA) >= 1 })
			fake.mu.Lock()
			left := fake.deadlines[0]
			fake.mu.Unlock()
			if left > tc.want || left < tc.want-5*time.Second {
				t.Fatalf("check deadline in %v, want about %v", left, tc.want)
			}
		})
	}
}

func TestMonitorPassiveFailure(t *testing.T) {
	t.Run("counts as a failed check", func(t *testing.T) {
		fake := newFake(map[config.Target]string{tA: "FS"})
		var ev events
		m := NewMonitor(hcCfg(2, 1, "healthy"), fake, nil, ev.onChange)
		defer m.Close()
		m.SetTargets([]config.Target{tA})
		eventually(t, "the script to run", func() bool { return fake.callCount(tA) > 2 })
		// The last check passed, so one passive failure is not enough for fails=2.
		m.PassiveFailure(tA)
		if !m.Healthy(tA) {
			t.Fatal("one passive failure after a pass flipped the verdict")
		}
		m.PassiveFailure(tA)
		if m.Healthy(tA) {
			t.Fatal("two consecutive passive failures did not flip the verdict")
		}
		if got := ev.of(tA); !slices.Equal(got, []bool{false}) {
			t.Fatalf("verdicts %v, want [false]", got)
		}
		m.PassiveFailure(tC) // unknown: ignored
	})
	t.Run("ignored for kind none", func(t *testing.T) {
		var ev events
		m := NewMonitor(config.Healthcheck{Kind: "none"}, nil, nil, ev.onChange)
		defer m.Close()
		m.SetTargets([]config.Target{tA})
		for i := 0; i < 5; i++ {
			m.PassiveFailure(tA)
		}
		if !m.Healthy(tA) || len(ev.of(tA)) != 0 {
			t.Fatalf("kind none: Healthy = %v, events %v", m.Healthy(tA), ev.of(tA))
		}
	})
}

func TestMonitorReconfigure(t *testing.T) {
	fake := newFake(map[config.Target]string{tA: "F", tB: "S"})
	var ev events
	m := NewMonitor(hcCfg(1, 1, "healthy"), fake, nil, ev.onChange)
	defer m.Close()
	m.SetTargets([]config.Target{tA, tB})
	eventually(t, "the scripts to run", func() bool { return fake.callCount(tA) > 1 && fake.callCount(tB) > 1 })
	if m.Healthy(tA) || !m.Healthy(tB) {
		t.Fatalf("before: Healthy(A) = %v, Healthy(B) = %v", m.Healthy(tA), m.Healthy(tB))
	}

	// New interval and checker: verdicts stay, every target is checked at once.
	slow := newFake(nil)
	cfg := hcCfg(1, 1, "healthy")
	cfg.Interval = config.Dur(time.Hour)
	m.Reconfigure(cfg, slow)
	eventually(t, "checks with the new checker", func() bool { return slow.callCount(tA) == 1 && slow.callCount(tB) == 1 })
	if m.Healthy(tA) || !m.Healthy(tB) {
		t.Fatalf("after reconfigure: Healthy(A) = %v, Healthy(B) = %v", m.Healthy(tA), m.Healthy(tB))
	}

	// Kind none: every target healthy at once, flips reported.
	m.Reconfigure(config.Healthcheck{Kind: "none"}, nil)
	if !m.Healthy(tA) || !m.Healthy(tB) {
		t.Fatalf("kind none: Healthy(A) = %v, Healthy(B) = %v", m.Healthy(tA), m.Healthy(tB))
	}
	if got := ev.of(tA); !slices.Equal(got, []bool{false, true}) {
		t.Fatalf("verdicts of A %v, want [false true]", got)
	}
	m.PassiveFailure(tA)
	if !m.Healthy(tA) {
		t.Fatal("passive failure counted under kind none")
	}

	// Back to a checker with a short interval: the interval change applies.
	again := newFake(map[config.Target]string{tA: "SSSF"})
	m.Reconfigure(hcCfg(1, 1, "healthy"), again)
	eventually(t, "checks at the new interval", func() bool { return again.callCount(tA) > 4 })
	if m.Healthy(tA) {
		t.Fatal("failure under the new checker not counted")
	}
}

func TestMonitorSetTargets(t *testing.T) {
	fake := newFake(map[config.Target]string{tA: "F", tB: "S", tC: "F"})
	var ev events
	m := NewMonitor(hcCfg(1, 1, "healthy"), fake, nil, ev.onChange)
	defer m.Close()
	m.SetTargets([]config.Target{tA, tB, tA})
	eventually(t, "checks of A and B", func() bool { return fake.callCount(tA) > 1 && fake.callCount(tB) > 1 })
	before := fake.active.Load()
	if before != 2 {
		t.Fatalf("%d checks in flight, want 2", before)
	}

	// Remove B, keep A, add C.
	m.SetTargets([]config.Target{tA, tC})
	if m.Healthy(tB) {
		t.Fatal("removed target still healthy")
	}
	if m.Healthy(tA) {
		t.Fatal("kept target lost its verdict")
	}
	eventually(t, "C to be checked", func() bool { return fake.callCount(tC) > 1 })
	eventually(t, "B's check to be cancelled", func() bool { return fake.active.Load() == 2 })
	if m.Healthy(tC) {
		t.Fatal("C's failure not counted")
	}
	if fake.callCount(tA) != 2 {
		t.Fatalf("A checked %d times, want 2 (its schedule must not restart)", fake.callCount(tA))
	}

	m.SetTargets(nil)
	eventually(t, "every check to be cancelled", func() bool { return fake.active.Load() == 0 })
	if m.Healthy(tA) || m.Healthy(tC) {
		t.Fatal("targets still known after SetTargets(nil)")
	}
}

func TestMonitorClose(t *testing.T) {
	fake := newFake(nil)
	var ev events
	m := NewMonitor(hcCfg(1, 1, "healthy"), fake, nil, ev.onChange)
	var ts []config.Target
	for i := 0; i < 20; i++ {
		ts = append(ts, config.Target{Host: "10.0.1.1", Port: string(rune('a' + i))})
	}
	m.SetTargets(ts)
	eventually(t, "every check to start", func() bool { return fake.active.Load() == 20 })
	m.Close()
	if n := fake.active.Load(); n != 0 {
		t.Fatalf("%d checks still running after Close", n)
	}
	// A worker has called wg.Done in its deferred calls when Close returns, but
	// may not have returned yet: it must be gone shortly after.
	deadline := time.Now().Add(2 * time.Second)
	for stacks := monitorGoroutines(); stacks != ""; stacks = monitorGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines of the Monitor still running 2s after Close:\n%s", stacks)
		}
		time.Sleep(time.Millisecond)
	}
	m.PassiveFailure(ts[0])
	m.SetTargets([]config.Target{tA})
	m.Reconfigure(config.Healthcheck{Kind: "none"}, nil)
	m.Close()
	if len(ev.list) != 0 {
		t.Fatalf("onChange called after Close: %v", ev.list)
	}
	if fake.callCount(tA) != 0 {
		t.Fatal("SetTargets after Close started a worker")
	}
}

// monitorGoroutines returns the stacks of goroutines running Monitor or fake
// checker code; other tests' leftovers do not count.
func monitorGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "healthcheck.(*Monitor)") || strings.Contains(g, "healthcheck.(*fakeChecker)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
