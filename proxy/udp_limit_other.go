//go:build !unix

package proxy

// fdLimit is unknown here: the session cap stays at udpMaxSessions.
func fdLimit() int { return 0 }
