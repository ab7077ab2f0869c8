package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobetween/gobetween/balance"
)

const (
	// relayChunk is how many bytes one direction moves per ReadFrom call before
	// its counters are updated. Within a chunk the kernel splices with no copy to
	// user space; between chunks the totals (and so rx/tx per second) move.
	relayChunk = 1 << 20
	// smallRelayChunk replaces relayChunk when an idle limit is set and the OS
	// cannot report socket activity, so that a slow stream still shows progress.
	smallRelayChunk = 64 << 10
)

// dir is a relay direction.
type dir uint8

const (
	toBackend dir = iota // client → backend: tx
	toClient             // backend → client: rx
)

// conn is one client connection of a server. Ownership: the accept loop creates
// it and hands it to the goroutine running server.serve; once relaying, the two
// pump goroutines own it together and the last one to finish ends it; an idle
// timer, when armed, holds a reference of its own. The server's connSet holds it
// only to force-close it (closeSockets), under the shard lock. A conn is recycled
// through the runtime's pool when its last reference drops.
type conn struct {
	srv    *server
	st     *settings
	client net.Conn // the accepted socket
	req    balance.Request
	b      *backend
	cand   *balance.Candidate

	// clientIO and backendIO are what the pumps read and write: the sockets
	// themselves, or TLS over them. client and backendConn stay the sockets
	// (closing, idle checks).
	clientIO, backendIO net.Conn

	mu          sync.Mutex // guards backendConn and b (until relaying), closed, timerArmed
	backendConn net.Conn
	closed      bool // sockets closed (or closing); no new socket may be attached
	timerArmed  bool // the idle timer holds a reference
	timer       *time.Timer

	pumps atomic.Int32  // pump goroutines still running
	refs  atomic.Int32  // 1 for the relay, +1 while the idle timer is armed
	moved atomic.Uint64 // bytes relayed either way, updated per chunk
	lr    [2]io.LimitedReader

	// Idle check state, touched only by the idle timer's callback (and by
	// armIdle before the timer starts).
	period     time.Duration
	lastMoved  uint64
	lastSig    uint64
	lastActive time.Duration

	// connSet membership, guarded by shard.mu.
	shard      *connShard
	prev, next *conn
}

// serve runs one accepted connection to its end. It owns c: access check, pick,
// dial with retries, then relay. The caller has reserved a server slot for c and
// added it to s.conns.
func (s *server) serve(c *conn) {
	c.clientIO = c.client
	// pre holds client bytes read before a backend is picked (past a PROXY
	// header, a ClientHello): they go to the backend first.
	var pre []byte
	var src, dst net.Addr // the client's addresses for a PROXY header we send
	ip := clientIP(c.client)
	if ap := c.st.acceptProxy; ap != nil {
		br := s.rt.getReader(c.client)
		var err error
		src, dst, pre, err = ap.read(c.client, br, s.rt.getPre())
		s.rt.putReader(br)
		if err != nil {
			s.dropClient(c, pre, "PROXY header refused", err)
			return
		}
		ip = addrIP(src)
	}
	c.req = balance.Request{ClientIP: ip}
	if a := c.st.access; a != nil && !a.allows(ip) {
		s.refusedBy[refusedAccess].Add(1)
		if s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("client denied by access rules", "client", ip)
		}
		s.endEarlyPre(c, pre)
		return
	}
	if c.st.keepAlive {
		if tc, ok := c.client.(*net.TCPConn); ok {
			tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
		}
	}
	switch {
	case c.st.tls != nil:
		// The handshake completes before a backend is picked (0.8 dialed
		// first): a client that never finishes it costs no backend connection.
		raw := c.client
		var pc *prefixConn
		if len(pre) > 0 {
			pc = &prefixConn{Conn: c.client, pre: pre}
			raw = pc
		}
		tc, err := c.st.tls.handshake(raw)
		if pc != nil {
			// The TLS connection reads on through pc: what the handshake
			// left must outlive the pooled buffer.
			pc.pre = bytes.Clone(pc.pre)
		}
		s.rt.putPre(pre)
		pre = nil
		if err != nil {
			s.dropClient(c, nil, "TLS handshake failed", err)
			return
		}
		c.clientIO = tc
		c.req.SNI = tc.ConnectionState().ServerName
	case c.st.sniRead > 0:
		var r net.Conn = c.client
		var pc *prefixConn
		if len(pre) > 0 {
			pc = &prefixConn{Conn: c.client, pre: pre}
			r = pc
		}
		// The hello's bytes include what pc replays; what pc still holds
		// after the hello (early data) follows it to the backend.
		hello, name, err := readClientHello(r, s.rt.getPre(), time.Now().Add(c.st.sniRead))
		if pc != nil {
			hello = append(hello, pc.pre...)
		}
		s.rt.putPre(pre)
		pre = hello
		if err != nil {
			s.dropClient(c, pre, "no TLS ClientHello", err)
			return
		}
		c.req.SNI = name
	}
	if c.st.sendProxy != 0 && src == nil {
		src, dst = c.client.RemoteAddr(), c.client.LocalAddr()
	}
	s.pick(c, pre, src, dst)
}

