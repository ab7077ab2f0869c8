package cluster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestFSMBlobs(t *testing.T) {
	big := bytes.Repeat([]byte{'x'}, MaxBlobSize)
	tests := []struct {
		name    string
		cmd     Command
		wantErr error
		changed bool
		want    map[string]string // blobs after the command
	}{
		{name: "put new", cmd: Command{Type: PutBlob, Name: "acme/b.example", Value: []byte("B")}, changed: true,
			want: map[string]string{"acme/a.example": "A", "acme/b.example": "B"}},
		{name: "put replaces", cmd: Command{Type: PutBlob, Name: "acme/a.example", Value: []byte("A2")}, changed: true,
			want: map[string]string{"acme/a.example": "A2"}},
		{name: "put same value is a no-op", cmd: Command{Type: PutBlob, Name: "acme/a.example", Value: []byte("A")},
			want: map[string]string{"acme/a.example": "A"}},
		{name: "put empty value", cmd: Command{Type: PutBlob, Name: "acme/e"}, changed: true,
			want: map[string]string{"acme/a.example": "A", "acme/e": ""}},
		{name: "put at the cap", cmd: Command{Type: PutBlob, Name: "acme/big", Value: big}, changed: true,
			want: map[string]string{"acme/a.example": "A", "acme/big": string(big)}},
		{name: "put over the cap", cmd: Command{Type: PutBlob, Name: "acme/big", Value: append(big, 'y')}, wantErr: ErrInvalidCommand,
			want: map[string]string{"acme/a.example": "A"}},
		{name: "put without key", cmd: Command{Type: PutBlob, Value: []byte("v")}, wantErr: ErrInvalidCommand,
			want: map[string]string{"acme/a.example": "A"}},
		{name: "delete", cmd: Command{Type: DeleteBlob, Name: "acme/a.example"}, changed: true,
			want: map[string]string{}},
		{name: "delete absent succeeds", cmd: Command{Type: DeleteBlob, Name: "acme/nope"},
			want: map[string]string{"acme/a.example": "A"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := seeded(t)
			if res := applyAt(f, enc(t, Command{Type: PutBlob, Name: "acme/a.example", Value: []byte("A")})); res.Err != nil {
				t.Fatal(res.Err)
			}
			before := f.State()
			beforeJSON := stateJSON(t, before)
			res := applyAt(f, enc(t, tt.cmd))
			if !errors.Is(res.Err, tt.wantErr) || (tt.wantErr == nil) != (res.Err == nil) {
				t.Fatalf("err = %v, want %v", res.Err, tt.wantErr)
			}
			after := f.State()
			if res.Err == nil && res.Revision != after.Revision {
				t.Fatalf("response revision %d, state %d", res.Revision, after.Revision)
			}
			if stateJSON(t, before) != beforeJSON {
				t.Fatal("the published state before the command was mutated")
			}
			a, b := stateJSON(t, before.withRevision(after.Revision)), stateJSON(t, after)
			if tt.changed == (a == b) {
				t.Fatalf("changed = %v, want %v", a != b, tt.changed)
			}
			got := map[string]string{}
			for k, v := range after.Blobs {
				got[k] = string(v)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("blobs %d keys, want %d", len(got), len(tt.want))
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("blob %q = %.20q, want %.20q", k, got[k], v)
				}
			}
			if len(after.Servers) != 2 || len(after.Overrides) != 1 {
				t.Fatalf("a blob command touched the servers: %+v", after)
			}
		})
	}
}

func TestBlobValueIsCopied(t *testing.T) {
	f := newFSM()
	v := []byte("value")
	next, res := apply(f.State(), 1, enc(t, Command{Type: PutBlob, Name: "k", Value: v}))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	v[0] = 'X'
	if string(next.Blobs["k"]) != "value" {
		t.Fatalf("the state shares the command's bytes: %q", next.Blobs["k"])
	}
}

func TestBlobSnapshotRoundTrip(t *testing.T) {
	src := seeded(t)
	for _, c := range []Command{
		{Type: PutBlob, Name: "acme/a.example", Value: []byte("-----BEGIN EC PRIVATE KEY-----\n\x00\xff")},
		{Type: PutBlob, Name: "acme_account+key", Value: []byte("K")},
		{Type: PutBlob, Name: "gone", Value: []byte("G")},
		{Type: DeleteBlob, Name: "gone"},
	} {
		if res := applyAt(src, enc(t, c)); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	dst := newFSM()
	if err := dst.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	b := dst.State().Blobs
	if len(b) != 2 || string(b["acme/a.example"]) != "-----BEGIN EC PRIVATE KEY-----\n\x00\xff" || string(b["acme_account+key"]) != "K" {
		t.Fatalf("restored blobs %q", b)
	}
	if stateJSON(t, dst.State()) != stateJSON(t, src.State()) {
		t.Fatal("restored state differs")
	}
}

// A snapshot written before blobs existed (no "blobs" field) restores with
// none, and blobs can be added to it.
func TestOldSnapshotHasNoBlobs(t *testing.T) {
	old := `{"v":1,"revision":7,"servers":{},"overrides":{}}`
	f := newFSM()
	if err := f.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	if f.State().Blobs == nil || len(f.State().Blobs) != 0 || f.State().Revision != 7 {
		t.Fatalf("state %+v", f.State())
	}
	if res := applyAt(f, enc(t, Command{Type: PutBlob, Name: "k", Value: []byte("v")})); res.Err != nil || string(f.State().Blobs["k"]) != "v" {
		t.Fatalf("put after restore: %+v %q", res, f.State().Blobs)
	}
	// A state without blobs encodes as before (no "blobs" key).
	if s := stateJSON(t, emptyState()); strings.Contains(s, "blobs") {
		t.Fatalf("empty state encodes blobs: %s", s)
	}
}

// Blobs written on a follower are forwarded to the leader, replicated, and
// readable on every node; an oversized blob is refused before it is sent.
func TestBlobsReplicate(t *testing.T) {
	ctx := context.Background()
	nodes := threeNodes(t)
	if _, err := nodes[1].Apply(ctx, Command{Type: PutBlob, Name: "acme/a.example", Value: []byte("cert")}); err != nil {
		t.Fatalf("put on a follower: %v", err)
	}
	if got := string(nodes[1].State().Blobs["acme/a.example"]); got != "cert" {
		t.Fatalf("the follower does not read its own write: %q", got)
	}
	for _, n := range nodes {
		eventually(t, 2*time.Second, n.ID()+" has the blob", func() bool {
			return string(n.State().Blobs["acme/a.example"]) == "cert"
		})
	}
	_, err := nodes[2].Apply(ctx, Command{Type: PutBlob, Name: "acme/huge", Value: make([]byte, MaxBlobSize+1)})
	if !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("oversized blob: %v", err)
	}
	if _, err := nodes[2].Apply(ctx, Command{Type: DeleteBlob, Name: "acme/a.example"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		eventually(t, 2*time.Second, n.ID()+" deleted the blob", func() bool {
			_, ok := n.State().Blobs["acme/a.example"]
			return !ok
		})
	}
}
