package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobetween/gobetween/api"
	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/proxy"
)

func TestHealthChecks(t *testing.T) {
	entry := func(bind string, rev uint64) cluster.ServerEntry {
		return cluster.ServerEntry{Server: config.Server{Bind: bind}, Revision: rev}
	}
	// runtime is what the data plane runs: name -> the address it listens on.
	runtime := func(m map[string]string) func(string) (string, bool) {
		return func(name string) (string, bool) {
			bind, ok := m[name]
			return bind, ok
		}
	}
	member := func(suffrage, gossip string) []cluster.Member {
		return []cluster.Member{
			{ID: "n1", Suffrage: suffrage, Gossip: gossip},
			{ID: "n2", Suffrage: "voter", Gossip: cluster.GossipAlive},
		}
	}
	good := func() healthFacts {
		return healthFacts{
			served:    true,
			applied:   7,
			servers:   map[string]cluster.ServerEntry{"web": entry(":3000", 5), "dns": entry("10.0.0.1:53", 6)},
			listening: runtime(map[string]string{"web": "0.0.0.0:3000", "dns": "10.0.0.1:53"}),
			nodeID:    "n1",
			gossip:    true,
			members:   member("voter", cluster.GossipAlive),
		}
	}
	tests := []struct {
		name    string
		change  func(*healthFacts)
		failing map[string]string // check -> a part of its detail
	}{
		{name: "all pass", change: func(*healthFacts) {}},
		{name: "not applied yet", change: func(f *healthFacts) { f.served = false },
			failing: map[string]string{checkApplied: "not applied"}},
		{name: "stopping", change: func(f *healthFacts) { f.stopping = true },
			failing: map[string]string{checkStopping: "shutting down"}},
		{name: "a server did not start", change: func(f *healthFacts) {
			f.listening = runtime(map[string]string{"dns": "10.0.0.1:53"})
		}, failing: map[string]string{checkListening: `server "web" (bind :3000) did not start`}},
		{name: "a server stopped listening", change: func(f *healthFacts) {
			f.listening = runtime(map[string]string{"web": "", "dns": "10.0.0.1:53"})
		}, failing: map[string]string{checkListening: `server "web" (bind :3000) is not listening`}},
		{name: "a server kept its old port", change: func(f *healthFacts) {
			f.listening = runtime(map[string]string{"web": "0.0.0.0:2999", "dns": "10.0.0.1:53"})
		}, failing: map[string]string{checkListening: `server "web" listens on 0.0.0.0:2999, not on its bind :3000`}},
		{name: "a server written after the applied revision is not due", change: func(f *healthFacts) {
			f.servers["new"] = entry(":4000", 8)
		}},
		{name: "a server at the applied revision is due", change: func(f *healthFacts) {
			f.servers["new"] = entry(":4000", 7)
		}, failing: map[string]string{checkListening: `server "new"`}},
		{name: "listeners not checked without a runtime", change: func(f *healthFacts) {
			f.listening = nil
			f.servers["new"] = entry(":4000", 7)
		}},
		{name: "no servers", change: func(f *healthFacts) { f.servers = nil }},
		{name: "a non-voter is a member", change: func(f *healthFacts) { f.members = member("nonvoter", cluster.GossipAlive) }},
		{name: "suspect in its own view still a member", change: func(f *healthFacts) { f.members = member("voter", cluster.GossipSuspect) }},
		{name: "removed from the Raft configuration", change: func(f *healthFacts) { f.members = member("", cluster.GossipAlive) },
			failing: map[string]string{checkMembership: "not in the Raft configuration"}},
		{name: "never joined", change: func(f *healthFacts) { f.members = nil },
			failing: map[string]string{checkMembership: "not in the Raft configuration"}},
		{name: "left gossip", change: func(f *healthFacts) { f.members = member("voter", cluster.GossipLeft) },
			failing: map[string]string{checkMembership: "left the gossip layer"}},
		{name: "unknown to its own gossip", change: func(f *healthFacts) { f.members = member("voter", "") },
			failing: map[string]string{checkMembership: "not alive in its own gossip layer"}},
		{name: "a single node has no gossip to check", change: func(f *healthFacts) {
			f.gossip = false
			f.members = member("voter", "")
		}},
		{name: "every failure is named", change: func(f *healthFacts) {
			f.stopping = true
			f.listening = runtime(nil)
			f.members = member("voter", cluster.GossipLeft)
		}, failing: map[string]string{
			checkStopping:   "shutting down",
			checkListening:  `server "dns" (bind 10.0.0.1:53) did not start; server "web"`,
			checkMembership: "left the gossip layer",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := good()
			tt.change(&f)
			checks := healthChecks(f)
			seen := map[string]bool{}
			for _, c := range checks {
				seen[c.Name] = true
				want, fails := tt.failing[c.Name]
				if c.OK == fails {
					t.Errorf("check %s ok=%v (%s), want ok=%v", c.Name, c.OK, c.Detail, !fails)
				}
				if fails && !strings.Contains(c.Detail, want) {
					t.Errorf("check %s detail %q, want it to contain %q", c.Name, c.Detail, want)
				}
				if c.Detail == "" {
					t.Errorf("check %s has no detail", c.Name)
				}
			}
			for name := range tt.failing {
				if !seen[name] {
					t.Errorf("check %s missing from %+v", name, checks)
				}
			}
			want := []string{checkApplied, checkStopping, checkListening, checkMembership}
			if f.listening == nil {
				want = []string{checkApplied, checkStopping, checkMembership}
			}
			if len(checks) != len(want) {
				t.Fatalf("checks %+v, want %v", checks, want)
			}
		})
	}
}

