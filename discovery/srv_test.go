package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/gobetween/gobetween/config"
)

const dnsmasqBin = "/usr/sbin/dnsmasq"

// dnsmasq is a real DNS server run by a test as a child process on a loopback
// port, answering over UDP and TCP from its command-line records.
type dnsmasq struct {
	t      *testing.T
	port   int
	cmd    *exec.Cmd     // nil when not running
	exited chan struct{} // closed once cmd has been waited for
}

// startDnsmasq runs dnsmasq with records (--srv-host, --host-record...) and
// waits until it answers. The test fails, not skips, without dnsmasq.
func startDnsmasq(t *testing.T, records ...string) *dnsmasq {
	t.Helper()
	if _, err := os.Stat(dnsmasqBin); err != nil {
		t.Fatalf("SRV discovery tests need a real DNS server: install the Debian package dnsmasq-base (%v)", err)
	}
	d := &dnsmasq{t: t}
	t.Cleanup(d.stop)
	var err error
	for range 5 {
		d.port = freeDNSPort(t)
		if err = d.start(records); err == nil {
			return d
		}
	}
	t.Fatalf("dnsmasq did not start: %v", err)
	return nil
}

// restart stops dnsmasq and starts it on the same port with new records
// (dnsmasq reloads its hosts files on SIGHUP, never its SRV records).
func (d *dnsmasq) restart(records ...string) {
	d.t.Helper()
	d.stop()
	if err := d.start(records); err != nil {
		d.t.Fatalf("dnsmasq restart: %v", err)
	}
}

func (d *dnsmasq) start(records []string) error {
	args := []string{
		"--keep-in-foreground", "--port=" + strconv.Itoa(d.port),
		"--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--no-hosts", "--pid-file=", "--log-facility=-",
	}
	if os.Geteuid() == 0 {
		// Otherwise dnsmasq becomes nobody, who cannot read the test's files.
		args = append(args, "--user=root")
	}
	cmd := exec.Command(dnsmasqBin, append(args, records...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", dnsmasqBin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	d.cmd, d.exited = cmd, exited
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			d.cmd = nil
			return fmt.Errorf("dnsmasq exited (%v): %s", waitErr, out.String())
		default:
		}
		// Ready when it answers over both transports the tests use.
		q := new(dns.Msg)
		q.SetQuestion("ready.invalid.", dns.TypeA)
		_, _, errUDP := (&dns.Client{Net: "udp", Timeout: 100 * time.Millisecond}).Exchange(q, d.addr())
		_, _, errTCP := (&dns.Client{Net: "tcp", Timeout: 100 * time.Millisecond}).Exchange(q, d.addr())
		if errUDP == nil && errTCP == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	d.stop()
	return fmt.Errorf("dnsmasq on port %d did not answer within 10s", d.port)
}

// stop kills dnsmasq and waits until it is gone, so its port is free again.
func (d *dnsmasq) stop() {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Kill()
	<-d.exited
	d.cmd = nil
}

// hangup makes dnsmasq re-read its --addn-hosts files.
func (d *dnsmasq) hangup() {
	d.t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		d.t.Fatalf("SIGHUP dnsmasq: %v", err)
	}
}

func (d *dnsmasq) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port)) }

// freeDNSPort returns a loopback port free for both UDP and TCP just now.
func freeDNSPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		pc.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return 0
}

