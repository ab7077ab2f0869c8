package healthcheck

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobetween/gobetween/config"
)

// fallbackInterval replaces an interval <= 0 with a checker set. Validation
// rejects such a config; this only keeps a bad value from spinning a worker.
const fallbackInterval = time.Second

// errPassive is the failure recorded for a failed dial by the proxy.
var errPassive = errors.New("passive: dial failed")

// Monitor keeps one verdict per target of one server and runs one worker
// goroutine per target. All methods are safe for concurrent use.
//
// Concurrency contract:
//   - At most one check of a target is in flight at any time: a target's checks
//     run one after another in its worker, and a check slower than the interval
//     delays the next one.
//   - onChange is called on every flip, from the worker, from PassiveFailure's
//     caller or from Reconfigure's caller, never concurrently for the same
//     target. It may call Healthy; it must not call other methods of the Monitor
//     and must not block long (it delays that target's next check).
//   - SetTargets and Reconfigure never wait for onChange. Close waits for the
//     workers, so it must not be called while holding a lock that onChange takes.
//   - After a target is removed (or the Monitor closed), no new onChange starts
//     for it; one already running may still complete.
type Monitor struct {
	logger   *slog.Logger
	onChange func(config.Target, bool)
	onCheck  atomic.Pointer[func(config.Target, bool, time.Duration)] // OnCheck; nil: none

	ctx    context.Context // parent of every worker; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	settings atomic.Pointer[settings]
	// targets is replaced whole (copy on write, under mu) so Healthy reads it
	// without a lock.
	targets atomic.Pointer[map[config.Target]*target]

	mu     sync.Mutex // serialises SetTargets, Reconfigure and Close
	closed bool
}

// settings is one immutable generation of the configuration. A result obtained
// under one generation is dropped if another has been installed meanwhile.
type settings struct {
	// ctx ends when a newer generation replaces this one, aborting the checks
	// still running under it.
	ctx            context.Context
	cancel         context.CancelFunc
	checker        Checker // nil: kind none
	interval       time.Duration
	timeout        time.Duration // never 0 when checker is set
	fails, passes  int
	initialHealthy bool
}

func newSettings(cfg config.Healthcheck, checker Checker) *settings {
	// Not a child of the Monitor's context: Close aborts checks through the
	// workers' contexts, and a generation's context only ends when replaced.
	ctx, cancel := context.WithCancel(context.Background())
	s := &settings{
		ctx:            ctx,
		cancel:         cancel,
		checker:        checker,
		interval:       cfg.Interval.D,
		timeout:        cfg.Timeout.D,
		fails:          max(cfg.Fails, 1),
		passes:         max(cfg.Passes, 1),
		initialHealthy: checker == nil || cfg.InitialStatus != "unhealthy",
	}
	if s.interval <= 0 {
		s.interval = fallbackInterval
	}
	// A timeout of 0 means "the interval", so that a check can never hang.
	if s.timeout <= 0 {
		s.timeout = s.interval
	}
	return s
}

// target is the verdict state of one target; it lives from SetTargets adding the
// target until SetTargets removes it, across Reconfigure.
type target struct {
	t       config.Target
	healthy atomic.Bool
	removed atomic.Bool
	cancel  context.CancelFunc // stops the worker
	wake    chan struct{}      // buffered 1: settings changed, check now

	mu         sync.Mutex // guards the streaks; held across onChange
	failStreak int
	passStreak int
}

// NewMonitor returns a Monitor with no targets. A nil checker means kind none:
// every target is always healthy and no check runs. onChange (may be nil) is
// called when a target's verdict flips; see Monitor for its contract. A nil
// logger discards.
func NewMonitor(cfg config.Healthcheck, checker Checker, logger *slog.Logger, onChange func(t config.Target, healthy bool)) *Monitor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "healthcheck")
	ctx, cancel := context.WithCancel(context.Background())
	m := &Monitor{logger: logger, onChange: onChange, ctx: ctx, cancel: cancel}
	m.settings.Store(newSettings(cfg, checker))
	empty := map[config.Target]*target{}
	m.targets.Store(&empty)
	return m
}

