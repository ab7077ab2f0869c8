package e2e

import (
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// gossipToTheDead is memberlist's GossipToTheDeadTime on the LAN preset, which
// gobetween keeps: how long a node still gossips to a member after declaring it
// dead. Once it has passed on both sides of a partition, nothing the two sides
// send on their own reaches the other, and only a Join brings them together.
const gossipToTheDead = 30 * time.Second

// reportFresh is how long a report counts after it arrived: three report
// intervals of 1 s, the default.
const reportFresh = 3 * time.Second

// gossipView checks node a's GET /cluster: each member in want has that gossip
// state, and each alive member other than self has a report received within
// reportFresh (self: published within reportFresh).
func gossipView(a apiClient, want map[string]string) error {
	ms, err := clusterViewOf(a)
	if err != nil {
		return err
	}
	var errs []error
	for id, state := range want {
		m, ok := memberOf(ms, id)
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s not listed", id))
		case m.Gossip != state:
			errs = append(errs, fmt.Errorf("%s gossip %q, want %q", id, m.Gossip, state))
		case state == "alive" && (m.LastReport.IsZero() || time.Since(m.LastReport) > reportFresh):
			errs = append(errs, fmt.Errorf("%s alive but its last report is stale: %v (seq %d)", id, m.LastReport, m.ReportSeq))
		}
	}
	return errors.Join(errs...)
}

// allAlive is the want of gossipView for a whole cluster.
var allAlive = map[string]string{"n1": "alive", "n2": "alive", "n3": "alive"}