func newSrvProvider(t *testing.T, server, name, network string) Provider {
	t.Helper()
	p, err := NewRegistry().New(config.Discovery{Kind: "srv", SrvLookupServer: server, SrvLookupPattern: name, SrvDnsProtocol: network})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func srvBackend(host, port string, priority, weight int, sni string) config.Backend {
	return config.Backend{Target: config.Target{Host: host, Port: port}, Priority: priority, Weight: weight, Sni: sni}
}

// rawQuery asks server directly, for assertions on what dnsmasq sends.
func rawQuery(t *testing.T, server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(srvUDPSize, false)
	r, _, err := (&dns.Client{Net: network}).Exchange(q, server)
	if err != nil {
		t.Fatalf("%s query %s: %v", network, name, err)
	}
	return r
}

// srvDump shows every field (Backend's String shows only the address).
func srvDump(list []config.Backend) string {
	var b strings.Builder
	for _, x := range list {
		fmt.Fprintf(&b, "%s priority=%d weight=%d sni=%q\n", x.Address(), x.Priority, x.Weight, x.Sni)
	}
	return b.String()
}

func sameBackends(got, want []config.Backend) bool {
	return got != nil && slices.Equal(sortedCopy(got), sortedCopy(want))
}

func TestSrvFactory(t *testing.T) {
	tests := []struct {
		name    string
		cfg     config.Discovery
		wantErr string
	}{
		{"defaults to udp", config.Discovery{SrvLookupServer: "127.0.0.1:53", SrvLookupPattern: "_a._tcp.example."}, ""},
		{"pattern without the final dot", config.Discovery{SrvLookupServer: "127.0.0.1:53", SrvLookupPattern: "_a._tcp.example", SrvDnsProtocol: "tcp"}, ""},
		{"server without port", config.Discovery{SrvLookupServer: "127.0.0.1", SrvLookupPattern: "x."}, "srv_lookup_server"},
		{"empty pattern", config.Discovery{SrvLookupServer: "127.0.0.1:53"}, "srv_lookup_pattern"},
		{"root pattern", config.Discovery{SrvLookupServer: "127.0.0.1:53", SrvLookupPattern: "."}, "srv_lookup_pattern"},
		{"empty label", config.Discovery{SrvLookupServer: "127.0.0.1:53", SrvLookupPattern: "a..b."}, "srv_lookup_pattern"},
		{"label too long", config.Discovery{SrvLookupServer: "127.0.0.1:53", SrvLookupPattern: strings.Repeat("a", 64) + "."}, "srv_lookup_pattern"},
		{"protocol", config.Discovery{SrvLookupServer: "127.0.0.1:53", SrvLookupPattern: "x.", SrvDnsProtocol: "tls"}, `srv_dns_protocol "tls"`},
	}
	reg := NewRegistry()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Kind = "srv"
			p, err := reg.New(tc.cfg)
			if tc.wantErr == "" {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v", p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error %v, want one mentioning %q", err, tc.wantErr)
			}
		})
	}
}

// TestSrvDnsmasq fetches from a real dnsmasq: addresses as glue (A, AAAA,
// from a hosts file) and by follow-up queries (targets dnsmasq sends no glue
// for), unusable records left out, over UDP and TCP.
func TestSrvDnsmasq(t *testing.T) {
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.4 b4.example.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDnsmasq(t,
		"--local=/example.test/",
		"--addn-hosts="+hosts,
		"--srv-host=_web._tcp.example.test,b1.example.test,8001,10,60",
		"--srv-host=_web._tcp.example.test,b2.example.test,8002,20,0",
		"--srv-host=_web._tcp.example.test,b3.other.test,8003,30,5",
		"--srv-host=_web._tcp.example.test,b4.example.test,8004,10,60",
		"--srv-host=_web._tcp.example.test,b5.v6.test,8005,10,60",
		"--srv-host=_web._tcp.example.test,gone.example.test,8006,10,60",
		"--srv-host=_web._tcp.example.test,B1.Example.Test,8007,1,1",
		"--host-record=b1.example.test,127.0.0.1",
		"--host-record=b2.example.test,::1",
		"--address=/other.test/127.0.0.3",
		"--address=/v6.test/fd00::5",
		"--local=/v6.test/", // the A query gets an empty answer, not REFUSED
		"--srv-host=_none._tcp.example.test",
	)

	// The follow-up path is only exercised if dnsmasq sends no glue for these.
	glue := rawQuery(t, d.addr(), "udp", "_web._tcp.example.test.", dns.TypeSRV)
	for _, rr := range glue.Extra {
		if n := dns.CanonicalName(rr.Header().Name); n == "b3.other.test." || n == "b5.v6.test." {
			t.Fatalf("dnsmasq sent glue for %s; the follow-up queries would go untested", n)
		}
	}

	want := []config.Backend{
		srvBackend("127.0.0.1", "8001", 10, 60, "b1.example.test"), // glue A
		srvBackend("::1", "8002", 20, 0, "b2.example.test"),        // glue AAAA
		srvBackend("127.0.0.3", "8003", 30, 5, "b3.other.test"),    // follow-up A
		srvBackend("127.0.0.4", "8004", 10, 60, "b4.example.test"), // glue from a hosts file
		srvBackend("fd00::5", "8005", 10, 60, "b5.v6.test"),        // follow-up AAAA
		srvBackend("127.0.0.1", "8007", 1, 1, "b1.example.test"),   // a second record for a target (dnsmasq lower-cases it)
		// gone.example.test has no address (NXDOMAIN): left out.
	}
	tests := []struct {
		name    string
		qname   string
		want    []config.Backend
		wantErr string
	}{
		{"records", "_web._tcp.example.test.", want, ""},
		{"no final dot", "_web._tcp.example.test", want, ""},
		{"target . means no service", "_none._tcp.example.test.", []config.Backend{}, ""},
		{"NXDOMAIN is no backends", "_nope._tcp.example.test.", []config.Backend{}, ""},
		{"no SRV data is no backends", "b1.example.test.", []config.Backend{}, ""},
		{"REFUSED fails", "_web._tcp.elsewhere.test.", nil, "REFUSED"},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				p := newSrvProvider(t, d.addr(), tc.qname, network)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				got, err := p.Fetch(ctx)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "over "+network) {
						t.Fatalf("Fetch = %v, %v; want an error mentioning %q over %s", got, err, tc.wantErr, network)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !sameBackends(got, tc.want) {
					t.Fatalf("Fetch =\n%s\nwant\n%s", srvDump(got), srvDump(tc.want))
				}
			})
		}
	}
}

