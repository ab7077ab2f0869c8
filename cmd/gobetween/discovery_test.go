package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/discovery"
)

// listProvider serves whatever list the test sets.
type listProvider struct {
	mu   sync.Mutex
	list []string
}

func (p *listProvider) set(lines ...string) {
	p.mu.Lock()
	p.list = lines
	p.mu.Unlock()
}

func (p *listProvider) Fetch(context.Context) ([]config.Backend, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []config.Backend
	for _, l := range p.list {
		b, err := config.ParseBackend(l)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func TestClusterScoped(t *testing.T) {
	for _, tt := range []struct {
		clustered bool
		d         config.Discovery
		want      bool
	}{
		{false, config.Discovery{Kind: "docker"}, false},
		{true, config.Discovery{Kind: "docker"}, true},
		{true, config.Discovery{Kind: "docker", Scope: "cluster"}, true},
		{true, config.Discovery{Kind: "docker", Scope: "node"}, false},
		{true, config.Discovery{Kind: "static"}, false},
	} {
		if got := clusterScoped(tt.clustered, tt.d); got != tt.want {
			t.Errorf("clusterScoped(%v, %+v) = %v, want %v", tt.clustered, tt.d, got, tt.want)
		}
	}
}

// The leader runs a cluster-scope discovery and stores each new result in the
// log; a logDiscoverer (every node's proxy) delivers it; a changed definition
// restarts the discovery; a deleted server stops it.
func TestLeaderDiscoveryThroughTheLog(t *testing.T) {
	n := leaderNode(t)
	p := &listProvider{}
	p.set("10.0.0.1:80")
	reg := discovery.NewRegistry()
	reg.Register("fake", func(config.Discovery) (discovery.Provider, error) { return p, nil })
	put := func(interval string) {
		s := config.Server{Bind: ":1", Protocol: "tcp", Discovery: &config.Discovery{
			Kind: "fake", Failpolicy: "keeplast", Interval: config.Dur(mustDur(t, interval)), Timeout: config.Dur(time.Second),
		}}
		if _, err := n.Apply(t.Context(), cluster.Command{Type: cluster.PutServer, Name: "web", Origin: cluster.OriginAPI, Server: &s}); err != nil {
			t.Fatal(err)
		}
	}
	put("50ms")
	counts := newFetchCounts()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&leaderDiscovery{node: n, registry: reg, log: slog.New(slog.DiscardHandler), counts: counts}).run(ctx)
	}()
	defer func() { cancel(); <-done }()

	got := make(chan []config.Backend, 16)
	dctx, dcancel := context.WithCancel(t.Context())
	defer dcancel()
	d, err := newDiscovery(slog.New(slog.DiscardHandler), reg, n, true, counts)("web", config.Discovery{Kind: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	ld := d.(logDiscoverer)
	go ld.Run(dctx, func(l []config.Backend) { got <- l })
	// fetchesAtLeast waits until the leader has counted min fetches of web
	// that the discoverer reports.
	fetchesAtLeast := func(d logDiscoverer, min uint64) uint64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			f, ok := d.LastFetch()
			if ok && f.Fetches >= min {
				if f.Errors != 0 {
					t.Fatalf("errors counted: %+v", f)
				}
				return f.Fetches
			}
			if time.Now().After(deadline) {
				t.Fatalf("fetches counted: %+v, %v; want at least %d", f, ok, min)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	want := func(what string, addrs ...string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case l := <-got:
				if fmt.Sprint(addresses(l)) == fmt.Sprint(addrs) {
					return
				}
			case <-deadline:
				t.Fatalf("%s: never delivered %v", what, addrs)
			}
		}
	}
	want("first fetch", "10.0.0.1:80")
	if d := n.State().Discovered["web"]; d.By != "n1" || d.Fetched.IsZero() {
		t.Fatalf("stored %+v", d)
	}
	p.set("10.0.0.1:80", "10.0.0.2:80")
	want("a change", "10.0.0.1:80", "10.0.0.2:80")
	before := fetchesAtLeast(ld, 3) // every 50ms, counted every leaderPoll
	put("60ms")                     // a new definition restarts the discovery
	p.set("10.0.0.3:80")
	want("after a restart", "10.0.0.3:80")
	// The count goes on across the restart of the leader's source; a
	// discoverer made now (the proxy's, after a change) starts from zero.
	fetchesAtLeast(ld, before+2)
	later := counts.of("web")
	fresh := logDiscoverer{node: n, server: "web", count: later, baseFetches: later.fetches.Load(), baseErrors: later.errors.Load()}
	if f, _ := fresh.LastFetch(); f.Fetches > 1 {
		t.Fatalf("a new discoverer reports %d earlier fetches", f.Fetches)
	}
	fetchesAtLeast(fresh, 2)
	if _, err := n.Apply(t.Context(), cluster.Command{Type: cluster.DeleteServer, Name: "web"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.State().Discovered["web"].Backends != nil {
		if time.Now().After(deadline) {
			t.Fatal("the deleted server's result stayed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func addresses(l []config.Backend) []string {
	var out []string
	for _, b := range l {
		out = append(out, b.Address())
	}
	return out
}

func mustDur(t *testing.T, s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
