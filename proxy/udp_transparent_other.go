//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
)

var errNoTransparent = errors.New("needs Linux (IP_TRANSPARENT)")

// transparentDialer is never used off Linux: checkTransparent refuses the
// server first. Its dials fail.
func transparentDialer(netip.AddrPort) net.Dialer {
	return net.Dialer{Control: func(string, string, syscall.RawConn) error { return errNoTransparent }}
}

func checkTransparent() error { return errNoTransparent }
