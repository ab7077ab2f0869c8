package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// fakeCerts is a CertSource twin: a certificate per host name, and the names
// it was asked for.
type fakeCerts struct {
	certs map[string]*tls.Certificate
	mu    sync.Mutex
	asked []string
}

func (f *fakeCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	f.asked = append(f.asked, hello.ServerName)
	f.mu.Unlock()
	if c, ok := f.certs[strings.ToLower(hello.ServerName)]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("fake: no certificate for %q", hello.ServerName)
}

func (f *fakeCerts) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

func TestPickCertificate(t *testing.T) {
	pki := newTestPKI(t)
	static := pki.issue("static", "static.test", []string{"localhost"}, false)
	acmeCert := pki.issue("acme", "a.test", []string{"a.test"}, false).cert
	tests := []struct {
		name      string
		static    bool   // cert_path and key_path set
		sni       string // the ClientHello's server name
		want      string // CN of the certificate chosen; "" = the handshake fails
		wantAsked bool   // the ACME source was asked
		wantErr   string
	}{
		{name: "acme host", sni: "a.test", want: "a.test", wantAsked: true},
		{name: "acme host, mixed with static", static: true, sni: "a.test", want: "a.test", wantAsked: true},
		{name: "acme host in upper case", sni: "A.Test", want: "a.test", wantAsked: true},
		{name: "acme host with trailing dot", sni: "a.test.", wantAsked: true, wantErr: "fake: no certificate"},
		{name: "acme host the source cannot serve", sni: "b.test", wantAsked: true, wantErr: `fake: no certificate for "b.test"`},
		{name: "other name gets the static certificate", static: true, sni: "localhost", want: "static.test"},
		{name: "no name gets the static certificate", static: true, sni: "", want: "static.test"},
		{name: "other name without a static certificate", sni: "localhost", wantErr: `no certificate for "localhost": not one of the server's acme_hosts`},
		{name: "no name without a static certificate", sni: "", wantErr: "sent no server name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeCerts{certs: map[string]*tls.Certificate{"a.test": &acmeCert}}
			cfg := &config.Tls{AcmeHosts: []string{"a.test", "B.test"}}
			if tt.static {
				cfg.CertPath, cfg.KeyPath = static.certPath, static.keyPath
			}
			st, err := newServerTLS(cfg, src)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.config.Certificates) != 0 || st.config.GetCertificate == nil {
				t.Fatal("a server with acme_hosts does not choose its certificate per handshake")
			}
			got, err := st.config.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if cn := got.Leaf.Subject.CommonName; cn != tt.want {
				t.Fatalf("certificate %q, want %q", cn, tt.want)
			}
			if asked := len(src.calls()) > 0; asked != tt.wantAsked {
				t.Fatalf("ACME source asked = %v (%q), want %v", asked, src.calls(), tt.wantAsked)
			}
		})
	}
}

func TestACMEHostsNeedACertSource(t *testing.T) {
	cfg := serverCfg([]string{"127.0.0.1:1"})
	cfg.Tls = &config.Tls{AcmeHosts: []string{"a.test"}}
	for _, err := range []error{
		func() error { _, err := newServerTLS(cfg.Tls, nil); return err }(),
		Runnable(t.Context(), cfg),
		newHarness(t).rt.Runnable(t.Context(), cfg),
	} {
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "tls.acme_hosts: no [acme] section") {
			t.Fatalf("acme_hosts without a CertSource: %v", err)
		}
	}
	h := newACMEHarness(t, &fakeCerts{})
	if err := h.rt.Runnable(t.Context(), cfg); err != nil {
		t.Fatalf("acme_hosts with a CertSource: %v", err)
	}
}

func newACMEHarness(t testing.TB, src CertSource) *harness {
	tw := newTwins()
	opts := tw.options(slog.New(slog.DiscardHandler))
	opts.ACME = src
	h := &harness{t: t, rt: New(opts), tw: tw}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.rt.Shutdown(ctx)
	})
	return h
}

// Real handshakes through the runtime: an acme host gets the source's
// certificate and relays; on the same server another name gets the static
// certificate; a server with acme_hosts only refuses other names before a
// backend is dialed.
func TestACMEServersServeTheirCertificates(t *testing.T) {
	pki := newTestPKI(t)
	static := pki.issue("static", "static.test", []string{"localhost"}, false)
	acmeCert := pki.issue("acme", "a.test", []string{"a.test"}, false).cert
	src := &fakeCerts{certs: map[string]*tls.Certificate{"a.test": &acmeCert}}
	h := newACMEHarness(t, src)

	mixedBE := startBackend(t, greetEcho("mixed"))
	mixed := h.start("mixed", serverCfg([]string{mixedBE.addr()}, withTLS(static, func(c *config.Tls) {
		c.AcmeHosts = []string{"a.test"}
	})))
	onlyBE := startBackend(t, greetEcho("only"))
	only := h.start("only", serverCfg([]string{onlyBE.addr()}, withTLS(static, func(c *config.Tls) {
		c.CertPath, c.KeyPath = "", ""
		c.AcmeHosts = []string{"a.test"}
	})))

	for _, tc := range []struct {
		addr, sni, wantCN, wantGreeting string
	}{
		{mixed, "a.test", "a.test", "mixed"},
		{mixed, "localhost", "static.test", "mixed"},
		{only, "a.test", "a.test", "only"},
	} {
		c, err := tlsClient(t, tc.addr, &tls.Config{RootCAs: pki.pool, ServerName: tc.sni})
		if err != nil {
			t.Fatalf("%s with SNI %s: %v", tc.wantGreeting, tc.sni, err)
		}
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != tc.wantCN {
			t.Fatalf("%s with SNI %s: certificate %q, want %q", tc.wantGreeting, tc.sni, cn, tc.wantCN)
		}
		if g, err := greeting(c); err != nil || g != tc.wantGreeting {
			t.Fatalf("%s with SNI %s: greeting %q, %v", tc.wantGreeting, tc.sni, g, err)
		}
		c.Close()
	}
	if got := src.calls(); len(got) != 2 || got[0] != "a.test" || got[1] != "a.test" {
		t.Fatalf("the ACME source was asked for %q, want a.test twice", got)
	}

	before := onlyBE.total.Load()
	if c, err := tlsClient(t, only, &tls.Config{RootCAs: pki.pool, ServerName: "localhost"}); err == nil {
		t.Fatalf("acme-only server completed a handshake for another name: %s",
			c.ConnectionState().PeerCertificates[0].Subject.CommonName)
	}
	h.waitIdle("only")
	if n := onlyBE.total.Load(); n != before {
		t.Fatalf("backend dialed for a refused handshake (%d → %d)", before, n)
	}
}