// pick picks a backend, dials it (retrying the next candidates), sets up the
// backend side (PROXY header, TLS, the client bytes already read) and relays.
func (s *server) pick(c *conn, pre []byte, src, dst net.Addr) {
	defer s.rt.putPre(pre)
	snap := s.pool.snap.Load()
	if snap.balancer == nil {
		s.refuse(c, balance.ErrNoBackends)
		return
	}
	for {
		cand, err := snap.balancer.Pick(&c.req)
		if err != nil {
			s.refuse(c, pickError(&c.req, err))
			return
		}
		b := snap.byLoad[cand.Load]
		if b == nil {
			// The balancer returned a candidate it was not given.
			cand.Load.Release()
			s.refuse(c, errForeignCandidate)
			return
		}
		bc, bio, err := s.connect(c, b, cand, pre, src, dst)
		if err == nil {
			if s.relay(c, b, cand, bc, bio) {
				return
			}
			// b was drained or disabled while this connection dialed it from
			// an older snapshot: another candidate of the snapshot may do.
			c.req.Exclude(cand)
			if c.req.Tries() >= balance.MaxTries {
				s.refuse(c, errDialsFailed)
				return
			}
			continue
		}
		cand.Load.Release()
		b.dialFailures.Add(1)
		b.logDialFailure(s.log, err)
		if isLocalDialError(err) {
			// This host is out of ports or descriptors: the backend is not at
			// fault and another one would fail alike.
			s.refuse(c, err)
			return
		}
		b.refused.Add(1)
		s.pool.passiveFailure(b)
		c.req.Exclude(cand)
		if c.req.Tries() >= balance.MaxTries {
			s.refuse(c, errDialsFailed)
			return
		}
	}
}

// pickError is the error of a pick that found no candidate after tries: when
// every candidate left was tried (none is full), they all failed.
func pickError(req *balance.Request, err error) error {
	if req.Tries() > 0 && errors.Is(err, balance.ErrNoBackends) {
		return errDialsFailed
	}
	return err
}

var (
	errForeignCandidate = errors.New("balancer returned an unknown candidate")
	errDialsFailed      = errors.New("every backend tried refused the connection")
)

// refuse ends a client that could not be given a backend. It logs at most one
// refusal a second per server; the refused counter has the rest.
func (s *server) refuse(c *conn, why error) {
	s.countRefusal(refusalOf(why))
	now := time.Now().UnixNano()
	if last := s.lastRefusalLog.Load(); now-last >= int64(time.Second) && s.lastRefusalLog.CompareAndSwap(last, now) {
		s.log.Warn("client refused", "client", c.req.ClientIP, "err", why)
	}
	s.endEarly(c)
}

// dropClient ends a client whose opening bytes were refused (PROXY header,
// TLS handshake, ClientHello): hostile or broken input closes that client only.
// It logs at debug level: a port scanner must not flood the log.
func (s *server) dropClient(c *conn, pre []byte, what string, err error) {
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug(what, "client", c.client.RemoteAddr().String(), "err", err)
	}
	s.endEarlyPre(c, pre)
}

// endEarlyPre is endEarly for a connection holding a pooled buffer.
func (s *server) endEarlyPre(c *conn, pre []byte) {
	s.rt.putPre(pre)
	s.endEarly(c)
}

// connect dials b and prepares the backend side: the PROXY header (when the
// server sends one, for the client at src that connected to dst), TLS (when
// backends_tls is set; verified against the backend's sni option, else its
// host) and the client bytes already read. It returns the socket and what
// the pump writes to (the socket or TLS over it). Any failure closes the
// socket: the backend did not take the connection.
func (s *server) connect(c *conn, b *backend, cand *balance.Candidate, pre []byte, src, dst net.Addr) (bc, bio net.Conn, err error) {
	start := time.Now()
	bc, err = b.dial(&c.st.dialer)
	if err != nil {
		return nil, nil, err
	}
	bio = bc
	if c.st.sendProxy != 0 {
		if err = writeProxyHeader(bc, c.st.sendProxy, src, dst); err != nil {
			bc.Close()
			return nil, nil, err
		}
	}
	if bt := c.st.backendTLS; bt != nil {
		// A backend's sni names its certificate, unless it is a pattern.
		name := cand.Backend.Sni
		if name == "" || c.st.sniPatterns {
			name = b.target.Host
		}
		// The dial and the handshake share backend_connection_timeout.
		tc, terr := bt.client(bc, name, start.Add(c.st.dialer.Timeout))
		if terr != nil {
			bc.Close()
			return nil, nil, terr
		}
		bio = tc
	}
	if len(pre) > 0 {
		if _, err = bio.Write(pre); err != nil {
			bc.Close()
			return nil, nil, fmt.Errorf("replaying the client's first bytes: %w", err)
		}
	}
	return bc, bio, nil
}

