package cluster

import (
	"bytes"
	"errors"
	"hash/fnv"
	"math"
	"reflect"
	"testing"
	"time"
)

func sampleReport(origin string, n int) *report {
	r := &report{origin: origin, boot: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano(), seq: 42, interval: time.Second}
	for i := range n {
		r.entries = append(r.entries, reportEntry{key: uint64(i)*7919 + 1, healthy: i%3 != 0, conns: int64(i), rx: uint64(i) * 1000, tx: uint64(i) << 20})
	}
	return r
}

func TestBackendKeyIsFNV1a(t *testing.T) {
	for _, c := range []struct{ server, backend string }{{"web", "10.0.0.1:80"}, {"", ""}, {"a", "b"}, {"ab", ""}} {
		h := fnv.New64a()
		h.Write([]byte(c.server + "\x00" + c.backend))
		if got, want := backendKey(c.server, c.backend), h.Sum64(); got != want {
			t.Errorf("backendKey(%q, %q) = %x, want %x", c.server, c.backend, got, want)
		}
	}
	if backendKey("ab", "") == backendKey("a", "b") {
		t.Fatal("the separator does not separate")
	}
	if a := testing.AllocsPerRun(100, func() { _ = backendKey("web", "10.0.0.1:80") }); a != 0 {
		t.Fatalf("backendKey allocates %v times", a)
	}
}

func TestReportRoundTrip(t *testing.T) {
	big := sampleReport("n1", 1000)
	big.entries[999].conns = math.MaxInt64
	big.entries[998].rx, big.entries[998].tx = math.MaxUint64, math.MaxUint64
	for _, tc := range []struct {
		name string
		r    *report
	}{
		{"empty", &report{origin: "n1", boot: 1, seq: 1, interval: 5 * time.Second}},
		{"one", sampleReport("node-with-a-longer-id", 1)},
		{"ten", sampleReport("n2", 10)},
		{"thousand, extremes", big},
		{"negative boot", &report{origin: "x", boot: -5, seq: math.MaxUint64, interval: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := encodeReportMsg(tc.r)
			if msg[0] != msgReport {
				t.Fatalf("type byte %d", msg[0])
			}
			got, err := decodeReportMsg(msg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.r.entries == nil {
				tc.r.entries = []reportEntry{}
			}
			if !reflect.DeepEqual(got, tc.r) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.r)
			}
		})
	}
	// Size: about 12–20 bytes per backend, so ~60 backends fit a broadcast.
	t.Logf("encoded sizes: 10 backends %d B, 100 %d B, 1000 %d B",
		len(encodeReportMsg(sampleReport("n1", 10))), len(encodeReportMsg(sampleReport("n1", 100))), len(encodeReportMsg(big)))
}

func TestReportDecodeRejects(t *testing.T) {
	good := encodeReportMsg(sampleReport("n1", 3))
	swapped := sampleReport("n1", 3)
	swapped.entries[0], swapped.entries[1] = swapped.entries[1], swapped.entries[0]
	dup := sampleReport("n1", 3)
	dup.entries[1].key = dup.entries[0].key
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"type only", []byte{msgReport}},
		{"wrong type", append([]byte{msgTable}, good[1:]...)},
		{"unknown version", append([]byte{msgReport, 9}, good[2:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(bytes.Clone(good), 0)},
		{"empty origin", []byte{msgReport, reportVersion, 0}},
		{"keys out of order", encodeReportMsg(swapped)},
		{"duplicate key", encodeReportMsg(dup)},
		{"count beyond the bytes", func() []byte {
			r := &report{origin: "n1", boot: 1, seq: 1, interval: time.Second}
			b := encodeReportMsg(r)
			b[len(b)-1] = 200 // count 200 with no entries
			return b
		}()},
		{"overlong uvarint", []byte{msgReport, reportVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := decodeReportMsg(tc.msg); !errors.Is(err, errCorrupt) {
				t.Fatalf("decoded %+v, %v; want errCorrupt", r, err)
			}
		})
	}
	// A report claiming a huge interval is kept, its freshness capped.
	r := sampleReport("n1", 1)
	r.interval = 1000 * time.Hour
	got, err := decodeReportMsg(encodeReportMsg(r))
	if err != nil || got.interval != maxReportInterval || got.freshFor() != 3*maxReportInterval {
		t.Fatalf("huge interval: %+v, %v", got, err)
	}
	if (&report{}).freshFor() != 3*minReportInterval {
		t.Fatal("a zero interval is not raised to the minimum")
	}
}

func TestTableRoundTrip(t *testing.T) {
	var items []tableItem
	for i, id := range []string{"n1", "n2", "n3"} {
		r := sampleReport(id, 10*i)
		items = append(items, tableItem{rep: r, raw: encodeReportMsg(r)[1:], age: time.Duration(i) * 1500 * time.Millisecond})
	}
	got, err := decodeTable(encodeTable(items))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(items) {
		t.Fatalf("%d items, want %d", len(got), len(items))
	}
	for i := range items {
		if items[i].rep.entries == nil {
			items[i].rep.entries = []reportEntry{}
		}
		if !reflect.DeepEqual(got[i].rep, items[i].rep) || !bytes.Equal(got[i].raw, items[i].raw) || got[i].age != items[i].age {
			t.Fatalf("item %d: got %+v, want %+v", i, got[i], items[i])
		}
	}
	if got, err := decodeTable(encodeTable(nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty table: %v, %v", got, err)
	}
	// One corrupt item fails the table.
	bad := encodeTable(items)
	bad[len(bad)-1] ^= 0xff
	if _, err := decodeTable(bad[:len(bad)-2]); err == nil {
		t.Fatal("a truncated table decoded")
	}
	if _, err := decodeTable(append(encodeTable(items), 7)); err == nil {
		t.Fatal("a table with a trailing byte decoded")
	}
}

// FuzzDecodeReport: no input panics, and whatever decodes re-encodes to the
// same bytes (the encoding is canonical but for unknown flag bits and an
// interval beyond the cap).
func FuzzDecodeReport(f *testing.F) {
	f.Add(encodeReportMsg(sampleReport("n1", 0)))
	f.Add(encodeReportMsg(sampleReport("n1", 5)))
	f.Add([]byte{msgReport, reportVersion, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeReportMsg(b)
		if err != nil {
			return
		}
		again, err := decodeReportMsg(encodeReportMsg(r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-encoding %+v: %+v, %v", r, again, err)
		}
	})
}

// FuzzDecodeTable: no input panics.
func FuzzDecodeTable(f *testing.F) {
	r := sampleReport("n1", 3)
	f.Add(encodeTable([]tableItem{{rep: r, raw: encodeReportMsg(r)[1:], age: time.Second}}))
	f.Add([]byte{msgTable, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		items, err := decodeTable(b)
		if err != nil {
			return
		}
		for _, it := range items {
			if it.rep == nil || it.age < 0 {
				t.Fatalf("decoded item %+v", it)
			}
		}
	})
}
