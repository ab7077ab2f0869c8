package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func srv(bind string, backends ...string) *config.Server {
	return &config.Server{
		Bind: bind, Protocol: "tcp", Balance: "roundrobin",
		Discovery: &config.Discovery{Kind: "static", StaticList: backends},
	}
}

func enc(t testing.TB, c Command) []byte {
	t.Helper()
	if c.Version == 0 {
		c.Version = CommandVersion
	}
	if c.Time.IsZero() {
		c.Time = t0
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// applyAt applies data at the next log index and returns the result.
func applyAt(f *fsm, data []byte) applyResult {
	idx := f.State().Revision + 1
	return f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data}).(applyResult)
}

func stateJSON(t testing.TB, s *State) string {
	t.Helper()
	var b bytes.Buffer
	if err := encodeSnapshot(&b, s); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestFSMRules(t *testing.T) {
	put := func(name, origin string, s *config.Server) Command {
		return Command{Type: PutServer, Name: name, Origin: origin, Server: s}
	}
	// Each case starts from the same seeded state:
	//   rev 1: put "web" (api), rev 2: put "db" (config), rev 3: drain web/10.0.0.1:80.
	tests := []struct {
		name    string
		cmd     Command
		raw     []byte // instead of cmd
		wantErr error
		wantRev uint64 // the response's revision
		changed bool   // the state's content changed
		check   func(t *testing.T, s *State)
	}{
		{name: "put new", cmd: put("cache", OriginAPI, srv(":3", "a:1")), wantRev: 4, changed: true,
			check: func(t *testing.T, s *State) {
				e := s.Servers["cache"]
				if e.Revision != 4 || e.Origin != OriginAPI || !e.Updated.Equal(t0) || e.Server.Bind != ":3" {
					t.Fatalf("entry %+v", e)
				}
			}},
		{name: "put update api", cmd: put("web", OriginAPI, srv(":1", "b:1")), wantRev: 4, changed: true,
			check: func(t *testing.T, s *State) {
				if s.Servers["web"].Revision != 4 || s.Servers["web"].Server.Discovery.StaticList[0] != "b:1" {
					t.Fatalf("web %+v", s.Servers["web"])
				}
			}},
		{name: "put equal is a no-op", cmd: put("web", OriginAPI, srv(":1", "a:1")), wantRev: 1},
		{name: "put equal with empty list vs nil", cmd: put("db", OriginConfig, func() *config.Server {
			s := srv(":2", "d:1")
			s.Access = &config.Access{Default: "allow", Rules: []string{}}
			return s
		}()), wantRev: 4, changed: true},
		{name: "config put equal to api entry is a no-op", cmd: put("web", OriginConfig, srv(":1", "a:1")), wantRev: 1},
		{name: "config never overwrites api", cmd: put("web", OriginConfig, srv(":9", "z:1")), wantErr: ErrOriginConflict, wantRev: 1},
		{name: "url never overwrites api", cmd: put("web", OriginURL, srv(":9", "z:1")), wantErr: ErrOriginConflict, wantRev: 1},
		{name: "consul source updates config", cmd: put("db", OriginConsul, srv(":2", "e:1")), wantRev: 4, changed: true,
			check: func(t *testing.T, s *State) {
				if s.Servers["db"].Origin != OriginConsul {
					t.Fatalf("db origin %q", s.Servers["db"].Origin)
				}
			}},
		{name: "unknown origin", cmd: put("db", "file", srv(":2", "e:1")), wantErr: ErrInvalidCommand},
		{name: "api overwrites config", cmd: put("db", OriginAPI, srv(":2", "e:1")), wantRev: 4, changed: true,
			check: func(t *testing.T, s *State) {
				if s.Servers["db"].Origin != OriginAPI {
					t.Fatalf("db origin %q", s.Servers["db"].Origin)
				}
			}},
		{name: "config updates config", cmd: put("db", OriginConfig, srv(":2", "e:1")), wantRev: 4, changed: true},
		{name: "if absent on existing", cmd: Command{Type: PutServer, Name: "web", Origin: OriginAPI, Server: srv(":5"), IfAbsent: true}, wantErr: ErrExists},
		{name: "if absent on new", cmd: Command{Type: PutServer, Name: "new", Origin: OriginAPI, Server: srv(":5"), IfAbsent: true}, wantRev: 4, changed: true},
		{name: "if revision matches", cmd: Command{Type: PutServer, Name: "web", Origin: OriginAPI, Server: srv(":5"), IfRevision: 1}, wantRev: 4, changed: true},
		{name: "if revision stale", cmd: Command{Type: PutServer, Name: "web", Origin: OriginAPI, Server: srv(":5"), IfRevision: 2}, wantErr: ErrStale},
		{name: "if revision on absent", cmd: Command{Type: PutServer, Name: "nope", Origin: OriginAPI, Server: srv(":5"), IfRevision: 1}, wantErr: ErrStale},
		{name: "delete", cmd: Command{Type: DeleteServer, Name: "web"}, wantRev: 4, changed: true,
			check: func(t *testing.T, s *State) {
				if _, ok := s.Servers["web"]; ok {
					t.Fatal("web still there")
				}
				if _, ok := s.Overrides["web"]; ok {
					t.Fatal("web's overrides still there")
				}
			}},
		{name: "delete unknown", cmd: Command{Type: DeleteServer, Name: "nope"}, wantErr: ErrNotFound},
		{name: "delete if revision stale", cmd: Command{Type: DeleteServer, Name: "db", IfRevision: 1}, wantErr: ErrStale},
		{name: "delete if revision matches", cmd: Command{Type: DeleteServer, Name: "db", IfRevision: 2}, wantRev: 4, changed: true},
		{name: "disable", cmd: Command{Type: SetOverride, Name: "db", Backend: "d:1", Action: ActionDisable}, wantRev: 4, changed: true,
			check: func(t *testing.T, s *State) {
				if o := s.Overrides["db"]["d:1"]; o.Action != ActionDisable || o.Revision != 4 {
					t.Fatalf("override %+v", o)
				}
			}},
		{name: "drain changes to disable", cmd: Command{Type: SetOverride, Name: "web", Backend: "10.0.0.1:80", Action: ActionDisable}, wantRev: 4, changed: true},
		{name: "same override is a no-op", cmd: Command{Type: SetOverride, Name: "web", Backend: "10.0.0.1:80", Action: ActionDrain}, wantRev: 3},
		{name: "override unknown server", cmd: Command{Type: SetOverride, Name: "nope", Backend: "a:1", Action: ActionDrain}, wantErr: ErrNotFound},
		{name: "override bad action", cmd: Command{Type: SetOverride, Name: "web", Backend: "a:1", Action: "weight"}, wantErr: ErrInvalidCommand},
		{name: "override bad backend", cmd: Command{Type: SetOverride, Name: "web", Backend: "a", Action: ActionDrain}, wantErr: ErrInvalidCommand},
		{name: "enable", cmd: Command{Type: ClearOverride, Name: "web", Backend: "10.0.0.1:80"}, wantRev: 4, changed: true,
			check: func(t *testing.T, s *State) {
				if _, ok := s.Overrides["web"]; ok {
					t.Fatalf("overrides %+v", s.Overrides)
				}
			}},
		{name: "enable an enabled backend is a no-op", cmd: Command{Type: ClearOverride, Name: "web", Backend: "10.0.0.2:80"}, wantRev: 1},
		{name: "enable on unknown server", cmd: Command{Type: ClearOverride, Name: "nope", Backend: "a:1"}, wantErr: ErrNotFound},
		{name: "unknown type", cmd: Command{Type: "set_weight", Name: "web"}, wantErr: ErrInvalidCommand},
		{name: "unknown version", cmd: Command{Version: 2, Type: DeleteServer, Name: "web"}, wantErr: ErrInvalidCommand},
		{name: "empty name", cmd: Command{Type: DeleteServer}, wantErr: ErrInvalidCommand},
		{name: "put without server", cmd: Command{Type: PutServer, Name: "x", Origin: OriginAPI}, wantErr: ErrInvalidCommand},
		{name: "put unknown origin", cmd: put("x", "etcd", srv(":1")), wantErr: ErrInvalidCommand},
		{name: "garbage", raw: []byte("\x00\xffnot json"), wantErr: ErrInvalidCommand},
		{name: "empty entry", raw: []byte{}, wantErr: ErrInvalidCommand},
		{name: "json null", raw: []byte("null"), wantErr: ErrInvalidCommand},
		{name: "wrong field type", raw: []byte(`{"v":1,"type":"put_server","name":"x","origin":"api","server":[1]}`), wantErr: ErrInvalidCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seeded(t)
			before := f.State()
			beforeJSON := stateJSON(t, before)
			notify, cancel := f.Subscribe()
			defer cancel()
			data := tt.raw
			if data == nil {
				data = enc(t, tt.cmd)
			}
			res := applyAt(f, data)
			if !errors.Is(res.Err, tt.wantErr) || (tt.wantErr == nil) != (res.Err == nil) {
				t.Fatalf("err = %v, want %v", res.Err, tt.wantErr)
			}
			if res.Revision != tt.wantRev {
				t.Fatalf("response revision = %d, want %d", res.Revision, tt.wantRev)
			}
			after := f.State()
			if after.Revision != 4 {
				t.Fatalf("state revision = %d, want 4 (the entry's index, whatever the outcome)", after.Revision)
			}
			if got := stateJSON(t, before); got != beforeJSON {
				t.Fatal("the published state before the command was mutated")
			}
			a, b := stateJSON(t, before.withRevision(4)), stateJSON(t, after)
			if tt.changed == (a == b) {
				t.Fatalf("changed = %v, want %v\nbefore %s\nafter  %s", a != b, tt.changed, a, b)
			}
			select {
			case <-notify:
			default:
				t.Fatal("no notification")
			}
			if tt.check != nil {
				tt.check(t, after)
			}
		})
	}
}

