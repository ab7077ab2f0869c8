package discovery

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// fakeLXD answers the part of the LXD REST API the provider uses, with the
// documented envelope: {"type":"sync","status":"Success","status_code":200,
// "metadata":...} or {"type":"error","error":"...","error_code":N}. GET /1.0
// reports "auth" trusted or untrusted; POST /1.0/certificates with
// {"type":"client","password":...} adds the TLS client certificate when the
// trust password matches; GET /1.0/instances?recursion=2 lists instances with
// their state, to trusted clients only. As with LXD, a client on the unix
// socket is always trusted. (lxd is not installed in this sandbox and could not
// run instances here, so this twin stands in for it.)
type fakeLXD struct {
	password string

	mu        sync.Mutex
	trusted   map[string]bool // client certificates by DER
	instances string          // metadata of /1.0/instances
	raw       string          // when set, the whole answer of /1.0/instances
	status    int             // its HTTP status when set
}

func newFakeLXD(password string) *fakeLXD {
	return &fakeLXD{password: password, trusted: map[string]bool{}, instances: "[]"}
}

func (f *fakeLXD) set(instances string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances = instances
}

func (f *fakeLXD) trustCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.trusted)
}

func lxdSync(w http.ResponseWriter, meta any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"type": "sync", "status": "Success", "status_code": 200,
		"operation": "", "error_code": 0, "error": "", "metadata": meta})
}

func lxdError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"type": "error", "status": "", "status_code": 0,
		"operation": "", "error_code": code, "error": msg, "metadata": nil})
}

func (f *fakeLXD) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var peer []byte
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		peer = r.TLS.PeerCertificates[0].Raw
	}
	trusted := r.TLS == nil || f.trusted[string(peer)]
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/1.0":
		auth := "untrusted"
		if trusted {
			auth = "trusted"
		}
		lxdSync(w, map[string]any{"api_extensions": []string{}, "api_status": "stable", "api_version": "1.0", "auth": auth, "public": false})
	case r.Method == http.MethodPost && r.URL.Path == "/1.0/certificates":
		var req struct{ Type, Password string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Type != "client" || peer == nil {
			lxdError(w, http.StatusBadRequest, "bad request")
			return
		}
		if req.Password != f.password {
			lxdError(w, http.StatusForbidden, "not authorized")
			return
		}
		f.trusted[string(peer)] = true
		lxdSync(w, map[string]any{})
	case r.Method == http.MethodGet && r.URL.Path == "/1.0/instances":
		if !trusted {
			lxdError(w, http.StatusForbidden, "not authorized")
			return
		}
		if r.URL.Query().Get("recursion") != "2" {
			lxdError(w, http.StatusBadRequest, "want recursion=2")
			return
		}
		if f.status != 0 {
			w.WriteHeader(f.status)
		}
		if f.raw != "" {
			io.WriteString(w, f.raw)
			return
		}
		lxdSync(w, json.RawMessage(f.instances))
	default:
		lxdError(w, http.StatusNotFound, "not found")
	}
}

// lxdAddr is one address of an instance's network state.
type lxdAddr struct{ family, address, scope string }

// lxdInst is one instance as GET /1.0/instances?recursion=2 writes it.
func lxdInst(name, status, typ string, conf map[string]string, nets map[string][]lxdAddr) map[string]any {
	network := map[string]any{}
	for iface, addrs := range nets {
		as := []map[string]string{}
		for _, a := range addrs {
			as = append(as, map[string]string{"family": a.family, "address": a.address, "netmask": "24", "scope": a.scope})
		}
		network[iface] = map[string]any{"addresses": as, "host_name": "veth" + name, "state": "up", "type": "broadcast"}
	}
	return map[string]any{
		"name": name, "type": typ, "status": status, "status_code": 103, "architecture": "x86_64",
		"config": conf, "expanded_config": conf, "profiles": []string{"default"}, "stateful": false,
		"state": map[string]any{"status": status, "status_code": 103, "network": network, "pid": 42},
	}
}

func lxdJSON(t testing.TB, insts ...map[string]any) string {
	t.Helper()
	if insts == nil {
		return "[]"
	}
	b, err := json.Marshal(insts)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var v4 = func(a string) map[string][]lxdAddr {
	return map[string][]lxdAddr{"eth0": {{"inet", a, "global"}, {"inet6", "fe80::1", "link"}}, "lo": {{"inet", "127.0.0.1", "local"}}}
}

// startUnixLXD serves f on a unix socket and returns its "unix:" address.
func startUnixLXD(t *testing.T, f *fakeLXD) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lxd") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "unix.socket")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return "unix:" + sock
}

