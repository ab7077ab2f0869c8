package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// startNodeArgs starts gobetween with exactly args (no config file is written:
// for from-url and from-consul). Like startNodeWith, it runs in a fresh
// directory and is stopped, and checked for races and panics, in t.Cleanup.
func startNodeArgs(t testing.TB, args ...string) *node {
	t.Helper()
	n := &node{t: t, dir: t.TempDir(), done: make(chan struct{})}
	n.launch(args, nil)
	return n
}

// configServer serves a config text over HTTP, changeable by the test. With
// consulKey set it answers as Consul's KV endpoint GET /v1/kv/<key> does: a JSON
// array of one entry, the value in base64, the index in X-Consul-Index.
type configServer struct {
	consulKey string
	mu        sync.Mutex
	status    int
	body      string
	index     uint64
	requests  int
}

func (c *configServer) set(status int, body string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status, c.body = status, body
	c.index++
}

func (c *configServer) served() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

func (c *configServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	status, body, index := c.status, c.body, c.index
	c.requests++
	c.mu.Unlock()
	if c.consulKey == "" {
		w.WriteHeader(status)
		fmt.Fprint(w, body)
		return
	}
	w.Header().Set("X-Consul-Index", fmt.Sprint(index))
	if r.URL.Path != "/v1/kv/"+c.consulKey || status == http.StatusNotFound {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode([]map[string]any{{
		"Key": c.consulKey, "CreateIndex": 1, "ModifyIndex": index, "Flags": 0,
		"Value": base64.StdEncoding.EncodeToString([]byte(body)),
	}})
}

// serverNames returns the names GET /servers lists, sorted.
func (a apiClient) serverNames() ([]string, error) {
	var m map[string]json.RawMessage
	if err := a.getJSON("/servers", &m); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names, nil
}

// waitServers waits until GET /servers lists exactly names.
func (a apiClient) waitServers(t testing.TB, n *node, names ...string) {
	t.Helper()
	sort.Strings(names)
	eventually(t, 15*time.Second, fmt.Sprintf("servers %v", names), func() error {
		n.requireRunning()
		got, err := a.serverNames()
		if err != nil {
			return err
		}
		if !slices.Equal(got, names) {
			return fmt.Errorf("servers %v", got)
		}
		return nil
	})
}

// waitOutput waits until the process has printed every one of parts.
func (n *node) waitOutput(parts ...string) {
	n.t.Helper()
	eventually(n.t, 15*time.Second, fmt.Sprintf("output containing %q", parts), func() error {
		out := n.output()
		for _, p := range parts {
			if !strings.Contains(out, p) {
				return fmt.Errorf("no %q in the output", p)
			}
		}
		return nil
	})
}
