package cluster

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// fakeGossip records what the observer hands to the gossip layer.
type fakeGossip struct {
	mu         sync.Mutex
	broadcasts map[string][]byte
	reliable   map[string][][]byte
	direct     map[string][][]byte
	others     []string
}

func newFakeGossip(others ...string) *fakeGossip {
	return &fakeGossip{broadcasts: map[string][]byte{}, reliable: map[string][][]byte{}, direct: map[string][][]byte{}, others: others}
}

func (f *fakeGossip) join([]string) (int, error) { return 0, nil }
func (f *fakeGossip) members() []gossipMember    { return nil }
func (f *fakeGossip) localAddr() string          { return "" }
func (f *fakeGossip) leave(time.Duration) error  { return nil }
func (f *fakeGossip) shutdown() error            { return nil }
func (f *fakeGossip) traffic() (uint64, uint64)  { return 0, 0 }
func (f *fakeGossip) aliveOthers() []string      { return f.others }
func (f *fakeGossip) broadcast(name string, m []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broadcasts[name] = m
}

func (f *fakeGossip) sendReliable(to string, m []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reliable[to] = append(f.reliable[to], m)
	return nil
}

func (f *fakeGossip) sendBestEffort(to string, m []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.direct[to] = append(f.direct[to], m)
	return nil
}

func (f *fakeGossip) take() (string, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, m := range f.broadcasts {
		delete(f.broadcasts, name)
		return name, m
	}
	return "", nil
}

func testObserver(self string) *observer {
	o := newObserver(self, time.Second, slog.New(slog.DiscardHandler))
	o.g = newFakeGossip()
	return o
}

func setObserve(o *observer, f func(dst []Observation) []Observation) { o.observe.Store(&f) }

func TestMergeRules(t *testing.T) {
	rep := func(origin string, boot int64, seq uint64) []byte {
		return encodeReportMsg(&report{origin: origin, boot: boot, seq: seq, interval: time.Second,
			entries: []reportEntry{{key: backendKey("web", "a:1"), healthy: true, conns: int64(seq)}}})
	}
	for _, tc := range []struct {
		name   string
		first  []byte
		then   []byte
		accept bool // whether then is accepted
		seq    uint64
	}{
		{"higher seq replaces", rep("n2", 10, 5), rep("n2", 10, 6), true, 6},
		{"lower seq is rejected", rep("n2", 10, 5), rep("n2", 10, 4), false, 5},
		{"same seq is rejected", rep("n2", 10, 5), rep("n2", 10, 5), false, 5},
		{"newer boot wins with a lower seq", rep("n2", 10, 5), rep("n2", 11, 1), true, 1},
		{"older boot is rejected", rep("n2", 10, 5), rep("n2", 9, 100), false, 5},
		{"self is ignored", nil, rep("n1", 10, 1), false, 0},
		{"corrupt is ignored", nil, rep("n2", 10, 1)[:5], false, 0},
		{"unknown type is ignored", nil, append([]byte{99}, rep("n2", 10, 1)[1:]...), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testObserver("n1")
			o.memberState("n2", true)
			if tc.first != nil && o.receive(tc.first) == "" {
				t.Fatal("first report not accepted")
			}
			got := o.receive(tc.then)
			if (got != "") != tc.accept {
				t.Fatalf("accepted %q, want %v", got, tc.accept)
			}
			o.refresh(time.Now())
			sum := o.view.Load().Sum("web", "a:1")
			if tc.seq == 0 {
				if sum != (ObservedSum{}) {
					t.Fatalf("view %+v, want empty", sum)
				}
				return
			}
			if sum.Conns != int64(tc.seq) || sum.Nodes != 1 {
				t.Fatalf("view %+v, want the report with seq %d", sum, tc.seq)
			}
		})
	}
}

