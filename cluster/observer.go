package cluster

import (
	"bytes"
	"cmp"
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultReportInterval is the report interval when Options.ReportInterval is 0.
const DefaultReportInterval = time.Second

const (
	// observeInterval is how often the publisher calls the observer (about
	// 12 µs for 1,000 backends), and the shortest time between two reports: a
	// health flip or a change of a capped backend's connections goes out
	// within it. It also bounds how late an expired origin leaves the view.
	observeInterval = 25 * time.Millisecond
	// minReliableSpacing is the shortest time between two reports too big for
	// a broadcast: each costs a TCP connection per member.
	minReliableSpacing = 50 * time.Millisecond
	// directFanout: in a cluster of at most this many other members a small
	// report also goes straight to each of them over UDP, so that it arrives
	// at once rather than at the next gossip round (which would add up to
	// 100 ms: a cluster-wide max_connections overshoots by the connections
	// that arrive meanwhile). The broadcast still goes out, for its
	// retransmissions.
	directFanout = 8
	// maxBroadcastReport is the largest report message that goes as a gossip
	// broadcast. memberlist fills 1,400-byte packets: minus the compound and
	// label headers (13 B), encryption (29 B) and user-message framing (3 B)
	// about 1,355 B are left, which its own membership messages (an alive
	// message with our metadata is ~250 B) share. A bigger report goes over
	// TCP to each member.
	maxBroadcastReport = 1000
)

func reportBroadcastName(origin string) string { return "obs/" + origin }

// observer gossips this node's observations and keeps the other members'
// reports: the publisher and the expiry check run in run, memberlist delivers
// messages and member events through the reportHandler methods.
//
// Lock order: never call into the gossip layer while holding mu; memberlist
// calls memberState with its own lock held.
type observer struct {
	self     string
	boot     int64 // unix ns at Open
	interval time.Duration
	log      *slog.Logger
	g        gossiper // set before run starts; never changed

	observe atomic.Pointer[func([]Observation) []Observation]
	wake    chan struct{} // 1-buffered: the table changed
	view    atomic.Pointer[ObservedView]

	mu    sync.Mutex
	table map[string]*originState // other origins' last accepted reports
	alive map[string]bool         // gossip state of members, from events
	own   *originState            // this node's last published report

	// Loop goroutine only.
	counted   []countedReport // what the view holds, sorted by origin
	spare     []countedReport
	buf       []Observation
	cur, last []pubEntry
	lastPub   time.Time
	lastSize  int // bytes of the last published report
	seq       uint64

	reportsSent, reportsReceived atomic.Uint64
	lastSeq                      atomic.Uint64
	lastReport                   atomic.Int64 // unix ns

	subMu   sync.Mutex
	subs    map[int]chan struct{}
	nextSub int
	closed  bool

	// Reliable sends of reports too big for a broadcast: at most one
	// goroutine per member, each sending the newest report until it has sent
	// it.
	rmu     sync.Mutex
	rmsg    []byte
	rseq    uint64
	rbusy   map[string]bool
	rclosed bool
	rwg     sync.WaitGroup
}

type originState struct {
	rep      *report
	raw      []byte // rep's encoding without the type byte (owned)
	received time.Time
}

type pubEntry struct {
	reportEntry
	capped bool
}

var _ reportHandler = (*observer)(nil)

func newObserver(self string, interval time.Duration, lg *slog.Logger) *observer {
	o := &observer{
		self: self, boot: time.Now().UnixNano(), interval: interval, log: lg,
		wake: make(chan struct{}, 1), table: map[string]*originState{}, alive: map[string]bool{},
		subs: map[int]chan struct{}{}, rbusy: map[string]bool{},
	}
	o.view.Store(emptyView)
	return o
}

// run publishes and expires until ctx is cancelled.
func (o *observer) run(ctx context.Context) {
	t := time.NewTicker(observeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			o.publish(now)
			o.refresh(now)
		case <-o.wake:
			o.refresh(time.Now())
		}
	}
}

