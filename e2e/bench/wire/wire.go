// Package wire is the small protocol the benchmark's load generator speaks with its
// backend through each proxy under test. It is plain TCP so that every L4 proxy
// relays it unchanged. A connection starts with one Size-byte message whose first
// byte selects the mode:
//
//   - ModeEcho: every Size-byte message is answered with the same Size bytes
//     (request/reply workloads: keep-alive and new connections).
//   - ModeDown: the backend writes as fast as it can until the client closes
//     (bulk download).
//   - ModeUp: the backend reads and discards until the client closes (bulk upload).
//
// Over UDP every datagram is answered with itself (ServeUDP): the UDP workloads
// send Size-byte ModeEcho messages and expect them back.
package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Size is the length of a request and of a reply.
const Size = 64

// Modes, the first byte of a connection's first message.
const (
	ModeEcho byte = 'E'
	ModeDown byte = 'D'
	ModeUp   byte = 'U'
)

// chunk is the write and read size of the bulk modes.
const chunk = 256 << 10

// Message returns a request of the given mode, filled with a recognisable pattern.
func Message(mode byte) [Size]byte {
	var m [Size]byte
	m[0] = mode
	for i := 1; i < Size-1; i++ {
		m[i] = 'a' + byte(i%26)
	}
	m[Size-1] = '\n'
	return m
}

// Serve answers connections accepted on ln until ln is closed; each connection is
// served by its own goroutine, which owns and closes it. It returns the error that
// stopped the accept loop (nil when ln was closed).
func Serve(ln net.Listener) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors under a connection storm: back off and go on.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go ServeConn(c)
	}
}

// ServeConn serves one connection in the mode its first message selects, then
// closes it. Errors end the connection silently: a client that goes away is normal.
func ServeConn(c net.Conn) {
	defer c.Close()
	var buf [Size]byte
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		return
	}
	switch buf[0] {
	case ModeEcho:
		for {
			if _, err := c.Write(buf[:]); err != nil {
				return
			}
			if _, err := io.ReadFull(c, buf[:]); err != nil {
				return
			}
		}
	case ModeDown:
		out := make([]byte, chunk)
		for {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	case ModeUp:
		in := make([]byte, chunk)
		for {
			if _, err := c.Read(in); err != nil {
				return
			}
		}
	}
}

// Check does one echo round trip on a new connection to addr: the proof that a
// proxy is up and relays to the backend.
func Check(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	req := Message(ModeEcho)
	if _, err := c.Write(req[:]); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var rep [Size]byte
	if _, err := io.ReadFull(c, rep[:]); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if rep != req {
		return errors.New("reply differs from the request")
	}
	return nil
}

// ServeUDP answers every datagram received on c with the same bytes, to its
// sender, until c is closed; it returns nil then, or the error that stopped it.
// Several goroutines may serve one socket: while one waits in a read, another
// writes its reply.
func ServeUDP(c *net.UDPConn) error {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		// A reply that cannot be sent is a lost datagram, which the client counts.
		c.WriteToUDPAddrPort(buf[:n], from)
	}
}

// CheckUDP sends one echo datagram to addr from a new socket and waits for it
// to come back: the proof that a UDP proxy is up and relays to the backend.
func CheckUDP(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("udp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	req := Message(ModeEcho)
	if _, err := c.Write(req[:]); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var rep [Size + 1]byte // one byte more, to see a longer reply
	n, err := c.Read(rep[:])
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if n != Size || [Size]byte(rep[:Size]) != req {
		return errors.New("reply differs from the request")
	}
	return nil
}