func seeded(t testing.TB) *fsm {
	t.Helper()
	f := newFSM()
	for i, c := range []Command{
		{Type: PutServer, Name: "web", Origin: OriginAPI, Server: srv(":1", "a:1")},
		{Type: PutServer, Name: "db", Origin: OriginConfig, Server: srv(":2", "d:1")},
		{Type: SetOverride, Name: "web", Backend: "10.0.0.1:80", Action: ActionDrain},
	} {
		if res := applyAt(f, enc(t, c)); res.Err != nil || res.Revision != uint64(i+1) {
			t.Fatalf("seed %d: %+v", i, res)
		}
	}
	return f
}

func TestSubscribeCoalescesAndNeverBlocks(t *testing.T) {
	f := newFSM()
	ch, cancel := f.Subscribe()
	for i := 0; i < 10; i++ {
		applyAt(f, enc(t, Command{Type: PutServer, Name: fmt.Sprint("s", i), Origin: OriginAPI, Server: srv(":1")}))
	}
	<-ch
	select {
	case <-ch:
		t.Fatal("notifications did not coalesce")
	default:
	}
	cancel()
	cancel()
	applyAt(f, enc(t, Command{Type: DeleteServer, Name: "s1"}))
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

// randomLog builds a deterministic pseudo-random sequence of commands, valid and
// not, over a few names so that the rules collide.
func randomLog(t testing.TB, seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	names := []string{"a", "b", "c"}
	backends := []string{"h:1", "h:2"}
	var out [][]byte
	for i := 0; i < n; i++ {
		name := names[r.IntN(len(names))]
		var c Command
		switch r.IntN(8) {
		case 0, 1:
			origin := OriginAPI
			if r.IntN(2) == 0 {
				origin = OriginConfig
			}
			c = Command{Type: PutServer, Name: name, Origin: origin, Server: srv(fmt.Sprint(":", r.IntN(3)), backends[r.IntN(2)]),
				IfAbsent: r.IntN(4) == 0}
			if r.IntN(4) == 0 {
				c.IfRevision = uint64(r.IntN(i + 2))
			}
		case 2:
			c = Command{Type: DeleteServer, Name: name}
		case 3:
			c = Command{Type: SetOverride, Name: name, Backend: backends[r.IntN(2)], Action: []string{ActionDrain, ActionDisable, "x"}[r.IntN(3)]}
		case 4:
			c = Command{Type: ClearOverride, Name: name, Backend: backends[r.IntN(2)]}
		case 5:
			out = append(out, []byte(fmt.Sprint("garbage", r.Int())))
			continue
		case 6:
			c = Command{Type: PutBlob, Name: "blob-" + name, Value: []byte(fmt.Sprint(r.IntN(3)))}
		case 7:
			c = Command{Type: DeleteBlob, Name: "blob-" + name}
		}
		c.Time = t0.Add(time.Duration(i) * time.Second)
		out = append(out, enc(t, c))
	}
	return out
}

func TestFSMDeterministic(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		log := randomLog(t, seed, 300)
		a, b := newFSM(), newFSM()
		for _, e := range log {
			ra, rb := applyAt(a, e), applyAt(b, e)
			if fmt.Sprint(ra) != fmt.Sprint(rb) {
				t.Fatalf("seed %d: responses differ: %v vs %v", seed, ra, rb)
			}
		}
		sa, sb := stateJSON(t, a.State()), stateJSON(t, b.State())
		if sa != sb {
			t.Fatalf("seed %d: states differ\n%s\n%s", seed, sa, sb)
		}
		if a.State().Revision != uint64(len(log)) {
			t.Fatalf("revision %d, want %d", a.State().Revision, len(log))
		}
		if len(a.State().Servers) == 0 {
			t.Fatalf("seed %d: the random log left no server; the test exercises too little", seed)
		}
	}
}

