package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI answers canned bodies by "METHOD path" (path as escaped on the wire)
// and records every request.
type fakeAPI struct {
	mu       sync.Mutex
	answers  map[string]fakeAnswer
	requests []fakeRequest
	user     string // when set, every path but /health needs this basic-auth user (password "pw")
}

type fakeAnswer struct {
	status int
	body   string
	header map[string]string
}

type fakeRequest struct {
	method, path string
	body         string
	header       http.Header
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, fakeRequest{method: r.Method, path: r.URL.EscapedPath(), body: string(body), header: r.Header.Clone()})
	a, ok := f.answers[r.Method+" "+r.URL.EscapedPath()]
	f.mu.Unlock()
	if f.user != "" && r.URL.Path != "/health" {
		if u, p, ok := r.BasicAuth(); !ok || u != f.user || p != "pw" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error": "unauthorized", "details": []}`)
			return
		}
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error": "not found", "details": []}`)
		return
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	if a.status == 0 {
		a.status = http.StatusOK
	}
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func (f *fakeAPI) last() fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		return fakeRequest{}
	}
	return f.requests[len(f.requests)-1]
}

const (
	fakeWeb = `{"bind": ":3000", "protocol": "tcp", "balance": "iphash1",
		"discovery": {"kind": "static", "static_list": ["10.0.0.1:80", "10.0.0.2:80"]},
		"healthcheck": {"kind": "ping", "interval": "2s", "timeout": "1s", "fails": 1, "passes": 1, "cluster_verdict": "majority"}}`
	fakeServers = `{"web": ` + fakeWeb + `}`
	fakeMeta    = `{"name": "web", "origin": "api", "revision": 7, "updated": "2026-01-02T03:04:05Z", "backend_states": {"10.0.0.2:80": "drain", "10.0.0.9:80": "disable"}}`
	fakeStats   = `{"active_connections": 3, "total_connections": 40, "refused_connections": 1, "rx_second": 2048, "tx_second": 10,
		"bind": "127.0.0.2:3000", "backends": [
		{"host": "10.0.0.1", "port": "80", "priority": 1, "weight": 1, "stats": {"live": true, "active_connections": 2, "total_connections": 30,
			"rx_second": 1536, "cluster": {"active_connections": 5, "healthy": true, "policy": "majority", "nodes": {"n1": true, "n2": true, "n3": false}}}},
		{"host": "10.0.0.2", "port": "80", "priority": 1, "weight": 1, "state": "drain", "stats": {"live": true, "active_connections": 1, "state": "drain",
			"cluster": {"active_connections": 1, "healthy": true, "policy": "majority", "nodes": {"n1": true}}}}]}`
	fakeCluster = `{"node_id": "n2", "leader_id": "n1", "revision": 42, "members": [
		{"id": "n1", "address": "127.0.0.1:7947", "raft": "leader", "gossip": "alive", "last_report": "2026-01-02T03:04:05Z", "report_seq": 10, "report_backends": 2},
		{"id": "n2", "address": "127.0.0.2:7947", "raft": "voter", "gossip": "alive"}]}`
)

func newFakeAPI() *fakeAPI {
	return &fakeAPI{answers: map[string]fakeAnswer{
		"GET /servers":                                    {body: fakeServers},
		"GET /servers/web":                                {body: fakeWeb, header: map[string]string{"X-Gobetween-Revision": "7"}},
		"GET /servers/web/meta":                           {body: fakeMeta},
		"GET /servers/web/stats":                          {body: fakeStats},
		"POST /servers/web":                               {body: `{"bind": ":3000"}`, header: map[string]string{"X-Gobetween-Revision": "8"}},
		"POST /servers/api2":                              {body: `{"bind": ":3001"}`, header: map[string]string{"X-Gobetween-Revision": "9"}},
		"PUT /servers/web":                                {body: `{"bind": ":3000"}`, header: map[string]string{"X-Gobetween-Revision": "11"}},
		"DELETE /servers/web":                             {body: `null`},
		"POST /servers/bad":                               {status: 422, body: `{"error": "invalid server \"bad\"", "details": [{"path": "servers.bad.bind", "msg": "required"}, {"path": "servers.bad.balance", "msg": "unknown balance \"x\""}]}`},
		"PUT /servers/old":                                {status: 409, body: `{"error": "conflict: revision does not match", "details": []}`},
		"GET /cluster":                                    {body: fakeCluster},
		"POST /cluster/join":                              {body: `{"joined": ["10.0.0.4:7946"]}`},
		"DELETE /cluster/members/n3":                      {body: `{"removed": "n3"}`},
		"GET /health":                                     {body: `{"status": "ok"}`},
		"POST /servers/web/backends/10.0.0.1:80/drain":    {body: `{"server": "web", "backend": "10.0.0.1:80", "state": "drain", "revision": 12}`},
		"POST /servers/web/backends/%5B::1%5D:80/disable": {body: `{"server": "web", "backend": "[::1]:80", "state": "disable", "revision": 13}`},
		"POST /servers/a%2Fb/backends/10.0.0.1:80/enable": {body: `{"server": "a/b", "backend": "10.0.0.1:80", "state": "enable", "revision": 14}`},
	}}
}

