package cluster

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// replayLog is a local log of n command entries (servers s1..sn) with a
// configuration entry first, as raft writes it.
func replayLog(t *testing.T, n int) *raft.InmemStore {
	t.Helper()
	logs := raft.NewInmemStore()
	entries := []*raft.Log{{Index: 1, Term: 1, Type: raft.LogConfiguration}}
	for i := 1; i <= n; i++ {
		entries = append(entries, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: enc(t, putCmd(fmt.Sprintf("s%d", i), "10.0.0.1:80"))})
	}
	if err := logs.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	return logs
}

func TestReplayLocal(t *testing.T) {
	tests := []struct {
		name     string
		recorded uint64 // the applied index recorded before the stop; 0 = none
		want     int    // servers after the replay
	}{
		{"nothing recorded: a new node applies nothing", 0, 0},
		{"everything applied before the stop", 6, 5},
		{"entries past the recorded index may be uncommitted: left to raft", 4, 3},
		{"recorded beyond the log (truncated): up to its end", 99, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := replayLog(t, 5)
			stable := raft.NewInmemStore()
			if tt.recorded != 0 {
				if err := stable.SetUint64(keyApplied, tt.recorded); err != nil {
					t.Fatal(err)
				}
			}
			f := newFSM()
			n, err := replayLocal(f, logs, stable)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.want || len(f.State().Servers) != tt.want {
				t.Fatalf("replayed %d entries, %d servers; want %d", n, len(f.State().Servers), tt.want)
			}
			// Raft then applies the committed entries again, from the
			// snapshot on: each changes the state once, so it ends as a
			// plain application of the log would.
			for i := uint64(1); i <= 6; i++ {
				var l raft.Log
				if err := logs.GetLog(i, &l); err != nil {
					t.Fatal(err)
				}
				if l.Type == raft.LogCommand {
					f.Apply(&l)
				}
			}
			plain := newFSM()
			for i := uint64(2); i <= 6; i++ {
				var l raft.Log
				_ = logs.GetLog(i, &l)
				plain.Apply(&l)
			}
			if !reflect.DeepEqual(f.State(), plain.State()) {
				t.Fatalf("replay then raft's apply: %+v\nwant %+v", f.State(), plain.State())
			}
		})
	}
}

func TestRecordApplied(t *testing.T) {
	f := newFSM()
	stable := raft.NewInmemStore()
	last, err := recordApplied(f, stable, 0)
	if err != nil || last != 0 {
		t.Fatalf("nothing applied: %d, %v", last, err)
	}
	logs := replayLog(t, 2)
	for i := uint64(2); i <= 3; i++ {
		var l raft.Log
		_ = logs.GetLog(i, &l)
		f.Apply(&l)
	}
	if last, err = recordApplied(f, stable, last); err != nil || last != 3 {
		t.Fatalf("recordApplied = %d, %v; want 3", last, err)
	}
	if got, _ := stable.GetUint64(keyApplied); got != 3 {
		t.Fatalf("stored %d, want 3", got)
	}
}

// A cluster node restarted while its peers are down serves what it had
// applied: raft alone would give it an empty state until a leader appears.
func TestRestartWithoutQuorumKeepsAppliedState(t *testing.T) {
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	n1 := openNode(t, "n1", dirs[0], true)
	waitLeader(t, n1, 5*time.Second)
	nodes := []*Node{n1}
	for i, id := range []string{"n2", "n3"} {
		n := openNode(t, id, dirs[i+1], false)
		if err := n1.AddVoter(ctx, id, n.Addr()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	var rev uint64
	for i := range 5 {
		r, err := n1.Apply(ctx, putCmd(fmt.Sprintf("s%d", i), "10.0.0.1:80"))
		if err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	eventually(t, 5*time.Second, "n2 applies every write", func() bool { return nodes[1].State().Revision >= rev })
	want := nodes[1].State()
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// n2 alone: no leader can be elected, yet its state is there at Open.
	n2, err := Open(ctx, Options{NodeID: "n2", DataDir: dirs[1], RaftBind: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	got := n2.State()
	if got.Revision != want.Revision || !reflect.DeepEqual(got.Servers, want.Servers) {
		t.Fatalf("after a restart without quorum: revision %d, %d servers; want revision %d, %d servers",
			got.Revision, len(got.Servers), want.Revision, len(want.Servers))
	}
	if id, _ := n2.Leader(); id != "" {
		t.Fatalf("a leader (%s) with one of three nodes", id)
	}
}
