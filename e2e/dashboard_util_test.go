package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// dashChromium is Debian's chromium, which `make test` installs.
const dashChromium = "/usr/bin/chromium"

// The account the dashboard test's API requires.
const (
	dashLogin    = "ops"
	dashPassword = "dash7secret"
)

// dashAuthSection turns basic auth on for a test cluster's API: appended to
// the node config after [api], it adds the subtable.
const dashAuthSection = "[api.basic_auth]\nlogin = \"" + dashLogin + "\"\npassword = \"" + dashPassword + "\"\n\n"

// dashAPI is node i's API client with the test's credentials.
func dashAPI(c *testCluster, i int) apiClient {
	a := c.api(i)
	a.user, a.pass = dashLogin, dashPassword
	return a
}

// dashURL is node i's dashboard with the credentials in the URL, as a user
// would type them at the browser's prompt.
func dashURL(c *testCluster, i int) string {
	return "http://" + dashLogin + ":" + dashPassword + "@" + c.host(i) + ":" + strconv.Itoa(c.apiPort) + "/ui/"
}

// dashBrowser starts a headless chromium with a fresh profile, closed in
// t.Cleanup, and returns its first tab.
func dashBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(dashChromium); err != nil {
		t.Fatalf("chromium is needed to test the dashboard in a browser: %v (`make test` installs it: apt-get install -y chromium)", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(dashChromium),
		chromedp.UserDataDir(t.TempDir()),
		// Tests run as root, where chromium's sandbox cannot start.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// This machine's network is closed: chromium must not try to reach out.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.WindowSize(1360, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		// Close the browser before its profile directory is removed.
		_ = chromedp.Cancel(ctx)
		cancel()
	})
	// The first Do starts the browser, bound to ctx, which has no deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// dashTab is a page open at url in a new tab of the browser (or the browser's
// first tab when parent has none yet), with its console logged if the test
// fails.
type dashTab struct {
	t    *testing.T
	name string
	ctx  context.Context
	mu   sync.Mutex
	logs []string
}

func dashOpen(t *testing.T, parent context.Context, name, url string, newTab bool) *dashTab {
	t.Helper()
	ctx := parent
	if newTab {
		var cancel context.CancelFunc
		ctx, cancel = chromedp.NewContext(parent)
		t.Cleanup(cancel)
	}
	tab := &dashTab{t: t, name: name, ctx: ctx}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			tab.mu.Lock()
			tab.logs = append(tab.logs, fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m.Text))
			tab.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() {
			tab.mu.Lock()
			defer tab.mu.Unlock()
			t.Logf("%s console:\n%s", name, strings.Join(tab.logs, "\n"))
		}
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1360, 900), chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: open %s: %v", name, url, err)
	}
	return tab
}

// exceptions are the page's uncaught exceptions so far.
func (tab *dashTab) exceptions() []string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	var out []string
	for _, l := range tab.logs {
		if strings.HasPrefix(l, string(chromedp.ConsoleException)) {
			out = append(out, l)
		}
	}
	return out
}

// eval evaluates expr in the page within 5 s and decodes its value into T.
func dashEval[T any](tab *dashTab, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(tab.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// dashRow is one backend row of the page, as the page shows it.
type dashRow struct {
	State         string `json:"state"` // the row's data-state: enabled, drain, disable
	Badge         string `json:"badge"` // the admin state's text
	Verdict       string `json:"verdict"`
	LocalActive   string `json:"local"`
	ClusterActive string `json:"cluster"`
	Nodes         string `json:"nodes"`
}

// row reads backend addr of server from the page; nil when the page has no
// such row (yet).
func (tab *dashTab) row(server, addr string) (*dashRow, error) {
	sel, _ := json.Marshal(`section[data-server="` + server + `"] tr[data-backend="` + addr + `"]`)
	return dashEval[*dashRow](tab, `(() => {
		const r = document.querySelector(`+string(sel)+`);
		if (!r) return null;
		const text = (q) => r.querySelector(q).textContent;
		return {state: r.dataset.state, badge: text('[data-col=state]'), verdict: text('[data-col=verdict]'),
			local: text('[data-col=local-active]'), cluster: text('[data-col=cluster-active]'),
			nodes: Array.from(r.querySelectorAll('.node')).map((n) => n.textContent + '=' + n.dataset.ok).join(' ')};
	})()`)
}

// waitRow polls the page (never reloading it) until cond accepts the row.
func (tab *dashTab) waitRow(timeout time.Duration, what, server, addr string, cond func(dashRow) error) {
	tab.t.Helper()
	eventually(tab.t, timeout, tab.name+": "+what, func() error {
		r, err := tab.row(server, addr)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("no row for %s in server %s", addr, server)
		}
		return cond(*r)
	})
}

// mark stores a value in the page's window; markKept fails if a reload lost it.
func (tab *dashTab) mark() {
	tab.t.Helper()
	if _, err := dashEval[bool](tab, `window.dashTestMark = true`); err != nil {
		tab.t.Fatalf("%s: mark the page: %v", tab.name, err)
	}
}

func (tab *dashTab) markKept() {
	tab.t.Helper()
	kept, err := dashEval[bool](tab, `window.dashTestMark === true`)
	if err != nil || !kept {
		tab.t.Fatalf("%s: the page was reloaded (mark kept: %v, %v)", tab.name, kept, err)
	}
}

// click clicks the first element matching the CSS selector.
func (tab *dashTab) click(sel string) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 5*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		tab.t.Fatalf("%s: click %s: %v", tab.name, sel, err)
	}
}

// text is the text of the first element matching the CSS selector, "" when
// there is none or it is hidden.
func (tab *dashTab) text(sel string) (string, error) {
	q, _ := json.Marshal(sel)
	return dashEval[string](tab, `(() => { const e = document.querySelector(`+string(q)+`);
		return e && !e.closest('[hidden]') ? e.textContent : ''; })()`)
}