// TestSrvTruncated makes dnsmasq truncate the UDP answer and checks that the
// fetch asks again over TCP and gets every record.
func TestSrvTruncated(t *testing.T) {
	const n = 40
	var records []string
	var want []config.Backend
	for i := range n {
		target := fmt.Sprintf("host-with-a-rather-long-name-%02d.example.test", i)
		ip := fmt.Sprintf("127.0.1.%d", i+1)
		port := strconv.Itoa(9000 + i)
		records = append(records,
			fmt.Sprintf("--srv-host=_many._tcp.example.test,%s,%s,1,%d", target, port, i),
			fmt.Sprintf("--host-record=%s,%s", target, ip))
		want = append(want, srvBackend(ip, port, 1, i, target))
	}
	d := startDnsmasq(t, records...)

	udp := rawQuery(t, d.addr(), "udp", "_many._tcp.example.test.", dns.TypeSRV)
	if !udp.Truncated || len(udp.Answer) >= n {
		t.Fatalf("dnsmasq UDP answer: truncated=%v with %d of %d records; the test needs a truncated one", udp.Truncated, len(udp.Answer), n)
	}
	p := newSrvProvider(t, d.addr(), "_many._tcp.example.test.", "udp")
	got, err := p.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !sameBackends(got, want) {
		t.Fatalf("Fetch got %d backends, want all %d:\n%v", len(got), n, got)
	}
}

// TestSrvChanges sees records change between fetches: an address in a hosts
// file re-read on SIGHUP, then new SRV records (dnsmasq restarted).
func TestSrvChanges(t *testing.T) {
	hosts := filepath.Join(t.TempDir(), "hosts")
	writeHosts := func(s string) {
		if err := os.WriteFile(hosts, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeHosts("127.0.0.4 b4.example.test\n")
	common := []string{"--local=/example.test/", "--addn-hosts=" + hosts}
	d := startDnsmasq(t, append(common,
		"--srv-host=_web._tcp.example.test,b4.example.test,8004,1,1")...)

	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			writeHosts("127.0.0.4 b4.example.test\n")
			d.restart(append(common, "--srv-host=_web._tcp.example.test,b4.example.test,8004,1,1")...)
			p := newSrvProvider(t, d.addr(), "_web._tcp.example.test.", network)
			fetch := func() []config.Backend {
				t.Helper()
				got, err := p.Fetch(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				return got
			}
			if got, want := fetch(), []config.Backend{srvBackend("127.0.0.4", "8004", 1, 1, "b4.example.test")}; !sameBackends(got, want) {
				t.Fatalf("first fetch %v, want %v", got, want)
			}

			writeHosts("127.0.0.5 b4.example.test\n")
			d.hangup()
			moved := []config.Backend{srvBackend("127.0.0.5", "8004", 1, 1, "b4.example.test")}
			eventually(t, "the new address after SIGHUP", func() bool { return sameBackends(fetch(), moved) })

			d.restart(append(common,
				"--srv-host=_web._tcp.example.test,b4.example.test,8014,2,3",
				"--srv-host=_web._tcp.example.test,b6.example.test,8006,1,1",
				"--host-record=b6.example.test,127.0.0.6")...)
			want := []config.Backend{
				srvBackend("127.0.0.5", "8014", 2, 3, "b4.example.test"),
				srvBackend("127.0.0.6", "8006", 1, 1, "b6.example.test"),
			}
			if got := fetch(); !sameBackends(got, want) {
				t.Fatalf("after new records %v, want %v", got, want)
			}
		})
	}
}

