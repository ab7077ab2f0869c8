package discovery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gobetween/gobetween/config"
)

// fakeConsul is an in-process Consul agent for /v1/health/service/<name> only,
// so that the tests drive the real consul/api client. It follows Consul's
// documented HTTP API: the answer body is the JSON array of
// {"Node","Service","Checks"} entries; every answer carries X-Consul-Index; a
// query with ?index=N&wait=D where N is the current index blocks until the
// index changes (answering at once) or D elapses (answering the unchanged
// list), without Consul's wait/16 jitter. It checks the ACL token
// (X-Consul-Token) and HTTP basic auth when they are set, and answers 403 and
// 401 as Consul does.
type fakeConsul struct {
	token, user, pass string

	mu       sync.Mutex
	index    uint64
	body     []byte        // the answer; raw so that tests can send anything
	changed  chan struct{} // closed and replaced at every change
	queries  []url2        // every query's parameters, in order
	parked   chan struct{} // receives when a blocking query starts waiting
	status   int           // answer this status instead of 200 when set
	bodySize int           // answer this many bytes of '[' when set
}

// url2 is the part of a query the tests look at.
type url2 struct {
	path, index, wait, tag, passing, dc string
}

func newFakeConsul() *fakeConsul {
	return &fakeConsul{index: 1, body: []byte("[]"), changed: make(chan struct{}), parked: make(chan struct{}, 16)}
}

// set replaces the answer with entries and moves the index to index.
func (f *fakeConsul) set(index uint64, entries string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index, f.body = index, []byte(entries)
	close(f.changed)
	f.changed = make(chan struct{})
}

// waitParked waits until a blocking query starts waiting.
func (f *fakeConsul) waitParked(t *testing.T) {
	t.Helper()
	select {
	case <-f.parked:
	case <-time.After(10 * time.Second):
		t.Fatal("no blocking query came")
	}
}

func (f *fakeConsul) queryLog() []url2 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queries)
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	f.queries = append(f.queries, url2{r.URL.Path, q.Get("index"), q.Get("wait"), q.Get("tag"), q.Get("passing"), q.Get("dc")})
	f.mu.Unlock()
	if !strings.HasPrefix(r.URL.Path, "/v1/health/service/") {
		http.NotFound(w, r)
		return
	}
	if f.token != "" && r.Header.Get("X-Consul-Token") != f.token {
		http.Error(w, "ACL not found", http.StatusForbidden)
		return
	}
	if f.user != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != f.user || p != f.pass {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	f.mu.Lock()
	index, changed := f.index, f.changed
	f.mu.Unlock()
	if want, err := strconv.ParseUint(q.Get("index"), 10, 64); err == nil && want > 0 && want >= index {
		wait := 5 * time.Minute
		if d, err := time.ParseDuration(q.Get("wait")); err == nil {
			wait = d
		}
		f.parked <- struct{}{}
		select {
		case <-changed:
		case <-time.After(wait):
		case <-r.Context().Done():
			return
		}
	}
	f.mu.Lock()
	index, body, status, size := f.index, f.body, f.status, f.bodySize
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("X-Consul-LastContact", "0")
	if status != 0 {
		w.WriteHeader(status)
	}
	if size > 0 {
		w.Write([]byte(strings.Repeat("[", size)))
		return
	}
	w.Write(body)
}

// consulEntry is one health entry as Consul writes it.
func consulEntry(id, nodeAddr, addr string, port, passingWeight int, tags ...string) map[string]any {
	return map[string]any{
		"Node": map[string]any{"ID": "n-" + id, "Node": "node-" + id, "Address": nodeAddr, "Datacenter": "dc1",
			"TaggedAddresses": map[string]string{"lan": nodeAddr}, "Meta": map[string]string{}, "CreateIndex": 5, "ModifyIndex": 5},
		"Service": map[string]any{"ID": id, "Service": "web", "Tags": tags, "Address": addr, "Port": port,
			"Weights": map[string]int{"Passing": passingWeight, "Warning": 1}, "Meta": map[string]string{},
			"EnableTagOverride": false, "CreateIndex": 7, "ModifyIndex": 7},
		"Checks": []map[string]any{{"Node": "node-" + id, "CheckID": "serfHealth", "Name": "Serf Health Status",
			"Status": "passing", "ServiceID": "", "ServiceName": ""}},
	}
}