type memSink struct {
	bytes.Buffer
	cancelled, closed bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := newFSM()
	for _, e := range randomLog(t, 42, 200) {
		applyAt(src, e)
	}
	want := stateJSON(t, src.State())

	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Applies after Snapshot must not leak into it.
	applyAt(src, enc(t, Command{Type: PutServer, Name: "late", Origin: OriginAPI, Server: srv(":7")}))
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed || sink.cancelled {
		t.Fatalf("persist: %v closed=%v cancelled=%v", err, sink.closed, sink.cancelled)
	}
	snap.Release()

	dst := newFSM()
	applyAt(dst, enc(t, Command{Type: PutServer, Name: "stale", Origin: OriginAPI, Server: srv(":8")}))
	ch, cancel := dst.Subscribe()
	defer cancel()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := stateJSON(t, dst.State()); got != want {
		t.Fatalf("restored state differs\n got %s\nwant %s", got, want)
	}
	if _, ok := dst.State().Servers["stale"]; ok {
		t.Fatal("restore kept the previous state")
	}
	select {
	case <-ch:
	default:
		t.Fatal("restore did not notify")
	}
	// The restored FSM continues exactly like the source.
	applyAt(dst, enc(t, Command{Type: PutServer, Name: "late", Origin: OriginAPI, Server: srv(":7")}))
	next := enc(t, Command{Type: DeleteServer, Name: "a"})
	if ra, rb := applyAt(src, next), applyAt(dst, next); fmt.Sprint(ra) != fmt.Sprint(rb) {
		t.Fatalf("after restore: %v vs %v", ra, rb)
	}

	for _, bad := range []string{"", "garbage", `{"v":99,"revision":1}`} {
		if err := newFSM().Restore(io.NopCloser(bytes.NewReader([]byte(bad)))); err == nil {
			t.Fatalf("restore of %q succeeded", bad)
		}
	}
}

