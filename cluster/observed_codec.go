package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Gossip user messages start with a type byte, so that later message types
// can share NotifyMsg (which memberlist calls for broadcasts and for
// SendReliable alike).
const (
	msgReport byte = 1 // one origin's report
	msgTable  byte = 2 // every report a node holds (LocalState, push/pull)
)

// reportVersion is the version of the report encoding; a node drops reports of
// a version it does not know.
const reportVersion = 1

// Limits that keep a hostile or corrupt message from costing much.
const (
	maxOriginLen     = 255
	minEntryLen      = 8 + 1 + 1 + 1 + 1 // key, flags, three one-byte uvarints
	maxReportEntries = 1 << 20
	maxTableReports  = 1 << 12
)

// Report interval bounds for freshness: a report may claim any interval, but
// freshness is computed from the clamped value.
const (
	minReportInterval = 100 * time.Millisecond
	maxReportInterval = time.Hour
)

const flagHealthy = 1 << 0

var errCorrupt = errors.New("corrupt report")

// report is one origin's full snapshot of what it observes. Immutable once
// built or decoded.
type report struct {
	origin   string
	boot     int64 // unix ns when the origin opened its node
	seq      uint64
	interval time.Duration // the origin's report interval, whole milliseconds
	entries  []reportEntry // sorted by key, no duplicates
}

type reportEntry struct {
	key     uint64 // backendKey(server, backend)
	healthy bool
	conns   int64 // never negative
	rx, tx  uint64
}

// newer reports whether r replaces old under the merge rule: a newer boot, or
// the same boot and a higher sequence number.
func (r *report) newer(old *report) bool {
	if old == nil {
		return true
	}
	if r.boot != old.boot {
		return r.boot > old.boot
	}
	return r.seq > old.seq
}

// freshFor is how long the report counts after it arrived: three of the
// origin's own intervals.
func (r *report) freshFor() time.Duration {
	return 3 * min(max(r.interval, minReportInterval), maxReportInterval)
}

// appendReport appends the encoding of r, without the message type byte:
//
//	version u8 | origin len uvarint, bytes | boot u64 BE | seq uvarint |
//	interval ms uvarint | count uvarint | count × (key u64 BE | flags u8 |
//	conns uvarint | rx uvarint | tx uvarint)
func appendReport(b []byte, r *report) []byte {
	b = append(b, reportVersion)
	b = binary.AppendUvarint(b, uint64(len(r.origin)))
	b = append(b, r.origin...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.boot))
	b = binary.AppendUvarint(b, r.seq)
	b = binary.AppendUvarint(b, uint64(r.interval/time.Millisecond))
	b = binary.AppendUvarint(b, uint64(len(r.entries)))
	for _, e := range r.entries {
		b = binary.BigEndian.AppendUint64(b, e.key)
		var flags byte
		if e.healthy {
			flags |= flagHealthy
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(max(e.conns, 0)))
		b = binary.AppendUvarint(b, e.rx)
		b = binary.AppendUvarint(b, e.tx)
	}
	return b
}

// encodeReportMsg is r as a gossip message (type byte first).
func encodeReportMsg(r *report) []byte {
	b := make([]byte, 1, 32+len(r.origin)+len(r.entries)*14)
	b[0] = msgReport
	return appendReport(b, r)
}

