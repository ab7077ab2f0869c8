package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cliServerTOML is server web's definition as one bare [servers.web] table
// (prefix "") or inside a whole config (prefix "servers.web.").
func cliServerTOML(prefix string, port int, balance string, bs ...*backend) string {
	var list []string
	for _, b := range bs {
		list = append(list, b.addr)
	}
	head := ""
	if prefix != "" {
		head = "[" + strings.TrimSuffix(prefix, ".") + "]\n"
	}
	return fmt.Sprintf(`%sbind = ":%d"
balance = %q

[%sdiscovery]
kind = "static"
static_list = %s

[%shealthcheck]
kind = "ping"
interval = "300ms"
timeout = "250ms"
fails = 1
passes = 1
`, head, port, balance, prefix, tomlList(list...), prefix)
}

// The client drives a three-node cluster as the README shows: a server added
// from a TOML file on n1 is listed on n3, updated from a whole config on n2
// (conditionally on its revision), shown with every node's verdict, drained
// with --wait while a connection through n2 stays open (the wait ends only
// after that connection closes), enabled, and deleted; the cluster and health
// commands show the members.
func TestClientDrivesCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	bs := startBackends(t, 2)
	c := newTestCluster(t, "")
	for i := range 3 {
		c.start(i)
	}
	c.waitFormed(20*time.Second, 0, 1, 2)
	formed := time.Since(start)
	api := func(i int) []string { return []string{"--api", cliAPI(c, i)} }
	cmd := func(i int, args ...string) []string { return append(args, api(i)...) }

	dir := t.TempDir()
	port := freePort(t)
	bare := filepath.Join(dir, "web.toml")
	writeFile(t, bare, cliServerTOML("", port, "leastconn", bs...))
	cliMust(t, cmd(0, "servers", "add", "web", "-f", bare), `server "web" created (revision `)
	c.waitServingEverywhere(port, 10*time.Second, 0, 1, 2)
	bind := ":" + strconv.Itoa(port)
	cliEventually(t, 10*time.Second, "n3 lists web with both backends live", cmd(2, "servers"),
		cliRow("web", bind, "tcp", "leastconn", "2/2", "0", "0", "api"))

	// Invalid definitions come back with every problem and its path.
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `{"bind": ":1", "balance": "fastest", "healthcheck": {"kind": "ping", "interval": "soon"}}`)
	if r := cliRun(t, nil, cmd(0, "servers", "add", "bad", "-f", bad)...); r.code != 1 ||
		!strings.Contains(r.stderr, "servers.bad.balance") || !strings.Contains(r.stderr, "servers.bad.healthcheck.interval") {
		t.Fatalf("invalid server: want exit 1 naming both problems: %v", r)
	}

	// Update from a whole config file, conditioned on the revision n2 shows.
	var shown struct {
		Revision uint64 `json:"revision"`
	}
	r := cliMust(t, cmd(1, "servers", "show", "web", "-o", "json"))
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown.Revision == 0 {
		t.Fatalf("servers show -o json: revision %d, %v: %s", shown.Revision, err, r.stdout)
	}
	full := filepath.Join(dir, "gobetween.toml")
	writeFile(t, full, "[defaults]\nmax_connections = 100\n\n"+cliServerTOML("servers.web.", port, "roundrobin", bs...))
	cliMust(t, cmd(1, "servers", "update", "web", "-f", full, "--if-revision", strconv.FormatUint(shown.Revision, 10)), `server "web" updated (revision `)
	if r := cliRun(t, nil, cmd(1, "servers", "update", "web", "-f", full, "--if-revision", strconv.FormatUint(shown.Revision, 10))...); r.code != 1 ||
		!strings.Contains(r.stderr, "409 Conflict") {
		t.Fatalf("update at a stale revision: want exit 1 with 409: %v", r)
	}
	for _, b := range bs {
		cliEventually(t, 10*time.Second, "n3 shows the update and every node's verdict on "+b.name, cmd(2, "servers", "show", "web"), func(out string) error {
			if err := cliRow("Balance:", "roundrobin")(out); err != nil {
				return err
			}
			return cliRow(b.addr, "enabled", "yes", "n1:up", "n2:up", "n3:up")(out)
		})
	}

	// A connection held open through n2; every node counts it.
	held := newHeld(t)
	name, err := held.open("", serverAddr(c, 1, port))
	if err != nil {
		t.Fatalf("connection through n2: %v", err)
	}
	var drained, other *backend
	for _, b := range bs {
		if b.name == name {
			drained = b
		} else {
			other = b
		}
	}
	if drained == nil {
		t.Fatalf("the held connection reached %q, not one of the backends", name)
	}
	cliEventually(t, 5*time.Second, "n1 shows n2's connection to "+drained.name+" in CLUSTER ACTIVE", cmd(0, "servers", "show", "web"),
		cliRow(drained.addr, "enabled", "yes", "n1:up", "n2:up", "n3:up", "0", "1"))

	wait := cliStart(t, cmd(0, "backends", "drain", "web", drained.addr, "--wait", "--timeout", "30s")...)
	waitStarted := time.Now()
	// The drain is in the log: n3 sends nothing new to the drained backend.
	eventually(t, 5*time.Second, "n3 stops picking "+drained.name, func() error {
		for range 6 {
			got, err := who(serverAddr(c, 2, port))
			if err != nil {
				return err
			}
			if got != other.name {
				return fmt.Errorf("a new connection through n3 reached %s", got)
			}
		}
		return nil
	})
	// However long the reports take, the wait must not end while the
	// connection is open; three report intervals is ample to see it would.
	select {
	case <-wait.done:
		t.Fatalf("drain --wait returned while a connection through n2 was open: %v", wait.wait(t, 0))
	case <-time.After(3*time.Second - time.Since(waitStarted)):
	}
	if err := held.echoAll("still relayed while draining"); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	held.closeAll()
	res := wait.wait(t, 15*time.Second)
	afterClose := wait.exited.Sub(closed)
	if res.code != 0 || !strings.Contains(res.stdout, "drained: no connections left to "+drained.addr) ||
		!strings.Contains(res.stderr, "1 connection(s) left in the cluster") {
		t.Fatalf("drain --wait: %v", res)
	}
	t.Logf("drain --wait on n1 returned %v after the connection through n2 closed (waited %v in all)", afterClose.Round(time.Millisecond), wait.exited.Sub(waitStarted).Round(time.Millisecond))
	if afterClose > 6*time.Second {
		t.Errorf("drain --wait took %v after the last connection closed; want a few report intervals", afterClose)
	}
	cliEventually(t, 5*time.Second, "n2 shows the drain", cmd(1, "servers", "show", "web"), cliRow(drained.addr, "draining", "yes"))
	cliEventually(t, 5*time.Second, "n1 lists one backend in rotation", cmd(0, "servers"), cliRow("web", bind, "tcp", "roundrobin", "1/2"))

	cliMust(t, cmd(2, "backends", "enable", "web", drained.addr), "backend "+drained.addr+` of server "web": enable (revision `)
	cliEventually(t, 5*time.Second, "n1 shows the backend enabled", cmd(0, "servers", "show", "web"), cliRow(drained.addr, "enabled", "yes"))

	// The cluster as n2 sees it.
	r = cliMust(t, cmd(1, "cluster"), "Node:", "Leader:", "Revision:", "ID", "LAST REPORT")
	for _, id := range nodeIDs {
		row := []string{id}
		if id == "n2" {
			row = append(row, "(this", "node)")
		}
		if err := cliRow(row...)(r.stdout); err != nil {
			t.Errorf("cluster show: %v\n%s", err, r.stdout)
		}
	}
	if strings.Count(r.stdout, " alive ") != 3 {
		t.Errorf("cluster show: want 3 members alive:\n%s", r.stdout)
	}
	var cv clusterStatus
	r = cliMust(t, cmd(1, "cluster", "-o", "json"))
	if err := json.Unmarshal([]byte(r.stdout), &cv); err != nil || cv.NodeID != "n2" || len(cv.Members) != 3 || cv.LeaderID == "" {
		t.Errorf("cluster -o json: %+v, %v:\n%s", cv, err, r.stdout)
	}
	cliMust(t, cmd(0, "health"), `"status": "ok"`)

	cliMust(t, cmd(2, "servers", "delete", "web"), `server "web" deleted`)
	cliEventually(t, 5*time.Second, "n1 lists no servers", cmd(0, "servers"), func(out string) error {
		if !strings.HasPrefix(out, "no servers") {
			return fmt.Errorf("web still listed")
		}
		return nil
	})
	t.Logf("cluster formed in %v; whole test %v", formed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// Against an API on HTTPS with basic auth, the client verifies the node's
// certificate with --ca (or skips it with --insecure) and sends credentials
// from flags, the environment or the URL; /health needs none, and a container
// whose GOBETWEEN variable carries the run arguments can still run it.
func TestClientTLSAndBasicAuth(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	ca := newTestCA(t)
	certPath, keyPath, _ := ca.issue("api", "127.0.0.1", "127.0.0.1")
	apiAddr := freeAddr(t)
	cfg := fmt.Sprintf(`[api]
enabled = true
bind = %q

  [api.basic_auth]
  login = "admin"
  password = "s3cret"

  [api.tls]
  cert_path = %q
  key_path = %q
`, apiAddr, certPath, keyPath)
	startNode(t, cfg)
	url := "https://" + apiAddr
	tlsArgs := []string{"--api", url, "--ca", ca.path}
	with := func(extra ...string) []string { return append(append([]string{}, extra...), tlsArgs...) }
	eventually(t, 15*time.Second, "health over TLS", func() error {
		if r := cliRun(t, nil, with("health")...); r.code != 0 || !strings.Contains(r.stdout, `"status": "ok"`) {
			return fmt.Errorf("%v", r)
		}
		return nil
	})

	dir := t.TempDir()
	def := filepath.Join(dir, "web.json")
	port := freePort(t)
	writeFile(t, def, fmt.Sprintf(`{"bind": "127.0.0.1:%d", "discovery": {"kind": "static", "static_list": [%q]}}`, port, b.addr))
	creds := []string{"GOBETWEEN_USER=admin", "GOBETWEEN_PASSWORD=s3cret"}
	tests := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no credentials", nil, with("servers"), 1, "", "401 Unauthorized"},
		{"wrong password", nil, with("servers", "--user", "admin", "--password", "guess"), 1, "", "401 Unauthorized"},
		{"credentials from the environment", creds, with("servers", "add", "web", "-f", def), 0, `server "web" created`, ""},
		{"credentials as flags", nil, with("--user", "admin", "--password", "s3cret", "servers"), 0, "web", ""},
		{"credentials in the URL", nil, []string{"servers", "show", "web", "--api", "https://admin:s3cret@" + apiAddr, "--ca", ca.path}, 0, "BACKEND", ""},
		{"the API and credentials from the environment", append(creds, "GOBETWEEN_API="+url), []string{"servers", "--insecure"}, 0, "web", ""},
		{"an unknown certificate authority", creds, []string{"servers", "--api", url}, 1, "", "--ca FILE names the CA that signed it"},
		{"plain HTTP to a TLS listener", creds, []string{"servers", "--api", "http://" + apiAddr}, 1, "", "give --api https://"},
		{"health needs no credentials", nil, with("health"), 0, `"status": "ok"`, ""},
		{"health ignores GOBETWEEN", []string{`GOBETWEEN=["-c","/etc/gobetween/gobetween.toml"]`}, with("health"), 0, `"status": "ok"`, ""},
	}
	for _, tt := range tests {
		r := cliRun(t, tt.env, tt.args...)
		if r.code != tt.code || !strings.Contains(r.stdout, tt.stdout) || !strings.Contains(r.stderr, tt.stderr) {
			t.Errorf("%s: want exit %d, stdout with %q, stderr with %q; got %v", tt.name, tt.code, tt.stdout, tt.stderr, r)
		}
	}
	if _, err := who("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		t.Errorf("server added over TLS does not serve: %v", err)
	}
}
