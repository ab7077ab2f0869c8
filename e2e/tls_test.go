package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TLS through the built binary with real clients: openssl s_client through
// termination and through SNI passthrough (the certificate it sees and the
// reply), curl over HTTPS through termination to an HTTP backend.
func TestTLSWithOpenSSLAndCurl(t *testing.T) {
	t.Parallel()
	requireTool(t, "openssl")
	requireTool(t, "curl")
	ca := newTestCA(t)
	webCrt, webKey, _ := ca.issue("web", "web.test", "web.test")
	_, _, aPair := ca.issue("a", "a.test", "a.test")
	_, _, bPair := ca.issue("b", "b.test", "b.test")

	lineBackend := startHandlerBackend(t, lineReply("term:"))
	aBackend := startHandlerBackend(t, tlsLineReply("a:", aPair))
	bBackend := startHandlerBackend(t, tlsLineReply("b:", bPair))
	httpLn := listenFree(t)
	httpSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the backend: host=%s path=%s tls=%v", r.Host, r.URL.Path, r.TLS != nil)
	})}
	go httpSrv.Serve(httpLn)
	t.Cleanup(func() { httpSrv.Close() })

	tlsSection := fmt.Sprintf(`tls = { cert_path = %q, key_path = %q }`, webCrt, webKey)
	termAddr, passAddr, httpsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	n := startNode(t, config("",
		server{name: "term", bind: termAddr, lines: []string{lineBackend}, options: []string{tlsSection}},
		server{name: "pass", bind: passAddr, lines: []string{aBackend + " sni=a.test", bBackend + " sni=b.test"},
			options: []string{`sni = { read_timeout = "2s", unexpected_hostname_strategy = "reject" }`}},
		server{name: "https", bind: httpsAddr, lines: []string{httpLn.Addr().String()}, options: []string{tlsSection}},
	))
	for _, a := range []string{termAddr, passAddr, httpsAddr} {
		n.waitListening(a)
	}

	tests := []struct {
		name, addr, servername string
		subject, reply         string
	}{
		{"termination", termAddr, "web.test", "CN = web.test", "term:hello"},
		{"passthrough a", passAddr, "a.test", "CN = a.test", "a:hello"},
		{"passthrough b", passAddr, "b.test", "CN = b.test", "b:hello"},
	}
	for _, tt := range tests {
		t.Run("openssl "+tt.name, func(t *testing.T) {
			out, err := runTool(t, "hello\n", "openssl", "s_client", "-connect", tt.addr, "-servername", tt.servername,
				"-CAfile", ca.path, "-verify_return_error", "-ign_eof")
			if err != nil {
				t.Fatalf("openssl s_client: %v\n%s", err, out)
			}
			for _, want := range []string{"subject=" + tt.subject, "Verify return code: 0 (ok)", tt.reply} {
				if !strings.Contains(out, want) {
					t.Errorf("openssl output lacks %q:\n%s", want, out)
				}
			}
		})
	}
	t.Run("openssl passthrough unknown name", func(t *testing.T) {
		out, err := runTool(t, "hello\n", "openssl", "s_client", "-connect", passAddr, "-servername", "z.test",
			"-CAfile", ca.path, "-ign_eof")
		if err == nil || strings.Contains(out, ":hello") {
			t.Fatalf("a name no backend has was relayed: %v\n%s", err, out)
		}
	})
	t.Run("curl https", func(t *testing.T) {
		port := httpsAddr[strings.LastIndex(httpsAddr, ":")+1:]
		out, err := runTool(t, "", "curl", "-sS", "--max-time", "5",
			"--resolve", "web.test:"+port+":127.0.0.1", "--cacert", ca.path, "https://web.test:"+port+"/some/path")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if want := "hello from the backend: host=web.test:" + port + " path=/some/path tls=false"; out != want {
			t.Fatalf("curl got %q, want %q", out, want)
		}
	})
	n.requireRunning()
}

// A definition whose certificate or CA file this node cannot read is refused
// by the API with 422 and not stored.
func TestTLSBadFilesRefusedByAPI(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	apiAddr := freeAddr(t)
	n := startNode(t, config(apiAddr))
	api := newAPI(apiAddr)
	api.wait(t, n)
	missing := t.TempDir() + "/missing.pem"
	body := func(extra string) string {
		return fmt.Sprintf(`{"bind":%q,"protocol":"tcp",%s,"discovery":{"kind":"static","static_list":[%q]}}`,
			freeAddr(t), extra, b.line())
	}
	for i, extra := range []string{
		fmt.Sprintf(`"tls":{"cert_path":%q,"key_path":%q}`, missing, missing),
		fmt.Sprintf(`"backends_tls":{"root_ca_cert_path":%q}`, missing),
	} {
		name := "bad" + strconv.Itoa(i)
		code, resp := api.mustDo(t, "POST", "/servers/"+name, body(extra))
		if code != http.StatusUnprocessableEntity || !strings.Contains(resp, "missing.pem") {
			t.Errorf("POST with %s: %d %s, want 422 naming the file", extra, code, resp)
		}
		if code, _ := api.mustDo(t, "GET", "/servers/"+name, ""); code != http.StatusNotFound {
			t.Errorf("refused server %s stored: GET %d", name, code)
		}
	}
	n.requireRunning()
}
