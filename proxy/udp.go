package proxy

// The UDP data path (protocol = "udp").
//
// A session is one client address (ip:port as the listening socket reports it)
// talking to one backend through a connected UDP socket of its own. Sessions
// are picked, counted and limited like TCP connections: the pick goes through
// the same snapshot and balance.Pick, and a session holds one reservation on
// its backend's balance.Load for its whole life (leastconn, backend
// max_connections and the cluster's gossip count it like a connection); it
// holds a server slot (active_connections) and counts in total_connections,
// and its bytes in rx (from the backend) and tx (to the backend).
//
// Goroutines. One read loop per listening socket reads client datagrams, and
// one goroutine per session (relayReplies) reads the backend's datagrams and
// sends them to the client through the listening socket. There is no writer
// goroutine and no queue: the read loop sends to the backend itself with one
// non-blocking send(2); a send that would block drops the datagram, counted.
//
// The read loop does no blocking work. Per datagram: a map lookup and an LRU
// move under the server's table lock, the send. A new session is created
// inline: access check, pick, and for a backend given by IP address the
// socket (socket(2) and connect(2), which for UDP only records the peer: no
// network I/O, a few microseconds), because handing off would cost a
// goroutine switch and a copy of the datagram for every new session, about
// what the socket costs. A backend given by host name needs a resolution,
// which can block: its session's own goroutine resolves and dials, then sends
// the first datagram, kept for it; datagrams from that client arriving before
// the dial is done are dropped. The read loop never closes a session's socket
// either (Close waits for the session's goroutine to let go of the socket): it
// marks the session ended and wakes its goroutine, which closes the socket.
//
// Limits, all per session:
//   - udp.max_requests = N: after N client datagrams the session takes no
//     more: the client's next datagram starts a new session (a new pick). The
//     old session is retired, not closed: it still relays the replies to its
//     requests until max_responses, an idle limit or eviction ends it. So
//     max_requests = 1 relays the answer (gobetween 0.8 never did, #167).
//   - udp.max_responses = M: after M backend datagrams relayed the session
//     ends; the client's next datagram starts a new one. A backend datagram
//     arriving after that is lost, so without max_requests this suits clients
//     that wait for each answer before the next request.
//   - client_idle_timeout: the session ends when the client sent nothing for
//     that long; backend_idle_timeout: when the backend sent nothing for that
//     long (both counted from the session's start). Each applies alone, unlike
//     TCP's single idle clock: a UDP session has no end of its own.
//   - With neither timeout set (config validation then requires max_requests
//     or max_responses), a session ends after udpDefaultIdle (30 s, Linux
//     conntrack's timeout for an unanswered UDP flow) without a datagram in
//     either direction, so that a client that goes away does not hold a
//     socket for ever.
//
// The session table is bounded: at most max_connections sessions (retired
// ones included) when it is set, else min(65,536, RLIMIT_NOFILE / 2); ended
// sessions whose goroutine has not closed the socket yet are bounded too
// (a quarter of the cap, at least 64: new sessions wait beyond that). A new
// session at the cap evicts the least recently active session (LRU by client
// datagrams; a session whose backend spoke since it was last moved gets a
// second chance). So a flood of new (or spoofed) source addresses costs at
// most the cap in sockets and memory, and new clients are still served. When
// the system itself runs out (no file descriptor, no ephemeral port), the
// datagram is dropped, counted refused, and the least recently active session
// is evicted so that the next one finds room.
//
// Access rules are checked when a session is created (a denied client never
// gets one, so every datagram of it is checked and dropped, not counted);
// like a TCP connection, a session keeps the settings it started with.
//
// transparent = true: the session's socket is bound to the client's address
// and port (IP_TRANSPARENT, which needs CAP_NET_ADMIN) before it connects to
// the backend, so the backend sees the client's address and normally answers
// it directly, past gobetween. A reply that does reach the session's socket
// (policy routing delivering it locally) is relayed as in the normal mode;
// max_responses and backend_idle_timeout count only those.
//
// Backend states and removal: a drained backend gets no new session and its
// sessions go on until they end; disabling one ends its sessions at once.
// Removing a server stops reading at once (the socket stays bound, so that
// the sessions' replies still leave from the server's address) and lets the
// sessions run until they end or drain_timeout, then closes them and the
// socket. A server started on that address meanwhile (Apply, Upsert) takes
// it over: the draining server's sessions end then. A rebind (bind or
// protocol changed) ends the sessions of the old socket, whose address no
// longer receives.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
)

