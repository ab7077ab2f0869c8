package cluster

import (
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// keyApplied is the stable-store key of the highest log index this node has
// applied: every entry up to it was committed, so the node may apply them again
// from its own log at the next start, before it hears from any leader.
var keyApplied = []byte("gobetween.applied")

// replayLocal applies the entries of the local log that this node had applied
// before it stopped and that the latest snapshot does not cover. Raft alone
// would restore the snapshot and apply nothing more until a leader tells it the
// commit index: a node restarted without quorum would then serve an older
// state than it served before the restart (none at all before the first
// snapshot). Entries above the recorded index may be uncommitted and are left
// to raft. It returns how many command entries it applied.
func replayLocal(f *fsm, logs raft.LogStore, stable raft.StableStore) (int, error) {
	upto, err := stable.GetUint64(keyApplied)
	if err != nil || upto == 0 {
		// Never recorded: a new node, or one that stopped before it applied
		// anything. raft-boltdb reports a missing key as an error.
		return 0, nil
	}
	last, err := logs.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("replay the local log: %w", err)
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("replay the local log: %w", err)
	}
	upto = min(upto, last)
	from := max(f.State().Revision+1, first)
	applied := 0
	for i := from; i <= upto && i != 0; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				continue
			}
			return applied, fmt.Errorf("replay the local log: entry %d: %w", i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		f.Apply(&l)
		applied++
	}
	return applied, nil
}

// recordApplied writes the state's revision to the stable store when it moved
// since the last call; last is what was written before.
func recordApplied(f *fsm, stable raft.StableStore, last uint64) (uint64, error) {
	rev := f.State().Revision
	if rev == last {
		return last, nil
	}
	if err := stable.SetUint64(keyApplied, rev); err != nil {
		return last, fmt.Errorf("record the applied index %d: %w", rev, err)
	}
	return rev, nil
}
