package e2e

import (
	"testing"
	"time"
)

// Access rules, first match wins: a denied client's connection is closed without
// a byte and never reaches a backend; others are served.
func TestAccessRules(t *testing.T) {
	t.Parallel()
	b := startBackend(t, "b1")
	denyAddr, allowAddr := freeAddr(t), freeAddr(t)
	cfg := config("",
		server{name: "denyone", bind: denyAddr, lines: lines(b), access: []string{
			`default = "allow"`,
			`rules = ["deny 127.0.0.1", "deny 127.0.2.0/24"]`,
		}},
		server{name: "allowlist", bind: allowAddr, lines: lines(b), access: []string{
			`default = "deny"`,
			`rules = ["allow 127.0.0.3", "deny 127.0.1.7", "allow 127.0.1.0/24", "allow ::1"]`,
		}},
	)
	n := startNode(t, cfg)
	n.waitListening(denyAddr)
	eventually(t, 15*time.Second, "allowed client served", func() error {
		n.requireRunning()
		_, err := whoFrom("127.0.0.3", allowAddr)
		return err
	})

	cases := []struct {
		server, addr, src string
		allowed           bool
	}{
		{"denyone", denyAddr, "127.0.0.1", false},
		{"denyone", denyAddr, "127.0.2.9", false},
		{"denyone", denyAddr, "127.0.0.2", true},
		{"denyone", denyAddr, "127.0.1.7", true},
		{"allowlist", allowAddr, "127.0.0.3", true},
		{"allowlist", allowAddr, "127.0.1.5", true},
		{"allowlist", allowAddr, "127.0.1.7", false}, // deny listed before the /24 allow
		{"allowlist", allowAddr, "127.0.0.1", false}, // default deny
		{"allowlist", allowAddr, "127.0.0.4", false},
	}
	for _, c := range cases {
		t.Run(c.server+"/"+c.src, func(t *testing.T) {
			before := b.accepted.Load()
			if c.allowed {
				name, err := whoFrom(c.src, c.addr)
				if err != nil || name != "b1" {
					t.Fatalf("allowed client %s: got %q, %v", c.src, name, err)
				}
				return
			}
			if err := closedWithoutData(c.src, c.addr); err != nil {
				t.Fatalf("denied client %s: %v", c.src, err)
			}
			if got := b.accepted.Load(); got != before {
				t.Fatalf("denied client %s reached the backend (%d new connections)", c.src, got-before)
			}
		})
	}
	n.requireRunning()
}