// fakeDNS is an in-process DNS server for answers dnsmasq cannot be made to
// give (SERVFAIL); handler gets each query.
func fakeDNS(t *testing.T, network string, handler dns.HandlerFunc) string {
	t.Helper()
	started := make(chan struct{})
	srv := &dns.Server{Net: network, Handler: handler, NotifyStartedFunc: func() { close(started) }}
	switch network {
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.PacketConn = pc
	default:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener = l
	}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	if srv.PacketConn != nil {
		return srv.PacketConn.LocalAddr().String()
	}
	return srv.Listener.Addr().String()
}

func TestSrvServfail(t *testing.T) {
	srvNoGlue := func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		switch q.Question[0].Qtype {
		case dns.TypeSRV:
			r.Answer = append(r.Answer, &dns.SRV{
				Hdr:    dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET},
				Target: "b.example.", Port: 80, Priority: 1, Weight: 1,
			})
		default:
			r.Rcode = dns.RcodeServerFailure
		}
		_ = w.WriteMsg(r)
	}
	servfail := func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeServerFailure)
		_ = w.WriteMsg(r)
	}
	tests := []struct {
		name    string
		handler dns.HandlerFunc
		wantErr []string
	}{
		{"SRV query", servfail, []string{"SRV _s._tcp.example.", "SERVFAIL"}},
		{"follow-up address query", srvNoGlue, []string{"SRV target b.example.", "A b.example.", "SERVFAIL"}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				p := newSrvProvider(t, fakeDNS(t, network, tc.handler), "_s._tcp.example.", network)
				got, err := p.Fetch(context.Background())
				if err == nil {
					t.Fatalf("Fetch = %v, want an error", got)
				}
				for _, part := range tc.wantErr {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("error %q does not mention %q", err, part)
					}
				}
			})
		}
	}
}

// TestSrvContext checks that a server that never answers costs no more than
// the context allows, with the deadline or the cancellation in the error.
func TestSrvContext(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn // accepted, never answered
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	silent := map[string]string{"udp": pc.LocalAddr().String(), "tcp": l.Addr().String()}

	const wait = 150 * time.Millisecond
	for _, network := range []string{"udp", "tcp"} {
		for _, mode := range []struct {
			name string
			ctx  func() (context.Context, context.CancelFunc)
			want error
		}{
			{"deadline", func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), wait)
			}, context.DeadlineExceeded},
			// miekg/dns alone would wait its own 2s read timeout.
			{"cancel", func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(wait, cancel)
				return ctx, cancel
			}, context.Canceled},
		} {
			t.Run(network+"/"+mode.name, func(t *testing.T) {
				p := newSrvProvider(t, silent[network], "_s._tcp.example.", network)
				ctx, cancel := mode.ctx()
				defer cancel()
				start := time.Now()
				got, err := p.Fetch(ctx)
				took := time.Since(start)
				if !errors.Is(err, mode.want) {
					t.Fatalf("Fetch = %v, %v; want %v", got, err, mode.want)
				}
				if took < wait || took > wait+time.Second {
					t.Fatalf("Fetch took %s with a context ending after %s", took, wait)
				}
			})
		}
	}
}

