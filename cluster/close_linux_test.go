package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// closeDeadline is how long Close may take with a lost peer. Without aborting
// the Raft connections it takes the transport's 10 s timeout.
const closeDeadline = 2 * time.Second

// blackhole stands between the cluster and one member's cluster port, the way a
// peer host whose link went down looks from the others: once switched off,
// connections it carried stay open but nothing comes back, and new connects
// hang (its listen backlog is 0 and filled, so the kernel drops the SYNs:
// loopback gives no other way to make a connect neither succeed nor fail).
type blackhole struct {
	ln        net.Listener
	target    string
	off       atomic.Bool
	swallowed atomic.Int64 // bytes received for the member after switching off

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// newBlackhole forwards to target; with target "" it starts switched off.
func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("blackhole socket: %v", err)
	}
	f := os.NewFile(uintptr(fd), "blackhole")
	defer f.Close()
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("blackhole bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("blackhole listen: %v", err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		t.Fatalf("blackhole listener: %v", err)
	}
	b := &blackhole{ln: ln, target: target}
	t.Cleanup(b.close)
	if target == "" {
		b.switchOff(t)
		return b
	}
	b.wg.Add(1)
	go b.accept()
	return b
}

func (b *blackhole) addr() string { return b.ln.Addr().String() }

func (b *blackhole) port() int { return b.ln.Addr().(*net.TCPAddr).Port }

func (b *blackhole) keep(c net.Conn) {
	b.mu.Lock()
	b.conns = append(b.conns, c)
	b.mu.Unlock()
}

// accept forwards until switched off; then it takes one more connection (the
// one switchOff makes) and stops calling Accept, so the backlog fills.
func (b *blackhole) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.keep(c)
		if b.off.Load() {
			return
		}
		up, err := net.Dial("tcp", b.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		b.keep(up)
		b.wg.Add(2)
		go b.pipe(up, c, true)
		go b.pipe(c, up, false)
	}
}

// pipe copies src to dst while on. Switched off it reads and drops (counting
// what was meant for the member) and closes nothing: the sender waits for
// answers that never come.
func (b *blackhole) pipe(dst, src net.Conn, toMember bool) {
	defer b.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if b.off.Load() {
				if toMember {
					b.swallowed.Add(int64(n))
				}
			} else if _, werr := dst.Write(buf[:n]); werr != nil && !b.off.Load() {
				_ = src.Close()
				_ = dst.Close()
				return
			}
		}
		if err != nil {
			if !b.off.Load() {
				_ = src.Close()
				_ = dst.Close()
			}
			return
		}
	}
}

// switchOff stops forwarding and fills the backlog, then checks that a connect
// hangs.
func (b *blackhole) switchOff(t *testing.T) {
	t.Helper()
	b.off.Store(true)
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatalf("blackhole %s still completes connects after %d", b.addr(), i)
		}
		c, err := net.DialTimeout("tcp", b.addr(), 200*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return
		}
		if err != nil {
			t.Fatalf("blackhole probe: %v", err)
		}
		b.keep(c)
	}
}

func (b *blackhole) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// synSent lists the local ports of this host's IPv4 sockets stuck connecting
// to 127.0.0.1:port.
func synSent(t *testing.T, port int) []string {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := fmt.Sprintf("0100007F:%04X", port)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 3 && fs[2] == want && fs[3] == "02" {
			out = append(out, fs[1])
		}
	}
	return out
}

// timedClose closes n and fails the test when that takes longer than
// closeDeadline; it still waits (up to 30 s) to log how long it took.
func timedClose(t *testing.T, n *Node, what string) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case err := <-done:
		took := time.Since(start)
		if err != nil {
			t.Errorf("close %s: %v", what, err)
		}
		t.Logf("close %s: %s", what, took)
		return took
	case <-time.After(closeDeadline):
	}
	select {
	case err := <-done:
		t.Errorf("close %s took %s, want under %s (err %v)", what, time.Since(start), closeDeadline, err)
	case <-time.After(30 * time.Second):
		t.Errorf("close %s still blocked after 30 s", what)
	}
	return time.Since(start)
}