func (o *observer) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// publish asks the observer and publishes a report when one is due.
func (o *observer) publish(now time.Time) {
	f := o.observe.Load()
	if f == nil {
		return
	}
	o.buf = (*f)(o.buf[:0])
	cur := o.cur[:0]
	for _, ob := range o.buf {
		cur = append(cur, pubEntry{reportEntry{
			key: backendKey(ob.Server, ob.Backend), healthy: ob.Healthy,
			conns: max(ob.Conns, 0), rx: ob.RxBps, tx: ob.TxBps,
		}, ob.Capped})
	}
	slices.SortStableFunc(cur, func(a, b pubEntry) int { return cmp.Compare(a.key, b.key) })
	cur = slices.CompactFunc(cur, func(a, b pubEntry) bool { return a.key == b.key })
	o.cur = cur
	if !o.due(now) {
		return
	}
	o.seq++
	r := &report{origin: o.self, boot: o.boot, seq: o.seq, interval: o.interval, entries: make([]reportEntry, len(cur))}
	for i, e := range cur {
		r.entries[i] = e.reportEntry
	}
	msg := encodeReportMsg(r)
	o.last, o.cur = cur, o.last
	o.lastPub, o.lastSize = now, len(msg)
	o.mu.Lock()
	o.own = &originState{rep: r, raw: msg[1:], received: now}
	o.mu.Unlock()
	o.reportsSent.Add(1)
	o.lastSeq.Store(o.seq)
	o.lastReport.Store(now.UnixNano())
	if len(msg) <= maxBroadcastReport {
		o.g.broadcast(reportBroadcastName(o.self), msg)
		if others := o.g.aliveOthers(); len(others) <= directFanout {
			for _, name := range others {
				if err := o.g.sendBestEffort(name, msg); err != nil {
					o.log.Debug("observed report not sent", "to", name, "seq", o.seq, "err", err)
				}
			}
		}
		return
	}
	o.sendReliable(msg, o.seq)
}

// due reports whether o.cur must be published now: the report interval has
// passed (less half a tick, so ticker jitter does not stretch it), the set of
// backends changed, a health verdict flipped, or a capped backend's
// connections changed.
func (o *observer) due(now time.Time) bool {
	if o.lastPub.IsZero() || now.Sub(o.lastPub) >= o.interval-observeInterval/2 {
		return true
	}
	if o.lastSize > maxBroadcastReport && now.Sub(o.lastPub) < minReliableSpacing {
		return false
	}
	if len(o.cur) != len(o.last) {
		return true
	}
	for i, c := range o.cur {
		l := o.last[i]
		if c.key != l.key || c.healthy != l.healthy || (c.capped && c.conns != l.conns) {
			return true
		}
	}
	return false
}

// sendReliable hands msg to one sender goroutine per alive member. A member
// whose previous send is still running gets the newest report when that send
// ends; reports in between are skipped.
func (o *observer) sendReliable(msg []byte, seq uint64) {
	to := o.g.aliveOthers()
	o.rmu.Lock()
	defer o.rmu.Unlock()
	if o.rclosed {
		return
	}
	o.rmsg, o.rseq = msg, seq
	for _, name := range to {
		if o.rbusy[name] {
			continue
		}
		o.rbusy[name] = true
		o.rwg.Add(1)
		go o.sendTo(name)
	}
}

func (o *observer) sendTo(name string) {
	defer o.rwg.Done()
	var sent uint64
	for {
		o.rmu.Lock()
		if o.rclosed || o.rseq == sent {
			delete(o.rbusy, name)
			o.rmu.Unlock()
			return
		}
		msg, seq := o.rmsg, o.rseq
		o.rmu.Unlock()
		if err := o.g.sendReliable(name, msg); err != nil {
			o.log.Debug("observed report not sent", "to", name, "seq", seq, "err", err)
		}
		sent = seq
	}
}

// refresh rebuilds the view when the reports that count changed: a report
// accepted, an origin expired, died or left. It also forgets the reports of
// lost members once they would have expired. It runs on every tick, so an
// expiry shows within observeInterval without any message.
func (o *observer) refresh(now time.Time) {
	counted := o.spare[:0]
	o.mu.Lock()
	for origin, s := range o.table {
		fresh := now.Sub(s.received) < s.rep.freshFor()
		switch {
		case !fresh && !o.alive[origin]:
			delete(o.table, origin)
		case fresh && o.alive[origin]:
			counted = append(counted, countedReport{rep: s.rep, received: s.received})
		}
	}
	o.mu.Unlock()
	slices.SortFunc(counted, func(a, b countedReport) int { return cmp.Compare(a.rep.origin, b.rep.origin) })
	if slices.EqualFunc(counted, o.counted, func(a, b countedReport) bool { return a.rep == b.rep }) {
		o.spare = counted
		return
	}
	o.counted, o.spare = counted, o.counted
	o.view.Store(buildView(counted))
	o.notify()
}