// endEarly ends a connection that never relayed.
func (s *server) endEarly(c *conn) {
	c.closeSockets(false)
	s.release(c)
	s.rt.putConn(c)
}

// relay attaches the dialed backend connection bc to c and moves bytes both ways
// until both directions are done. cand holds a reservation on b's load that the
// relay releases when it ends. It returns false, with bc closed and the
// reservation released but c untouched, when b left rotation (drain, disable)
// after the pick: checked under c.mu, where closeBackendConns reads c.b, so a
// connection either sees the new state here or is seen and closed there.
func (s *server) relay(c *conn, b *backend, cand *balance.Candidate, bc, bio net.Conn) bool {
	c.mu.Lock()
	if c.closed {
		// Force-closed (drain) while dialing.
		c.mu.Unlock()
		bc.Close()
		cand.Load.Release()
		s.endEarly(c)
		return true
	}
	if !b.inRotation() {
		c.mu.Unlock()
		bc.Close()
		cand.Load.Release()
		return false
	}
	c.backendConn, c.backendIO = bc, bio
	c.b, c.cand = b, cand
	// Counted before unlocking: once a disable has walked the connections, the
	// backend's total no longer moves.
	b.total.Add(1)
	b.active.Add(1)
	c.mu.Unlock()

	c.pumps.Store(2)
	c.refs.Store(1)
	if c.st.idle > 0 {
		c.armIdle()
	}
	go c.pumpToClient()
	c.pump(toBackend)
	return true
}

// pumpToClient is the second goroutine of a relayed connection (named so that it
// reads well in stack dumps).
func (c *conn) pumpToClient() { c.pump(toClient) }

// pump copies one direction until EOF or an error. On EOF it forwards the
// half-close and leaves the other direction running; on an error it closes both
// sockets, which ends the other direction too. The last pump to return ends c.
func (c *conn) pump(d dir) {
	dst, src := c.backendIO, c.clientIO
	if d == toClient {
		dst, src = c.clientIO, c.backendIO
	}
	err := c.copy(d, dst, src)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	} else {
		c.closeSockets(isReset(err))
	}
	if c.pumps.Add(-1) == 0 {
		c.finish()
	}
}

// copy moves src to dst in chunks: dst.ReadFrom splices when both are TCP
// connections, and each chunk's count goes to the counters. It returns nil at EOF
// of src.
func (c *conn) copy(d dir, dst, src net.Conn) error {
	chunk := int64(relayChunk)
	if c.st.idle > 0 && !socketActivityAvailable {
		chunk = smallRelayChunk
	}
	lr := &c.lr[d]
	// Only socket to socket: TCPConn.ReadFrom from anything but a socket (TLS)
	// would fall back to a copy with a new 32 KiB buffer per call.
	rf, isRF := dst.(io.ReaderFrom)
	if _, srcTCP := src.(*net.TCPConn); !srcTCP {
		isRF = false
	}
	for {
		lr.R, lr.N = src, chunk
		var n int64
		var err error
		if isRF {
			n, err = rf.ReadFrom(lr)
		} else {
			n, err = c.srv.rt.copyBuffer(dst, lr)
		}
		if n > 0 {
			c.count(d, uint64(n))
		}
		if err != nil {
			return err
		}
		if lr.N > 0 {
			return nil // src reached EOF before the chunk was full
		}
	}
}

func (c *conn) count(d dir, n uint64) {
	c.moved.Add(n)
	if d == toBackend {
		c.srv.tx.Add(n)
		c.b.tx.Add(n)
	} else {
		c.srv.rx.Add(n)
		c.b.rx.Add(n)
	}
}

// isReset reports whether err says a peer reset its connection or vanished; the
// other peer then gets a reset too, not a clean end of stream that could pass
// for a complete reply.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// closeSockets closes both sockets once; reset closes them with an RST. Safe
// from any goroutine (pumps, idle timer, drain).
func (c *conn) closeSockets(reset bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	cl, bc := c.client, c.backendConn
	c.mu.Unlock()
	if reset {
		setLingerZero(cl)
		setLingerZero(bc)
	}
	cl.Close()
	if bc != nil {
		bc.Close()
	}
}