// Health on a real node and data plane: passing, then a server whose port is
// taken on this node, then a stop signal.
func TestClusterAPIHealth(t *testing.T) {
	n := leaderNode(t)
	rt := proxy.New(proxy.Options{NewBalancer: balance.New, NodeID: n.ID()})
	t.Cleanup(func() { _ = rt.Shutdown(t.Context()) })
	f := newFollower(n, rt, slog.New(slog.DiscardHandler))
	ctx := t.Context()
	done := make(chan struct{})
	fctx, stop := context.WithCancel(ctx)
	go func() { defer close(done); f.run(fctx) }()
	t.Cleanup(func() { stop(); <-done })
	var stopping atomic.Bool
	c := clusterAPI{node: n, serving: f.served, stopping: &stopping, follower: f}
	var _ api.HealthReporter = c

	put := func(name, bind string) {
		t.Helper()
		cfg, _, err := config.Load([]byte(fmt.Sprintf("[servers.%s]\nbind = %q\n[servers.%s.discovery]\nkind = \"static\"\nstatic_list = [\"127.0.0.1:1\"]\n", name, bind, name)),
			config.LoadOptions{Format: "toml"})
		if err != nil {
			t.Fatal(err)
		}
		s := cfg.Servers[name]
		rev, err := n.Apply(ctx, cluster.Command{Type: cluster.PutServer, Name: name, Origin: cluster.OriginAPI, Server: &s})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.wait(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	<-f.served
	if err := c.Health(); err != nil {
		t.Fatalf("an idle single node: %v", err)
	}
	put("web", freeTCPAddr(t))
	if err := c.Health(); err != nil {
		t.Fatalf("with a listening server: %v", err)
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	put("clash", taken.Addr().String())
	err = c.Health()
	if err == nil || !strings.Contains(err.Error(), `listening: server "clash"`) || strings.Contains(err.Error(), `"web"`) {
		t.Fatalf("a server whose port is taken: Health = %v, want it named alone", err)
	}

	if _, err := n.Apply(ctx, cluster.Command{Type: cluster.DeleteServer, Name: "clash", Origin: cluster.OriginAPI}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Health() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("the clashing server deleted: still %v", c.Health())
		}
		time.Sleep(10 * time.Millisecond)
	}

	stopping.Store(true)
	if err := c.Health(); err == nil || !strings.Contains(err.Error(), "stopping: shutting down") {
		t.Fatalf("after a stop signal: Health = %v", err)
	}
	if err := c.Ready(); err == nil {
		t.Fatal("Ready passes after a stop signal")
	}
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
