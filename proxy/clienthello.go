package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// Reading the TLS ClientHello for SNI routing. gobetween 0.8 parsed whatever a
// single Read returned (#342), so a hello split across reads or TLS records
// gave no server name. readClientHello reassembles the handshake message from
// any number of reads and records and never alters the bytes it read, which
// are replayed to the backend.

// maxClientHello bounds the bytes read while looking for a complete
// ClientHello: record headers, the handshake message and whatever the client
// sent after it in the same reads. Real hellos are 200 bytes to 2 KiB (a
// post-quantum hybrid key share makes Chrome's and Go's about 1.8 KiB; padding
// and resumption tickets add a few KiB more); 64 KiB is the bound Go's
// crypto/tls server puts on a handshake message, so no hello a Go backend would
// accept is refused here, while a client cannot make the proxy buffer more.
const maxClientHello = 64 << 10

const (
	tlsRecordHeaderLen   = 5
	tlsRecordHandshake   = 22
	tlsMaxRecordLen      = 1<<14 + 256 // plaintext limit 2^14, with the slack TLS 1.3 allows ciphertext
	tlsHandshakeHeader   = 4
	tlsTypeClientHello   = 1
	tlsExtServerName     = 0
	tlsServerNameHost    = 0
	helloFirstReadSize   = 2 << 10 // when buf has no room: enough for a typical hello in one read
	helloMaxEmptyReads   = 100     // Reads returning (0, nil) in a row before giving up
	helloMaxSessionIDLen = 32
)

var (
	// errNotTLS: the bytes are not the start of a TLS handshake carrying a
	// ClientHello (another protocol, an SSLv2-compatible hello, a bad record).
	errNotTLS = errors.New("not a TLS ClientHello")
	// errHelloMalformed: a ClientHello whose fields do not parse.
	errHelloMalformed = errors.New("malformed TLS ClientHello")
	// errHelloTooLarge: the ClientHello does not fit in maxClientHello bytes.
	errHelloTooLarge = errors.New("TLS ClientHello too large")
)

// readClientHello reads from c into buf[:0] until a complete ClientHello
// handshake message has arrived, across any number of reads and TLS records,
// and returns every byte read (data, to be replayed to the backend untouched;
// it may hold bytes past the hello) and the SNI host_name ("" when the hello
// has none). It grows buf when needed; data never exceeds maxClientHello
// bytes. When the message spans several records it is reassembled in buf's
// spare capacity after data (growing buf if that is short), so data itself is
// never modified.
//
// c's read deadline is set to deadline (the zero time means none) and cleared
// before returning. Errors wrap errNotTLS, errHelloMalformed, errHelloTooLarge,
// the read error (a timeout wraps os.ErrDeadlineExceeded), io.EOF when the
// client closed before sending anything, or io.ErrUnexpectedEOF when it closed
// mid-hello. c stays owned by the caller, open, whatever the outcome.
func readClientHello(c net.Conn, buf []byte, deadline time.Time) (data []byte, serverName string, err error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return buf[:0], "", fmt.Errorf("reading TLS ClientHello: setting read deadline: %w", err)
	}
	defer func() {
		if cerr := c.SetReadDeadline(time.Time{}); cerr != nil && err == nil {
			err = fmt.Errorf("reading TLS ClientHello: clearing read deadline: %w", cerr)
		}
	}()

	data = buf[:0]
	var (
		pos     int     // next byte of data to examine
		recLeft int     // payload bytes of the current record not yet examined
		records int     // records seen
		got     int     // handshake payload bytes seen
		hdr     [4]byte // the handshake header, possibly gathered from several records
		msgEnd  = -1    // tlsHandshakeHeader + message length, once known
		empty   int     // consecutive empty reads
	)
	for msgEnd < 0 || got < msgEnd {
		if len(data) == cap(data) || len(data) == maxClientHello {
			if len(data) >= maxClientHello {
				return data, "", fmt.Errorf("%w: no complete hello in %d bytes", errHelloTooLarge, len(data))
			}
			want := helloFirstReadSize
			if msgEnd >= 0 {
				want = max(want, msgEnd-got+tlsRecordHeaderLen)
			}
			data = slices.Grow(data, min(want, maxClientHello-len(data)))
		}
		n, rerr := c.Read(data[len(data):min(cap(data), maxClientHello)])
		data = data[:len(data)+n]
		if n == 0 && rerr == nil {
			if empty++; empty >= helloMaxEmptyReads {
				return data, "", fmt.Errorf("reading TLS ClientHello: %w", io.ErrNoProgress)
			}
			continue
		}
		empty = 0

		// Examine the new bytes: record headers and handshake payload.
		for pos < len(data) && (msgEnd < 0 || got < msgEnd) {
			if recLeft == 0 {
				if records == 0 && data[0] != tlsRecordHandshake {
					return data, "", notTLSError(data)
				}
				if len(data)-pos < tlsRecordHeaderLen {
					break
				}
				h := data[pos : pos+tlsRecordHeaderLen]
				length := int(h[3])<<8 | int(h[4])
				switch {
				case h[0] != tlsRecordHandshake:
					return data, "", fmt.Errorf("%w: record type %d inside the ClientHello (record %d)", errNotTLS, h[0], records+1)
				case h[1] != 3: // any 3.x: RFC 8446 asks servers not to judge the record version
					return data, "", fmt.Errorf("%w: record version %d.%d", errNotTLS, h[1], h[2])
				case length == 0 || length > tlsMaxRecordLen:
					return data, "", fmt.Errorf("%w: record length %d", errNotTLS, length)
				}
				records++
				recLeft = length
				pos += tlsRecordHeaderLen
				continue
			}
			take := min(recLeft, len(data)-pos)
			for i := got; i < tlsHandshakeHeader && i-got < take; i++ {
				hdr[i] = data[pos+i-got]
			}
			got += take
			recLeft -= take
			pos += take
			if msgEnd < 0 && got >= tlsHandshakeHeader {
				if hdr[0] != tlsTypeClientHello {
					return data, "", fmt.Errorf("%w: handshake message type %d, want ClientHello (1)", errNotTLS, hdr[0])
				}
				msgEnd = tlsHandshakeHeader + (int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3]))
				// The message plus at least one record header must fit.
				if msgEnd+tlsRecordHeaderLen > maxClientHello {
					return data, "", fmt.Errorf("%w: message length %d", errHelloTooLarge, msgEnd-tlsHandshakeHeader)
				}
			}
		}
		if msgEnd >= 0 && got >= msgEnd {
			break
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = io.ErrUnexpectedEOF
				if len(data) == 0 {
					rerr = io.EOF
				}
			}
			return data, "", fmt.Errorf("reading TLS ClientHello (%d bytes read): %w", len(data), rerr)
		}
	}

	data, msg := helloMessage(data, records, msgEnd)
	serverName, err = parseClientHello(msg)
	return data, serverName, err
}