// runCLI runs a client command line with env (KEY=VALUE) and stdin.
func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	if !isClientCommand(args) {
		t.Fatalf("%q is not taken for a client command", args)
	}
	var out, errb bytes.Buffer
	code = runClient(args, clientIO{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }})
	return code, out.String(), errb.String()
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestClientCommands(t *testing.T) {
	f := newFakeAPI()
	srv := httptest.NewServer(f)
	defer srv.Close()
	env := map[string]string{"GOBETWEEN_API": srv.URL}

	bareTOML := writeTemp(t, "web.toml", "bind = \":3000\"\n[discovery]\nkind = \"static\"\nstatic_list = [\"10.0.0.1:80\"]\n")
	fullTOML := writeTemp(t, "all.toml", "[api]\nenabled = true\n[defaults]\nmax_connections = 5\n[servers.web]\nbind = \":3000\"\n[servers.api2]\nbind = \":3001\"\nmax_connections = 7\n")
	bareJSON := writeTemp(t, "web.json", `{"bind": ":3000", "max_connections": 10}`)
	badTOML := writeTemp(t, "bad.toml", "bind = \n")

	type want struct {
		code            int
		stdout, stderr  []string // substrings
		method, path    string   // the last request
		body            string   // substring of its body
		header, hdrWant string
	}
	tests := []struct {
		name  string
		args  []string
		stdin string
		want  want
	}{
		{"servers list table", []string{"servers"}, "", want{code: 0, stdout: []string{
			"NAME  BIND   PROTOCOL  BALANCE  BACKENDS  ACTIVE  CLUSTER ACTIVE  ORIGIN  REVISION",
			"web   :3000  tcp       iphash1  1/2       3       6               api     7"}}},
		{"servers list json", []string{"servers", "list", "-o", "json"}, "", want{stdout: []string{`"backends_live": 1`, `"cluster_active_connections": 6`, `"listening": "127.0.0.2:3000"`}}},
		{"servers show", []string{"servers", "show", "web"}, "", want{stdout: []string{
			"Bind:          :3000 (listening on 127.0.0.2:3000 at this node)",
			"Health check:  ping every 2s, timeout 1s, fails 1, passes 1, cluster verdict majority",
			"Origin:        api, revision 7, updated 2026-01-02 03:04:05 UTC",
			"3 active, 40 total, 1 refused at this node; 6 active in the cluster",
			"BACKEND      STATE                  LIVE  NODES                ACTIVE  CLUSTER ACTIVE  RX/s     TX/s  TOTAL  REFUSED",
			"10.0.0.1:80  enabled                yes   n1:up n2:up n3:down  2       5               1.5 KiB  0 B   30     0",
			"10.0.0.2:80  draining               yes   n1:up                1       1",
			"10.0.0.9:80  disabled (not listed)"}}},
		{"servers show json", []string{"-o", "json", "servers", "show", "web"}, "", want{stdout: []string{`"revision": 7`, `"definition": {`, `"stats": {`, `"10.0.0.9:80": "disable"`}}},
		{"servers show missing name", []string{"servers", "show"}, "", want{code: 2, stderr: []string{"missing server NAME"}}},
		{"add bare toml", []string{"servers", "add", "web", "-f", bareTOML}, "", want{stdout: []string{`server "web" created (revision 8)`},
			method: "POST", path: "/servers/web", body: `"static_list":["10.0.0.1:80"]`, header: "Content-Type", hdrWant: "application/json"}},
		{"add bare toml needs a name", []string{"servers", "add", "-f", bareTOML}, "", want{code: 2, stderr: []string{"give the server's NAME"}}},
		{"add one of a whole config", []string{"servers", "add", "api2", "-f", fullTOML}, "", want{stdout: []string{`server "api2" created (revision 9)`},
			stderr: []string{"[defaults] in"}, method: "POST", path: "/servers/api2", body: `"max_connections":7`}},
		{"add every server of a whole config", []string{"servers", "add", "--file=" + fullTOML}, "", want{stdout: []string{`server "api2" created`, `server "web" created`}, stderr: []string{"[defaults]"}, method: "POST", path: "/servers/web"}},
		{"add a server the file lacks", []string{"servers", "add", "nope", "-f", fullTOML}, "", want{code: 1, stderr: []string{`has no server "nope" (it has api2, web)`}}},
		{"add json by extension", []string{"servers", "add", "web", "-f", bareJSON}, "", want{method: "POST", path: "/servers/web", body: `"max_connections":10`}},
		{"add json from stdin", []string{"servers", "add", "web", "-f", "-"}, `{"bind": ":3000"}`, want{method: "POST", path: "/servers/web", body: `{"bind":":3000"}`}},
		{"add toml from stdin with --format", []string{"servers", "add", "web", "-f", "-", "--format", "toml"}, "bind = \":9\"\n", want{method: "POST", path: "/servers/web", body: `{"bind":":9"}`}},
		{"add bad toml", []string{"servers", "add", "web", "-f", badTOML}, "", want{code: 1, stderr: []string{"bad.toml", "line 1"}}},
		{"add without file", []string{"servers", "add", "web"}, "", want{code: 2, stderr: []string{"-f FILE is required"}}},
		{"add invalid: every detail", []string{"servers", "add", "bad", "-f", bareTOML}, "", want{code: 1, stderr: []string{
			`POST /servers/bad: 422 Unprocessable Entity: invalid server "bad"`, "  servers.bad.bind: required", `  servers.bad.balance: unknown balance "x"`}}},
		{"add -o json is the API's answer", []string{"servers", "add", "web", "-f", bareTOML, "-o", "json"}, "", want{stdout: []string{`{"bind": ":3000"}`}}},
		{"update with if-revision", []string{"servers", "update", "web", "-f", bareTOML, "--if-revision", "7"}, "", want{stdout: []string{`server "web" updated (revision 11)`},
			method: "PUT", path: "/servers/web", header: "If-Match", hdrWant: `"7"`}},
		{"update stale revision", []string{"servers", "update", "old", "-f", bareTOML, "--if-revision", "3"}, "", want{code: 1, stderr: []string{"409 Conflict", "no longer at revision 3"}}},
		{"update if-revision needs one server", []string{"servers", "update", "-f", fullTOML, "--if-revision", "3"}, "", want{code: 2, stderr: []string{"--if-revision needs one server"}}},
		{"delete", []string{"servers", "delete", "web"}, "", want{stdout: []string{`server "web" deleted`}, method: "DELETE", path: "/servers/web"}},
		{"delete json", []string{"servers", "delete", "web", "-o", "json"}, "", want{stdout: []string{`"deleted": "web"`}}},
		{"delete unknown", []string{"servers", "delete", "nope"}, "", want{code: 1, stderr: []string{"DELETE /servers/nope: 404 Not Found: not found"}}},
		{"drain", []string{"backends", "drain", "web", "10.0.0.1:80"}, "", want{stdout: []string{`backend 10.0.0.1:80 of server "web": drain (revision 12)`},
			method: "POST", path: "/servers/web/backends/10.0.0.1:80/drain"}},
		{"disable ipv6 json, a backend the server does not list", []string{"backends", "disable", "web", "[::1]:80", "-o", "json"}, "", want{stdout: []string{`"state": "disable"`},
			stderr: []string{`warning: server "web" does not list [::1]:80 now`}, method: "POST", path: "/servers/web/backends/%5B::1%5D:80/disable"}},
		{"enable escapes the server name", []string{"backends", "enable", "a/b", "10.0.0.1:80"}, "", want{method: "POST", path: "/servers/a%2Fb/backends/10.0.0.1:80/enable"}},
		{"enable --wait is a usage error", []string{"backends", "enable", "web", "10.0.0.1:80", "--wait"}, "", want{code: 2, stderr: []string{"--wait goes with drain and disable"}}},
		{"backend not host:port", []string{"backends", "drain", "web", "10.0.0.1"}, "", want{code: 2, stderr: []string{"BACKEND must be host:port"}}},
		{"backends without subcommand", []string{"backends"}, "", want{code: 2, stderr: []string{"a subcommand is needed: drain, disable, enable"}}},
		{"cluster show", []string{"cluster"}, "", want{stdout: []string{"Node:      n2", "Leader:    n1", "Revision:  42",
			"ID              ADDRESS         RAFT    GOSSIP  LAST REPORT", "n1              127.0.0.1:7947  leader  alive   ", "(seq 10, 2 backends)", "n2 (this node)  127.0.0.2:7947  voter   alive   -"}}},
		{"cluster show json is verbatim", []string{"cluster", "show", "-o", "json"}, "", want{stdout: []string{`"leader_id": "n1"`, `"report_backends": 2`}}},
		{"cluster join", []string{"cluster", "join", "10.0.0.4:7946"}, "", want{stdout: []string{"joined 10.0.0.4:7946"}, method: "POST", path: "/cluster/join", body: `{"addrs":["10.0.0.4:7946"]}`}},
		{"cluster join needs an address", []string{"cluster", "join"}, "", want{code: 2, stderr: []string{"missing ADDR"}}},
		{"cluster remove", []string{"cluster", "remove", "n3"}, "", want{stdout: []string{"member n3 removed"}, method: "DELETE", path: "/cluster/members/n3"}},
		{"health", []string{"health"}, "", want{stdout: []string{`{"status": "ok"}`}, method: "GET", path: "/health"}},
		{"unknown flag", []string{"servers", "--bogus"}, "", want{code: 2, stderr: []string{"-bogus"}}},
		{"bad output", []string{"cluster", "-o", "yaml"}, "", want{code: 2, stderr: []string{"-o must be table or json"}}},
		{"stray argument", []string{"servers", "list", "x"}, "", want{code: 2, stderr: []string{"unexpected arguments: x"}}},
		{"unknown subcommand", []string{"servers", "frobnicate"}, "", want{code: 2, stderr: []string{"unexpected arguments: frobnicate"}}},
		{"cert without key", []string{"health", "--cert", "x.pem"}, "", want{code: 2, stderr: []string{"--cert and --key go together"}}},
		{"help", []string{"servers", "--help"}, "", want{stdout: []string{"gobetween servers show NAME", "--if-revision N", "Client flags"}}},
		{"help command", []string{"help", "backends"}, "", want{stdout: []string{"gobetween backends drain SERVER HOST:PORT", "--wait"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.mu.Lock()
			f.requests = nil
			f.mu.Unlock()
			code, stdout, stderr := runCLI(t, env, tt.stdin, tt.args...)
			if code != tt.want.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.want.code, stdout, stderr)
			}
			for _, s := range tt.want.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tt.want.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if tt.want.code == 0 && stderr != "" && len(tt.want.stderr) == 0 {
				t.Errorf("unexpected stderr:\n%s", stderr)
			}
			if tt.want.method != "" {
				r := f.last()
				if r.method != tt.want.method || r.path != tt.want.path {
					t.Errorf("last request %s %s, want %s %s", r.method, r.path, tt.want.method, tt.want.path)
				}
				if !strings.Contains(r.body, tt.want.body) {
					t.Errorf("request body %s lacks %s", r.body, tt.want.body)
				}
				if tt.want.header != "" && r.header.Get(tt.want.header) != tt.want.hdrWant {
					t.Errorf("request header %s = %q, want %q", tt.want.header, r.header.Get(tt.want.header), tt.want.hdrWant)
				}
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	f := newFakeAPI()
	f.answers["GET /health"] = fakeAnswer{status: 503, body: `{"error": "stopping", "details": []}`}
	f.answers["GET /cluster"] = fakeAnswer{status: 200, body: `not json`}
	srv := httptest.NewServer(f)
	defer srv.Close()
	closed := httptest.NewServer(f)
	closed.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"unhealthy prints the body and exits 1", []string{"health", "--api", srv.URL}, 1, `"error": "stopping"`, "503 Service Unavailable"},
		{"unreachable", []string{"health", "--api", closed.URL}, 1, "", "connection refused"},
		{"no answer within --timeout", []string{"health", "--api", slow.URL, "--timeout", "200ms"}, 1, "", "no answer within --timeout"},
		{"not the JSON expected", []string{"cluster", "--api", srv.URL}, 1, "", "GET /cluster: answer is not the JSON expected"},
		{"bad --api", []string{"cluster", "--api", "ftp://x"}, 2, "", "--api must be an http:// or https:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, stdout, stderr := runCLI(t, nil, "", tt.args...)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d, want %d; stdout %q (want %q); stderr %q (want %q)", code, tt.code, stdout, tt.stdout, stderr, tt.stderr)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestClientBasicAuth(t *testing.T) {
	f := newFakeAPI()
	f.user = "admin"
	srv := httptest.NewServer(f)
	defer srv.Close()
	withUser := strings.Replace(srv.URL, "http://", "http://admin:pw@", 1)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
	}{
		{"no credentials", nil, []string{"cluster", "--api", srv.URL}, 1},
		{"flags", nil, []string{"--user", "admin", "--password", "pw", "cluster", "--api", srv.URL}, 0},
		{"environment", map[string]string{"GOBETWEEN_API": srv.URL, "GOBETWEEN_USER": "admin", "GOBETWEEN_PASSWORD": "pw"}, []string{"cluster"}, 0},
		{"in the URL", nil, []string{"cluster", "--api", withUser}, 0},
		{"flag overrides the URL", nil, []string{"cluster", "--api", withUser, "--password", "wrong"}, 1},
		{"health needs none", nil, []string{"health", "--api", srv.URL}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.env, "", tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d: %s", code, tt.code, stderr)
			}
			if code == 1 && !strings.Contains(stderr, "401 Unauthorized") || code == 1 && !strings.Contains(stderr, "--user and --password") {
				t.Errorf("stderr does not explain the 401: %s", stderr)
			}
		})
	}
}