// decoder reads a message; every read is bounds-checked and a failed read
// makes every later one fail too.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errCorrupt, what)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) u64(what string) uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes(n uint64, what string) []byte {
	if d.err != nil || uint64(len(d.b)) < n {
		d.fail(what)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// report decodes one report (after the type byte) and leaves the rest of the
// buffer. Everything kept is copied out of the buffer.
func (d *decoder) report() *report {
	if v := d.byte("version"); d.err == nil && v != reportVersion {
		d.err = fmt.Errorf("%w: version %d", errCorrupt, v)
	}
	originLen := d.uvarint("origin length")
	if d.err == nil && (originLen == 0 || originLen > maxOriginLen) {
		d.fail("origin length")
	}
	origin := d.bytes(originLen, "origin")
	r := &report{origin: string(origin)}
	r.boot = int64(d.u64("boot"))
	r.seq = d.uvarint("seq")
	ms := d.uvarint("interval")
	count := d.uvarint("count")
	if d.err != nil {
		return nil
	}
	if ms > uint64(maxReportInterval/time.Millisecond) {
		ms = uint64(maxReportInterval / time.Millisecond)
	}
	r.interval = time.Duration(ms) * time.Millisecond
	if count > maxReportEntries || count > uint64(len(d.b)/minEntryLen) {
		d.fail("count")
		return nil
	}
	r.entries = make([]reportEntry, count)
	for i := range r.entries {
		e := &r.entries[i]
		e.key = d.u64("key")
		e.healthy = d.byte("flags")&flagHealthy != 0 // unknown flags are ignored
		conns := d.uvarint("conns")
		e.rx = d.uvarint("rx")
		e.tx = d.uvarint("tx")
		if d.err != nil {
			return nil
		}
		if conns > math.MaxInt64 {
			d.fail("conns")
			return nil
		}
		e.conns = int64(conns)
		if i > 0 && e.key <= r.entries[i-1].key {
			d.fail("keys not strictly increasing")
			return nil
		}
	}
	return r
}

// decodeReportMsg decodes a whole msgReport message.
func decodeReportMsg(b []byte) (*report, error) {
	d := decoder{b: b}
	if t := d.byte("type"); d.err == nil && t != msgReport {
		return nil, fmt.Errorf("%w: message type %d", errCorrupt, t)
	}
	r := d.report()
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

// tableItem is one report of a table with its age at the holder.
type tableItem struct {
	rep *report
	raw []byte        // the report's encoding (without type byte); shares the table's buffer
	age time.Duration // how long before encoding the holder received (or published) it
}

// encodeTable encodes items as a msgTable message:
//
//	type u8 | count uvarint | count × (age ms uvarint | len uvarint | report)
func encodeTable(items []tableItem) []byte {
	n := 8
	for _, it := range items {
		n += 16 + len(it.raw)
	}
	b := make([]byte, 0, n)
	b = append(b, msgTable)
	b = binary.AppendUvarint(b, uint64(len(items)))
	for _, it := range items {
		b = binary.AppendUvarint(b, uint64(max(it.age, 0)/time.Millisecond))
		b = binary.AppendUvarint(b, uint64(len(it.raw)))
		b = append(b, it.raw...)
	}
	return b
}

// decodeTable decodes a msgTable message. A corrupt item fails the whole table.
func decodeTable(b []byte) ([]tableItem, error) {
	d := decoder{b: b}
	if t := d.byte("type"); d.err == nil && t != msgTable {
		return nil, fmt.Errorf("%w: message type %d", errCorrupt, t)
	}
	count := d.uvarint("table count")
	if d.err == nil && (count > maxTableReports || count > uint64(len(d.b)/2)) {
		d.fail("table count")
	}
	if d.err != nil {
		return nil, d.err
	}
	items := make([]tableItem, 0, count)
	for range count {
		ageMs := d.uvarint("age")
		raw := d.bytes(d.uvarint("report length"), "report")
		if d.err != nil {
			return nil, d.err
		}
		rd := decoder{b: raw}
		r := rd.report()
		if rd.err == nil && len(rd.b) != 0 {
			rd.fail("trailing bytes in table item")
		}
		if rd.err != nil {
			return nil, rd.err
		}
		age := maxReportInterval
		if ageMs < uint64(maxReportInterval/time.Millisecond) {
			age = time.Duration(ageMs) * time.Millisecond
		}
		items = append(items, tableItem{rep: r, raw: raw, age: age})
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: trailing bytes", errCorrupt)
	}
	return items, nil
}
