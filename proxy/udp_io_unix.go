//go:build unix

package proxy

import "syscall"

// send writes p to the backend with one non-blocking send(2): a datagram that
// would block is dropped (the error is EAGAIN), never queued and never waited
// for, so the read loop cannot stall on one backend. Called by the read loop
// (or, before the session is ready, by its dialing goroutine).
func (sess *udpSession) send(p []byte) error {
	sess.wbuf = p
	err := sess.rc.Write(sess.writeFn)
	sess.wbuf = nil
	if err != nil {
		return err
	}
	return sess.werr
}

// write is send's RawConn callback: one write(2), done whatever it returns.
func (sess *udpSession) write(fd uintptr) bool {
	for {
		_, err := syscall.Write(int(fd), sess.wbuf)
		if err == syscall.EINTR {
			continue
		}
		sess.werr = err
		return true
	}
}

// readReplies relays backend datagrams until the session must end (done or
// rerr set, nil returned) or the read deadline passes or the socket closes
// (the error returned).
func (sess *udpSession) readReplies() error { return sess.rc.Read(sess.readFn) }

// onReadable is readReplies' RawConn callback: it relays every datagram
// waiting on the backend socket with a pooled buffer (a session holds no
// buffer while it waits), and asks to wait again once the socket is empty. It
// returns true when the session must end.
func (sess *udpSession) onReadable(fd uintptr) bool {
	s := sess.srv
	bp := s.udpBuf()
	defer s.udp.bufs.Put(bp)
	buf := *bp
	for {
		if sess.ended.Load() {
			return true
		}
		n, err := syscall.Read(int(fd), buf)
		switch err {
		case nil:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			sess.rerr = err
			return true
		}
		if sess.reply(buf[:n]) {
			return true
		}
	}
}