// TestSrvSource runs the kind under a Source with the default config, as a
// server would.
func TestSrvSource(t *testing.T) {
	d := startDnsmasq(t,
		"--srv-host=_web._tcp.example.test,b1.example.test,8001,10,60",
		"--host-record=b1.example.test,127.0.0.1")
	cfg := config.Discovery{
		Kind: "srv", Failpolicy: "keeplast", Timeout: config.Duration{D: 5 * time.Second},
		SrvLookupServer: d.addr(), SrvLookupPattern: "_web._tcp.example.test.", SrvDnsProtocol: "udp",
	}
	p, err := NewRegistry().New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	_, done := runSource(t, NewSource(cfg, p, nil), r)
	waitDone(t, done, "interval 0 stops after the first success")
	want := [][]config.Backend{{srvBackend("127.0.0.1", "8001", 10, 60, "b1.example.test")}}
	if got := r.get(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

func srvSeed(f *testing.F, m *dns.Msg) {
	b, err := m.Pack()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
}

// FuzzSrvAnswer feeds arbitrary messages to the answer-to-backends conversion:
// it must not panic and must only produce dialable backends.
func FuzzSrvAnswer(f *testing.F) {
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
	}
	m := new(dns.Msg)
	m.SetQuestion("_s._tcp.example.", dns.TypeSRV)
	m.Answer = []dns.RR{
		&dns.CNAME{Hdr: hdr("_s._tcp.example.", dns.TypeCNAME), Target: "_t._tcp.example."},
		&dns.SRV{Hdr: hdr("_t._tcp.example.", dns.TypeSRV), Priority: 1, Weight: 2, Port: 80, Target: "a.example."},
		&dns.SRV{Hdr: hdr("_t._tcp.example.", dns.TypeSRV), Priority: 3, Weight: 4, Port: 81, Target: "B.example."},
		&dns.SRV{Hdr: hdr("_t._tcp.example.", dns.TypeSRV), Port: 0, Target: "c.example."},
		&dns.SRV{Hdr: hdr("_t._tcp.example.", dns.TypeSRV), Port: 1, Target: "."},
		&dns.A{Hdr: hdr("a.example.", dns.TypeA), A: net.IPv4(10, 0, 0, 1)},
	}
	m.Extra = []dns.RR{
		&dns.A{Hdr: hdr("a.example.", dns.TypeA), A: net.IPv4(10, 0, 0, 1)},
		&dns.AAAA{Hdr: hdr("b.example.", dns.TypeAAAA), AAAA: net.ParseIP("fd00::1")},
		&dns.A{Hdr: hdr("b.example.", dns.TypeA), A: net.IPv4(10, 0, 0, 2)},
	}
	m.SetEdns0(srvUDPSize, false)
	srvSeed(f, m)
	m.Truncated = true
	m.Rcode = dns.RcodeNameError
	srvSeed(f, m)
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		m := new(dns.Msg)
		if err := m.Unpack(data); err != nil {
			return
		}
		qname := "_s._tcp.example."
		if len(m.Question) > 0 {
			qname = m.Question[0].Name
		}
		records := srvRecords(m, qname)
		addrs := glueAddresses(m.Extra)
		for _, r := range records {
			if a := answerAddress(m, r.Target, dns.TypeA); a != "" {
				addrs[dns.CanonicalName(r.Target)] = a
			}
			if a := answerAddress(m, r.Target, dns.TypeAAAA); a != "" {
				if _, err := netip.ParseAddr(a); err != nil {
					t.Fatalf("AAAA address %q: %v", a, err)
				}
			}
		}
		backends := srvBackends(records, addrs)
		if len(backends) > len(records) {
			t.Fatalf("%d backends from %d records", len(backends), len(records))
		}
		for _, b := range backends {
			if _, err := netip.ParseAddr(b.Host); err != nil {
				t.Fatalf("backend host %q is not an address: %v", b.Host, err)
			}
			if port, err := strconv.Atoi(b.Port); err != nil || port < 1 || port > 65535 {
				t.Fatalf("backend port %q", b.Port)
			}
			if b.Sni == "" || strings.HasSuffix(b.Sni, ".") && !strings.HasSuffix(b.Sni, `\.`) {
				t.Fatalf("backend sni %q", b.Sni)
			}
			if b.Priority < 0 || b.Priority > 65535 || b.Weight < 0 || b.Weight > 65535 {
				t.Fatalf("backend priority %d weight %d", b.Priority, b.Weight)
			}
			if _, err := config.ParseBackend(fmt.Sprintf("%s weight=%d priority=%d", b.Address(), b.Weight, b.Priority)); err != nil {
				t.Fatalf("backend %v does not read back: %v", b, err)
			}
		}
	})
}
