package healthcheck

import (
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// checkLog records OnCheck reports.
type checkLog struct {
	mu     sync.Mutex
	passed map[config.Target][]bool
	took   []time.Duration
}

func (l *checkLog) onCheck(t config.Target, passed bool, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.passed == nil {
		l.passed = map[config.Target][]bool{}
	}
	l.passed[t] = append(l.passed[t], passed)
	l.took = append(l.took, took)
}

func (l *checkLog) of(t config.Target) []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bool(nil), l.passed[t]...)
}

// OnCheck reports each completed active check with its outcome and duration,
// never a passive failure, and nothing once removed.
func TestMonitorOnCheck(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		passive int
		want    []bool
	}{
		{"passes", "SSS", 0, []bool{true, true, true}},
		{"mixed", "SFFS", 0, []bool{true, false, false, true}},
		{"passive failures are not checks", "SF", 3, []bool{true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(map[config.Target]string{tA: tc.script})
			fake.delay = 2 * time.Millisecond
			var log checkLog
			m := NewMonitor(hcCfg(10, 1, "healthy"), fake, nil, nil)
			defer m.Close()
			m.OnCheck(log.onCheck)
			m.SetTargets([]config.Target{tA})
			for range tc.passive {
				m.PassiveFailure(tA)
			}
			// The call after the script blocks: every scripted result is in.
			eventually(t, "the script to run", func() bool { return fake.callCount(tA) > len(tc.script) })
			eventually(t, "the reports", func() bool { return len(log.of(tA)) == len(tc.want) })
			got := log.of(tA)
			for i := range tc.want {
				if got[i] != tc.want[i] {
					t.Fatalf("reports %v, want %v", got, tc.want)
				}
			}
			log.mu.Lock()
			defer log.mu.Unlock()
			for _, d := range log.took {
				if d < fake.delay {
					t.Fatalf("took %v, shorter than the check's %v", d, fake.delay)
				}
			}
		})
	}

	t.Run("nil stops the reports", func(t *testing.T) {
		fake := newFake(map[config.Target]string{tA: "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS"})
		fake.delay = time.Millisecond
		var log checkLog
		m := NewMonitor(hcCfg(1, 1, "healthy"), fake, nil, nil)
		defer m.Close()
		m.OnCheck(log.onCheck)
		m.SetTargets([]config.Target{tA})
		eventually(t, "a report", func() bool { return len(log.of(tA)) > 0 })
		m.OnCheck(nil)
		// A check that loaded the hook before the swap may still report.
		n := len(log.of(tA)) + 1
		eventually(t, "more checks", func() bool { return fake.callCount(tA) > n+5 })
		if got := len(log.of(tA)); got > n {
			t.Fatalf("%d reports after OnCheck(nil), at most %d before", got, n)
		}
	})
}