// helloMessage returns the handshake message of msgEnd bytes that starts in
// the first record of data. When it spans records, their payloads are copied
// into the capacity of data past its length; if that is short, data moves to
// a larger array (returned) with its bytes unchanged.
func helloMessage(data []byte, records, msgEnd int) ([]byte, []byte) {
	if records == 1 {
		return data, data[tlsRecordHeaderLen : tlsRecordHeaderLen+msgEnd]
	}
	data = slices.Grow(data, msgEnd)
	msg := data[len(data):len(data)]
	for pos := 0; len(msg) < msgEnd; {
		length := int(data[pos+3])<<8 | int(data[pos+4])
		pos += tlsRecordHeaderLen
		take := min(length, msgEnd-len(msg))
		msg = append(msg, data[pos:pos+take]...)
		pos += length
	}
	return data, msg
}

// notTLSError describes why data, whose first byte is not a handshake record
// type, is not a TLS ClientHello.
func notTLSError(data []byte) error {
	if data[0]&0x80 != 0 {
		// SSLv2 record header: a 15-bit length with the top bit set,
		// followed by message type 1 for a CLIENT-HELLO.
		return fmt.Errorf("%w: SSLv2-compatible ClientHello is not supported", errNotTLS)
	}
	return fmt.Errorf("%w: first byte 0x%02x is not a TLS handshake record (22)", errNotTLS, data[0])
}