func lxdCfg(addr string, change func(*config.Discovery)) config.Discovery {
	d := config.Discovery{Kind: "lxd", LxdServerAddress: addr, LxdContainerPort: 80}
	if change != nil {
		change(&d)
	}
	return d
}

func TestLxdBackends(t *testing.T) {
	tests := []struct {
		name   string
		insts  []map[string]any
		change func(*config.Discovery)
		want   []config.Backend
	}{
		{"running containers only, global address of eth0", []map[string]any{
			lxdInst("a", "Running", "container", nil, v4("10.0.0.1")),
			lxdInst("b", "Stopped", "container", nil, v4("10.0.0.2")),
			lxdInst("vm", "Running", "virtual-machine", nil, v4("10.0.0.3")),
			lxdInst("booting", "Running", "container", nil, map[string][]lxdAddr{"eth0": {{"inet6", "fe80::1", "link"}}}),
			lxdInst("old", "Running", "", nil, v4("10.0.0.2")),
		}, nil, []config.Backend{backend("10.0.0.1", "80", 1, 1), backend("10.0.0.2", "80", 1, 1)}},
		{"label key", []map[string]any{
			lxdInst("a", "Running", "container", map[string]string{"user.lb": "web"}, v4("10.0.0.1")),
			lxdInst("b", "Running", "container", map[string]string{"user.lb": "db"}, v4("10.0.0.2")),
			lxdInst("c", "Running", "container", nil, v4("10.0.0.3")),
		}, func(d *config.Discovery) { d.LxdContainerLabelKey = "user.lb" },
			[]config.Backend{backend("10.0.0.1", "80", 1, 1), backend("10.0.0.2", "80", 1, 1)}},
		{"label key and value", []map[string]any{
			lxdInst("a", "Running", "container", map[string]string{"user.lb": "web"}, v4("10.0.0.1")),
			lxdInst("b", "Running", "container", map[string]string{"user.lb": "db"}, v4("10.0.0.2")),
		}, func(d *config.Discovery) { d.LxdContainerLabelKey, d.LxdContainerLabelValue = "user.lb", "web" },
			[]config.Backend{backend("10.0.0.1", "80", 1, 1)}},
		{"port key, else the port; none: skipped", []map[string]any{
			lxdInst("a", "Running", "container", map[string]string{"user.port": "8080"}, v4("10.0.0.1")),
			lxdInst("b", "Running", "container", nil, v4("10.0.0.2")),
		}, func(d *config.Discovery) { d.LxdContainerPortKey = "user.port" },
			[]config.Backend{backend("10.0.0.1", "8080", 1, 1), backend("10.0.0.2", "80", 1, 1)}},
		{"no port at all", []map[string]any{
			lxdInst("b", "Running", "container", nil, v4("10.0.0.2")),
		}, func(d *config.Discovery) { d.LxdContainerPort = 0; d.LxdContainerPortKey = "user.port" }, []config.Backend{}},
		{"interface and interface key", []map[string]any{
			lxdInst("a", "Running", "container", nil, map[string][]lxdAddr{"eth1": {{"inet", "10.1.0.1", "global"}}}),
			lxdInst("b", "Running", "container", map[string]string{"user.if": "br0"}, map[string][]lxdAddr{"br0": {{"inet", "10.2.0.1", "global"}}}),
		}, func(d *config.Discovery) { d.LxdContainerInterface, d.LxdContainerInterfaceKey = "eth1", "user.if" },
			[]config.Backend{backend("10.1.0.1", "80", 1, 1), backend("10.2.0.1", "80", 1, 1)}},
		{"IPv6, link-local skipped", []map[string]any{
			lxdInst("a", "Running", "container", nil, map[string][]lxdAddr{"eth0": {{"inet", "10.0.0.1", "global"}, {"inet6", "fe80::1", "link"}, {"inet6", "fd00::1", "global"}}}),
		}, func(d *config.Discovery) { d.LxdContainerAddressType = "IPv6" },
			[]config.Backend{backend("fd00::1", "80", 1, 1)}},
		{"sni key", []map[string]any{
			lxdInst("a", "Running", "container", map[string]string{"user.sni": "a.example.com"}, v4("10.0.0.1")),
		}, func(d *config.Discovery) { d.LxdContainerSniKey = "user.sni" },
			[]config.Backend{{Target: config.Target{Host: "10.0.0.1", Port: "80"}, Weight: 1, Priority: 1, Sni: "a.example.com"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeLXD("")
			f.set(lxdJSON(t, tc.insts...))
			p, err := newLxd(lxdCfg(startUnixLXD(t, f), tc.change))
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Fetch(ctxFor(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLxdProfileConfig: keys set by a profile are in expanded_config only.
func TestLxdProfileConfig(t *testing.T) {
	in := lxdInst("a", "Running", "container", map[string]string{}, v4("10.0.0.1"))
	in["expanded_config"] = map[string]string{"user.port": "9000"}
	f := newFakeLXD("")
	f.set(lxdJSON(t, in))
	p, err := newLxd(lxdCfg(startUnixLXD(t, f), func(d *config.Discovery) { d.LxdContainerPortKey = "user.port" }))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Fetch(ctxFor(t, 10*time.Second))
	if err != nil || !slices.Equal(got, list(backend("10.0.0.1", "9000", 1, 1))) {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestLxdHostileAnswers(t *testing.T) {
	bad := func(conf map[string]string, nets map[string][]lxdAddr) string {
		b, _ := json.Marshal([]any{lxdInst("x", "Running", "container", conf, nets)})
		return string(b)
	}
	tests := []struct {
		name      string
		instances string
		raw       string
		status    int
		change    func(*config.Discovery)
		want      string
	}{
		{"error answer", "", `{"type":"error","error":"not found","error_code":404,"metadata":null}`, 404, nil, "LXD error 404"},
		{"HTTP 500 with a sync body", "[]", "", 500, nil, "HTTP 500"},
		{"async answer", "", `{"type":"async","status_code":100,"metadata":[]}`, 0, nil, "unexpected answer"},
		{"not JSON", "", "<html>", 0, nil, "not an LXD answer"},
		{"metadata not a list", `{"a":1}`, "", 0, nil, "instance list"},
		{"payload too large", "", strings.Repeat(" ", maxPayload+1), 0, nil, "payload larger"},
		{"bad port key", bad(map[string]string{"user.port": "80x"}, v4("10.0.0.1")), "", 0,
			func(d *config.Discovery) { d.LxdContainerPortKey = "user.port" }, "not a port"},
		{"port key out of range", bad(map[string]string{"user.port": "0"}, v4("10.0.0.1")), "", 0,
			func(d *config.Discovery) { d.LxdContainerPortKey = "user.port" }, "not a port"},
		{"address not an IP", bad(nil, v4("10.0.0.1 sni=x")), "", 0, nil, "not an IP"},
		{"IPv4 as inet6", bad(nil, map[string][]lxdAddr{"eth0": {{"inet6", "10.0.0.1", "global"}}}), "", 0,
			func(d *config.Discovery) { d.LxdContainerAddressType = "IPv6" }, "not an IP"},
		{"sni with a blank", bad(map[string]string{"user.sni": "a b"}, v4("10.0.0.1")), "", 0,
			func(d *config.Discovery) { d.LxdContainerSniKey = "user.sni" }, `container "x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeLXD("")
			f.instances, f.raw, f.status = tc.instances, tc.raw, tc.status
			p, err := newLxd(lxdCfg(startUnixLXD(t, f), tc.change))
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Fetch(ctxFor(t, 10*time.Second))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
}

func TestNewLxdErrors(t *testing.T) {
	tests := []struct {
		name   string
		change func(*config.Discovery)
		want   string
	}{
		{"http", func(d *config.Discovery) { d.LxdServerAddress = "http://h:8443" }, "want unix:"},
		{"https without host", func(d *config.Discovery) { d.LxdServerAddress = "https://" }, "want https://host"},
		{"address type", func(d *config.Discovery) { d.LxdContainerAddressType = "ipv4" }, "want IPv4 or IPv6"},
		{"port", func(d *config.Discovery) { d.LxdContainerPort = 70000 }, "0 to 65535"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newLxd(lxdCfg("unix:", tc.change)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLxdSocket(t *testing.T) {
	t.Setenv("LXD_DIR", "/srv/lxd")
	for addr, want := range map[string]string{"unix:/run/l.sock": "/run/l.sock", "unix:///run/l.sock": "/run/l.sock", "unix:": "/srv/lxd/unix.socket", "unix://": "/srv/lxd/unix.socket"} {
		if got := lxdSocket(addr); got != want {
			t.Errorf("lxdSocket(%q) = %q, want %q", addr, got, want)
		}
	}
}

// startHTTPSLXD serves f over HTTPS with a certificate of the test CA (which
// the system roots do not know), asking for any client certificate as LXD
// does: trust is decided by the certificate store, not by a CA.
func startHTTPSLXD(t *testing.T, f *fakeLXD, k *pkiForTest) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = k.serverTLS.Clone()
	srv.TLS.ClientAuth = tls.RequireAnyClientCert
	srv.TLS.ClientCAs = nil
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return "https://" + srv.Listener.Addr().String()
}

func TestLxdHTTPS(t *testing.T) {
	k := newPKIForTest(t)
	f := newFakeLXD("sesame")
	f.set(lxdJSON(t, lxdInst("a", "Running", "container", nil, v4("10.0.0.1"))))
	addr := startHTTPSLXD(t, f, k)
	dir := filepath.Join(t.TempDir(), "lxc")
	https := func(change func(*config.Discovery)) config.Discovery {
		return lxdCfg(addr, func(d *config.Discovery) {
			d.LxdConfigDirectory, d.LxdServerRemoteName = dir, "lb"
			if change != nil {
				change(d)
			}
		})
	}
	fetch := func(cfg config.Discovery) ([]config.Backend, error) {
		p, err := newLxd(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p.Fetch(ctxFor(t, 10*time.Second))
	}
	// Failures first, each leaving what it got so far.
	steps := []struct {
		name   string
		change func(*config.Discovery)
		want   string
	}{
		{"no client certificate", nil, "lxd_generate_client_certs"},
		{"server certificate unknown", func(d *config.Discovery) { d.LxdGenerateClientCerts = true }, "lxd_accept_server_cert"},
		{"not trusted, no password", func(d *config.Discovery) { d.LxdAcceptServerCert = true }, "lxd_server_remote_password"},
		{"wrong password", func(d *config.Discovery) { d.LxdServerRemotePassword = "guess" }, "not authorized"},
	}
	for _, s := range steps {
		if got, err := fetch(https(s.change)); err == nil || !strings.Contains(err.Error(), s.want) {
			t.Fatalf("%s: got %v, %v; want an error containing %q", s.name, got, err, s.want)
		}
	}
	if n := f.trustCount(); n != 0 {
		t.Fatalf("%d certificates trusted, want 0", n)
	}
	// The right password: trusted, and the containers are listed.
	got, err := fetch(https(func(d *config.Discovery) { d.LxdServerRemotePassword = "sesame" }))
	if err != nil || !slices.Equal(got, list(bA)) {
		t.Fatalf("got %v, %v; want %v", got, err, list(bA))
	}
	if fi, err := os.Stat(filepath.Join(dir, "client.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("client.key: %v, %v; want mode 0600", fi, err)
	}
	saved, err := readCertFile(filepath.Join(dir, "servercerts", "lb.crt"))
	if err != nil || string(saved.Raw) != string(k.serverTLS.Certificates[0].Certificate[0]) {
		t.Fatalf("saved server certificate: %v", err)
	}
	// Later runs need no option: the certificates are saved and trusted.
	if got, err := fetch(https(nil)); err != nil || !slices.Equal(got, list(bA)) {
		t.Fatalf("second run: got %v, %v", got, err)
	}
	if n := f.trustCount(); n != 1 {
		t.Fatalf("%d certificates trusted, want 1", n)
	}
	// A server whose certificate changed is refused.
	other := newPKIForTest(t)
	addr2 := startHTTPSLXD(t, f, other)
	cfg := https(nil)
	cfg.LxdServerAddress = addr2
	if got, err := fetch(cfg); err == nil || !strings.Contains(err.Error(), "differs from the saved one") {
		t.Fatalf("changed server certificate: got %v, %v", got, err)
	}
}

// FuzzLxdBackends feeds arbitrary answers to the envelope check and the
// conversion: no panic, and what is accepted is valid backend lines.
func FuzzLxdBackends(f *testing.F) {
	sync := func(meta string) string {
		return `{"type":"sync","status":"Success","status_code":200,"metadata":` + meta + `}`
	}
	f.Add(sync(lxdJSON(f, lxdInst("a", "Running", "container", map[string]string{"user.lb": "web", "user.port": "8080", "user.sni": "s"}, v4("10.0.0.1")))))
	f.Add(sync(lxdJSON(f, lxdInst("a", "Running", "container", map[string]string{"user.lb": "web", "user.if": "eth1"},
		map[string][]lxdAddr{"eth1": {{"inet", "1.2.3.4", ""}, {"inet6", "::1", "global"}}}))))
	f.Add(sync(`[{"status":"Running","config":{"user.lb":"web","user.port":"65536"},"state":null}]`))
	f.Add(sync(`[{"status":"Running","expanded_config":{"user.lb":""},"state":{"network":{"eth0":{"addresses":[{"family":"inet","address":"1.2.3.4%eth0"}]}}}}]`))
	f.Add(`{"type":"error","error":"x","error_code":500}`)
	v := lxdView{labelKey: "user.lb", port: 80, portKey: "user.port", iface: "eth0", ifaceKey: "user.if", sniKey: "user.sni", family: "inet"}
	f.Fuzz(func(t *testing.T, body string) {
		meta, err := lxdMetadata([]byte(body), 200)
		if err != nil {
			return
		}
		list, err := v.backends(meta)
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
