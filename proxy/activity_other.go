//go:build !linux || 386

package proxy

import "net"

// socketActivityAvailable is false: activity is seen only when a relay chunk
// completes, so relay chunks are kept small when an idle limit is set.
const socketActivityAvailable = false

func socketActivity(conns ...net.Conn) (uint64, bool) { return 0, false }