// A partition longer than memberlist's give-up time heals through gobetween's
// rejoin loop. n3 is cut off from n1 and n2 (the bridge side still reaching
// every node) until both sides have held the other dead for longer than
// GossipToTheDeadTime, so that neither side gossips to the other any more: the
// 4 connections held through n3 leave n1's and n2's totals, n3 counts only its
// own. After the heal, within 30 s, every node lists every member alive with
// fresh reports, n1 receives n3's reports again (report_seq past the one before
// the cut) and every node counts all 6 held connections again. n3, with no
// member alive, retries its join addresses every second, so the heal takes
// about a second; the majority's retry for a missing member (every 5–15 s) is
// not needed for it.
func TestClusterGossipHealsLongPartition(t *testing.T) {
	t.Parallel()
	l := newNetnsLab(t)
	b := startBackendOn(t, "b1", l.bridge())
	apiPort, gossip, raftPort := freePort(t), freePort(t), freePort(t)
	hosts := [3]string{l.host(0), l.host(1), l.host(2)}
	apis := make([]apiClient, 3)
	byID := map[string]*node{}
	apiByID := map[string]apiClient{}
	for i := range 3 {
		n := startNodeInNetns(t, l.ns[i], clusterNodeConfig(hosts, i, apiPort, gossip, raftPort, ""), t.TempDir())
		apis[i] = newAPI(l.addr(i, apiPort))
		byID[nodeIDs[i]] = n
		apiByID[nodeIDs[i]] = apis[i]
	}
	requireRunning := func() {
		for _, n := range byID {
			n.requireRunning()
		}
	}
	leaderOf(t, 20*time.Second, 3, apiByID, byID)

	port := freePort(t)
	body := viewServer(":"+strconv.Itoa(port), "roundrobin", viewPing("500ms"), b.line())
	if code, resp := apis[0].mustDo(t, "POST", "/servers/rj", body); code != 200 {
		t.Fatalf("POST /servers/rj: %d %s", code, resp)
	}
	via := func(i int) string { return l.addr(i, port) }
	for i := range 3 {
		eventually(t, 10*time.Second, "serving on "+via(i), func() error {
			_, err := who(via(i))
			return err
		})
	}
	eventually(t, 10*time.Second, "every member alive with a fresh report on every node", func() error {
		requireRunning()
		for i, a := range apis {
			if err := gossipView(a, allAlive); err != nil {
				return fmt.Errorf("n%d: %w", i+1, err)
			}
		}
		return nil
	})
	waitViews(t, apis, "rj", 10*time.Second, "b1 healthy by all three", clusterHealthy(nodeIDs[:], b))

	held := newHeld(t)
	for i, k := range map[int]int{2: 4, 0: 2} {
		for range k {
			if _, err := held.open("", via(i)); err != nil {
				t.Fatalf("connection through n%d: %v", i+1, err)
			}
		}
	}
	waitViews(t, apis, "rj", 5*time.Second, "every node counts 6 connections on b1", clusterConns(b, 6))
	ms, err := clusterViewOf(apis[0])
	if err != nil {
		t.Fatal(err)
	}
	n3Before, _ := memberOf(ms, "n3")

	cutAt := time.Now()
	if err := l.cut(2); err != nil {
		t.Fatalf("partition n3: %v", err)
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			_ = l.heal(2)
		}
	})

	// Each side declares the other dead; n3's connections leave the majority's
	// totals, and n3 counts its own only.
	split := []map[string]string{{"n3": "dead"}, {"n3": "dead"}, {"n1": "dead", "n2": "dead"}}
	splitConns := []int64{2, 2, 4}
	// splitNode is nil when node i sees the split.
	splitNode := func(i int) error {
		if err := gossipView(apis[i], split[i]); err != nil {
			return fmt.Errorf("n%d: %w", i+1, err)
		}
		s, err := apis[i].viewStats("rj")
		if err != nil {
			return fmt.Errorf("n%d: %w", i+1, err)
		}
		if err := clusterConns(b, splitConns[i])(i, s); err != nil {
			return fmt.Errorf("n%d: %w", i+1, err)
		}
		return nil
	}
	var majoritySaw, n3Saw time.Duration
	splitView := func() error {
		requireRunning()
		errs := []error{splitNode(0), splitNode(1), splitNode(2)}
		if errs[0] == nil && errs[1] == nil && majoritySaw == 0 {
			majoritySaw = time.Since(cutAt)
		}
		if errs[2] == nil && n3Saw == 0 {
			n3Saw = time.Since(cutAt)
		}
		return errors.Join(errs...)
	}
	eventually(t, 20*time.Second, "each side lists the other dead and counts only its own connections", splitView)
	deadAt := time.Now()
	t.Logf("cut -> n1 and n2 list n3 dead and drop its 4 connections: %v; -> n3 lists n1 and n2 dead and counts its own only: %v",
		majoritySaw, n3Saw)

	// Held until both sides have stopped gossiping to the dead, and 40 s at
	// least; the split must last all along.
	holdUntil := cutAt.Add(40 * time.Second)
	if late := deadAt.Add(gossipToTheDead + 3*time.Second); late.After(holdUntil) {
		holdUntil = late
	}
	for time.Now().Before(holdUntil) {
		if err := splitView(); err != nil {
			t.Fatalf("%v after the cut, the split is not as it was: %v", time.Since(cutAt), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := held.echoAll("during the cut"); err != nil {
		t.Fatalf("a held connection stopped relaying during the cut: %v", err)
	}

	healAt := time.Now()
	if err := l.heal(2); err != nil {
		t.Fatalf("heal n3: %v", err)
	}
	healed = true
	t.Logf("cut for %v; healed", healAt.Sub(cutAt).Round(time.Millisecond))

	var aliveTook, reportTook, countTook time.Duration
	eventually(t, 30*time.Second, "after the heal: every member alive with fresh reports on every node, n1 receiving n3's reports, every node counting 6", func() error {
		requireRunning()
		var errs []error
		alive := true
		for i, a := range apis {
			if err := gossipView(a, allAlive); err != nil {
				alive = false
				errs = append(errs, fmt.Errorf("n%d: %w", i+1, err))
			}
		}
		if alive && aliveTook == 0 {
			aliveTook = time.Since(healAt)
		}
		ms, err := clusterViewOf(apis[0])
		if err != nil {
			return err
		}
		m, _ := memberOf(ms, "n3")
		if m.ReportSeq > n3Before.ReportSeq && m.LastReport.After(healAt) {
			if reportTook == 0 {
				reportTook = time.Since(healAt)
			}
		} else {
			errs = append(errs, fmt.Errorf("n1's last report from n3: seq %d at %v; before the cut: seq %d at %v",
				m.ReportSeq, m.LastReport, n3Before.ReportSeq, n3Before.LastReport))
		}
		counted := true
		for i, a := range apis {
			s, err := a.viewStats("rj")
			if err != nil {
				return fmt.Errorf("n%d: %w", i+1, err)
			}
			if err := clusterConns(b, 6)(i, s); err != nil {
				counted = false
				errs = append(errs, fmt.Errorf("n%d: %w", i+1, err))
			}
		}
		if counted && countTook == 0 {
			countTook = time.Since(healAt)
		}
		return errors.Join(errs...)
	})
	t.Logf("heal -> every member alive everywhere: %v; -> n1 receives n3's reports: %v; -> 6 connections counted everywhere: %v",
		aliveTook, reportTook, countTook)

	if err := held.echoAll("after the heal"); err != nil {
		t.Fatalf("a held connection stopped relaying: %v", err)
	}
	leaderOf(t, 20*time.Second, 3, apiByID, byID)
}