// The view counts a report while its origin is alive in gossip and the report
// is younger than three of its intervals, and notifies on each change.
func TestViewCountsAliveAndFresh(t *testing.T) {
	o := testObserver("n1")
	ch, cancel := o.subscribe()
	defer cancel()
	mk := func(origin string, seq uint64, interval time.Duration, healthy bool, conns int64) []byte {
		entries := []reportEntry{
			{key: backendKey("web", "a:1"), healthy: healthy, conns: conns, rx: 10, tx: 20},
			{key: backendKey("web", "b:1"), healthy: true, conns: 1},
		}
		slices.SortFunc(entries, func(a, b reportEntry) int { return cmp.Compare(a.key, b.key) })
		return encodeReportMsg(&report{origin: origin, boot: 1, seq: seq, interval: interval, entries: entries})
	}
	expectNotified := func(want bool) {
		t.Helper()
		select {
		case <-ch:
			if !want {
				t.Fatal("notified without a change")
			}
		default:
			if want {
				t.Fatal("not notified")
			}
		}
	}
	o.memberState("n2", true)
	o.memberState("n3", true)
	now := time.Now()
	o.receive(mk("n2", 1, time.Second, true, 5))
	o.receive(mk("n3", 1, 2*time.Second, false, 7))
	o.receive(mk("n4", 1, time.Second, true, 100)) // n4 is not alive in gossip
	o.refresh(now)
	expectNotified(true)
	v := o.view.Load()
	if got, want := v.Sum("web", "a:1"), (ObservedSum{Nodes: 2, Healthy: 1, Conns: 12, RxBps: 20, TxBps: 40}); got != want {
		t.Fatalf("sum %+v, want %+v", got, want)
	}
	if got := v.Reports("web", "a:1"); len(got) != 2 || got[0].NodeID != "n2" || got[1].NodeID != "n3" || got[1].Conns != 7 || got[1].Healthy {
		t.Fatalf("reports %+v", got)
	}
	if got := v.Origins(); len(got) != 2 || got[0].NodeID != "n2" || got[0].Backends != 2 || got[0].Seq != 1 {
		t.Fatalf("origins %+v", got)
	}
	if v.Sum("web", "nope:1") != (ObservedSum{}) || v.Reports("other", "a:1") != nil {
		t.Fatal("an unknown backend has reports")
	}
	if a := testing.AllocsPerRun(100, func() { _ = v.Sum("web", "a:1") }); a != 0 {
		t.Fatalf("Sum allocates %v times", a)
	}
	o.refresh(now.Add(100 * time.Millisecond))
	expectNotified(false)

	// n2's report (1 s interval) expires after 3 s without any message; n3's
	// (2 s) counts until 6 s.
	o.refresh(now.Add(3100 * time.Millisecond))
	expectNotified(true)
	if got := o.view.Load().Sum("web", "a:1"); got.Nodes != 1 || got.Conns != 7 {
		t.Fatalf("after n2 expired: %+v", got)
	}
	// n3 dies in gossip: it stops counting at once.
	o.memberState("n3", false)
	o.refresh(now.Add(3200 * time.Millisecond))
	expectNotified(true)
	if got := o.view.Load().Sum("web", "a:1"); got != (ObservedSum{}) {
		t.Fatalf("after n3 died: %+v", got)
	}
	// A lost member's report is forgotten once it would have expired; an
	// alive member's expired report stays (Members shows it).
	o.refresh(now.Add(7 * time.Second))
	info := o.reportInfo()
	if _, ok := info["n3"]; ok {
		t.Fatalf("the dead member's report is kept: %+v", info)
	}
	if _, ok := info["n2"]; !ok {
		t.Fatalf("the alive member's expired report is gone: %+v", info)
	}
	// n2 reports again and counts again.
	o.receive(mk("n2", 2, time.Second, true, 3))
	o.refresh(time.Now())
	expectNotified(true)
	if got := o.view.Load().Sum("web", "b:1"); got.Nodes != 1 || got.Conns != 1 {
		t.Fatalf("after n2 came back: %+v", got)
	}
	var nilView *ObservedView
	if nilView.Sum("a", "b") != (ObservedSum{}) || nilView.Reports("a", "b") != nil || nilView.Origins() != nil {
		t.Fatal("a nil view is not empty")
	}
}