const (
	// udpDefaultIdle ends a session silent both ways for this long when neither
	// client_idle_timeout nor backend_idle_timeout is set.
	udpDefaultIdle = 30 * time.Second
	// udpMaxSessions is the session cap of a server without max_connections
	// (lowered to half the file descriptor limit when that is smaller).
	udpMaxSessions = 65536
	// udpMaxDatagram holds any UDP payload (65,507 bytes over IPv4, 65,527 over
	// IPv6).
	udpMaxDatagram = 1 << 16
	// udpSecondChances bounds how many recently answered sessions one eviction
	// moves to the front before it takes the least recent one anyway.
	udpSecondChances = 8
	// udpReadBuffer is asked for as the listening socket's receive buffer (the
	// kernel caps it at net.core.rmem_max), to absorb bursts of datagrams.
	udpReadBuffer = 4 << 20
)

// aLongTimeAgo is a read deadline in the past: it wakes a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// udpSettings are the UDP options of a server, parsed once per config and
// swapped atomically on update; a session keeps the ones it started with.
// Immutable after newUDPSettings.
type udpSettings struct {
	maxRequests  uint64
	maxResponses uint64
	transparent  bool
	clientIdle   time.Duration // 0: not applied
	backendIdle  time.Duration // 0: not applied
	maxSessions  int           // the session table's cap
	dialTimeout  time.Duration // resolving and dialing a backend given by name
}