// parseClientHello parses a complete ClientHello handshake message, including
// its 4-byte handshake header (type 1 and a 24-bit length that must cover the
// rest of msg exactly), and returns the SNI host_name as sent ("" when the
// hello has no server_name extension or no host_name in it). Case is kept:
// the SNI matcher compares case-insensitively. Like Go's crypto/tls it rejects
// a server_name extension that is duplicated, empty, has trailing bytes, or
// holds an empty or second host_name; it also rejects a name with a NUL byte.
// Any other malformed field fails too, since the backend would refuse the
// hello as well. It never panics and never reads outside msg.
func parseClientHello(msg []byte) (serverName string, err error) {
	s := helloString(msg)
	var typ uint8
	var length int
	if !s.readUint8(&typ) || !s.readUint24(&length) {
		return "", fmt.Errorf("%w: %d bytes, shorter than the handshake header", errHelloMalformed, len(msg))
	}
	if typ != tlsTypeClientHello {
		return "", fmt.Errorf("%w: handshake message type %d, want ClientHello (1)", errNotTLS, typ)
	}
	if length != len(s) {
		return "", fmt.Errorf("%w: message length %d, have %d bytes", errHelloMalformed, length, len(s))
	}
	var sessionID, suites, compression helloString
	switch {
	case !s.skip(2 + 32): // legacy_version, random
		return "", fmt.Errorf("%w: truncated before session_id", errHelloMalformed)
	case !s.readUint8Prefixed(&sessionID) || len(sessionID) > helloMaxSessionIDLen:
		return "", fmt.Errorf("%w: bad session_id", errHelloMalformed)
	case !s.readUint16Prefixed(&suites) || len(suites) < 2 || len(suites)%2 != 0:
		return "", fmt.Errorf("%w: bad cipher_suites", errHelloMalformed)
	case !s.readUint8Prefixed(&compression) || len(compression) < 1:
		return "", fmt.Errorf("%w: bad compression_methods", errHelloMalformed)
	}
	if len(s) == 0 {
		return "", nil // a hello without extensions (allowed before TLS 1.3)
	}
	var exts helloString
	if !s.readUint16Prefixed(&exts) || len(s) != 0 {
		return "", fmt.Errorf("%w: extensions length does not match the message", errHelloMalformed)
	}
	var name []byte
	seenSNI := false
	for len(exts) > 0 {
		var extType uint16
		var ext helloString
		if !exts.readUint16(&extType) || !exts.readUint16Prefixed(&ext) {
			return "", fmt.Errorf("%w: truncated extension", errHelloMalformed)
		}
		if extType != tlsExtServerName {
			continue
		}
		if seenSNI {
			return "", fmt.Errorf("%w: duplicate server_name extension", errHelloMalformed)
		}
		seenSNI = true
		var list helloString
		if !ext.readUint16Prefixed(&list) || len(list) == 0 || len(ext) != 0 {
			return "", fmt.Errorf("%w: bad server_name list", errHelloMalformed)
		}
		for len(list) > 0 {
			var nameType uint8
			var entry helloString
			if !list.readUint8(&nameType) || !list.readUint16Prefixed(&entry) || len(entry) == 0 {
				return "", fmt.Errorf("%w: bad server_name entry", errHelloMalformed)
			}
			if nameType != tlsServerNameHost {
				continue
			}
			if name != nil {
				return "", fmt.Errorf("%w: more than one host_name in server_name", errHelloMalformed)
			}
			if bytes.IndexByte(entry, 0) >= 0 {
				return "", fmt.Errorf("%w: NUL byte in host_name", errHelloMalformed)
			}
			name = entry
		}
	}
	return string(name), nil
}

// helloString is a bounds-checked reader over a ClientHello, in the manner of
// golang.org/x/crypto/cryptobyte (not a dependency of this module). Each read
// either consumes and succeeds or leaves the string as it was and fails.
type helloString []byte

func (s *helloString) readUint8(v *uint8) bool {
	if len(*s) < 1 {
		return false
	}
	*v = (*s)[0]
	*s = (*s)[1:]
	return true
}

func (s *helloString) readUint16(v *uint16) bool {
	if len(*s) < 2 {
		return false
	}
	*v = uint16((*s)[0])<<8 | uint16((*s)[1])
	*s = (*s)[2:]
	return true
}

func (s *helloString) readUint24(v *int) bool {
	if len(*s) < 3 {
		return false
	}
	*v = int((*s)[0])<<16 | int((*s)[1])<<8 | int((*s)[2])
	*s = (*s)[3:]
	return true
}

func (s *helloString) skip(n int) bool {
	if len(*s) < n {
		return false
	}
	*s = (*s)[n:]
	return true
}

// readPrefixed reads a field of n bytes whose length was already read into
// the caller's copy; prefixLen bytes of length prefix precede it in s.
func (s *helloString) readPrefixed(prefixLen, n int, out *helloString) bool {
	if len(*s) < prefixLen+n {
		return false
	}
	*out = (*s)[prefixLen : prefixLen+n]
	*s = (*s)[prefixLen+n:]
	return true
}

func (s *helloString) readUint8Prefixed(out *helloString) bool {
	if len(*s) < 1 {
		return false
	}
	return s.readPrefixed(1, int((*s)[0]), out)
}

func (s *helloString) readUint16Prefixed(out *helloString) bool {
	if len(*s) < 2 {
		return false
	}
	return s.readPrefixed(2, int((*s)[0])<<8|int((*s)[1]), out)
}
