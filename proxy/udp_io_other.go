//go:build !unix

package proxy

// send writes p to the backend. Without raw non-blocking sockets a full
// socket buffer can make it wait; UDP sends rarely do.
func (sess *udpSession) send(p []byte) error {
	_, err := sess.bc.Load().Write(p)
	return err
}

// readReplies relays backend datagrams until the session must end (done or
// rerr set, nil returned) or a read fails (the error returned). The buffer
// is held while the read waits.
func (sess *udpSession) readReplies() error {
	s := sess.srv
	bp := s.udpBuf()
	defer s.udp.bufs.Put(bp)
	bc := sess.bc.Load()
	for !sess.ended.Load() {
		n, err := bc.Read(*bp)
		if err != nil {
			return err
		}
		if sess.reply((*bp)[:n]) {
			return nil
		}
	}
	return nil
}

func (sess *udpSession) write(uintptr) bool      { return true }
func (sess *udpSession) onReadable(uintptr) bool { return true }
