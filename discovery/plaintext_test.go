package discovery

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// testEndpoint is a real HTTP server whose answer a test changes between
// fetches.
type testEndpoint struct {
	srv *httptest.Server

	mu        sync.Mutex
	status    int
	body      string
	stall     bool // send the headers, then hang until the client gives up
	hang      bool // hang before the headers
	hits      int
	agents    []string
	conns     int // connections accepted
	lastError error
}

func newTestEndpoint(t *testing.T) *testEndpoint {
	e := &testEndpoint{status: http.StatusOK}
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(e.serveHTTP))
	e.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			e.mu.Lock()
			e.conns++
			e.mu.Unlock()
		}
	}
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *testEndpoint) serveHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	e.hits++
	e.agents = append(e.agents, r.UserAgent())
	status, body, stall, hang := e.status, e.body, e.stall, e.hang
	e.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	if stall {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("10.0.0.1:80\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

// set makes the next answers status and body.
func (e *testEndpoint) set(status int, body string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status, e.body, e.stall, e.hang = status, body, false, false
}

func (e *testEndpoint) setSlow(stall, hang bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stall, e.hang = stall, hang
}

func (e *testEndpoint) stats() (hits, conns int, agents []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hits, e.conns, slices.Clone(e.agents)
}

func fetchWithin(p Provider, d time.Duration) ([]config.Backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return p.Fetch(ctx)
}

func TestParsePlaintext(t *testing.T) {
	custom := regexp.MustCompile(`^(?P<host>[\w.:\[\]-]+)\|(?P<port>\w*)(\|w(?P<weight>\w*))?(\|p(?P<priority>\w+))?(\|m(?P<max_connections>\d+))?(\|s(?P<sni>\S+))?$`)
	// 0.8's default pattern, given explicitly, reads 0.8 lines as before.
	pattern08 := regexp.MustCompile(`^(?P<host>\S+):(?P<port>\d+)(\sweight=(?P<weight>\d+))?(\spriority=(?P<priority>\d+))?(\smax_connections=(?P<max_connections>\d+))?(\ssni=(?P<sni>[^\s]+))?$`)
	alternatives := regexp.MustCompile(`^(?:(?P<host>[a-z.]+) (?P<port>\d+)|(?P<port>\d+)@(?P<host>[a-z.]+))$`)
	full := config.Backend{Target: config.Target{Host: "10.0.0.1", Port: "80"}, Weight: 5, Priority: 2, MaxConnections: 10, Sni: "a.example"}
	tests := []struct {
		name    string
		re      *regexp.Regexp
		body    string
		want    []config.Backend
		wantErr []string
	}{
		{"grammar, any order, blank lines", nil, "\n10.0.0.1:80 sni=a.example max_connections=10 priority=2 weight=5\r\n\n  b:2  \n",
			[]config.Backend{full, backend("b", "2", 1, 1)}, nil},
		{"grammar, empty body", nil, "", []config.Backend{}, nil},
		{"grammar, bad line named", nil, "a:1\n<html>\n", nil, []string{"line 2", `"<html>"`}},
		{"0.8 pattern", pattern08, "  10.0.0.1:80 weight=5 priority=2 max_connections=10 sni=a.example  \nb:2\n",
			[]config.Backend{full, backend("b", "2", 1, 1)}, nil},
		{"0.8 pattern, other order does not match", pattern08, "a:1 priority=2 weight=5\n", nil,
			[]string{"line 1", "does not match plaintext_regex_pattern"}},
		{"custom groups", custom, "10.0.0.1|80|w5|p2|m10|sa.example\n", []config.Backend{full}, nil},
		{"custom, optional groups default", custom, "h|8080\nh|8081|w\n",
			[]config.Backend{backend("h", "8080", 1, 1), backend("h", "8081", 1, 1)}, nil},
		{"custom, ipv6 with and without brackets", custom, "[::1]|80\n::2|81\n",
			[]config.Backend{backend("::1", "80", 1, 1), backend("::2", "81", 1, 1)}, nil},
		{"custom, port canonical", custom, "h|0080\n", []config.Backend{backend("h", "80", 1, 1)}, nil},
		{"custom, empty port", custom, "h|\n", nil, []string{"line 1", "missing port"}},
		{"custom, bad number is an error, not a default", custom, "h|80|wx\n", nil, []string{"line 1", "weight"}},
		{"custom, port out of range", custom, "h|70000\n", nil, []string{"70000"}},
		{"custom, no match", custom, "h:80\n", nil, []string{`"h:80" does not match`}},
		{"alternatives, first matching group wins", alternatives, "a.example 80\n81@b.example\n",
			[]config.Backend{backend("a.example", "80", 1, 1), backend("b.example", "81", 1, 1)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePlaintext(tc.body, tc.re)
			checkParse(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func TestPlaintext(t *testing.T) {
	e := newTestEndpoint(t)
	reg := NewRegistry()
	p, err := reg.New(config.Discovery{Kind: "plaintext", PlaintextEndpoint: e.srv.URL + "/backends"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("answers change between fetches", func(t *testing.T) {
		steps := []struct {
			body string
			want []config.Backend
		}{
			{"10.0.0.1:80\n", list(bA)},
			{"10.0.0.1:80\n10.0.0.2:80\n", list(bA, bB)},
			{"10.0.0.1:80 weight=5\n10.0.0.2:80\n", list(bA5, bB)},
			{"10.0.0.2:80\n", list(bB)},
			{"", []config.Backend{}},
		}
		for i, st := range steps {
			e.set(http.StatusOK, st.body)
			got, err := fetchWithin(p, 5*time.Second)
			if err != nil {
				t.Fatalf("fetch %d: %v", i, err)
			}
			if !slices.Equal(got, st.want) {
				t.Fatalf("fetch %d = %v, want %v", i, got, st.want)
			}
		}
		hits, conns, agents := e.stats()
		if hits != len(steps) || conns != 1 {
			t.Errorf("%d requests over %d connections, want %d over 1 (a client reused)", hits, conns, len(steps))
		}
		for _, a := range agents {
			if a != "gobetween" {
				t.Errorf("User-Agent %q", a)
			}
		}
	})

	failures := []struct {
		name    string
		status  int
		body    string
		target  error
		wantErr []string
	}{
		{"not found", http.StatusNotFound, "10.0.0.1:80\n", nil, []string{"status 404 Not Found"}},
		{"server error", http.StatusInternalServerError, "", nil, []string{"status 500"}},
		{"redirect without location", http.StatusMultipleChoices, "10.0.0.1:80\n", nil, []string{"status 300"}},
		{"garbage", http.StatusOK, "<html><body>\nOops\n", nil, []string{"line 1", `"<html><body>"`, "line 2", `"Oops"`}},
		{"body over maxPayload", http.StatusOK, strings.Repeat("10.0.0.1:80\n", maxPayload/12+1), errPayloadTooLarge, nil},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			e.set(tc.status, tc.body)
			got, err := fetchWithin(p, 5*time.Second)
			if err == nil {
				t.Fatalf("Fetch = %d backends, want an error", len(got))
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("error %v, want %v", err, tc.target)
			}
			for _, part := range append(tc.wantErr, e.srv.URL) {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not mention %q", err, part)
				}
			}
		})
	}

	for _, slow := range []struct {
		name        string
		stall, hang bool
	}{{"slow headers", false, true}, {"slow body", true, false}} {
		t.Run(slow.name, func(t *testing.T) {
			e.set(http.StatusOK, "")
			e.setSlow(slow.stall, slow.hang)
			start := time.Now()
			_, err := fetchWithin(p, 200*time.Millisecond)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Fetch error %v, want the deadline", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("Fetch returned after %v", d)
			}
		})
	}

	t.Run("factory errors", func(t *testing.T) {
		for _, cfg := range []config.Discovery{
			{Kind: "plaintext"},
			{Kind: "plaintext", PlaintextEndpoint: "ftp://h/x"},
			{Kind: "plaintext", PlaintextEndpoint: "http://h/x", PlaintextRegexPattern: "("},
			{Kind: "plaintext", PlaintextEndpoint: "http://h/x", PlaintextRegexPattern: `(?P<host>\S+)`},
		} {
			if _, err := reg.New(cfg); err == nil {
				t.Errorf("New(%+v) succeeded", cfg)
			}
		}
	})
}

func TestHTTPEndpointRedirects(t *testing.T) {
	target := newTestEndpoint(t)
	target.set(http.StatusOK, "10.0.0.1:80\n")
	tlsTarget := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("10.0.0.9:80\n"))
	}))
	t.Cleanup(tlsTarget.Close)
	mux := http.NewServeMux()
	mux.Handle("/same", http.RedirectHandler(target.srv.URL+"/x", http.StatusFound))
	mux.Handle("/https", http.RedirectHandler(tlsTarget.URL+"/x", http.StatusFound))
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)

	tests := []struct {
		path    string
		want    []config.Backend
		wantErr string
	}{
		{"/same", list(bA), ""},
		{"/https", nil, "redirect to " + tlsTarget.URL + "/x refused"},
		{"/loop", nil, "stopped after 10 redirects"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			p, err := NewRegistry().New(config.Discovery{Kind: "plaintext", PlaintextEndpoint: front.URL + tc.path})
			if err != nil {
				t.Fatal(err)
			}
			got, err := fetchWithin(p, 5*time.Second)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Fetch = %v, %v; want an error mentioning %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("Fetch = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestPlaintextFailpolicy runs the kind through a Source against a real server.
func TestPlaintextFailpolicy(t *testing.T) {
	e := newTestEndpoint(t)
	testFailpolicies(t, failpolicyCase{
		cfg: config.Discovery{Kind: "plaintext", PlaintextEndpoint: e.srv.URL},
		serve: func(lines []string) {
			if lines == nil {
				e.set(http.StatusServiceUnavailable, "")
				return
			}
			e.set(http.StatusOK, strings.Join(lines, "\n"))
		},
		fetches: func() int { hits, _, _ := e.stats(); return hits },
	})
}

// checkFuzzedBackends fails unless every backend is one that a backend line
// gives back unchanged.
func checkFuzzedBackends(t *testing.T, list []config.Backend) {
	t.Helper()
	for _, b := range list {
		again, err := config.ParseBackend(config.FormatBackend(b))
		if err != nil || again != b {
			t.Fatalf("backend %+v does not survive its own line: %+v, %v", b, again, err)
		}
	}
}

// FuzzPlaintext feeds bodies to the grammar, to 0.8's default pattern and to
// a custom pattern: no panic, and whatever is accepted is a valid backend.
func FuzzPlaintext(f *testing.F) {
	patterns := []*regexp.Regexp{
		nil,
		regexp.MustCompile(`^(?P<host>\S+):(?P<port>\d+)(\sweight=(?P<weight>\d+))?(\spriority=(?P<priority>\d+))?(\smax_connections=(?P<max_connections>\d+))?(\ssni=(?P<sni>[^\s]+))?$`),
		regexp.MustCompile(`(?P<host>[^|]*)\|(?P<port>[^|]*)\|?(?P<weight>[^|]*)\|?(?P<priority>[^|]*)\|?(?P<max_connections>[^|]*)\|?(?P<sni>.*)`),
	}
	for _, seed := range []string{
		"10.0.0.1:80\n", "a:1 weight=5 priority=2 max_connections=3 sni=x\r\n\nb:2\n", "[::1]:80 sni=a", "h|80|5|2|3|x.example",
		"::1|0080||||", "h:99999", "a:1 weight=2147483648", "\x00:\xff", "[fe80::1%eth0]:80", "a:1 sni=",
	} {
		for mode := range patterns {
			f.Add(seed, uint8(mode))
		}
	}
	f.Fuzz(func(t *testing.T, body string, mode uint8) {
		re := patterns[int(mode)%len(patterns)]
		list, err := parsePlaintext(body, re)
		if err != nil {
			if list != nil {
				t.Fatalf("a list with an error: %v", list)
			}
			return
		}
		if n := len(strings.Fields(strings.ReplaceAll(body, " ", "_"))); len(list) > n {
			t.Fatalf("%d backends from %d non-blank lines", len(list), n)
		}
		checkFuzzedBackends(t, list)
	})
}

// checkParse checks a parser's result: with wantErr, an error mentioning every
// part; else no error and exactly want.
func checkParse(t *testing.T, got []config.Backend, err error, want []config.Backend, wantErr []string) {
	t.Helper()
	if wantErr != nil {
		if err == nil {
			t.Fatalf("parse = %v, want an error", got)
		}
		for _, part := range wantErr {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("error %q does not mention %q", err, part)
			}
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parse = %v, want %v", got, want)
	}
}