// SetTargets makes ts the set of checked targets. A new target starts with the
// verdict of initial_status (healthy for kind none), which is not reported
// through onChange: read it with Healthy. Its first check runs at once. Targets
// no longer in ts are forgotten and their workers stopped; kept targets keep
// their verdicts and schedules. After Close it does nothing.
func (m *Monitor) SetTargets(ts []config.Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	old := *m.targets.Load()
	s := m.settings.Load()
	next := make(map[config.Target]*target, len(ts))
	for _, t := range ts {
		if _, ok := next[t]; ok {
			continue
		}
		if w, ok := old[t]; ok {
			next[t] = w
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		w := &target{t: t, cancel: cancel, wake: make(chan struct{}, 1)}
		w.healthy.Store(s.initialHealthy)
		next[t] = w
		m.wg.Add(1)
		go m.run(ctx, w)
	}
	for t, w := range old {
		if _, ok := next[t]; !ok {
			w.removed.Store(true)
			w.cancel()
		}
	}
	m.targets.Store(&next)
}

// Healthy is the current verdict of t; false for a target the Monitor does not
// know. It takes no lock.
func (m *Monitor) Healthy(t config.Target) bool {
	w, ok := (*m.targets.Load())[t]
	return ok && w.healthy.Load()
}

// PassiveFailure records a failed dial to t by the proxy as one failed check,
// with the same consecutive counting as active checks. It is ignored for kind
// none and for unknown targets. It may call onChange before returning.
func (m *Monitor) PassiveFailure(t config.Target) {
	w, ok := (*m.targets.Load())[t]
	if !ok {
		return
	}
	s := m.settings.Load()
	if s.checker == nil {
		return
	}
	m.record(w, s, errPassive)
}

// Reconfigure installs new settings (interval, timeout, fails, passes,
// initial_status for targets added later, checker) without losing the current
// verdicts. Checks under way with the old settings are aborted and their results
// dropped; every target is then checked at once with the new settings. A nil
// checker (kind none) makes every target healthy, reporting the flips through
// onChange from the caller's goroutine.
func (m *Monitor) Reconfigure(cfg config.Healthcheck, checker Checker) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	s := newSettings(cfg, checker)
	m.settings.Swap(s).cancel()
	current := *m.targets.Load()
	m.mu.Unlock()

	for _, w := range current {
		if checker == nil {
			m.forceHealthy(w, s)
		}
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// OnCheck makes fn receive every active check that completes under the
// current settings: its target, whether it passed and how long it took. Checks
// aborted by Reconfigure or Close, checks of removed targets and passive
// failures are not reported. fn is called from the target's worker, after the
// result is recorded; it must not block and must not call the Monitor. A nil
// fn stops the reports. It exists for metrics: the Monitor itself keeps no
// counts.
func (m *Monitor) OnCheck(fn func(t config.Target, passed bool, took time.Duration)) {
	if fn == nil {
		m.onCheck.Store(nil)
		return
	}
	m.onCheck.Store(&fn)
}

// Close stops every worker, aborting checks under way, and waits for them. No
// onChange starts after Close returns. Later calls do nothing.
func (m *Monitor) Close() {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		for _, w := range *m.targets.Load() {
			w.removed.Store(true)
		}
		m.cancel()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// run is the worker of one target: a check at once, then one check per interval
// measured from the start of the previous one, or right after it when it took
// longer.
func (m *Monitor) run(ctx context.Context, w *target) {
	defer m.wg.Done()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
		s := m.settings.Load()
		if s.checker == nil {
			// Kind none: nothing to do until Reconfigure wakes the worker.
			timer.Stop()
			continue
		}
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		stop := context.AfterFunc(s.ctx, cancel)
		err := s.checker.Check(cctx, w.t)
		stop()
		cancel()
		if ctx.Err() != nil {
			return
		}
		took := time.Since(start)
		if m.record(w, s, err) {
			if fn := m.onCheck.Load(); fn != nil {
				(*fn)(w.t, err == nil, took)
			}
		}
		timer.Reset(max(s.interval-time.Since(start), 0))
	}
}

// record counts one result (err == nil is a pass) obtained under settings s, and
// flips the verdict when the consecutive streak reaches fails or passes. It
// reports whether the result counted: false when it was dropped (target
// removed, settings replaced).
func (m *Monitor) record(w *target, s *settings, err error) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.removed.Load() || m.settings.Load() != s {
		return false
	}
	healthy := w.healthy.Load()
	if err == nil {
		w.failStreak = 0
		w.passStreak = min(w.passStreak+1, s.passes)
		if healthy || w.passStreak < s.passes {
			return true
		}
	} else {
		w.passStreak = 0
		w.failStreak = min(w.failStreak+1, s.fails)
		m.logger.Debug("health check failed", "backend", w.t.Address(), "error", err,
			"streak", w.failStreak, "fails", s.fails)
		if !healthy || w.failStreak < s.fails {
			return true
		}
	}
	w.failStreak, w.passStreak = 0, 0
	m.flip(w, !healthy, err)
	return true
}

// forceHealthy makes w healthy because the settings s (kind none) say so.
func (m *Monitor) forceHealthy(w *target, s *settings) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.removed.Load() || m.settings.Load() != s {
		return
	}
	w.failStreak, w.passStreak = 0, 0
	if !w.healthy.Load() {
		m.flip(w, true, nil)
	}
}

// flip stores the new verdict and reports it; w.mu is held.
func (m *Monitor) flip(w *target, healthy bool, cause error) {
	w.healthy.Store(healthy)
	if healthy {
		m.logger.Info("backend healthy", "backend", w.t.Address())
	} else {
		m.logger.Warn("backend unhealthy", "backend", w.t.Address(), "error", cause)
	}
	if m.onChange != nil {
		m.onChange(w.t, healthy)
	}
}