func TestSnapshotOfEmptyState(t *testing.T) {
	var b bytes.Buffer
	if err := encodeSnapshot(&b, emptyState()); err != nil {
		t.Fatal(err)
	}
	s, err := decodeSnapshot(&b)
	if err != nil || s.Revision != 0 || s.Servers == nil || s.Overrides == nil {
		t.Fatalf("%+v %v", s, err)
	}
}

func FuzzFSMApply(f *testing.F) {
	for _, e := range randomLog(f, 7, 40) {
		f.Add(e)
	}
	f.Add([]byte(`{"v":1,"type":"put_server","name":"a","origin":"api","server":{"bind":1}}`))
	f.Add([]byte(`{"v":1,"type":"set_override","name":"web","backend":"[::1]:80","action":"drain"}`))
	f.Add([]byte(`{"v":1,"type":"put_blob","name":"acme/a.example","value":"AAEC"}`))
	f.Add([]byte(`{"v":1,"type":"delete_blob","name":"acme/a.example"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := seeded(t)
		before := fs.State()
		beforeJSON := stateJSON(t, before)
		res := applyAt(fs, data)
		after := fs.State()
		if after.Revision != before.Revision+1 {
			t.Fatalf("revision %d after %d", after.Revision, before.Revision)
		}
		if stateJSON(t, before) != beforeJSON {
			t.Fatal("published state mutated")
		}
		if res.Err != nil && stateJSON(t, before.withRevision(after.Revision)) != stateJSON(t, after) {
			t.Fatalf("state changed on error %v", res.Err)
		}
		// Whatever was applied must survive a snapshot round trip.
		var b bytes.Buffer
		if err := encodeSnapshot(&b, after); err != nil {
			t.Fatal(err)
		}
		s, err := decodeSnapshot(bytes.NewReader(b.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if stateJSON(t, s) != b.String() {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}
