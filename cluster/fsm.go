package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// applyResult is what fsm.Apply returns for a command entry; it reaches the
// proposer through ApplyFuture.Response.
type applyResult struct {
	Revision uint64
	Err      error
}

// fsm applies commands to an in-memory State. Raft calls Apply, Snapshot and
// Restore from one goroutine, the start-up replay calls Apply before raft has
// anything to apply; State and Subscribe may be called from any.
//
// Apply has no side effects beyond swapping the state pointer and a non-blocking
// notify: it runs on every node and again on every restart (raft replays the log
// after the latest snapshot), so anything else would happen twice.
type fsm struct {
	state atomic.Pointer[State]
	// applyMu serialises Apply and Restore: besides raft's FSM goroutine, the
	// replay of the local log at start (replayLocal) applies entries.
	applyMu sync.Mutex

	mu     sync.Mutex
	nextID int
	subs   map[int]chan struct{}
}

func newFSM() *fsm {
	f := &fsm{subs: map[int]chan struct{}{}}
	f.state.Store(emptyState())
	return f
}

// State returns the current applied state (immutable).
func (f *fsm) State() *State { return f.state.Load() }

// Subscribe returns a channel that receives a value after the state changes.
// Notifications coalesce: a slow reader sees one value for many changes and must
// read State() again. cancel unsubscribes; it is safe to call more than once.
func (f *fsm) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	id := f.nextID
	f.nextID++
	f.subs[id] = ch
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}
}

func (f *fsm) publish(s *State) {
	f.state.Store(s)
	f.mu.Lock()
	for _, ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
}

// Apply implements raft.FSM. It never panics: an entry that does not decode or
// validate, or that a rule refuses, yields an applyResult with Err and leaves the
// state as it was but for its Revision, which always becomes the entry's index.
//
// An entry at or below the state's revision was applied already, by the replay
// of the local log at start, and is skipped: raft applies it again once it
// learns the commit index, and every entry must change the state once.
func (f *fsm) Apply(l *raft.Log) any {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	cur := f.state.Load()
	if cur.Revision != 0 && l.Index <= cur.Revision {
		return applyResult{Revision: cur.Revision}
	}
	next, res := apply(cur, l.Index, l.Data)
	f.publish(next)
	return res
}

// apply is the pure transition function: the same (state, index, data) always
// gives the same result.
func apply(cur *State, index uint64, data []byte) (*State, applyResult) {
	c, err := decodeCommand(data)
	if err != nil {
		return cur.withRevision(index), applyResult{Err: err}
	}
	switch c.Type {
	case PutServer:
		return applyPut(cur, index, c)
	case DeleteServer:
		return applyDelete(cur, index, c)
	case SetOverride:
		return applySetOverride(cur, index, c)
	case ClearOverride:
		return applyClearOverride(cur, index, c)
	case PutBlob:
		return applyPutBlob(cur, index, c)
	case DeleteBlob:
		return applyDeleteBlob(cur, index, c)
	case PutDiscovered:
		return applyPutDiscovered(cur, index, c)
	}
	// Unreachable after Validate; kept so a new type added there cannot panic here.
	return cur.withRevision(index), applyResult{Err: fmt.Errorf("%w: unknown type %q", ErrInvalidCommand, c.Type)}
}

func refuse(cur *State, index uint64, err error) (*State, applyResult) {
	return cur.withRevision(index), applyResult{Err: err}
}

func applyPut(cur *State, index uint64, c Command) (*State, applyResult) {
	old, exists := cur.Servers[c.Name]
	switch {
	case c.IfAbsent && exists:
		return refuse(cur, index, ErrExists)
	case c.IfRevision != 0 && (!exists || old.Revision != c.IfRevision):
		return refuse(cur, index, ErrStale)
	case exists && old.Server.Equal(*c.Server):
		// Idempotent: config upserts at every start and reload, and retried
		// writes, leave the server's revision (and origin) alone. Checked before
		// the origin rule, so a config file that agrees with an API change is
		// not reported as a conflict at every reload.
		return cur.withRevision(index), applyResult{Revision: old.Revision}
	case exists && IsSourceOrigin(c.Origin) && old.Origin == OriginAPI:
		return cur.withRevision(index), applyResult{Revision: old.Revision, Err: ErrOriginConflict}
	}
	next := cur.withServers(index)
	next.Servers[c.Name] = ServerEntry{Server: c.Server.Clone(), Origin: c.Origin, Revision: index, Updated: c.Time}
	return next, applyResult{Revision: index}
}

func applyDelete(cur *State, index uint64, c Command) (*State, applyResult) {
	old, exists := cur.Servers[c.Name]
	if !exists {
		return refuse(cur, index, ErrNotFound)
	}
	if c.IfRevision != 0 && old.Revision != c.IfRevision {
		return refuse(cur, index, ErrStale)
	}
	next := cur.withServers(index)
	delete(next.Servers, c.Name)
	if _, ok := cur.Overrides[c.Name]; ok {
		next.Overrides = maps.Clone(cur.Overrides)
		delete(next.Overrides, c.Name)
	}
	if _, ok := cur.Discovered[c.Name]; ok {
		next.Discovered = maps.Clone(cur.Discovered)
		delete(next.Discovered, c.Name)
	}
	return next, applyResult{Revision: index}
}

