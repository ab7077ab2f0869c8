package proxy

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

type tempError struct{}

func (tempError) Error() string   { return "accept: resource temporarily unavailable" }
func (tempError) Timeout() bool   { return false }
func (tempError) Temporary() bool { return true }

// flakyListener fails its first Accepts with errs, then accepts for real.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	errs  []error
	calls int
	times []time.Time
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.calls++
	l.times = append(l.times, time.Now())
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestAcceptBacksOffAndRetries(t *testing.T) {
	rec := &recordHandler{}
	h := newHarnessLog(t, slog.New(rec))
	be := startBackend(t, echo)
	h.start("web", serverCfg([]string{be.addr()}))
	s := h.server("web")

	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	fl := &flakyListener{Listener: inner, errs: []error{tempError{}, tempError{}, tempError{}, emfile, emfile}}
	l := &listener{ln: fl, done: make(chan struct{}), exited: make(chan struct{})}
	start := time.Now()
	s.startAccepting(l)

	c := dial(t, inner.Addr().String())
	if _, err := roundTrip(c, []byte("still accepting")); err != nil {
		t.Fatalf("listener did not recover from accept errors: %v", err)
	}
	// 5 + 10 + 20 + 40 + 80 ms of back-off before the sixth Accept.
	if el := time.Since(start); el < 155*time.Millisecond {
		t.Errorf("recovered after %v: no back-off", el)
	}
	fl.mu.Lock()
	times := fl.times
	fl.mu.Unlock()
	// A timer never fires early, so each gap is at least its back-off (it may
	// be longer on a loaded machine: gaps are not compared with each other).
	for i := 1; i < 6 && i < len(times); i++ {
		if gap, want := times[i].Sub(times[i-1]), minAcceptBackoff<<(i-1); gap < want {
			t.Errorf("back-off did not grow: gap %d = %v, want >= %v", i, gap, want)
		}
	}
	if n := rec.count("accept failed; retrying"); n != 1 {
		t.Errorf("logged %d accept failures within one back-off second, want 1", n)
	}

	l.close()
	select {
	case <-l.exited:
	case <-time.After(5 * time.Second):
		t.Fatal("accept loop did not end when its listener closed")
	}
}

func TestAcceptLoopStopsOnlyWhenClosed(t *testing.T) {
	h := newHarness(t)
	be := startBackend(t, echo)
	h.start("web", serverCfg([]string{be.addr()}))
	s := h.server("web")
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A non-temporary error other than "closed" is retried too.
	fl := &flakyListener{Listener: inner, errs: []error{errors.New("accept: software caused connection abort")}}
	l := &listener{ln: fl, done: make(chan struct{}), exited: make(chan struct{})}
	s.startAccepting(l)
	c := dial(t, inner.Addr().String())
	if _, err := roundTrip(c, []byte("x")); err != nil {
		t.Fatal(err)
	}
	l.close()
	<-l.exited
}
