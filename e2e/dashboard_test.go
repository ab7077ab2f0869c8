package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// The dashboard in a real browser: three nodes with basic auth on the API, one
// TCP server with two backends. Draining a backend on node 1's page shows on
// node 3's page without a reload, a connection held through node 3 shows up in
// both pages' counts, and an action the cluster refuses (no leader) is
// reported on the page. A screenshot of node 3's page goes to bin/artifacts.
func TestDashboard(t *testing.T) {
	t.Parallel()
	start := time.Now()
	bs := startBackends(t, 2)
	c := newTestCluster(t, dashAuthSection)
	for i := range 3 {
		c.start(i)
	}
	apis := map[string]apiClient{"n1": dashAPI(c, 0), "n2": dashAPI(c, 1), "n3": dashAPI(c, 2)}
	nodes := map[string]*node{"n1": c.nodes[0], "n2": c.nodes[1], "n3": c.nodes[2]}
	leaderOf(t, 20*time.Second, 3, apis, nodes)

	port := freePort(t)
	body := viewServer(":"+strconv.Itoa(port), "roundrobin", viewPing("300ms"), bs[0].addr, bs[1].addr)
	if code, b := dashAPI(c, 1).mustDo(t, "POST", "/servers/web", body); code != 200 {
		t.Fatalf("POST /servers/web: %d %s", code, b)
	}
	all := []apiClient{apis["n1"], apis["n2"], apis["n3"]}
	waitViews(t, all, "web", 10*time.Second, "both backends healthy on every node", clusterHealthy(nodeIDs[:], bs...))
	t.Logf("cluster formed and serving: %v", time.Since(start))

	browser := dashBrowser(t)
	n1 := dashOpen(t, browser, "n1's page", dashURL(c, 0), false)
	n3 := dashOpen(t, browser, "n3's page", dashURL(c, 2), true)
	for _, tab := range []*dashTab{n1, n3} {
		for _, b := range bs {
			tab.waitRow(10*time.Second, b.addr+" listed, enabled and healthy on every node", "web", b.addr, func(r dashRow) error {
				if r.State != "enabled" || r.Badge != "enabled" || r.Verdict != "healthy" {
					return fmt.Errorf("row %+v", r)
				}
				if r.Nodes != "n1=true n2=true n3=true" {
					return fmt.Errorf("per-node verdicts %q, want n1, n2 and n3 healthy", r.Nodes)
				}
				return nil
			})
		}
		tab.mark()
	}
	t.Logf("both pages show the backends: %v", time.Since(start))
	eventually(t, 5*time.Second, "n3's page names its node and three alive members", func() error {
		id, err := n3.text("#node-id")
		if err != nil {
			return err
		}
		alive, err := dashEval[int](n3, `document.querySelectorAll('#members tbody tr .gossip[data-state="alive"]').length`)
		if err != nil {
			return err
		}
		if id != "n3" || alive != 3 {
			return fmt.Errorf("node %q, %d alive members", id, alive)
		}
		return nil
	})

	// Drain b1 from node 1's page; node 3's page follows by itself.
	drainBtn := `section[data-server="web"] tr[data-backend="` + bs[0].addr + `"] button[data-action="drain"]`
	clicked := time.Now()
	n1.click(drainBtn)
	eventually(t, 5*time.Second, "n1's page confirms the drain", func() error {
		msg, err := n1.text(`section[data-server="web"] .notice-text`)
		if err != nil {
			return err
		}
		if !strings.Contains(msg, "drain "+bs[0].addr+": committed at revision") {
			return fmt.Errorf("notice %q", msg)
		}
		return nil
	})
	n3.waitRow(5*time.Second, bs[0].addr+" draining", "web", bs[0].addr, func(r dashRow) error {
		if r.State != "drain" || r.Badge != "draining" {
			return fmt.Errorf("row %+v", r)
		}
		return nil
	})
	t.Logf("drain clicked on n1 -> shown on n3's page: %v", time.Since(clicked))
	n3.markKept()
	if disabled, err := dashEval[bool](n3, `document.querySelector('`+drainBtn+`').disabled`); err != nil || !disabled {
		t.Errorf("n3's drain button for the draining backend: disabled=%v (%v), want disabled", disabled, err)
	}

	// A connection held through node 3 goes to b2 (b1 drains) and shows in
	// node 3's local count and, through gossip, in node 1's cluster count.
	held := newHeld(t)
	name, err := held.open("", serverAddr(c, 2, port))
	if err != nil {
		t.Fatalf("hold a connection through n3: %v", err)
	}
	if name != bs[1].name {
		t.Fatalf("a new connection went to %s, want %s: b1 drains", name, bs[1].name)
	}
	opened := time.Now()
	n3.waitRow(5*time.Second, "one active connection here", "web", bs[1].addr, func(r dashRow) error {
		if r.LocalActive != "1" || r.ClusterActive != "1" {
			return fmt.Errorf("active here %q, cluster %q, want 1 and 1", r.LocalActive, r.ClusterActive)
		}
		return nil
	})
	n1.waitRow(5*time.Second, "one active connection in the cluster", "web", bs[1].addr, func(r dashRow) error {
		if r.LocalActive != "0" || r.ClusterActive != "1" {
			return fmt.Errorf("active here %q, cluster %q, want 0 and 1", r.LocalActive, r.ClusterActive)
		}
		return nil
	})
	t.Logf("connection opened through n3 -> counted on n1's page: %v", time.Since(opened))
	n1.markKept()
	n3.markKept()
	eventually(t, 5*time.Second, "n3's header counts the connection", func() error {
		total, err := n3.text("#total-active")
		if err != nil || total != "1" {
			return fmt.Errorf("total active %q (%v), want 1", total, err)
		}
		return nil
	})

	// Some traffic, so that the rates and the screenshot show it.
	load := startLiveLoad(serverAddr(c, 0, port), serverAddr(c, 2, port))
	eventually(t, 5*time.Second, "n3's page shows bytes per second", func() error {
		rx, err := n3.text("#total-rx")
		if err != nil || rx == "" || rx == "0 B" {
			return fmt.Errorf("total rx/s %q (%v)", rx, err)
		}
		return nil
	})
	load.Stop()
	dashScreenshot(t, n3, "dashboard.png", "light")
	dashScreenshot(t, n3, "dashboard-dark.png", "dark")

	// Without a leader the page reports the refusal next to the backend.
	for _, i := range []int{1, 2} {
		c.nodes[i].stop()
	}
	eventually(t, 15*time.Second, "n1's page reports that enabling b1 failed for want of a leader", func() error {
		btn := `section[data-server="web"] tr[data-backend="` + bs[0].addr + `"] button[data-action="enable"]`
		enabled, err := dashEval[bool](n1, `!document.querySelector('`+btn+`').disabled`)
		if err != nil || !enabled {
			return fmt.Errorf("enable button not clickable (%v)", err)
		}
		n1.click(btn)
		var msg string
		for range 50 { // the POST answers within the store's wait for a leader
			msg, err = n1.text(`section[data-server="web"] .notice-text`)
			if err == nil && strings.HasPrefix(msg, "enable ") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(msg, "enable "+bs[0].addr+" failed: 503") {
			return fmt.Errorf("notice %q", msg)
		}
		return nil
	})
	// The nodes that went away lose their dots: no verdict from them counts.
	n1.waitRow(10*time.Second, "no verdicts from the stopped nodes", "web", bs[1].addr, func(r dashRow) error {
		if r.Nodes != "n1=true n2=none n3=none" {
			return fmt.Errorf("per-node verdicts %q, want n1 healthy, none from n2 and n3", r.Nodes)
		}
		return nil
	})
	// The members that went away are flagged on the summary line.
	eventually(t, 15*time.Second, "n1's page flags the cluster as degraded", func() error {
		degraded, err := dashEval[string](n1, `document.getElementById('cluster-summary').dataset.degraded`)
		if err != nil || degraded != "true" {
			return fmt.Errorf("cluster-summary data-degraded = %q (%v)", degraded, err)
		}
		return nil
	})
	n1.markKept()
	if ex := append(n1.exceptions(), n3.exceptions()...); len(ex) > 0 {
		t.Errorf("uncaught exceptions in the pages:\n%s", strings.Join(ex, "\n"))
	}
	t.Logf("total: %v", time.Since(start))
}

// dashScreenshot saves a full-page screenshot of tab, in the given color
// scheme, as <repo>/bin/artifacts/<file>.
func dashScreenshot(t *testing.T, tab *dashTab, file, scheme string) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "bin", "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	media := emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}
	if _, err := chromedp.Call(tab.ctx, emulation.SetEmulatedMedia, media); err != nil {
		t.Fatalf("%s: emulate %s color scheme: %v", tab.name, scheme, err)
	}
	png, err := chromedp.Run(tab.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("%s: screenshot: %v", tab.name, err)
	}
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("save screenshot: %v", err)
	}
	t.Logf("screenshot of %s (%s): %s", tab.name, scheme, path)
}

