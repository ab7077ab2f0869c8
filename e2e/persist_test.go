package e2e

import (
	"encoding/json"
	"syscall"
	"testing"
	"time"
)

// A single node keeps the servers created through the API across restarts (0.8
// lost them), while the config file stays the source of its own servers: one
// removed from the file while the node was down is gone after the restart.
func TestRestartKeepsAPIServers(t *testing.T) {
	t.Parallel()
	bs := startBackends(t, 2)
	apiAddr := freeAddr(t)
	fileAddr := freeAddr(t)
	withFile := config(apiAddr, server{name: "fromfile", bind: fileAddr, lines: lines(bs[0])})

	n := startNode(t, withFile)
	api := newAPI(apiAddr)
	api.wait(t, n)
	n.waitServing(fileAddr)
	posted := freeAddr(t)
	if code, body := api.mustDo(t, "POST", "/servers/posted", postBody(posted, bs[1].line())); code != 200 {
		t.Fatalf("POST /servers/posted: %d %s", code, body)
	}
	n.waitServing(posted)
	n.signal(syscall.SIGTERM)
	if code := n.waitExit(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}

	// Same directory (so the same data directory), the file server removed.
	n2 := startNodeWith(t, config(apiAddr), nodeOptions{dir: n.dir})
	api.wait(t, n2)
	n2.waitServing(posted)
	if got := countWho(t, posted, 5); got["b2"] != 5 {
		t.Fatalf("traffic through the restored server: %v", got)
	}
	code, body := api.mustDo(t, "GET", "/servers", "")
	var list map[string]json.RawMessage
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil {
		t.Fatalf("GET /servers: %d %s", code, body)
	}
	if _, ok := list["posted"]; !ok {
		t.Fatalf("the API-created server was lost across the restart: %s", body)
	}
	if _, ok := list["fromfile"]; ok {
		t.Fatalf("a server removed from the file survived the restart: %s", body)
	}
}