func entriesJSON(t testing.TB, entries ...map[string]any) string {
	t.Helper()
	if entries == nil {
		return "[]"
	}
	b, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func consulCfg(host string, change func(*config.Discovery)) config.Discovery {
	d := config.Discovery{Kind: "consul", ConsulHost: host, ConsulServiceName: "web"}
	if change != nil {
		change(&d)
	}
	return d
}

func startFakeConsul(t *testing.T, f *fakeConsul) string {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func newConsulT(t *testing.T, cfg config.Discovery) *consulProvider {
	t.Helper()
	p, err := newConsul(cfg)
	if err != nil {
		t.Fatalf("newConsul: %v", err)
	}
	return p.(*consulProvider)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestConsulFetch(t *testing.T) {
	tests := []struct {
		name    string
		entries string
		change  func(*config.Discovery)
		server  func(*fakeConsul)
		want    []config.Backend
		query   url2
	}{
		{"service address, weight, sni tag",
			entriesJSON(t, consulEntry("a", "10.1.0.1", "10.0.0.1", 8080, 5, "v2", "sni=a.example.com"),
				consulEntry("b", "10.1.0.2", "10.0.0.2", 8081, 0)),
			nil, nil,
			[]config.Backend{
				{Target: config.Target{Host: "10.0.0.1", Port: "8080"}, Weight: 5, Priority: 1, Sni: "a.example.com"},
				{Target: config.Target{Host: "10.0.0.2", Port: "8081"}, Weight: 1, Priority: 1}},
			url2{path: "/v1/health/service/web"}},
		{"node address when the service has none; IPv6",
			entriesJSON(t, consulEntry("a", "10.1.0.1", "", 80, 1), consulEntry("b", "10.1.0.2", "fd00::2", 80, 1)),
			nil, nil,
			[]config.Backend{backend("10.1.0.1", "80", 1, 1), backend("fd00::2", "80", 1, 1)},
			url2{path: "/v1/health/service/web"}},
		{"tag, passing only, datacenter",
			entriesJSON(t), func(d *config.Discovery) {
				d.ConsulServiceTag, d.ConsulServicePassingOnly, d.ConsulDatacenter = "v2", true, "eu1"
			}, nil,
			[]config.Backend{},
			url2{path: "/v1/health/service/web", tag: "v2", passing: "1", dc: "eu1"}},
		{"ACL token and basic auth",
			entriesJSON(t, consulEntry("a", "10.1.0.1", "10.0.0.1", 80, 1)), func(d *config.Discovery) {
				d.ConsulAclToken, d.ConsulAuthUsername, d.ConsulAuthPassword = "tok", "u", "p"
			}, func(f *fakeConsul) { f.token, f.user, f.pass = "tok", "u", "p" },
			[]config.Backend{backend("10.0.0.1", "80", 1, 1)},
			url2{path: "/v1/health/service/web"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeConsul()
			if tc.server != nil {
				tc.server(f)
			}
			f.set(3, tc.entries)
			p := newConsulT(t, consulCfg(startFakeConsul(t, f), tc.change))
			got, err := p.Fetch(ctxFor(t, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if q := f.queryLog(); len(q) != 1 || q[0] != tc.query {
				t.Fatalf("queries %+v, want [%+v]", q, tc.query)
			}
		})
	}
}

func TestConsulFetchErrors(t *testing.T) {
	tests := []struct {
		name    string
		entries string
		change  func(*config.Discovery)
		server  func(*fakeConsul)
		want    string
	}{
		{"wrong ACL token", "[]", func(d *config.Discovery) { d.ConsulAclToken = "bad" },
			func(f *fakeConsul) { f.token = "tok" }, "403"},
		{"no ACL token", "[]", nil, func(f *fakeConsul) { f.token = "tok" }, "403"},
		{"wrong password", "[]", func(d *config.Discovery) { d.ConsulAuthUsername, d.ConsulAuthPassword = "u", "x" },
			func(f *fakeConsul) { f.user, f.pass = "u", "p" }, "401"},
		{"server error", "[]", nil, func(f *fakeConsul) { f.status = 500 }, "500"},
		{"not JSON", "<html>", nil, nil, "invalid character"},
		{"not an array", `{"Service":{}}`, nil, nil, "cannot unmarshal"},
		{"payload too large", "", nil, func(f *fakeConsul) { f.bodySize = maxPayload + 1 }, "payload larger"},
		{"null entry", "[null]", nil, nil, "entry 0: no service"},
		{"no service", `[{"Node":{"Address":"10.0.0.1"}}]`, nil, nil, "entry 0: no service"},
		{"no address", entriesJSON(t, consulEntry("a", "", "", 80, 1)), nil, nil, "no service or node address"},
		{"port 0", entriesJSON(t, consulEntry("a", "", "10.0.0.1", 0, 1)), nil, nil, "from 1 to 65535"},
		{"port too large", entriesJSON(t, consulEntry("a", "", "10.0.0.1", 70000, 1)), nil, nil, "from 1 to 65535"},
		{"host with a blank", entriesJSON(t, consulEntry("a", "", "10.0.0.1 sni=x", 80, 1)), nil, nil, "entry 0"},
		{"bracketed host", entriesJSON(t, consulEntry("a", "", "[::1]", 80, 1)), nil, nil, "entry 0"},
		{"sni with a blank", entriesJSON(t, consulEntry("a", "", "10.0.0.1", 80, 1, "sni=a b")), nil, nil, "entry 0"},
		{"weight too large", entriesJSON(t, consulEntry("a", "", "10.0.0.1", 80, 1<<40)), nil, nil, "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeConsul()
			if tc.server != nil {
				tc.server(f)
			}
			f.set(3, tc.entries)
			p := newConsulT(t, consulCfg(startFakeConsul(t, f), tc.change))
			got, err := p.Fetch(ctxFor(t, 10*time.Second))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
}

func TestNewConsulErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  config.Discovery
		want string
	}{
		{"no host", consulCfg("", nil), "required"},
		{"no service", consulCfg("h:8500", func(d *config.Discovery) { d.ConsulServiceName = "" }), "required"},
		{"URL host", consulCfg("http://h:8500", nil), "want host:port"},
		{"missing CA file", consulCfg("h:8500", func(d *config.Discovery) {
			d.ConsulTlsEnabled, d.ConsulTlsCacertPath = true, filepath.Join(t.TempDir(), "none.pem")
		}), "consul tls"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newConsul(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestConsulWatch drives blocking queries: the first Watch answers at once and
// keeps the index; the next one waits and a change wakes it at once; a wait
// that ends without a change returns the unchanged list, not an error.
func TestConsulWatch(t *testing.T) {
	f := newFakeConsul()
	one := entriesJSON(t, consulEntry("a", "", "10.0.0.1", 80, 1))
	two := entriesJSON(t, consulEntry("a", "", "10.0.0.1", 80, 1), consulEntry("b", "", "10.0.0.2", 80, 1))
	f.set(10, one)
	p := newConsulT(t, consulCfg(startFakeConsul(t, f), nil))

	got, err := p.Watch(ctxFor(t, 10*time.Second))
	if err != nil || !slices.Equal(got, list(bA)) {
		t.Fatalf("first watch: %v, %v", got, err)
	}
	if q := f.queryLog()[0]; q.index != "" {
		t.Fatalf("first watch sent index %q, want none", q.index)
	}

	// A change while the query is parked ends it at once, long before its wait.
	type result struct {
		list []config.Backend
		err  error
		took time.Duration
	}
	res := make(chan result, 1)
	go func() {
		start := time.Now()
		l, err := p.Watch(ctxFor(t, 20*time.Second))
		res <- result{l, err, time.Since(start)}
	}()
	f.waitParked(t)
	changedAt := time.Now()
	f.set(11, two)
	r := <-res
	if r.err != nil || !slices.Equal(r.list, list(bA, bB)) {
		t.Fatalf("woken watch: %v, %v", r.list, r.err)
	}
	if lag := time.Since(changedAt); lag > 5*time.Second {
		t.Fatalf("change delivered %s after it happened", lag)
	}
	q := f.queryLog()[1]
	wait, err := time.ParseDuration(q.wait)
	if q.index != "10" || err != nil || wait < 16*time.Second || wait > 17*time.Second {
		t.Fatalf("blocking query index=%q wait=%q; want index 10 and wait (20s-2s)*16/17", q.index, q.wait)
	}

	// No change: the wait ends and Watch returns the same list without error,
	// before the context's deadline.
	start := time.Now()
	got, err = p.Watch(ctxFor(t, 400*time.Millisecond))
	if err != nil || !slices.Equal(got, list(bA, bB)) {
		t.Fatalf("expired watch: %v, %v", got, err)
	}
	if took := time.Since(start); took >= 400*time.Millisecond {
		t.Fatalf("expired watch took %s, beyond its deadline", took)
	}
	if q := f.queryLog()[2]; q.index != "11" {
		t.Fatalf("third query index %q, want 11", q.index)
	}

	// The index goes backwards (a restored snapshot): the query on the old
	// index waits it out, and the next one does not block.
	f.set(4, one)
	if _, err := p.Watch(ctxFor(t, time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Watch(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if q := f.queryLog(); q[len(q)-1].index != "" {
		t.Fatalf("after the index went backwards the query sent index %q, want none", q[len(q)-1].index)
	}
}

func TestNextConsulIndex(t *testing.T) {
	for _, tc := range []struct{ prev, got, want uint64 }{
		{0, 5, 5}, {5, 5, 5}, {5, 9, 9}, {9, 5, 0}, {0, 0, 1}, {3, 0, 0},
	} {
		if n := nextConsulIndex(tc.prev, tc.got); n != tc.want {
			t.Errorf("nextConsulIndex(%d, %d) = %d, want %d", tc.prev, tc.got, n, tc.want)
		}
	}
}

func TestConsulWait(t *testing.T) {
	tests := []struct {
		timeout  time.Duration
		min, max time.Duration
	}{
		{2 * time.Second, 1350 * time.Millisecond, 1415 * time.Millisecond},
		{5 * time.Minute, 4*time.Minute + 38*time.Second, 4*time.Minute + 41*time.Second},
		{time.Hour, consulMaxWait, consulMaxWait},
		{0, time.Millisecond, time.Millisecond},
	}
	for _, tc := range tests {
		w := consulWait(ctxFor(t, tc.timeout))
		if w < tc.min || w > tc.max {
			t.Errorf("timeout %s: wait %s, want %s to %s", tc.timeout, w, tc.min, tc.max)
		}
		// Even with the jitter, Consul answers before the deadline.
		if tc.timeout > 0 && w+w/16 >= tc.timeout {
			t.Errorf("timeout %s: wait %s plus jitter reaches the deadline", tc.timeout, w)
		}
	}
	if w := consulWait(context.Background()); w != consulMaxWait {
		t.Errorf("no deadline: wait %s, want %s", w, consulMaxWait)
	}
}

// TestConsulSource runs the Source with its default consul settings (interval
// 0, timeout 2s): it goes on watching after the first list, delivers a change
// while a query is parked without waiting for a poll, and does not deliver the
// unchanged answers of expired waits.
func TestConsulSource(t *testing.T) {
	f := newFakeConsul()
	f.set(10, entriesJSON(t, consulEntry("a", "", "10.0.0.1", 80, 1)))
	p := newConsulT(t, consulCfg(startFakeConsul(t, f), nil))
	cfg := consulCfg("", nil)
	cfg.Failpolicy, cfg.Timeout = "keeplast", config.Dur(2*time.Second)
	s := fastSource(cfg, p, nil)
	s.minWatchGap = 10 * time.Millisecond
	var r recorder
	runSource(t, s, &r)
	eventually(t, "the first list", func() bool { return len(r.get()) == 1 })
	// Let at least two waits of ~1.4s expire unchanged.
	for range 3 {
		f.waitParked(t)
	}
	if got := r.get(); len(got) != 1 || !slices.Equal(got[0], list(bA)) {
		t.Fatalf("delivered %v, want only [%v]", got, list(bA))
	}
	changedAt := time.Now()
	f.set(11, entriesJSON(t, consulEntry("b", "", "10.0.0.2", 80, 1)))
	eventually(t, "the change", func() bool { return len(r.get()) == 2 })
	if lag := time.Since(changedAt); lag > time.Second {
		t.Fatalf("change delivered after %s: polled, not watched", lag)
	}
	if got := r.get()[1]; !slices.Equal(got, list(bB)) {
		t.Fatalf("delivered %v, want %v", got, list(bB))
	}
}

// pkiForTest is a test CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files into a temporary directory.
type pkiForTest struct {
	dir                       string
	caFile, certFile, keyFile string // the CA, the client certificate and its key
	serverTLS                 *tls.Config
	pool                      *x509.CertPool
	caCert                    *x509.Certificate
	caKey                     *ecdsa.PrivateKey
}

func newPKIForTest(t *testing.T) *pkiForTest {
	t.Helper()
	k := &pkiForTest{dir: t.TempDir()}
	var err error
	k.caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &k.caKey.PublicKey, k.caKey)
	if err != nil {
		t.Fatal(err)
	}
	k.caCert, _ = x509.ParseCertificate(caDER)
	k.pool = x509.NewCertPool()
	k.pool.AddCert(k.caCert)
	k.caFile = k.write(t, "ca.pem", "CERTIFICATE", caDER)
	srvCert, _, _ := k.issue(t, "server", x509.ExtKeyUsageServerAuth)
	_, cliDER, cliKey := k.issue(t, "client", x509.ExtKeyUsageClientAuth)
	k.certFile = k.write(t, "client.pem", "CERTIFICATE", cliDER)
	k.keyFile = k.write(t, "client-key.pem", "EC PRIVATE KEY", cliKey)
	k.serverTLS = &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientCAs: k.pool, ClientAuth: tls.RequireAndVerifyClientCert}
	return k
}

func (k *pkiForTest) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.caCert, &key.PublicKey, k.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return c, der, keyDER
}

func (k *pkiForTest) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(k.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConsulTLS(t *testing.T) {
	k := newPKIForTest(t)
	f := newFakeConsul()
	f.set(3, entriesJSON(t, consulEntry("a", "", "10.0.0.1", 80, 1)))
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = k.serverTLS
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	t.Cleanup(srv.Close)
	host := srv.Listener.Addr().String()
	tests := []struct {
		name   string
		change func(*config.Discovery)
		want   string // error substring; "" for success
	}{
		{"client certificate and CA", func(d *config.Discovery) {
			d.ConsulTlsEnabled, d.ConsulTlsCacertPath, d.ConsulTlsCertPath, d.ConsulTlsKeyPath = true, k.caFile, k.certFile, k.keyFile
		}, ""},
		{"no client certificate", func(d *config.Discovery) {
			d.ConsulTlsEnabled, d.ConsulTlsCacertPath = true, k.caFile
		}, "certificate"},
		{"unknown CA", func(d *config.Discovery) {
			d.ConsulTlsEnabled, d.ConsulTlsCertPath, d.ConsulTlsKeyPath = true, k.certFile, k.keyFile
		}, "certificate"},
		{"plain HTTP to a TLS port", nil, "400"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newConsulT(t, consulCfg(host, tc.change))
			got, err := p.Fetch(ctxFor(t, 10*time.Second))
			if tc.want == "" {
				if err != nil || !slices.Equal(got, list(bA)) {
					t.Fatalf("got %v, %v; want %v", got, err, list(bA))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
}

// FuzzConsulBackends feeds arbitrary health answers to the conversion the
// client's answer goes through: it must not panic, and what it accepts must be
// valid backend lines.
func FuzzConsulBackends(f *testing.F) {
	f.Add(entriesJSON(f, consulEntry("a", "10.1.0.1", "10.0.0.1", 8080, 5, "sni=a.example.com"), consulEntry("b", "fd00::1", "", 80, 0)))
	f.Add(`[{"Service":{"Address":"h","Port":1,"Weights":{"Passing":2147483647}}}]`)
	f.Add(`[null, {"Node":null,"Service":{"Port":-1}}]`)
	f.Add(`[{"Service":{"Address":"[::1]","Port":65536,"Tags":["sni=","sni=a b"]}}]`)
	f.Fuzz(func(t *testing.T, body string) {
		var entries []*api.ServiceEntry
		if err := json.Unmarshal([]byte(body), &entries); err != nil {
			return
		}
		list, err := consulBackends(entries)
		if err != nil {
			return
		}
		for _, b := range list {
			if got, err := config.ParseBackend(config.FormatBackend(b)); err != nil || got != b {
				t.Fatalf("accepted %+v, which is no valid backend line: %v", b, err)
			}
		}
	})
}
