package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The cluster RPC: on a connection opened with the muxRPC header byte, each
// request and each response is a 4-byte big-endian length and a JSON object.
// A connection carries one request at a time and is reused (pooled) by the
// client.
const (
	rpcMaxFrame    = 8 << 20
	rpcDialTimeout = time.Second
	rpcMaxIdle     = 4 // pooled connections per peer
)

// RPC operations.
const (
	opApply  = "apply"  // propose a command on the leader
	opStatus = "status" // report indexes and suffrage (catch-up and bootstrap checks)
	opRemove = "remove" // remove a member (on the leader)
	opLeave  = "leave"  // leave gossip (sent to a member that was removed)
)

type rpcRequest struct {
	Op        string   `json:"op"`
	Command   *Command `json:"command,omitempty"`
	ID        string   `json:"id,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	From      string   `json:"from,omitempty"`
}

type rpcResponse struct {
	Index    uint64      `json:"index,omitempty"`    // log index of the applied entry
	Revision uint64      `json:"revision,omitempty"` // the command's answer
	Code     string      `json:"code,omitempty"`     // error sentinel, see errCodes
	Error    string      `json:"error,omitempty"`
	Status   *nodeStatus `json:"status,omitempty"`
}

// nodeStatus is what a node reports about itself.
type nodeStatus struct {
	ID           string `json:"id"`
	HasState     bool   `json:"has_state"`
	Voter        bool   `json:"voter"` // its own latest configuration lists it as a voter
	AppliedIndex uint64 `json:"applied_index"`
	LastIndex    uint64 `json:"last_index"`
	LeaderID     string `json:"leader_id"`
}

// errCodes encodes the sentinel errors for the wire, so errors.Is works on the
// forwarding node.
var errCodes = []struct {
	code string
	err  error
}{
	{"exists", ErrExists},
	{"not_found", ErrNotFound},
	{"stale", ErrStale},
	{"origin_conflict", ErrOriginConflict},
	{"invalid", ErrInvalidCommand},
	{"not_leader", ErrNotLeader},
	{"no_leader", ErrNoLeader},
	{"unavailable", ErrUnavailable},
	{"closed", ErrClosed},
	{"not_member", ErrNotMember},
}

func codeOf(err error) string {
	for _, c := range errCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "unavailable"
}

// remoteError is an error answered by another node: its message is the remote
// one and it unwraps to the sentinel its code names.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func errFromResponse(r *rpcResponse) error {
	if r.Code == "" && r.Error == "" {
		return nil
	}
	s := ErrUnavailable
	for _, c := range errCodes {
		if c.code == r.Code {
			s = c.err
		}
	}
	msg := r.Error
	if msg == "" {
		msg = s.Error()
	}
	return &remoteError{msg: msg, sentinel: s}
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(b)))
	if _, err := w.Write(append(hdr[:], b...)); err != nil {
		return err
	}
	return nil
}

func readFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > rpcMaxFrame {
		return fmt.Errorf("rpc frame of %d bytes exceeds %d", n, rpcMaxFrame)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// rpcServer answers RPCs accepted on the mux's RPC sub-listener.
type rpcServer struct {
	ln     net.Listener
	handle func(context.Context, *rpcRequest) *rpcResponse

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
	wg    sync.WaitGroup
}

func (s *rpcServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.done {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

func (s *rpcServer) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	br := bufio.NewReader(c)
	for {
		var req rpcRequest
		if err := readFrame(br, &req); err != nil {
			return
		}
		timeout := DefaultApplyTimeout
		if req.TimeoutMS > 0 {
			timeout = time.Duration(req.TimeoutMS) * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		resp := s.handle(ctx, &req)
		cancel()
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := writeFrame(c, resp); err != nil {
			return
		}
		_ = c.SetWriteDeadline(time.Time{})
	}
}

// close stops accepting, closes open connections and waits for the handlers.
func (s *rpcServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	s.done = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// errNotSent marks an RPC that never reached the peer (the dial failed), so the
// caller may retry it elsewhere without risking a double proposal.
var errNotSent = errors.New("request not sent")

// rpcClient keeps a few idle connections per peer.
type rpcClient struct {
	dial func(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error)

	mu     sync.Mutex
	idle   map[string][]*rpcConn
	closed bool
}

type rpcConn struct {
	net.Conn
	br *bufio.Reader
}

// abort closes a connection whose call failed with a reset: the kernel drops
// what it has not delivered yet instead of retransmitting it. Otherwise a
// forwarded write cut off by a partition would still reach the leader when the
// network heals, after its caller was told it failed.
func (pc *rpcConn) abort() {
	var raw net.Conn = pc.Conn
	if tc, ok := raw.(interface{ NetConn() net.Conn }); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = pc.Close()
}

// call sends req to addr and reads the answer, bounded by ctx. Pooled
// connections go stale when the peer restarts (rqlite's cluster client notes
// it): one whose peer has closed it is dropped before use, and a pooled
// connection that fails anyway is retried once on a fresh dial, except for
// apply, whose request may have been proposed (the caller gets an error that
// does not wrap errNotSent). A dial failure returns an error wrapping
// errNotSent.
func (c *rpcClient) call(ctx context.Context, addr string, req *rpcRequest) (*rpcResponse, error) {
	if d, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(time.Until(d).Milliseconds(), 1)
	}
	if pc := c.get(addr); pc != nil {
		resp, err := c.roundTrip(ctx, pc, req)
		if err == nil {
			c.put(addr, pc)
			return resp, nil
		}
		pc.abort()
		if ctx.Err() != nil || req.Op == opApply {
			return nil, err
		}
	}
	timeout := rpcDialTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, max(time.Until(d), time.Millisecond))
	}
	conn, err := c.dial(ctx, addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", errNotSent, addr, err)
	}
	pc := &rpcConn{Conn: conn, br: bufio.NewReader(conn)}
	resp, err := c.roundTrip(ctx, pc, req)
	if err != nil {
		pc.abort()
		return nil, err
	}
	c.put(addr, pc)
	return resp, nil
}

func (c *rpcClient) roundTrip(ctx context.Context, pc *rpcConn, req *rpcRequest) (*rpcResponse, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = pc.SetDeadline(d)
	} else {
		_ = pc.SetDeadline(time.Now().Add(DefaultApplyTimeout))
	}
	// Closing the connection unblocks the read when ctx is cancelled early.
	stop := context.AfterFunc(ctx, func() { _ = pc.SetDeadline(time.Now()) })
	defer stop()
	if err := writeFrame(pc, req); err != nil {
		return nil, fmt.Errorf("rpc %s to %s: %w", req.Op, pc.RemoteAddr(), err)
	}
	var resp rpcResponse
	if err := readFrame(pc.br, &resp); err != nil {
		return nil, fmt.Errorf("rpc %s to %s: %w", req.Op, pc.RemoteAddr(), err)
	}
	_ = pc.SetDeadline(time.Time{})
	return &resp, nil
}

// get takes an idle connection to addr whose peer has not closed it.
func (c *rpcClient) get(addr string) *rpcConn {
	for {
		c.mu.Lock()
		l := c.idle[addr]
		if len(l) == 0 {
			c.mu.Unlock()
			return nil
		}
		pc := l[len(l)-1]
		c.idle[addr] = l[:len(l)-1]
		c.mu.Unlock()
		if pc.br.Buffered() == 0 && !peerClosed(pc.Conn) {
			return pc
		}
		_ = pc.Close()
	}
}

func (c *rpcClient) put(addr string, pc *rpcConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.idle[addr]) >= rpcMaxIdle {
		_ = pc.Close()
		return
	}
	c.idle[addr] = append(c.idle[addr], pc)
}

func (c *rpcClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, l := range c.idle {
		for _, pc := range l {
			_ = pc.Close()
		}
	}
	c.idle = nil
}
