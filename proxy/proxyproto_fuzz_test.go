package proxy

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"
)

// FuzzAcceptProxy feeds arbitrary opening bytes to the PROXY header reader: it
// never panics, and on success what it keeps past the header is exactly the
// end of the input (nothing lost, nothing invented).
func FuzzAcceptProxy(f *testing.F) {
	for _, seed := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.0\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
		[]byte("PROXY UNKNOWN\r\nrest"),
		[]byte("PROXY TCP4 1.2.3.4\r\n"),
		append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x01\xdc\x04\x01\xbb"), "payload"...),
		append([]byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"), "local"...),
		append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"), make([]byte, 64)...),
		[]byte("GET / HTTP/1.1\r\n"),
	} {
		f.Add(seed)
	}
	ap := &acceptProxy{timeout: time.Second}
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		defer server.Close()
		go func() {
			client.Write(in)
			client.Close()
		}()
		br := bufio.NewReaderSize(server, proxyHeaderMax)
		_, _, rest, err := ap.read(server, br, nil)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(in, rest) {
			t.Fatalf("kept %q, not the end of the input %q", rest, in)
		}
	})
}
