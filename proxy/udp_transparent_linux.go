package proxy

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ipv6Transparent is IPV6_TRANSPARENT (linux/in6.h), missing from syscall.
const ipv6Transparent = 75

// transparentDialer dials from the client's address: IP_TRANSPARENT lets the
// socket bind an address that is not this host's, and SO_REUSEADDR lets a
// retired session and its successor (same client address, max_requests)
// both bind it; each is connected to its own backend.
func transparentDialer(client netip.AddrPort) net.Dialer {
	return net.Dialer{
		LocalAddr: net.UDPAddrFromAddrPort(client),
		Control: func(network, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = setTransparent(int(fd), network == "udp6")
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}

func setTransparent(fd int, v6 bool) error {
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if v6 {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_IPV6, ipv6Transparent, 1); err != nil {
			return fmt.Errorf("IPV6_TRANSPARENT: %w", err)
		}
		return nil
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_IP, syscall.IP_TRANSPARENT, 1); err != nil {
		return fmt.Errorf("IP_TRANSPARENT: %w", err)
	}
	return nil
}

// checkTransparent tells whether this process may set IP_TRANSPARENT (it
// needs CAP_NET_ADMIN).
func checkTransparent() error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_IP, syscall.IP_TRANSPARENT, 1); err != nil {
		return fmt.Errorf("IP_TRANSPARENT: %w (needs CAP_NET_ADMIN)", err)
	}
	return nil
}