func setLingerZero(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// finish ends a relayed connection once both pumps are done.
func (c *conn) finish() {
	c.closeSockets(false)
	c.mu.Lock()
	timerRef := false
	if c.timerArmed && c.timer.Stop() {
		// Stopped before firing: its reference is ours to drop. Otherwise the
		// callback is running and drops it when it sees closed.
		c.timerArmed = false
		timerRef = true
	}
	c.mu.Unlock()
	c.b.active.Add(-1)
	c.cand.Load.Release()
	c.srv.release(c)
	if timerRef {
		c.unref()
	}
	c.unref()
}

func (c *conn) unref() {
	if c.refs.Add(-1) == 0 {
		c.srv.rt.putConn(c)
	}
}

// armIdle starts the idle timer. The timer checks every quarter of the idle
// limit whether bytes moved since the last check (chunk counts, and on Linux the
// kernel's byte counters of both sockets, which also move inside a long splice)
// and closes the connection once nothing moved either way for the limit. A
// connection is closed between idle and 1.25 × idle after its last byte.
func (c *conn) armIdle() {
	c.period = max(c.st.idle/4, time.Millisecond)
	c.lastActive = c.srv.rt.now()
	c.lastMoved, c.lastSig = 0, 0
	c.refs.Add(1)
	c.mu.Lock()
	c.timerArmed = true
	if c.timer == nil {
		c.timer = time.AfterFunc(c.period, c.idleCheck)
	} else {
		c.timer.Reset(c.period)
	}
	c.mu.Unlock()
}

func (c *conn) idleCheck() {
	c.mu.Lock()
	if c.closed {
		c.timerArmed = false
		c.mu.Unlock()
		c.unref()
		return
	}
	c.mu.Unlock()

	now := c.srv.rt.now()
	active := false
	if m := c.moved.Load(); m != c.lastMoved {
		c.lastMoved, active = m, true
	}
	if sig, ok := socketActivity(c.client, c.backendConn); ok && sig != c.lastSig {
		c.lastSig, active = sig, true
	}
	if active {
		c.lastActive = now
	} else if now-c.lastActive >= c.st.idle {
		c.mu.Lock()
		c.timerArmed = false
		c.mu.Unlock()
		if c.srv.log.Enabled(context.Background(), slog.LevelDebug) {
			c.srv.log.Debug("idle connection closed", "client", c.req.ClientIP, "idle", c.st.idle)
		}
		c.closeSockets(false)
		c.unref()
		return
	}

	c.mu.Lock()
	if c.closed {
		c.timerArmed = false
		c.mu.Unlock()
		c.unref()
		return
	}
	c.timer.Reset(c.period)
	c.mu.Unlock()
}

// getConn and putConn recycle conns: a conn's fields (Request, LimitedReaders,
// timer) cost allocations that a new connection need not pay again.
func (r *Runtime) getConn() *conn {
	if c, ok := r.conns.Get().(*conn); ok {
		return c
	}
	return new(conn)
}

func (r *Runtime) putConn(c *conn) {
	t := c.timer
	*c = conn{timer: t}
	r.conns.Put(c)
}

// getPre returns an empty pooled buffer for client bytes read before a backend
// is picked (past a PROXY header, a ClientHello); putPre takes it back.
func (r *Runtime) getPre() []byte {
	if bp, ok := r.pres.Get().(*[]byte); ok {
		return (*bp)[:0]
	}
	return make([]byte, 0, 2048)
}

func (r *Runtime) putPre(b []byte) {
	if cap(b) == 0 || cap(b) > 64<<10 {
		return
	}
	b = b[:0]
	r.pres.Put(&b)
}

// getReader returns a pooled reader over c for a PROXY header.
func (r *Runtime) getReader(c net.Conn) *bufio.Reader {
	if br, ok := r.readers.Get().(*bufio.Reader); ok {
		br.Reset(c)
		return br
	}
	return bufio.NewReaderSize(c, proxyHeaderMax)
}

func (r *Runtime) putReader(br *bufio.Reader) {
	br.Reset(nil)
	r.readers.Put(br)
}

// copyBuffer copies with a pooled buffer, for connections that do not splice.
func (r *Runtime) copyBuffer(dst io.Writer, src io.Reader) (int64, error) {
	bp, _ := r.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 32<<10)
		bp = &b
	}
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, src, *bp)
	r.bufs.Put(bp)
	return n, err
}