func TestClientTLS(t *testing.T) {
	dir := t.TempDir()
	caKey, caCert := testCA(t, dir)
	clientCert, clientKey := testLeaf(t, dir, "client", caKey, caCert, x509.ExtKeyUsageClientAuth)

	f := newFakeAPI()
	srv := httptest.NewUnstartedServer(f)
	// The refused handshakes are the point of some cases, not news.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	defer srv.Close()
	serverCA := filepath.Join(dir, "server-ca.pem")
	if err := os.WriteFile(serverCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	mtls := httptest.NewUnstartedServer(f)
	mtls.Config.ErrorLog = log.New(io.Discard, "", 0)
	mtls.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	mtls.StartTLS()
	defer mtls.Close()
	hostPort := strings.TrimPrefix(srv.URL, "https://")

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown CA", []string{"cluster", "--api", srv.URL}, 1, "certificate"},
		{"--ca", []string{"cluster", "--api", srv.URL, "--ca", serverCA}, 0, ""},
		{"host:port with --ca means https", []string{"cluster", "--api", hostPort, "--ca", serverCA}, 0, ""},
		{"--insecure", []string{"cluster", "--api", srv.URL, "--insecure"}, 0, ""},
		{"bad --ca file", []string{"cluster", "--api", srv.URL, "--ca", caKeyPath(dir)}, 1, "no PEM certificate"},
		{"mutual TLS without a client certificate", []string{"cluster", "--api", mtls.URL, "--insecure"}, 1, ""},
		{"mutual TLS", []string{"cluster", "--api", mtls.URL, "--insecure", "--cert", clientCert, "--key", clientKey}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, nil, "", tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("exit %d, want %d; stderr %q (want %q)", code, tt.code, stderr, tt.stderr)
			}
			if code == 0 && !strings.Contains(stdout, "Leader:    n1") {
				t.Errorf("stdout:\n%s", stdout)
			}
		})
	}
}

