package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// relayReplies is a session's goroutine. It dials a backend given by host name
// (sending the kept first datagram), then relays the backend's datagrams to the
// client through the listening socket until the session ends: unlinked by
// someone else (eviction, disable, drain, rebind), an idle limit, max_responses,
// an ICMP port unreachable, or the listening socket closing. It closes the
// backend socket when it returns.
//
// Idle limits cost no timer: the socket's read deadline is set to the
// session's next expiry and only moved when it passes (once per limit period
// for a busy session), not per datagram.
func (sess *udpSession) relayReplies() {
	// Every return follows the session's release, which counted it closing.
	defer sess.srv.udp.closing.Add(-1)
	if sess.named && !sess.dialName() {
		return
	}
	bc := sess.bc.Load()
	defer bc.Close() // runs before the closing count drops
	s := sess.srv
	for {
		if sess.ended.Load() {
			return
		}
		now := s.rt.now()
		at := sess.us.expiry(time.Duration(sess.lastClient.Load()), time.Duration(sess.lastBackend.Load()))
		if now >= at {
			if sess.end() && s.log.Enabled(context.Background(), slog.LevelDebug) {
				s.log.Debug("idle udp session ended", "client", sess.client, "backend", sess.b.key)
			}
			return
		}
		bc.SetReadDeadline(time.Now().Add(at - now))
		// release sets a past deadline after marking the session ended; if
		// that came before the line above, it is seen here.
		if sess.ended.Load() {
			return
		}
		err := sess.readReplies()
		switch {
		case err != nil && isDeadline(err):
			continue // ended, or an idle limit to check
		case err != nil:
			sess.end()
			return
		case sess.done:
			sess.end()
			return
		case sess.rerr != nil:
			if errors.Is(sess.rerr, syscall.ECONNREFUSED) {
				sess.backendRefused(sess.rerr)
			} else {
				sess.end()
			}
			return
		}
	}
}

// udpBuf takes a datagram buffer from the server's pool.
func (s *server) udpBuf() *[]byte {
	if bp, ok := s.udp.bufs.Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, udpMaxDatagram)
	return &b
}

// dialName resolves and dials a backend given by host name, then sends the
// session's first datagram and opens it to the read loop. It reports false,
// with the session ended, when that failed or the session ended meanwhile.
func (sess *udpSession) dialName() bool {
	s := sess.srv
	bc, err := sess.dialUDPName()
	if err != nil {
		sess.b.dialFailures.Add(1)
		sess.b.logDialFailure(s.log, err)
		if sess.end() {
			if isLocalUDPError(err) {
				s.countRefusal(refusedOther)
			} else {
				s.countRefusal(refusedDialsFailed)
				sess.b.refused.Add(1)
				s.pool.passiveFailure(sess.b)
			}
		}
		return false
	}
	if err := sess.attach(bc); err != nil {
		bc.Close()
		sess.end()
		return false
	}
	if sess.ended.Load() {
		bc.Close()
		return false
	}
	p := sess.pending
	sess.pending = nil
	if err := sess.send(p); err != nil {
		s.udpDrop("send to backend failed", err)
	} else {
		s.tx.Add(uint64(len(p)))
		sess.b.tx.Add(uint64(len(p)))
	}
	sess.ready.Store(true)
	return true
}

// reply sends one backend datagram to the client through the listening socket
// and counts it. It returns true when the session must end: max_responses
// reached (done) or the listening socket closed (rerr).
func (sess *udpSession) reply(p []byte) bool {
	s := sess.srv
	sess.lastBackend.Store(int64(s.rt.now()))
	if _, err := sess.pc.WriteToUDPAddrPort(p, sess.client); err != nil {
		if errors.Is(err, net.ErrClosed) {
			sess.rerr = err
			return true
		}
		s.udpDrop("send to client failed", err)
		return false
	}
	s.rx.Add(uint64(len(p)))
	sess.b.rx.Add(uint64(len(p)))
	sess.responses++
	if max := sess.us.maxResponses; max > 0 && sess.responses >= max {
		sess.done = true
		return true
	}
	return false
}