// TestCloseWithLostPeer stops nodes of a three-voter cluster whose third member
// is unreachable: Close must not wait for Raft's RPCs to that member to time
// out, and the node's log must be intact afterwards.
func TestCloseWithLostPeer(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	for _, tc := range []struct {
		name     string
		realPeer bool // n3 runs behind the blackhole until switched off
		tls      bool
	}{
		// The member's host was gone before the leader ever reached it: the
		// leader's replication hangs in connect.
		{name: "connect hangs", realPeer: false},
		{name: "tls connect hangs", realPeer: false, tls: true},
		// The link to a member the leader was replicating to goes down: its
		// heartbeat hangs waiting for the answer on an established connection.
		{name: "answers stop", realPeer: true},
		{name: "tls answers stop", realPeer: true, tls: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			open := func(id, dir string, bootstrap bool) *Node {
				t.Helper()
				o := Options{NodeID: id, DataDir: dir, RaftBind: "127.0.0.1:0", Bootstrap: bootstrap, Logger: testLogger(t)}
				if tc.tls {
					o.TLS = ca.nodeTLS(t, id)
				}
				n, err := Open(ctx, o)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = n.Close() })
				return n
			}
			dir1 := t.TempDir()
			n1 := open("n1", dir1, true)
			waitLeader(t, n1, 5*time.Second)
			n2 := open("n2", t.TempDir(), false)
			if err := n1.AddVoter(ctx, "n2", n2.Addr()); err != nil {
				t.Fatal(err)
			}

			var bh *blackhole
			if tc.realPeer {
				n3 := open("n3", t.TempDir(), false)
				bh = newBlackhole(t, n3.Addr())
				if err := n1.AddVoter(ctx, "n3", bh.addr()); err != nil {
					t.Fatal(err)
				}
				rev, err := n1.Apply(ctx, putCmd("web", "a:1"))
				if err != nil {
					t.Fatal(err)
				}
				eventually(t, 5*time.Second, "n3 applies the write through the proxy", func() bool {
					return n3.State().Servers["web"].Revision == rev
				})
				bh.switchOff(t)
				if err := n3.Close(); err != nil {
					t.Fatal(err)
				}
				if _, err := n1.Apply(ctx, putCmd("web", "b:1")); err != nil {
					t.Fatalf("write with n3 lost: %v", err)
				}
				// Bytes for n3 since the switch: the leader waits for their answer.
				eventually(t, 5*time.Second, "the leader sends to the lost n3", func() bool {
					return bh.swallowed.Load() > 0
				})
			} else {
				bh = newBlackhole(t, "")
				if err := n1.AddVoter(ctx, "n3", bh.addr()); err != nil {
					t.Fatal(err)
				}
				if _, err := n1.Apply(ctx, putCmd("web", "a:1")); err != nil {
					t.Fatalf("write with n3 lost: %v", err)
				}
				eventually(t, 5*time.Second, "the leader connecting to the lost n3", func() bool {
					return len(synSent(t, bh.port())) > 0
				})
			}
			if !n1.IsLeader() {
				t.Fatal("n1 lost the leadership with two of three voters up")
			}
			want := []string{"n1=voter", "n2=voter", "n3=voter"}
			if got := suffrages(n1.Members()); !slices.Equal(got, want) {
				t.Fatalf("members %v", got)
			}
			last := n1.raft.LastIndex()
			pending := synSent(t, bh.port())

			timedClose(t, n1, "leader n1")

			// n2, left without a leader, asks n3 for its vote: a candidate's
			// Close must not wait for that connect either.
			eventually(t, 5*time.Second, "n2 connecting to the lost n3", func() bool {
				for _, p := range synSent(t, bh.port()) {
					if !slices.Contains(pending, p) {
						return true
					}
				}
				return false
			})
			timedClose(t, n2, "candidate n2")

			// The stores were closed after raft stopped: the log reopens whole.
			n1b := open("n1", dir1, false)
			if !n1b.hasState.Load() {
				t.Fatal("n1 reopened without its raft state")
			}
			if got := n1b.raft.LastIndex(); got != last {
				t.Fatalf("n1 reopened with last index %d, want %d", got, last)
			}
			if err := n1b.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