func (o *observer) notify() {
	o.subMu.Lock()
	defer o.subMu.Unlock()
	for _, ch := range o.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// accept merges r under the merge rule. raw is r's encoding without the type
// byte; it is copied when kept.
func (o *observer) accept(r *report, raw []byte, received time.Time) bool {
	if r.origin == o.self {
		return false
	}
	o.mu.Lock()
	if old := o.table[r.origin]; old != nil && !r.newer(old.rep) {
		o.mu.Unlock()
		return false
	}
	o.table[r.origin] = &originState{rep: r, raw: bytes.Clone(raw), received: received}
	o.mu.Unlock()
	o.reportsReceived.Add(1)
	o.poke()
	return true
}

// receive implements reportHandler.
func (o *observer) receive(b []byte) string {
	if len(b) == 0 || b[0] != msgReport {
		return "" // a later message type, or nothing
	}
	r, err := decodeReportMsg(b)
	if err != nil {
		o.log.Debug("observed report dropped", "err", err)
		return ""
	}
	if !o.accept(r, b[1:], time.Now()) {
		return ""
	}
	return r.origin
}

// localState implements reportHandler: this node's own last report and every
// other one it holds, each with its age.
func (o *observer) localState() []byte {
	now := time.Now()
	o.mu.Lock()
	items := make([]tableItem, 0, len(o.table)+1)
	if o.own != nil {
		items = append(items, tableItem{raw: o.own.raw, age: now.Sub(o.own.received)})
	}
	for _, s := range o.table {
		items = append(items, tableItem{raw: s.raw, age: now.Sub(s.received)})
	}
	o.mu.Unlock()
	return encodeTable(items)
}

// mergeState implements reportHandler. A report keeps the age it had at the
// peer, so a relayed report is no fresher than it was there.
func (o *observer) mergeState(b []byte) {
	items, err := decodeTable(b)
	if err != nil {
		o.log.Debug("observed state from push/pull dropped", "err", err)
		return
	}
	now := time.Now()
	for _, it := range items {
		o.accept(it.rep, it.raw, now.Add(-it.age))
	}
}

// memberState implements reportHandler. It runs under memberlist's lock.
func (o *observer) memberState(name string, alive bool) {
	o.mu.Lock()
	o.alive[name] = alive
	o.mu.Unlock()
	o.poke()
}

func (o *observer) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	o.subMu.Lock()
	defer o.subMu.Unlock()
	if o.closed {
		return ch, func() {}
	}
	id := o.nextSub
	o.nextSub++
	o.subs[id] = ch
	return ch, func() {
		o.subMu.Lock()
		delete(o.subs, id)
		o.subMu.Unlock()
	}
}

// reportInfo returns, per origin, the last accepted report (counted or not)
// and, under this node's ID, its own last published one.
func (o *observer) reportInfo() map[string]OriginReport {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]OriginReport, len(o.table)+1)
	for origin, s := range o.table {
		out[origin] = OriginReport{NodeID: origin, Seq: s.rep.seq, Received: s.received, Backends: len(s.rep.entries)}
	}
	if o.own != nil {
		out[o.self] = OriginReport{NodeID: o.self, Seq: o.own.rep.seq, Received: o.own.received, Backends: len(o.own.rep.entries)}
	}
	return out
}

// close ends the reliable senders and drops the subscribers (their channels
// are not closed; they simply receive nothing more). Call it after the loop
// has stopped and gossip has shut down, which fails sends still in flight.
func (o *observer) close() {
	o.rmu.Lock()
	o.rclosed = true
	o.rmu.Unlock()
	o.rwg.Wait()
	o.subMu.Lock()
	o.closed = true
	clear(o.subs)
	o.subMu.Unlock()
}

// SetObserver starts publishing what observe returns: it is called every
// 100 ms with a slice to reuse (append to dst[:0] and return it), from one
// goroutine, and must not block. A report goes out every report interval, and
// at once (within 100 ms) when a backend's health verdict flips, a capped
// backend's connections change, or the set of backends changes. A no-op
// without gossip or with a nil observe; call it once (a later call replaces
// the function).
func (n *Node) SetObserver(observe func(dst []Observation) []Observation) {
	if n.obs == nil || observe == nil {
		return
	}
	n.obs.observe.Store(&observe)
}

// Observed returns the current view of the other members' reports. Never nil;
// empty without gossip.
func (n *Node) Observed() *ObservedView {
	if n.obs == nil {
		return emptyView
	}
	return n.obs.view.Load()
}

// SubscribeObserved returns a channel that receives a value after the view
// changes (a report accepted, an origin expired, died or left; coalesced:
// re-read Observed on each value) and a cancel function, safe to call more
// than once. After Close, or without gossip, the channel never fires; it is
// never closed.
func (n *Node) SubscribeObserved() (<-chan struct{}, func()) {
	if n.obs == nil {
		return make(chan struct{}, 1), func() {}
	}
	return n.obs.subscribe()
}

// GossipStats returns this node's gossip counters; zero without gossip.
func (n *Node) GossipStats() GossipStats {
	if n.obs == nil || n.gossip == nil {
		return GossipStats{}
	}
	sent, recv := n.gossip.traffic()
	st := GossipStats{
		BytesSent: sent, BytesReceived: recv,
		ReportsSent: n.obs.reportsSent.Load(), ReportsReceived: n.obs.reportsReceived.Load(),
		Seq: n.obs.lastSeq.Load(),
	}
	if ns := n.obs.lastReport.Load(); ns != 0 {
		st.LastReport = time.Unix(0, ns)
	}
	return st
}