func applySetOverride(cur *State, index uint64, c Command) (*State, applyResult) {
	if _, exists := cur.Servers[c.Name]; !exists {
		return refuse(cur, index, ErrNotFound)
	}
	if o, ok := cur.Overrides[c.Name][c.Backend]; ok && o.Action == c.Action {
		return cur.withRevision(index), applyResult{Revision: o.Revision}
	}
	next := cur.withOverrides(index)
	inner := maps.Clone(cur.Overrides[c.Name])
	if inner == nil {
		inner = map[string]Override{}
	}
	inner[c.Backend] = Override{Action: c.Action, Revision: index, Updated: c.Time}
	next.Overrides[c.Name] = inner
	return next, applyResult{Revision: index}
}

func applyClearOverride(cur *State, index uint64, c Command) (*State, applyResult) {
	srv, exists := cur.Servers[c.Name]
	if !exists {
		return refuse(cur, index, ErrNotFound)
	}
	if _, ok := cur.Overrides[c.Name][c.Backend]; !ok {
		// Enabling a backend that is enabled is a successful no-op.
		return cur.withRevision(index), applyResult{Revision: srv.Revision}
	}
	next := cur.withOverrides(index)
	inner := maps.Clone(cur.Overrides[c.Name])
	delete(inner, c.Backend)
	if len(inner) == 0 {
		delete(next.Overrides, c.Name)
	} else {
		next.Overrides[c.Name] = inner
	}
	return next, applyResult{Revision: index}
}

// applyPutBlob stores the blob. Writing the value a key has already is a no-op
// that answers the entry's index like any write.
func applyPutBlob(cur *State, index uint64, c Command) (*State, applyResult) {
	if old, ok := cur.Blobs[c.Name]; ok && bytes.Equal(old, c.Value) {
		return cur.withRevision(index), applyResult{Revision: index}
	}
	next := cur.withBlobs(index)
	next.Blobs[c.Name] = bytes.Clone(c.Value)
	if next.Blobs[c.Name] == nil {
		next.Blobs[c.Name] = []byte{}
	}
	return next, applyResult{Revision: index}
}

// applyPutDiscovered records a cluster-scope discovery result. A result for a
// server that no longer exists is dropped (the leader's loop may race a
// delete); a failed fetch keeps the last good backends (the proposer decides
// what the fail policy delivers) and records the error and the time.
func applyPutDiscovered(cur *State, index uint64, c Command) (*State, applyResult) {
	if _, ok := cur.Servers[c.Name]; !ok {
		return refuse(cur, index, ErrNotFound)
	}
	next := cur.withDiscovered(index)
	next.Discovered[c.Name] = c.Discovered.clone()
	return next, applyResult{Revision: index}
}

// applyDeleteBlob removes the blob; deleting an absent key succeeds, as a
// cache's Delete does.
func applyDeleteBlob(cur *State, index uint64, c Command) (*State, applyResult) {
	if _, ok := cur.Blobs[c.Name]; !ok {
		return cur.withRevision(index), applyResult{Revision: index}
	}
	next := cur.withBlobs(index)
	delete(next.Blobs, c.Name)
	return next, applyResult{Revision: index}
}

// snapshotVersion is the format version of a persisted snapshot.
const snapshotVersion = 1

type snapshotFile struct {
	Version int `json:"v"`
	*State
}

// Snapshot implements raft.FSM. It captures the immutable current state in O(1);
// Persist encodes it concurrently with later Applies.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{state: f.state.Load()}, nil
}

// Restore implements raft.FSM: it replaces the state with the snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := decodeSnapshot(rc)
	if err != nil {
		return err
	}
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.publish(s)
	return nil
}

func decodeSnapshot(r io.Reader) (*State, error) {
	var snap snapshotFile
	snap.State = emptyState()
	if err := json.NewDecoder(r).Decode(&snap); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	if snap.Version != snapshotVersion {
		return nil, fmt.Errorf("decode snapshot: unsupported version %d", snap.Version)
	}
	s := snap.State
	if s.Servers == nil {
		s.Servers = map[string]ServerEntry{}
	}
	if s.Overrides == nil {
		s.Overrides = map[string]map[string]Override{}
	}
	if s.Blobs == nil {
		// Snapshots written before blobs existed have none.
		s.Blobs = map[string][]byte{}
	}
	if s.Discovered == nil {
		s.Discovered = map[string]Discovered{}
	}
	return s, nil
}

// encodeSnapshot writes s as JSON; map keys are sorted, so equal states give
// byte-identical snapshots on every node.
func encodeSnapshot(w io.Writer, s *State) error {
	return json.NewEncoder(w).Encode(snapshotFile{Version: snapshotVersion, State: s})
}

type fsmSnapshot struct{ state *State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := encodeSnapshot(sink, s.state); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