// newUDPSettings parses the UDP options of cfg. For a transparent server it
// checks that this process may set IP_TRANSPARENT, so that a missing
// capability fails the start with a reason rather than every session.
func newUDPSettings(cfg config.Server) (*udpSettings, error) {
	us := &udpSettings{
		clientIdle:  dur(cfg.ClientIdleTimeout),
		backendIdle: dur(cfg.BackendIdleTimeout),
		maxSessions: defaultUDPSessions(),
		dialTimeout: dur(cfg.BackendConnectionTimeout),
	}
	if us.dialTimeout <= 0 {
		us.dialTimeout = maxDialTimeout
	}
	if cfg.MaxConnections != nil && *cfg.MaxConnections > 0 {
		us.maxSessions = *cfg.MaxConnections
	}
	if u := cfg.Udp; u != nil {
		us.maxRequests, us.maxResponses, us.transparent = u.MaxRequests, u.MaxResponses, u.Transparent
	}
	if cfg.Protocol == "udp" {
		// Config validation refuses these on a udp server (and drops [tls]); a
		// definition that bypassed it must not run without them silently.
		var errs []error
		for _, f := range []struct {
			set  bool
			name string
		}{
			{cfg.Tls != nil, "tls"}, {cfg.BackendsTls != nil, "backends_tls"}, {cfg.Sni != nil, "sni"},
			{cfg.ProxyProtocol != nil, "proxy_protocol"}, {cfg.AcceptProxyProtocol != nil, "accept_proxy_protocol"},
		} {
			if f.set {
				errs = append(errs, fmt.Errorf("%s: not supported with protocol udp", f.name))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	if us.transparent && cfg.Protocol == "udp" {
		if err := checkTransparent(); err != nil {
			return nil, fmt.Errorf("udp: transparent: %w", err)
		}
	}
	return us, nil
}

// defaultUDPSessions is the session cap without max_connections: 65,536, or
// half the file descriptor limit when that is lower (each session owns a
// socket), at least 64.
func defaultUDPSessions() int {
	n := udpMaxSessions
	if lim := fdLimit(); lim > 0 {
		n = min(n, max(lim/2, 64))
	}
	return n
}

// expiry is when a session with the given last datagram times (Runtime.now
// scale) ends unless more datagrams come.
func (us *udpSettings) expiry(lastClient, lastBackend time.Duration) time.Duration {
	if us.clientIdle <= 0 && us.backendIdle <= 0 {
		return max(lastClient, lastBackend) + udpDefaultIdle
	}
	const never = time.Duration(1<<63 - 1)
	at := never
	if us.clientIdle > 0 {
		at = lastClient + us.clientIdle
	}
	if us.backendIdle > 0 {
		at = min(at, lastBackend+us.backendIdle)
	}
	return at
}

// udpServer is the UDP state of a server: its settings, its sessions, and the
// listening sockets kept open while a removed server drains. The zero value is
// ready; a TCP server's stays empty.
type udpServer struct {
	settings atomic.Pointer[udpSettings]
	table    udpTable
	bufs     sync.Pool // *[]byte of udpMaxDatagram, for the sessions' reads

	dropped     atomic.Uint64 // datagrams lost: send would block, session still dialing, reply not sent
	evicted     atomic.Uint64 // sessions ended to make room
	closing     atomic.Int64  // sessions ended whose goroutine has not closed the socket yet
	lastDropLog atomic.Int64  // unix nanoseconds
	lastDenyLog atomic.Int64

	sockMu sync.Mutex
	kept   []*net.UDPConn // listening sockets of a removed server, open for its sessions' replies
}

// udpTable holds the live sessions of a server: by client address (the one
// taking that client's datagrams) and in an LRU list (every linked session,
// retired ones included). Guarded by mu, which the read loop takes once per
// datagram and the other paths (a session ending, eviction, disable, drain)
// only briefly.
type udpTable struct {
	mu         sync.Mutex
	byClient   map[netip.AddrPort]*udpSession
	head, tail *udpSession // head: most recently active
	n          int         // linked sessions
}

// udpSession is one client's flow to one backend. Ownership: the read loop
// creates it and links it in the table; from then on its goroutine
// (relayReplies) owns the backend socket and closes it when it returns. Whoever
// unlinks the session from the table (exactly once, under the table lock)
// releases its counts and wakes the goroutine. A session is never reused.
type udpSession struct {
	srv    *server
	us     *udpSettings
	pc     *net.UDPConn   // the listening socket: replies go out through it
	client netip.AddrPort // as the listening socket reports it
	ip     netip.Addr     // the client's address, unmapped: access, balancing, transparent bind
	b      *backend
	cand   *balance.Candidate
	named  bool // the backend is a host name: the goroutine dials (immutable)

	bc    atomic.Pointer[net.UDPConn] // the backend socket; nil while a name resolves
	ready atomic.Bool                 // bc may take datagrams from the read loop
	ended atomic.Bool                 // unlinked: the goroutine must close bc and return
	rc    syscall.RawConn             // bc's; set before ready

	lastClient  atomic.Int64 // Runtime.now() of the last client datagram
	lastBackend atomic.Int64 // Runtime.now() of the last backend datagram (or of the start)

	// The sender's: the read loop once ready, the dialing goroutine before.
	wbuf    []byte
	wn      int
	werr    error
	writeFn func(uintptr) bool
	pending []byte // the first datagram, kept while a host name resolves (named)

	// The goroutine's.
	readFn    func(uintptr) bool
	responses uint64
	rerr      error // a read or reply error seen in readFn
	done      bool  // max_responses reached

	// Guarded by the table lock.
	requests   uint64
	linked     bool
	mapped     bool          // byClient[client] is this session (not retired)
	lruStamp   time.Duration // Runtime.now() when last moved to the front
	prev, next *udpSession
}

// listenUDP opens the listening socket of a udp server.
func listenUDP(ctx context.Context, bind string) (*listener, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", bind)
	if err != nil {
		return nil, &bindError{err}
	}
	uc := pc.(*net.UDPConn)
	// Best effort: the kernel caps it at net.core.rmem_max.
	_ = uc.SetReadBuffer(udpReadBuffer)
	return &listener{pc: uc, done: make(chan struct{}), exited: make(chan struct{})}, nil
}

// listenServer opens a server's listening socket. A UDP address held by a
// removed server of this runtime that is still draining its sessions is taken
// over: that server's sessions end and its socket closes. Called under
// Runtime.mu.
func (r *Runtime) listenServer(ctx context.Context, protocol, bind string) (*listener, error) {
	l, err := listen(ctx, protocol, bind)
	if err == nil || protocol != "udp" || !errors.Is(err, syscall.EADDRINUSE) {
		return l, err
	}
	taken := false
	for s := range r.draining {
		if s.releaseUDPPort(bind) {
			taken = true
		}
	}
	if !taken {
		return nil, err
	}
	return listen(ctx, protocol, bind)
}

// releaseUDPPort ends the sessions on, and closes, the kept sockets of a
// draining server that bind covers. Reports whether there was one.
func (s *server) releaseUDPPort(bind string) bool {
	host, portStr, err := net.SplitHostPort(bind)
	if err != nil {
		return false
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return false
	}
	want, _ := netip.ParseAddr(host) // invalid for "" and names: any host matches
	u := &s.udp
	u.sockMu.Lock()
	var hit []*net.UDPConn
	kept := u.kept[:0]
	for _, pc := range u.kept {
		la, _ := pc.LocalAddr().(*net.UDPAddr)
		if la != nil && la.Port == port {
			got := la.AddrPort().Addr().Unmap()
			if !want.IsValid() || want.IsUnspecified() || got.IsUnspecified() || got == want.Unmap() {
				hit = append(hit, pc)
				continue
			}
		}
		kept = append(kept, pc)
	}
	u.kept = kept
	u.sockMu.Unlock()
	for _, pc := range hit {
		n := s.endUDPSessions(func(sess *udpSession) bool { return sess.pc == pc })
		pc.Close()
		s.log.Info("udp address taken over by a new server; draining sessions ended", "bind", pc.LocalAddr().String(), "sessions", n)
	}
	return len(hit) > 0
}

// keepUDPSockets keeps the sockets of ls open after their read loops stopped,
// for the replies of the sessions a drain lets finish.
func (s *server) keepUDPSockets(ls []*listener) {
	s.udp.sockMu.Lock()
	defer s.udp.sockMu.Unlock()
	for _, l := range ls {
		if l.pc != nil {
			s.udp.kept = append(s.udp.kept, l.pc)
		}
	}
}

// closeUDPSockets ends the sessions of the UDP sockets among ls and closes
// the sockets: their read loops have returned (rebind).
func (s *server) closeUDPSockets(ls []*listener) {
	for _, l := range ls {
		if l.pc == nil {
			continue
		}
		pc := l.pc
		if n := s.endUDPSessions(func(sess *udpSession) bool { return sess.pc == pc }); n > 0 {
			s.log.Info("udp sessions of the old bind ended", "bind", pc.LocalAddr().String(), "sessions", n)
		}
		pc.Close()
	}
}

// closeKeptUDPSockets ends every session and closes the sockets kept for a
// drain.
func (s *server) closeKeptUDPSockets() {
	s.endUDPSessions(func(*udpSession) bool { return true })
	s.udp.sockMu.Lock()
	kept := s.udp.kept
	s.udp.kept = nil
	s.udp.sockMu.Unlock()
	for _, pc := range kept {
		pc.Close()
	}
}

// closeUDPBackendSessions ends the sessions relaying to any of bs (disable).
func (s *server) closeUDPBackendSessions(bs []*backend) {
	n := s.endUDPSessions(func(sess *udpSession) bool {
		for _, b := range bs {
			if sess.b == b {
				return true
			}
		}
		return false
	})
	if n > 0 {
		s.log.Info("udp sessions of disabled backends ended", "sessions", n)
	}
}

// endUDPSessions ends the sessions match selects and returns how many.
func (s *server) endUDPSessions(match func(*udpSession) bool) int {
	t := &s.udp.table
	var ended []*udpSession
	t.mu.Lock()
	for sess := t.head; sess != nil; {
		next := sess.next
		if match(sess) {
			t.unlinkLocked(sess)
			ended = append(ended, sess)
		}
		sess = next
	}
	t.mu.Unlock()
	for _, sess := range ended {
		sess.release()
	}
	return len(ended)
}

// udpSessions is the number of linked sessions (for tests and logs).
func (s *server) udpSessions() int {
	t := &s.udp.table
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// udpLoop is the state of one listening socket's read loop, owned by it.
type udpLoop struct {
	s   *server
	pc  *net.UDPConn
	buf []byte
	req balance.Request // kept here so that Pick's pointer does not escape per datagram
}

// udpReadLoop reads client datagrams until l is closed. A read error other
// than a closed socket backs off like Accept errors do (5 ms doubling to 1 s),
// logging at most once a second.
func (s *server) udpReadLoop(l *listener) {
	defer close(l.exited)
	lp := &udpLoop{s: s, pc: l.pc, buf: make([]byte, udpMaxDatagram)}
	r := loopRetry{s: s, l: l, closed: "udp socket closed unexpectedly; server stops reading", retrying: "udp read failed; retrying"}
	for {
		n, client, err := l.pc.ReadFromUDPAddrPort(lp.buf)
		if err != nil {
			if !r.failed(err) {
				return
			}
			continue
		}
		r.backoff = 0
		lp.datagram(client, lp.buf[:n])
	}
}

// datagram forwards one client datagram: to the client's session, or to a new
// one.
func (lp *udpLoop) datagram(client netip.AddrPort, p []byte) {
	s := lp.s
	t := &s.udp.table
	now := s.rt.now()
	// A session found here may end before the send; then its socket is closed
	// and the datagram goes to a new session (second pass).
	for range 2 {
		t.mu.Lock()
		sess := t.byClient[client]
		if sess != nil {
			t.takeRequestLocked(sess, now)
		}
		t.mu.Unlock()
		if sess == nil {
			if sess = lp.newSession(client, p, now); sess == nil || sess.named {
				return // dropped, or kept for the session's goroutine to send
			}
		}
		if !sess.ready.Load() {
			s.udpDrop("session still resolving its backend", nil)
			return
		}
		err := sess.send(p)
		switch {
		case err == nil:
			s.tx.Add(uint64(len(p)))
			sess.b.tx.Add(uint64(len(p)))
			return
		case errors.Is(err, net.ErrClosed):
			continue
		case errors.Is(err, syscall.ECONNREFUSED):
			// An ICMP port unreachable for an earlier datagram.
			sess.backendRefused(err)
			return
		default:
			s.udpDrop("send to backend failed", err)
			return
		}
	}
	s.udpDrop("sessions ended while sending", nil)
}

// takeRequestLocked counts a client datagram for sess: its time, the LRU
// order, and max_requests, which retires the session once reached (the
// client's next datagram starts a new session; this one stays for replies).
func (t *udpTable) takeRequestLocked(sess *udpSession, now time.Duration) {
	sess.lastClient.Store(int64(now))
	sess.requests++
	if max := sess.us.maxRequests; max > 0 && sess.requests >= max {
		delete(t.byClient, sess.client)
		sess.mapped = false
		return
	}
	if t.head != sess {
		t.removeLocked(sess)
		t.pushFrontLocked(sess)
	}
	sess.lruStamp = now
}

// newSession creates the session of a client that has none: access rules,
// pick, socket, link. It returns nil when the datagram is dropped (denied,
// refused, no room). A session whose backend is a host name (named) keeps a
// copy of p: its goroutine sends it once dialed.
func (lp *udpLoop) newSession(client netip.AddrPort, p []byte, now time.Duration) *udpSession {
	s := lp.s
	st := s.settings.Load()
	us := s.udp.settings.Load()
	ip := client.Addr().Unmap().WithZone("")
	if a := st.access; a != nil && !a.allows(ip) {
		s.udpDenied(ip)
		return nil
	}
	if s.udp.closing.Load() >= int64(max(us.maxSessions/4, 64)) {
		// Evicted sessions close their sockets from their goroutines; a flood
		// that evicts faster than they run waits for them, so that sockets
		// stay bounded by the cap and a quarter of it.
		s.udpRefuse(ip, errUDPClosingBacklog)
		return nil
	}
	snap := s.pool.snap.Load()
	if snap.balancer == nil {
		s.udpRefuse(ip, balance.ErrNoBackends)
		return nil
	}
	lp.req = balance.Request{ClientIP: ip}
	for {
		cand, err := snap.balancer.Pick(&lp.req)
		if err != nil {
			s.udpRefuse(ip, pickError(&lp.req, err))
			return nil
		}
		b := snap.byLoad[cand.Load]
		if b == nil {
			cand.Load.Release()
			s.udpRefuse(ip, errForeignCandidate)
			return nil
		}
		sess := &udpSession{srv: s, us: us, pc: lp.pc, client: client, ip: ip, b: b, cand: cand}
		sess.writeFn = sess.write
		sess.readFn = sess.onReadable
		sess.lastClient.Store(int64(now))
		sess.lastBackend.Store(int64(now))
		if ap, perr := netip.ParseAddrPort(b.key); perr == nil {
			bc, err := dialUDPBackend(us, ap, ip, client.Port())
			if err != nil {
				cand.Load.Release()
				b.dialFailures.Add(1)
				b.logDialFailure(s.log, err)
				if isLocalUDPError(err) {
					// This host is out of sockets or ports: another backend
					// would fail alike. Make room for the next datagrams.
					s.evictUDPSession()
					s.udpRefuse(ip, err)
					return nil
				}
				b.refused.Add(1)
				s.pool.passiveFailure(b)
				if lp.req.Exclude(cand); lp.req.Tries() >= balance.MaxTries {
					s.udpRefuse(ip, errDialsFailed)
					return nil
				}
				continue
			}
			if err := sess.attach(bc); err != nil {
				bc.Close()
				cand.Load.Release()
				s.udpRefuse(ip, err)
				return nil
			}
			sess.ready.Store(true)
		} else {
			sess.named = true
			sess.pending = append([]byte(nil), p...)
		}
		if !s.linkUDPSession(sess, now) {
			// b was drained or disabled after this snapshot was taken.
			if bc := sess.bc.Load(); bc != nil {
				bc.Close() // no goroutine uses it yet: closes at once
			}
			cand.Load.Release()
			if lp.req.Exclude(cand); lp.req.Tries() >= balance.MaxTries {
				s.udpRefuse(ip, errDialsFailed)
				return nil
			}
			continue
		}
		go sess.relayReplies()
		return sess
	}
}

var errUDPClosingBacklog = errors.New("too many udp sessions still closing")

// attach makes bc the session's backend socket; the caller marks the session
// ready once the first datagram may go.
func (sess *udpSession) attach(bc *net.UDPConn) error {
	rc, err := bc.SyscallConn()
	if err != nil {
		return fmt.Errorf("udp backend socket: %w", err)
	}
	sess.rc = rc
	sess.bc.Store(bc)
	return nil
}

// linkUDPSession puts sess in the table, evicting the least recently active
// sessions while the table is at its cap, and counts it. It reports false,
// linking nothing, when sess's backend left rotation: checked under the table
// lock, which the disable walk takes too, so once a disable is stored no new
// session relays to the backend.
func (s *server) linkUDPSession(sess *udpSession, now time.Duration) bool {
	t := &s.udp.table
	var buf [4]*udpSession
	victims := buf[:0]
	t.mu.Lock()
	if !sess.b.inRotation() {
		t.mu.Unlock()
		return false
	}
	for t.n >= max(sess.us.maxSessions, 1) {
		v := t.victimLocked(now)
		t.unlinkLocked(v)
		victims = append(victims, v)
	}
	if t.byClient == nil {
		t.byClient = make(map[netip.AddrPort]*udpSession)
	}
	sess.linked = true
	sess.requests = 1
	sess.lruStamp = now
	t.pushFrontLocked(sess)
	t.n++
	if max := sess.us.maxRequests; max == 0 || max > 1 {
		t.byClient[sess.client] = sess
		sess.mapped = true
	}
	// Counted under the lock, as for TCP: once a disable has walked the
	// sessions, the backend's total no longer moves.
	s.total.Add(1)
	s.active.Add(1)
	sess.b.total.Add(1)
	sess.b.active.Add(1)
	t.mu.Unlock()
	for _, v := range victims {
		v.release()
	}
	if len(victims) > 0 {
		s.udp.evicted.Add(uint64(len(victims)))
	}
	return true
}

// evictUDPSession ends the least recently active session, if any.
func (s *server) evictUDPSession() {
	t := &s.udp.table
	t.mu.Lock()
	v := t.victimLocked(s.rt.now())
	if v != nil {
		t.unlinkLocked(v)
	}
	t.mu.Unlock()
	if v != nil {
		v.release()
		s.udp.evicted.Add(1)
	}
}

// victimLocked picks the session to evict: the least recently active by client
// datagrams, except that a session whose backend sent something since it was
// last moved goes back to the front (at most udpSecondChances times per
// eviction). nil when the table is empty.
func (t *udpTable) victimLocked(now time.Duration) *udpSession {
	for range udpSecondChances {
		v := t.tail
		if v == nil || v == t.head || time.Duration(v.lastBackend.Load()) <= v.lruStamp {
			return v
		}
		t.removeLocked(v)
		t.pushFrontLocked(v)
		v.lruStamp = now
	}
	return t.tail
}

func (t *udpTable) pushFrontLocked(sess *udpSession) {
	sess.prev, sess.next = nil, t.head
	if t.head != nil {
		t.head.prev = sess
	}
	t.head = sess
	if t.tail == nil {
		t.tail = sess
	}
}

func (t *udpTable) removeLocked(sess *udpSession) {
	if sess.prev != nil {
		sess.prev.next = sess.next
	} else {
		t.head = sess.next
	}
	if sess.next != nil {
		sess.next.prev = sess.prev
	} else {
		t.tail = sess.prev
	}
	sess.prev, sess.next = nil, nil
}

// unlinkLocked takes a linked session out of the table; the caller then calls
// release, outside the lock.
func (t *udpTable) unlinkLocked(sess *udpSession) {
	if sess.mapped {
		delete(t.byClient, sess.client)
		sess.mapped = false
	}
	t.removeLocked(sess)
	sess.linked = false
	t.n--
}

// end unlinks sess if it is still linked and releases it. Reports whether this
// call ended it.
func (sess *udpSession) end() bool {
	t := &sess.srv.udp.table
	t.mu.Lock()
	if !sess.linked {
		t.mu.Unlock()
		return false
	}
	t.unlinkLocked(sess)
	t.mu.Unlock()
	sess.release()
	return true
}

// release gives back what an unlinked session holds (its server slot, its
// backend's reservation and active count) and wakes its goroutine, which
// closes the socket. Called once, by whoever unlinked it.
func (sess *udpSession) release() {
	sess.ended.Store(true)
	s := sess.srv
	s.udp.closing.Add(1) // until relayReplies returns
	sess.b.active.Add(-1)
	sess.cand.Load.Release()
	if s.active.Add(-1) == 0 && s.draining.Load() {
		s.idleOnce.Do(func() { close(s.idle) })
	}
	if bc := sess.bc.Load(); bc != nil {
		bc.SetReadDeadline(aLongTimeAgo)
	}
}

// backendRefused ends a session whose backend answered with an ICMP port
// unreachable: counted against the backend (refused, passive health failure).
func (sess *udpSession) backendRefused(err error) {
	if !sess.end() {
		return
	}
	sess.b.refused.Add(1)
	sess.srv.pool.passiveFailure(sess.b)
	sess.b.logDialFailure(sess.srv.log, err)
}

// udpRefuse drops a datagram that could not be given a session: server
// refused++, logged at most once a second.
func (s *server) udpRefuse(ip netip.Addr, why error) {
	s.countRefusal(refusalOf(why))
	now := time.Now().UnixNano()
	if last := s.lastRefusalLog.Load(); now-last >= int64(time.Second) && s.lastRefusalLog.CompareAndSwap(last, now) {
		s.log.Warn("udp client refused", "client", ip, "err", why)
	}
}

// udpDenied drops a datagram of a client the access rules deny: not counted
// refused, as for TCP, but counted denied; logged at debug level at most once
// a second.
func (s *server) udpDenied(ip netip.Addr) {
	s.refusedBy[refusedAccess].Add(1)
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	now := time.Now().UnixNano()
	if last := s.udp.lastDenyLog.Load(); now-last >= int64(time.Second) && s.udp.lastDenyLog.CompareAndSwap(last, now) {
		s.log.Debug("udp client denied by access rules", "client", ip)
	}
}

// udpDrop counts a datagram lost on the way and logs at most once a second.
func (s *server) udpDrop(why string, err error) {
	n := s.udp.dropped.Add(1)
	now := time.Now().UnixNano()
	if last := s.udp.lastDropLog.Load(); now-last >= int64(time.Second) && s.udp.lastDropLog.CompareAndSwap(last, now) {
		s.log.Warn("udp datagram dropped", "why", why, "err", err, "dropped_total", n)
	}
}

// isLocalUDPError reports whether creating a backend socket failed for want
// of a resource of this host: descriptors, buffers, ephemeral ports (EAGAIN
// from connect's automatic bind), or the privilege for transparent mode.
func isLocalUDPError(err error) bool {
	return isLocalDialError(err) || errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EPERM) ||
		errors.Is(err, syscall.EACCES)
}

// dialUDPBackend opens the session's socket connected to the backend at ap.
// In transparent mode it is bound to the client's address and port first.
func dialUDPBackend(us *udpSettings, ap netip.AddrPort, clientIP netip.Addr, clientPort uint16) (*net.UDPConn, error) {
	if !us.transparent {
		return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	}
	d := transparentDialer(netip.AddrPortFrom(clientIP, clientPort))
	c, err := d.Dial("udp", ap.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// dialUDPName resolves and dials a backend given by host name; called from the
// session's goroutine, never from the read loop.
func (sess *udpSession) dialUDPName() (*net.UDPConn, error) {
	var d net.Dialer
	if sess.us.transparent {
		d = transparentDialer(netip.AddrPortFrom(sess.ip, sess.client.Port()))
	}
	d.Timeout = sess.us.dialTimeout
	c, err := d.Dial("udp", sess.b.key)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// isDeadline reports whether err is a read deadline passing.
func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
