package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobetween/gobetween/api"
)

func TestParseArgsSources(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr string
	}{
		{"from-url", []string{"from-url", "http://cfg.example/g.toml", "--watch", "30s"},
			options{command: "run", source: sourceURL, sourceAddr: "http://cfg.example/g.toml", format: "toml", watch: 30 * time.Second}, ""},
		{"from-url json", []string{"from-url", "https://cfg.example/g.json", "-f", "json"},
			options{command: "run", source: sourceURL, sourceAddr: "https://cfg.example/g.json", format: "json"}, ""},
		{"from-consul defaults", []string{"from-consul", "127.0.0.1:8500"},
			options{command: "run", source: sourceConsul, sourceAddr: "127.0.0.1:8500", consulKey: "gobetween", consulScheme: "http", format: "toml"}, ""},
		{"from-consul flags", []string{"from-consul", "c:8501", "-k", "lb/cfg", "--scheme", "https", "--watch", "1m"},
			options{command: "run", source: sourceConsul, sourceAddr: "c:8501", consulKey: "lb/cfg", consulScheme: "https", format: "toml", watch: time.Minute}, ""},
		{"from-consul long key", []string{"from-consul", "c:8500", "--key", "k"},
			options{command: "run", source: sourceConsul, sourceAddr: "c:8500", consulKey: "k", consulScheme: "http", format: "toml"}, ""},
		{"file watch", []string{"-c", "a.toml", "--watch", "2s"}, options{command: "run", configPath: "a.toml", format: "toml", watch: 2 * time.Second}, ""},
		{"from-url without URL", []string{"from-url"}, options{}, "from-url needs a URL"},
		{"from-consul without host", []string{"from-consul", "-k", "x"}, options{}, "from-consul needs a HOST:PORT"},
		{"not http", []string{"from-url", "ftp://x/y"}, options{}, "from-url needs an http:// or https:// URL"},
		{"two configs", []string{"from-url", "http://x/", "-c", "a.toml"}, options{}, "name two configs"},
		{"key without consul", []string{"from-url", "http://x/", "--key", "k"}, options{}, "--key and --scheme go with from-consul"},
		{"bad scheme", []string{"from-consul", "c:1", "-s", "gopher"}, options{}, "--scheme must be http or https"},
		{"empty key", []string{"from-consul", "c:1", "-k", ""}, options{}, "--key must not be empty"},
		{"negative watch", []string{"from-url", "http://x/", "--watch", "-1s"}, options{}, "--watch must not be negative"},
		{"bad watch", []string{"from-url", "http://x/", "--watch", "soon"}, options{}, "invalid value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// validConfig is a config with one server named name.
func validConfig(name string) string {
	return fmt.Sprintf("[servers.%s]\nbind = \"127.0.0.1:1\"\nprotocol = \"tcp\"\n  [servers.%s.discovery]\n  kind = \"static\"\n  static_list = [\"127.0.0.1:2\"]\n", name, name)
}

// served is what a test HTTP server answers: status and body, changeable.
type served struct {
	mu     sync.Mutex
	status int
	body   []byte
	index  uint64 // X-Consul-Index, bumped by set
}

func (s *served) set(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
	s.index++
}

func (s *served) get() (int, []byte, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, s.body, s.index
}

func (s *served) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, body, _ := s.get()
	w.WriteHeader(status)
	w.Write(body)
}

func TestURLSource(t *testing.T) {
	srv := &served{}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	src, err := newSource(options{source: sourceURL, sourceAddr: ts.URL + "/g.toml"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := src.Info(), (api.ConfigSource{Kind: "url", URL: ts.URL + "/g.toml"}); got != want {
		t.Fatalf("Info = %+v, want %+v", got, want)
	}
	opts := options{format: "toml"}
	tests := []struct {
		name      string
		status    int
		body      []byte
		readErr   string // "" = the read succeeds
		decodeErr string // "" = the config is valid
		server    string // the server the config defines
	}{
		{"first", 200, []byte(validConfig("one")), "", "", "one"},
		{"changed", 200, []byte(validConfig("two")), "", "", "two"},
		{"not found", 404, []byte("nothing here"), "status 404 Not Found", "", ""},
		{"server error", 503, nil, "status 503", "", ""},
		{"garbage", 200, []byte("[[[ this is = = not toml"), "", "line 1", ""},
		{"invalid server", 200, []byte("[servers.x]\nbind = \"nowhere\"\n"), "", "servers.x", ""},
		{"huge", 200, bytes.Repeat([]byte("#"), maxConfigSize+1), "larger than 8388608 bytes", "", ""},
		{"at the cap", 200, append([]byte(validConfig("cap")), bytes.Repeat([]byte("#"), maxConfigSize-len(validConfig("cap")))...), "", "", "cap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.set(tt.status, tt.body)
			data, err := src.Read(context.Background())
			if tt.readErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.readErr) || !strings.Contains(err.Error(), ts.URL) {
					t.Fatalf("read err = %v, want it to name the URL and contain %q", err, tt.readErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := decodeConfig(data, opts, io.Discard)
			if tt.decodeErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.decodeErr) {
					t.Fatalf("decode err = %v, want it to contain %q", err, tt.decodeErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := cfg.Servers[tt.server]; !ok || len(cfg.Servers) != 1 {
				t.Fatalf("servers = %v, want only %q", cfg.Servers, tt.server)
			}
		})
	}
}

func TestURLSourceUnreachable(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	addr := ts.URL
	ts.Close()
	src, _ := newSource(options{source: sourceURL, sourceAddr: addr})
	if _, err := src.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "GET "+addr) {
		t.Fatalf("err = %v, want a failed GET naming %s", err, addr)
	}
}

// consulKV is an in-process Consul KV endpoint: GET /v1/kv/<key> answers as
// Consul documents it, a JSON array of one entry with the value in base64 and
// the index in X-Consul-Index; a missing key is 404.
type consulKV struct {
	key  string
	data served
	mu   sync.Mutex
	seen []string // request paths, for the test to check
}

func (c *consulKV) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.seen = append(c.seen, r.URL.Path)
	c.mu.Unlock()
	status, body, index := c.data.get()
	w.Header().Set("X-Consul-Index", fmt.Sprint(index))
	w.Header().Set("X-Consul-Knownleader", "true")
	w.Header().Set("X-Consul-Lastcontact", "0")
	if r.URL.Path != "/v1/kv/"+c.key || status == http.StatusNotFound {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if status != http.StatusOK {
		w.WriteHeader(status)
		w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode([]map[string]any{{
		"Key": c.key, "CreateIndex": 1, "ModifyIndex": index, "LockIndex": 0, "Flags": 0,
		"Value": base64.StdEncoding.EncodeToString(body),
	}})
}

func TestConsulSource(t *testing.T) {
	kv := &consulKV{key: "lb/config"}
	ts := httptest.NewServer(kv)
	defer ts.Close()
	host := strings.TrimPrefix(ts.URL, "http://")
	src, err := newSource(options{source: sourceConsul, sourceAddr: host, consulKey: "lb/config", consulScheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := src.Info(), (api.ConfigSource{Kind: "consul", Host: host, Key: "lb/config"}); got != want {
		t.Fatalf("Info = %+v, want %+v", got, want)
	}
	tests := []struct {
		name    string
		status  int
		value   []byte
		readErr string
		server  string
	}{
		{"first", 200, []byte(validConfig("one")), "", "one"},
		{"changed", 200, []byte(validConfig("two")), "", "two"},
		{"missing key", 404, nil, "no such key", ""},
		{"consul error", 500, []byte("rpc error"), "500", ""},
		{"huge", 200, bytes.Repeat([]byte("#"), maxConfigSize+1), "larger than", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kv.data.set(tt.status, tt.value)
			data, err := src.Read(context.Background())
			if tt.readErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.readErr) || !strings.Contains(err.Error(), `key "lb/config"`) {
					t.Fatalf("read err = %v, want it to name the key and contain %q", err, tt.readErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := decodeConfig(data, options{format: "toml"}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := cfg.Servers[tt.server]; !ok || len(cfg.Servers) != 1 {
				t.Fatalf("servers = %v, want only %q", cfg.Servers, tt.server)
			}
		})
	}
	kv.mu.Lock()
	defer kv.mu.Unlock()
	for _, p := range kv.seen {
		if p != "/v1/kv/lb/config" {
			t.Errorf("the client asked for %s, want /v1/kv/lb/config", p)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestWatchSource(t *testing.T) {
	srv := &served{}
	srv.set(200, []byte("A"))
	ts := httptest.NewServer(srv)
	defer ts.Close()
	src, _ := newSource(options{source: sourceURL, sourceAddr: ts.URL})
	var logs syncBuffer
	out := make(chan []byte)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchSource(ctx, src, 5*time.Millisecond, []byte("A"), out, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	defer func() { cancel(); <-done }()

	next := func(want string) {
		t.Helper()
		select {
		case got := <-out:
			if string(got) != want {
				t.Fatalf("watch sent %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("watch sent nothing for 5s, want %q", want)
		}
	}
	// The text the process started with is not sent again.
	select {
	case got := <-out:
		t.Fatalf("watch sent the unchanged text %q", got)
	case <-time.After(100 * time.Millisecond):
	}
	srv.set(200, []byte("B"))
	next("B")
	// A failing source is logged once and sends nothing.
	srv.set(404, nil)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "status 404") {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the failure; logs:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // ~20 more failed reads
	if n := strings.Count(logs.String(), "status 404"); n != 1 {
		t.Fatalf("the same failure was logged %d times, want once; logs:\n%s", n, logs.String())
	}
	srv.set(200, []byte("B"))
	select {
	case got := <-out:
		t.Fatalf("watch sent %q after the source came back unchanged", got)
	case <-time.After(100 * time.Millisecond):
	}
	srv.set(200, []byte("C"))
	next("C")
	if !strings.Contains(logs.String(), "answers again") {
		t.Fatalf("no log of the recovery; logs:\n%s", logs.String())
	}
}
