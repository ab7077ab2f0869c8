package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/discovery"
)

// flipProvider returns its list, or fails while fail is set.
type flipProvider struct {
	list []config.Backend
	fail atomic.Bool
}

func (p *flipProvider) Fetch(context.Context) ([]config.Backend, error) {
	if p.fail.Load() {
		return nil, errors.New("source answered 502")
	}
	return p.list, nil
}

// A server's stats show how its discovery's last fetch went: when, how many
// backends, and the error of a failed one.
func TestStatsShowLastDiscoveryFetch(t *testing.T) {
	h, p, _ := startFlipDiscovery(t, 20*time.Millisecond)

	stats := func() DiscoveryStats {
		st, ok := h.rt.Stats("web")
		if !ok || st.Discovery == nil {
			t.Fatalf("stats %+v, %v: no discovery", st, ok)
		}
		return *st.Discovery
	}
	if !eventually(func() bool { d := stats(); return d.OK && d.Backends == 1 && !d.Fetched.IsZero() }) {
		t.Fatalf("after a good fetch: %+v", stats())
	}
	p.fail.Store(true)
	if !eventually(func() bool { d := stats(); return !d.OK && d.Error == "source answered 502" }) {
		t.Fatalf("after a failed fetch: %+v", stats())
	}
	mustRelay(t, dial(t, h.addr("web")), "keeplast keeps the backend")
}

// startFlipDiscovery starts server "web" whose discovery, polled every
// interval, lists one echo backend from a flipProvider the test can make fail;
// it returns the server's definition too.
func startFlipDiscovery(t *testing.T, interval time.Duration) (*harness, *flipProvider, config.Server) {
	t.Helper()
	be := startBackend(t, echo)
	b, err := config.ParseBackend(be.addr())
	if err != nil {
		t.Fatal(err)
	}
	p := &flipProvider{list: []config.Backend{b}}
	tw := newTwins()
	opts := tw.options(slog.New(slog.DiscardHandler))
	opts.NewDiscovery = func(_ string, cfg config.Discovery) (Discoverer, error) {
		return discovery.NewSource(cfg, p, nil), nil
	}
	h := &harness{t: t, rt: New(opts), tw: tw}
	t.Cleanup(func() { h.rt.Shutdown(context.Background()) })
	cfg := serverCfg([]string{be.addr()})
	cfg.Discovery = &config.Discovery{Kind: "fake", Failpolicy: "keeplast", Interval: config.Dur(interval), Timeout: config.Dur(time.Second)}
	h.start("web", cfg)
	return h, p, cfg
}
