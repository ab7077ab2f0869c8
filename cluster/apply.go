package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// noLeaderHold is how long a write waits for a reachable leader (an election,
// a restarting leader) before it fails with ErrNoLeader.
const noLeaderHold = 2500 * time.Millisecond

// leaderContactLimit: a follower forwards writes only while it has heard from
// the leader this recently (leaders contact followers every heartbeatTimeout/10).
const leaderContactLimit = heartbeatTimeout

// Apply proposes c and waits until it is committed and applied on this node. It
// returns the revision the command produced (or, for a no-op, the current
// revision of the object it names).
//
// On a follower the command is forwarded to the leader over the cluster port
// and the answer is the leader's; Apply then waits until this node has applied
// the entry, so a read of State on this node afterwards sees the write. While
// no leader is reachable it retries for up to 2.5 s (bounded by ctx), then
// fails with ErrNoLeader; a command the leader refused before proposing it is
// retried the same way, so nothing is applied twice. A node opened with test
// stores (no cluster port) answers ErrNotLeader on a follower.
//
// A refused command returns ErrExists, ErrNotFound, ErrStale, ErrOriginConflict
// or ErrInvalidCommand, wrapped (also when the leader refused it).
// ErrUnavailable means the outcome is unknown (the leadership was lost, the
// wait timed out after proposing, the leader did not answer a forwarded
// write): commands are idempotent, so retrying is safe.
//
// A zero Version is set to CommandVersion and a zero Time to now.
func (n *Node) Apply(ctx context.Context, c Command) (uint64, error) {
	if c.Version == 0 {
		c.Version = CommandVersion
	}
	if c.Time.IsZero() {
		c.Time = time.Now().UTC()
	}
	if err := c.Validate(); err != nil {
		return 0, fmt.Errorf("%s %q: %w", c.Type, c.Name, err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return 0, fmt.Errorf("%s %q: encode: %w: %w", c.Type, c.Name, ErrInvalidCommand, err)
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	rev, err := n.applyAnywhere(ctx, &c, data)
	if err != nil {
		return rev, fmt.Errorf("%s %q: %w", c.Type, c.Name, err)
	}
	return rev, nil
}

func (n *Node) applyAnywhere(ctx context.Context, c *Command, data []byte) (uint64, error) {
	hold := time.Now().Add(noLeaderHold)
	lastErr := ErrNoLeader
	for {
		if n.isClosed() {
			return 0, ErrClosed
		}
		if n.IsLeader() {
			_, rev, err := n.applyLocal(ctx, data)
			if !errors.Is(err, ErrNotLeader) {
				return rev, err
			}
			// Lost the leadership before proposing: safe to retry.
			lastErr = err
		} else if id, addr := n.Leader(); id != "" && n.leaderHeard() {
			if n.rpc == nil {
				return 0, ErrNotLeader
			}
			rev, retry, err := n.forwardApply(ctx, addr, c)
			if !retry {
				return rev, err
			}
			lastErr = err
		}
		if time.Now().After(hold) {
			return 0, noLeaderErr(lastErr)
		}
		select {
		case <-ctx.Done():
			return 0, noLeaderErr(lastErr)
		case <-n.closed:
			return 0, ErrClosed
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func noLeaderErr(last error) error {
	if errors.Is(last, ErrNoLeader) {
		return last
	}
	return fmt.Errorf("%w (last attempt: %w)", ErrNoLeader, last)
}

// forwardApply sends c to the leader at addr. retry reports that the leader
// certainly did not propose it (unreachable, or no longer the leader).
func (n *Node) forwardApply(ctx context.Context, addr string, c *Command) (rev uint64, retry bool, err error) {
	start := time.Now()
	resp, err := n.rpc.call(ctx, addr, &rpcRequest{Op: opApply, Command: c, From: n.id})
	if err != nil {
		if errors.Is(err, errNotSent) {
			return 0, true, fmt.Errorf("leader unreachable: %w", err)
		}
		return 0, false, fmt.Errorf("%w: forwarded to the leader at %s, no answer (the write may still commit): %w", ErrUnavailable, addr, err)
	}
	rerr := errFromResponse(resp)
	if errors.Is(rerr, ErrNotLeader) || errors.Is(rerr, ErrNoLeader) || errors.Is(rerr, ErrClosed) {
		return 0, true, rerr
	}
	if resp.Index > 0 {
		if err := n.waitApplied(ctx, resp.Index); err != nil {
			return resp.Revision, false, err
		}
		n.applyLatency.Observe(time.Since(start))
	}
	return resp.Revision, false, rerr
}

// waitApplied waits until this node's FSM has applied the entry at index.
func (n *Node) waitApplied(ctx context.Context, index uint64) error {
	if n.fsm.State().Revision >= index {
		return nil
	}
	ch, cancel := n.fsm.Subscribe()
	defer cancel()
	for n.fsm.State().Revision < index {
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: committed at index %d but not applied on this node yet: %w", ErrUnavailable, index, ctx.Err())
		case <-n.closed:
			return ErrClosed
		}
	}
	return nil
}

// applyLocal proposes data on this node, which must be the leader, and waits
// for the commit. index is the entry's log index.
func (n *Node) applyLocal(ctx context.Context, data []byte) (index, rev uint64, err error) {
	if err := n.leaderOnly(); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	fut := n.raft.Apply(data, timeoutOf(ctx))
	if err := n.wait(ctx, fut); err != nil {
		if errors.Is(err, ErrClosed) {
			// Proposed already: the outcome is unknown, and a forwarding
			// follower must not take it for "never proposed".
			err = fmt.Errorf("%w: the node closed while the write was pending (it may still commit)", ErrUnavailable)
		}
		return 0, 0, err
	}
	// Committed and applied here, also when the FSM refused the command.
	n.applyLatency.Observe(time.Since(start))
	res, ok := fut.Response().(applyResult)
	if !ok {
		return 0, 0, fmt.Errorf("%w: unexpected apply response %T", ErrUnavailable, fut.Response())
	}
	return fut.Index(), res.Revision, res.Err
}

// handleRPC answers the cluster RPC. A node that is not the leader never
// forwards a forwarded write again (no loops): it answers ErrNotLeader.
func (n *Node) handleRPC(ctx context.Context, req *rpcRequest) *rpcResponse {
	resp := &rpcResponse{}
	fail := func(err error) *rpcResponse {
		resp.Code, resp.Error = codeOf(err), err.Error()
		return resp
	}
	switch req.Op {
	case opApply:
		if req.Command == nil {
			return fail(fmt.Errorf("%w: apply without a command", ErrInvalidCommand))
		}
		c := req.Command
		if err := c.Validate(); err != nil {
			return fail(err)
		}
		data, err := json.Marshal(c)
		if err != nil {
			return fail(fmt.Errorf("%w: %w", ErrInvalidCommand, err))
		}
		idx, rev, err := n.applyLocal(ctx, data)
		resp.Index, resp.Revision = idx, rev
		if idx > 0 {
			// Followers learn a commit index only with the next append
			// (heartbeats do not carry it, raft#282), up to 2·CommitTimeout
			// later; the forwarding follower waits for it. A barrier entry
			// is replicated at once and carries the new commit index. Its
			// future is not waited for.
			n.raft.Barrier(timeoutOf(ctx))
		}
		if err != nil {
			return fail(err)
		}
	case opStatus:
		s := n.status()
		resp.Status = &s
	case opRemove:
		if err := n.removeLocal(ctx, req.ID); err != nil {
			return fail(err)
		}
	case opLeave:
		if n.gossip != nil {
			go func() {
				if err := n.gossip.leave(2 * time.Second); err != nil {
					n.log.Warn("leaving gossip after removal", "err", err)
				}
			}()
		}
	default:
		return fail(fmt.Errorf("%w: unknown rpc %q", ErrInvalidCommand, req.Op))
	}
	return resp
}

func (n *Node) status() nodeStatus {
	leader, _ := n.Leader()
	s := nodeStatus{
		ID: n.id, AppliedIndex: n.raft.AppliedIndex(), LastIndex: n.raft.LastIndex(), LeaderID: leader,
	}
	s.HasState = n.hasState.Load() || s.LastIndex > 0
	for _, srv := range n.raftServers() {
		if string(srv.ID) == n.id && srv.Suffrage == raft.Voter {
			s.Voter = true
		}
	}
	return s
}

// peerStatus asks the node at raftAddr for its status.
func (n *Node) peerStatus(ctx context.Context, raftAddr string, timeout time.Duration) (nodeStatus, error) {
	if n.rpc == nil {
		return nodeStatus{}, errors.New("no cluster port")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := n.rpc.call(ctx, raftAddr, &rpcRequest{Op: opStatus, From: n.id})
	if err != nil {
		return nodeStatus{}, err
	}
	if err := errFromResponse(resp); err != nil {
		return nodeStatus{}, err
	}
	if resp.Status == nil {
		return nodeStatus{}, errors.New("status rpc: empty answer")
	}
	return *resp.Status, nil
}

// leaderHeard reports whether this follower heard from its leader recently
// (within the heartbeat timeout). A node cut off from the leader keeps
// believing in it until an election timeout passes; forwarding a write into
// that silence would hold it for the whole apply timeout and could let it
// commit after the client was told it failed. Such a write is refused as if
// there were no leader, which it is never applied under.
func (n *Node) leaderHeard() bool {
	last := n.raft.LastContact()
	return !last.IsZero() && time.Since(last) <= leaderContactLimit
}