func caKeyPath(dir string) string { return filepath.Join(dir, "ca.key") }

// testCA writes a CA certificate and key to dir.
func testCA(t *testing.T, dir string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := filepath.Join(dir, "ca.pem")
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caKeyPath(dir), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// testLeaf writes a certificate signed by the CA, and its key, to dir.
func testLeaf(t *testing.T, dir, name string, caKey *ecdsa.PrivateKey, ca *x509.Certificate, usage x509.ExtKeyUsage) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

func TestIsClientCommand(t *testing.T) {
	tests := []struct {
		args []string
		want bool
	}{
		{[]string{"servers"}, true},
		{[]string{"--api", "http://x:1", "servers", "list"}, true},
		{[]string{"-o", "json", "cluster"}, true},
		{[]string{"--insecure", "health"}, true},
		{[]string{"help", "servers"}, true},
		{[]string{"help"}, false},
		{[]string{"-c", "gobetween.toml"}, false},
		{[]string{"-c", "health"}, false}, // a config file called health
		{[]string{"--config=servers"}, false},
		{[]string{"from-file", "servers"}, false},
		{[]string{"validate", "-c", "x"}, false},
		{[]string{"-v"}, false},
		{[]string{}, false},
	}
	for _, tt := range tests {
		if got := isClientCommand(tt.args); got != tt.want {
			t.Errorf("isClientCommand(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}

func TestReadServerFile(t *testing.T) {
	tests := []struct {
		name, file, content, format string
		full                        bool
		names                       []string
		body                        map[string]string // name -> exact JSON
		err                         string
	}{
		{"bare toml", "s.toml", "bind = \":1\"\nmax_connections = 3\n[discovery]\nkind = \"static\"\n", "", false, []string{""},
			map[string]string{"": `{"bind":":1","discovery":{"kind":"static"},"max_connections":3}`}, ""},
		{"whole toml", "c.toml", "[servers.a]\nbind = \":1\"\n[servers.b]\nbind = \":2\"\n", "", true, []string{"a", "b"},
			map[string]string{"a": `{"bind":":1"}`, "b": `{"bind":":2"}`}, ""},
		{"bare json keeps numbers", "s.json", `{"bind": ":1", "max_connections": 3.5}`, "", false, []string{""},
			map[string]string{"": `{"bind":":1","max_connections":3.5}`}, ""},
		{"whole json", "c.json", `{"servers": {"a": {"bind": ":1"}}}`, "", true, []string{"a"}, map[string]string{"a": `{"bind":":1"}`}, ""},
		{"json sniffed", "s.conf", ` {"bind": ":1"}`, "", false, []string{""}, map[string]string{"": `{"bind":":1"}`}, ""},
		{"format beats extension", "s.json", "bind = \":1\"\n", "toml", false, []string{""}, map[string]string{"": `{"bind":":1"}`}, ""},
		{"whole config without servers", "c.toml", "[api]\nenabled = true\n", "", true, nil, nil, "no [servers.NAME] section"},
		{"servers not a table", "c.json", `{"servers": 3}`, "", true, nil, nil, "servers is not a table"},
		{"bad toml", "s.toml", "bind = = 1", "", false, nil, nil, "line 1"},
		{"bad json", "s.json", `{"bind": `, "", false, nil, nil, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeTemp(t, tt.file, tt.content)
			sf, err := readServerFile(p, tt.format, nil)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sf.full != tt.full || strings.Join(sf.names, ",") != strings.Join(tt.names, ",") {
				t.Fatalf("full=%v names=%q, want %v %q", sf.full, sf.names, tt.full, tt.names)
			}
			for n, want := range tt.body {
				if got := string(sf.bodies[n]); got != want {
					t.Errorf("body of %q = %s, want %s", n, got, want)
				}
			}
		})
	}
}

// drainFake is an API whose backend loses a connection and whose members
// publish a report at every poll, so waitDrained's two conditions can be
// checked apart.
type drainFake struct {
	mu      sync.Mutex
	conns   int64
	seq     map[string]uint64
	gossip  map[string]string
	polls   int
	onStats func(d *drainFake) // runs at every stats request
	single  bool               // not clustered: /cluster is 404
	other   bool               // the stats list another backend only
}

func (d *drainFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case r.URL.Path == "/cluster" && d.single:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error": "not clustered", "details": []}`)
	case r.URL.Path == "/cluster":
		var ms []map[string]any
		for _, id := range []string{"n1", "n2", "n3"} {
			if d.gossip[id] == "" {
				continue
			}
			ms = append(ms, map[string]any{"id": id, "gossip": d.gossip[id], "report_seq": d.seq[id]})
		}
		json.NewEncoder(w).Encode(map[string]any{"node_id": "n1", "members": ms})
	case r.URL.Path == "/servers/web/stats":
		d.polls++
		if d.onStats != nil {
			d.onStats(d)
		}
		host := "10.0.0.1"
		if d.other {
			host = "10.0.0.2"
		}
		// A node that is not clustered counts only its own connections.
		cluster := d.conns
		if d.single {
			cluster = 0
		}
		fmt.Fprintf(w, `{"backends": [{"host": %q, "port": "80", "stats": {"active_connections": %d, "cluster": {"active_connections": %d}}}]}`, host, d.conns, cluster)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error": "not found", "details": []}`)
	}
}

func TestWaitDrained(t *testing.T) {
	tests := []struct {
		name      string
		conns     int64
		gossip    map[string]string
		onStats   func(d *drainFake)
		timeout   time.Duration
		wantErr   string
		wantPolls int // at least
		single    bool
		other     bool
	}{
		{"waits for two fresh reports from every live member", 0, map[string]string{"n1": "alive", "n2": "alive", "n3": "dead"},
			func(d *drainFake) { d.seq["n1"]++; d.seq["n2"]++ }, 5 * time.Second, "", 3, false, false},
		{"a silent member holds the wait until the deadline", 0, map[string]string{"n1": "alive", "n2": "alive"},
			func(d *drainFake) { d.seq["n1"]++ }, 300 * time.Millisecond, "timed out", 2, false, false},
		{"waits for the connections", 3, map[string]string{"n1": "alive"},
			func(d *drainFake) {
				d.seq["n1"] += 5
				if d.conns > 0 {
					d.conns--
				}
			}, 5 * time.Second, "", 3, false, false},
		{"connections that never close", 1, map[string]string{"n1": "alive"},
			func(d *drainFake) { d.seq["n1"]++ }, 300 * time.Millisecond, "1 connection(s) left", 2, false, false},
		{"a single node counts its own connections", 2, nil,
			func(d *drainFake) {
				if d.conns > 0 {
					d.conns--
				}
			}, 5 * time.Second, "", 2, true, false},
		{"a backend the server does not list has no connections to count", 5, map[string]string{"n1": "alive"},
			func(d *drainFake) { d.seq["n1"]++ }, 5 * time.Second, "", 3, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &drainFake{conns: tt.conns, seq: map[string]uint64{"n1": 100, "n2": 7, "n3": 3}, gossip: tt.gossip, onStats: tt.onStats, single: tt.single, other: tt.other}
			srv := httptest.NewServer(d)
			defer srv.Close()
			api, err := newAPIClient(clientFlags{api: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			var progress bytes.Buffer
			res, err := waitDrained(ctx, api, "web", "10.0.0.1:80", &progress, 5*time.Millisecond)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v; progress:\n%s", err, progress.String())
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.polls < tt.wantPolls || res.conns != 0 || res.listed == tt.other {
				t.Fatalf("returned after %d polls (want >= %d), %+v", d.polls, tt.wantPolls, res)
			}
			if tt.conns > 0 && !tt.other && !strings.Contains(progress.String(), "connection(s) left") {
				t.Errorf("no progress printed:\n%s", progress.String())
			}
		})
	}
}