// A node on its own (a cluster of one) with no server: the page says so
// instead of showing an empty table.
func TestDashboardWithoutServers(t *testing.T) {
	t.Parallel()
	apiAddr := freeAddr(t)
	n := startNode(t, config(apiAddr))
	newAPI(apiAddr).wait(t, n)
	tab := dashOpen(t, dashBrowser(t), "page of a node without servers", "http://"+apiAddr+"/ui", false)
	eventually(t, 10*time.Second, "the page shows one member and no server", func() error {
		state, err := dashEval[map[string]any](tab, `({
			link: document.getElementById('link').dataset.state,
			members: document.querySelectorAll('#members tbody tr').length,
			noServers: !document.getElementById('no-servers').hidden,
			cards: document.querySelectorAll('section[data-server]').length,
			path: location.pathname,
			health: document.querySelector('#members tbody tr') && document.querySelector('#members tbody tr').dataset.health,
			single: document.getElementById('cluster-summary').textContent.startsWith('single node'),
		})`)
		if err != nil {
			return err
		}
		// A node without [cluster] has no gossip: shown as a single node in
		// good health, not as a dead member.
		want := map[string]any{"link": "live", "members": float64(1), "noServers": true, "cards": float64(0), "path": "/ui/", "health": "ok", "single": true}
		for k, v := range want {
			if state[k] != v {
				return fmt.Errorf("%s = %v, want %v (page %v)", k, state[k], v, state)
			}
		}
		return nil
	})
	if ex := tab.exceptions(); len(ex) > 0 {
		t.Errorf("uncaught exceptions in the page:\n%s", strings.Join(ex, "\n"))
	}
}
