package proxy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzClientHello runs parseClientHello and readClientHello over arbitrary
// bytes. Besides not panicking: the bytes returned are always a prefix of the
// input, a success does not depend on how the input is cut into reads, and a
// success agrees with a naive reassembly of the message parsed on its own.
func FuzzClientHello(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(helloTestdata, "*.bin"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no captured hellos in %s: %v", helloTestdata, err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if helloRecords(b, helloMsgLen(b)) == 1 {
			f.Add(splitRecords(b, 2, len(b)/2))
			f.Add(b[5:])
		}
	}
	f.Add(records(craftHello(sniExt(sniEntry(1, "x"), sniEntry(0, "a.example"))), 9))
	f.Add(records(craftMessage(nil), 1<<14))
	f.Add([]byte{0x80, 0x2e, 0x01, 0x03, 0x01})

	f.Fuzz(func(t *testing.T, in []byte) {
		for _, msg := range [][]byte{in, in[min(5, len(in)):]} {
			if name, err := parseClientHello(msg); err == nil && bytes.IndexByte([]byte(name), 0) >= 0 {
				t.Fatalf("parseClientHello returned a name with NUL: %q", name)
			}
		}

		type result struct {
			ok   bool
			name string
			kind error
		}
		var results []result
		for _, chunk := range []int{0, 5} {
			data, name, err := readClientHello(&helloMemConn{in: in, chunk: chunk}, make([]byte, 0, 64), time.Time{})
			if !bytes.HasPrefix(in, data) {
				t.Fatalf("chunk %d: data (%d bytes) is not a prefix of the input", chunk, len(data))
			}
			if len(data) > maxClientHello {
				t.Fatalf("chunk %d: read %d bytes, cap is %d", chunk, len(data), maxClientHello)
			}
			results = append(results, result{err == nil, name, helloErrKind(err)})
			msg, complete := naiveHello(data)
			switch {
			case err == nil:
				if !complete {
					t.Fatalf("chunk %d: success but no complete message in data", chunk)
				}
				if want, perr := parseClientHello(msg); perr != nil || want != name {
					t.Fatalf("chunk %d: name %q, naive reassembly gives %q, %v", chunk, name, want, perr)
				}
			case errors.Is(err, errHelloMalformed):
				if !complete {
					t.Fatalf("chunk %d: malformed (%v) but no complete message in data", chunk, err)
				}
				if _, perr := parseClientHello(msg); perr == nil {
					t.Fatalf("chunk %d: %v, but the naive reassembly parses", chunk, err)
				}
			}
		}
		if results[0] != results[1] {
			t.Fatalf("result depends on read sizes: %+v vs %+v", results[0], results[1])
		}
	})
}

// helloErrKind classifies readClientHello's errors for comparison.
func helloErrKind(err error) error {
	for _, kind := range []error{errNotTLS, errHelloMalformed, errHelloTooLarge, io.ErrUnexpectedEOF, io.EOF} {
		if errors.Is(err, kind) {
			return kind
		}
	}
	return err
}

// naiveHello concatenates the record payloads of data until they hold the
// handshake message announced by its first four bytes, trusting the headers.
func naiveHello(data []byte) (msg []byte, complete bool) {
	var payload []byte
	for len(data) >= 5 {
		n := int(data[3])<<8 | int(data[4])
		payload = append(payload, data[5:min(5+n, len(data))]...)
		data = data[min(5+n, len(data)):]
		if len(payload) >= 4 {
			end := 4 + (int(payload[1])<<16 | int(payload[2])<<8 | int(payload[3]))
			if len(payload) >= end {
				return payload[:end], true
			}
		}
	}
	return nil, false
}