func TestPublishWhenDue(t *testing.T) {
	o := testObserver("n1")
	g := o.g.(*fakeGossip)
	obs := []Observation{
		{Server: "web", Backend: "a:1", Healthy: true, Conns: 1},
		{Server: "web", Backend: "b:1", Healthy: true, Conns: 1, Capped: true},
	}
	var calls int
	setObserve(o, func(dst []Observation) []Observation {
		calls++
		return append(dst, obs...)
	})
	now := time.Now()
	tick := func() (published bool) {
		now = now.Add(observeInterval)
		o.publish(now)
		name, msg := g.take()
		if msg == nil {
			return false
		}
		if name != "obs/n1" {
			t.Fatalf("broadcast named %q", name)
		}
		r, err := decodeReportMsg(msg)
		if err != nil || r.origin != "n1" || r.seq != o.seq || r.boot != o.boot || r.interval != time.Second || len(r.entries) != len(o.last) {
			t.Fatalf("published %+v, %v", r, err)
		}
		return true
	}
	steps := []struct {
		name    string
		change  func()
		publish bool
	}{
		{"first report", func() {}, true},
		{"nothing changed", func() {}, false},
		{"uncapped conns changed: waits for the interval", func() { obs[0].Conns = 50 }, false},
		{"rates changed: wait", func() { obs[0].RxBps = 1e6 }, false},
		{"health flip: at once", func() { obs[0].Healthy = false }, true},
		{"capped conns changed: at once", func() { obs[1].Conns = 2 }, true},
		{"backend added: at once", func() { obs = append(obs, Observation{Server: "api", Backend: "c:1"}) }, true},
		{"backend given twice: reported once, no change", func() { obs = append(obs, obs[2]) }, false},
		{"backend removed: at once", func() { obs = obs[:2] }, true},
	}
	for _, s := range steps {
		s.change()
		if got := tick(); got != s.publish {
			t.Fatalf("%s: published %v, want %v", s.name, got, s.publish)
		}
	}
	// The interval: one report per second with nothing changing.
	n := 0
	ticks := int(5 * time.Second / observeInterval)
	for range ticks {
		if tick() {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("%d reports in 5 s, want 5", n)
	}
	if calls != len(steps)+ticks || o.reportsSent.Load() != o.seq || o.lastSeq.Load() != o.seq {
		t.Fatalf("calls %d, sent %d, seq %d", calls, o.reportsSent.Load(), o.seq)
	}
	// The node's own report is in its push/pull state, and never accepted
	// back from a peer.
	items, err := decodeTable(o.localState())
	if err != nil || len(items) != 1 || items[0].rep.origin != "n1" || items[0].rep.seq != o.seq {
		t.Fatalf("local state %+v, %v", items, err)
	}
	o.mergeState(o.localState())
	if len(o.reportInfo()) != 1 {
		t.Fatal("own report merged back")
	}
}

// A report too big for a broadcast goes to each alive member over TCP; a
// member whose send is still running gets only the newest report afterwards.
func TestPublishReliable(t *testing.T) {
	o := testObserver("n1")
	g := newFakeGossip("n2", "n3")
	o.g = g
	var obs []Observation
	for i := range 200 {
		obs = append(obs, Observation{Server: "web", Backend: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), Healthy: true, Conns: int64(i)})
	}
	setObserve(o, func(dst []Observation) []Observation { return append(dst, obs...) })
	o.publish(time.Now())
	eventually(t, 2*time.Second, "both members got the report", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.reliable["n2"]) == 1 && len(g.reliable["n3"]) == 1
	})
	g.mu.Lock()
	msg := g.reliable["n2"][0]
	g.mu.Unlock()
	if len(msg) <= maxBroadcastReport {
		t.Fatalf("a %d-byte report went reliably", len(msg))
	}
	if _, b := g.take(); b != nil {
		t.Fatal("a big report was broadcast too")
	}
	r, err := decodeReportMsg(msg)
	if err != nil || len(r.entries) != 200 {
		t.Fatalf("reliable report: %v entries, %v", len(r.entries), err)
	}
	o.close()
	o.publish(time.Now().Add(time.Hour))
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.reliable["n2"]) != 1 {
		t.Fatal("sent after close")
	}
}

