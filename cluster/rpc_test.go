package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// The cluster RPC's framing and error codes round-trip, and any input is
// refused without a panic.
func TestRPCFrames(t *testing.T) {
	var buf bytes.Buffer
	req := &rpcRequest{Op: opApply, Command: &Command{Version: 1, Type: DeleteServer, Name: "web"}, TimeoutMS: 5}
	if err := writeFrame(&buf, req); err != nil {
		t.Fatal(err)
	}
	var got rpcRequest
	if err := readFrame(&buf, &got); err != nil || got.Op != opApply || got.Command.Name != "web" {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if err := readFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff}), &got); err == nil {
		t.Fatal("an oversized frame was accepted")
	}
	for _, c := range errCodes {
		err := errFromResponse(&rpcResponse{Code: codeOf(c.err), Error: "remote: " + c.err.Error()})
		if !errors.Is(err, c.err) || err.Error() != "remote: "+c.err.Error() {
			t.Fatalf("code %s: %v", c.code, err)
		}
	}
	if err := errFromResponse(&rpcResponse{Code: "from-a-newer-release", Error: "x"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("unknown code: %v", err)
	}
	if err := errFromResponse(&rpcResponse{Revision: 3}); err != nil {
		t.Fatalf("success: %v", err)
	}
}

func FuzzRPCFrame(f *testing.F) {
	var buf bytes.Buffer
	_ = writeFrame(&buf, &rpcRequest{Op: opApply, Command: &Command{Version: 1, Type: PutServer, Name: "a"}})
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 4, 'n', 'u', 'l', 'l'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var req rpcRequest
		if readFrame(bytes.NewReader(b), &req) != nil {
			return
		}
		if req.Command != nil {
			_ = req.Command.Validate()
		}
	})
}

// A pooled connection whose peer went away is not used for the next call.
func TestRPCPoolDropsClosedConnections(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	for name, tc := range map[string]*tls.Config{"tcp": nil, "tls": ca.nodeTLS(t, "n")} {
		t.Run(name, func(t *testing.T) {
			lg := slog.New(slog.NewTextHandler(io.Discard, nil))
			srvMux, err := newMux("127.0.0.1:0", "", tc, lg)
			if err != nil {
				t.Fatal(err)
			}
			defer srvMux.Close()
			calls := 0
			srv := &rpcServer{ln: srvMux.subs[muxRPC], conns: map[net.Conn]struct{}{}, handle: func(context.Context, *rpcRequest) *rpcResponse {
				calls++
				return &rpcResponse{Revision: uint64(calls)}
			}}
			srv.wg.Add(1)
			go srv.serve()
			cliMux, err := newMux("127.0.0.1:0", "", tc, lg)
			if err != nil {
				t.Fatal(err)
			}
			defer cliMux.Close()
			dials := 0
			cli := &rpcClient{idle: map[string][]*rpcConn{}, dial: func(ctx context.Context, a string, d time.Duration) (net.Conn, error) {
				dials++
				return cliMux.dial(ctx, a, muxRPC, d)
			}}
			defer cli.close()
			ctx := context.Background()
			addr := srvMux.adv.String()
			if r, err := cli.call(ctx, addr, &rpcRequest{Op: opApply}); err != nil || r.Revision != 1 {
				t.Fatalf("first call: %+v, %v", r, err)
			}
			if r, err := cli.call(ctx, addr, &rpcRequest{Op: opApply}); err != nil || r.Revision != 2 {
				t.Fatalf("pooled call: %+v, %v", r, err)
			}
			if dials != 1 {
				t.Fatalf("%d dials for two calls: the pooled connection was not reused", dials)
			}
			// The server drops its connections (as a restart does).
			srv.mu.Lock()
			for c := range srv.conns {
				_ = c.Close()
			}
			srv.mu.Unlock()
			eventually(t, 2*time.Second, "server connections closed", func() bool {
				srv.mu.Lock()
				defer srv.mu.Unlock()
				return len(srv.conns) == 0
			})
			time.Sleep(50 * time.Millisecond) // let the FIN reach the client socket
			if r, err := cli.call(ctx, addr, &rpcRequest{Op: opApply}); err != nil || r.Revision != 3 {
				t.Fatalf("call after the peer closed the pooled connection: %+v, %v", r, err)
			}
			srv.close()
		})
	}
}
