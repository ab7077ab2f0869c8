package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHclogAdapter(t *testing.T) {
	var buf bytes.Buffer
	h := newHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	h.Info("chatty election")
	h.Debug("debug noise")
	if buf.Len() != 0 {
		t.Fatalf("raft info/debug reached an info-level log: %q", buf.String())
	}
	h.Named("snapshot").Warn("slow", "servers", hclog.Fmt("%d of %d", 2, 3))
	h.Error("broken", "peer", "n2")
	out := buf.String()
	for _, want := range []string{`level=WARN msg=slow component=snapshot servers="2 of 3"`, `level=ERROR msg=broken peer=n2`} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in\n%s", want, out)
		}
	}
	if h.IsInfo() || !h.IsWarn() {
		t.Fatal("level checks do not follow the handler")
	}
	h.StandardLogger(nil).Print("via standard logger")
	if strings.Contains(buf.String(), "via standard logger") {
		t.Fatal("standard logger lines are debug")
	}
	newHclog(nil).Error("discarded without a logger")
}
