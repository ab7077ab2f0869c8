//go:build linux && !386

package proxy

import (
	"encoding/binary"
	"net"
	"syscall"
	"unsafe"
)

// socketActivityAvailable reports that socketActivity sees bytes moved inside a
// splice, so relay chunks may be large even when an idle limit is set.
const socketActivityAvailable = true

// tcp_info offsets of tcpi_bytes_acked and tcpi_bytes_received (Linux >= 4.1;
// the struct only grows, so the offsets are stable on every architecture).
const (
	tcpInfoBytesAcked    = 120
	tcpInfoBytesReceived = 128
	tcpInfoMinLen        = tcpInfoBytesReceived + 8
)

// socketActivity sums the bytes the kernel has acknowledged and received on the
// given TCP connections. The sum grows whenever bytes move either way on either
// socket, also while a relay is blocked inside one long splice. ok is false when
// the kernel does not report the counters.
func socketActivity(conns ...net.Conn) (sum uint64, ok bool) {
	for _, c := range conns {
		sc, isSys := c.(syscall.Conn)
		if !isSys {
			return 0, false
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return 0, false
		}
		var info [256]byte
		n := uint32(len(info))
		var errno syscall.Errno
		err = rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
				uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&n)), 0)
		})
		if err != nil || errno != 0 || n < tcpInfoMinLen {
			return 0, false
		}
		sum += binary.NativeEndian.Uint64(info[tcpInfoBytesAcked:]) + binary.NativeEndian.Uint64(info[tcpInfoBytesReceived:])
	}
	return sum, true
}