// Without gossip the observed-state calls are valid no-ops, and Close leaves no
// publisher behind.
func TestObservedWithoutGossip(t *testing.T) {
	n := openNode(t, "solo", t.TempDir(), true)
	called := make(chan struct{}, 1)
	n.SetObserver(func(dst []Observation) []Observation {
		called <- struct{}{}
		return dst
	})
	ch, cancel := n.SubscribeObserved()
	defer cancel()
	if v := n.Observed(); v == nil || len(v.Origins()) != 0 || v.Sum("a", "b") != (ObservedSum{}) {
		t.Fatalf("view %+v", v)
	}
	if st := n.GossipStats(); st != (GossipStats{}) {
		t.Fatalf("stats %+v", st)
	}
	select {
	case <-called:
		t.Fatal("observer called without gossip")
	case <-ch:
		t.Fatal("notified without gossip")
	case <-time.After(3 * observeInterval):
	}
	if ms := n.Members(); len(ms) != 1 || !ms[0].LastReport.IsZero() || ms[0].ReportSeq != 0 {
		t.Fatalf("members %+v", ms)
	}
	if _, err := Open(context.Background(), Options{NodeID: "x", DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", ReportInterval: time.Millisecond}); err == nil {
		t.Fatal("a 1 ms report interval was accepted")
	}
}

// A receiver relays an accepted broadcast-sized report only when one gossip
// round of the origin does not reach every member, and never relays a report
// it already had.
func TestRelayInLargeClusters(t *testing.T) {
	msg := encodeReportMsg(&report{origin: "n2", boot: 1, seq: 1, interval: time.Second})
	for _, tc := range []struct {
		alive int64
		want  int
	}{{3, 0}, {4, 0}, {5, 1}, {9, 1}} {
		t.Run(fmt.Sprint(tc.alive, " members"), func(t *testing.T) {
			d := &mlDelegate{reports: testObserver("n1"), relayAbove: 3 + 1}
			d.queue = &memberlist.TransmitLimitedQueue{NumNodes: d.numMembers, RetransmitMult: 4}
			d.alive.Store(tc.alive)
			d.NotifyMsg(msg)
			d.NotifyMsg(msg)
			if got := d.queue.NumQueued(); got != tc.want {
				t.Fatalf("%d relayed, want %d", got, tc.want)
			}
			if tc.want == 1 {
				b := d.GetBroadcasts(3, 1400)
				if len(b) != 1 || !bytes.Equal(b[0], msg) {
					t.Fatalf("relayed %q", b)
				}
			}
		})
	}
}

// A small report goes straight to each member of a small cluster as well as
// into the gossip queue; in a larger cluster only into the queue.
func TestPublishDirect(t *testing.T) {
	for _, tc := range []struct {
		name   string
		others int
		direct bool
	}{
		{"alone", 0, false},
		{"three nodes", 2, true},
		{"fanout", directFanout, true},
		{"large cluster", directFanout + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testObserver("n1")
			var names []string
			for i := range tc.others {
				names = append(names, fmt.Sprintf("n%d", i+2))
			}
			g := newFakeGossip(names...)
			o.g = g
			setObserve(o, func(dst []Observation) []Observation {
				return append(dst, Observation{Server: "web", Backend: "a:1", Healthy: true})
			})
			o.publish(time.Now())
			if _, msg := g.take(); msg == nil {
				t.Fatal("no broadcast")
			}
			for _, n := range names {
				if got := len(g.direct[n]); (got == 1) != tc.direct || got > 1 {
					t.Fatalf("%s got %d direct reports, want direct=%v", n, got, tc.direct)
				}
			}
		})
	}
}

// Reports too big for a broadcast are spaced by minReliableSpacing even when
// a change is urgent; the interval still applies.
func TestReliableSpacing(t *testing.T) {
	o := testObserver("n1")
	o.g = newFakeGossip("n2")
	obs := make([]Observation, 200)
	for i := range obs {
		obs[i] = Observation{Server: "web", Backend: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), Healthy: true}
	}
	setObserve(o, func(dst []Observation) []Observation { return append(dst, obs...) })
	now := time.Now()
	o.publish(now)
	if o.seq != 1 || o.lastSize <= maxBroadcastReport {
		t.Fatalf("seq %d, size %d", o.seq, o.lastSize)
	}
	obs[0].Healthy = false
	for now2 := now.Add(observeInterval); now2.Sub(now) < minReliableSpacing; now2 = now2.Add(observeInterval) {
		o.publish(now2)
		if o.seq != 1 {
			t.Fatalf("published %s after the last large report", now2.Sub(now))
		}
	}
	o.publish(now.Add(minReliableSpacing))
	if o.seq != 2 {
		t.Fatalf("the flip was not published after %s", minReliableSpacing)
	}
}
