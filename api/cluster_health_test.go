package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

// reportingCluster is a fakeCluster whose Health comes with its checks.
type reportingCluster struct {
	*fakeCluster
	checks []HealthCheck
}

func (c *reportingCluster) HealthChecks() []HealthCheck { return c.checks }

func (c *reportingCluster) Health() error {
	for _, ch := range c.checks {
		if !ch.OK {
			return errors.New(ch.Name)
		}
	}
	return nil
}

func TestHealthNamesEachCheck(t *testing.T) {
	pass := []HealthCheck{
		{Name: "applied", OK: true, Detail: "revision 7 applied"},
		{Name: "stopping", OK: true, Detail: "running"},
	}
	tests := []struct {
		name    string
		checks  []HealthCheck
		status  int
		failing []string // "check: detail" in the order given
	}{
		{"all pass", pass, http.StatusOK, nil},
		{"one fails", append(pass[:1:1], HealthCheck{Name: "listening", Detail: `server "web" did not start`}),
			http.StatusServiceUnavailable, []string{`listening: server "web" did not start`}},
		{"two fail", []HealthCheck{
			{Name: "stopping", Detail: "shutting down"},
			{Name: "applied", OK: true, Detail: "revision 1 applied"},
			{Name: "membership", Detail: "left"},
		}, http.StatusServiceUnavailable, []string{"stopping: shutting down", "membership: left"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &reportingCluster{fakeCluster: &fakeCluster{}, checks: tt.checks}
			f := newFixture(t, withAuth, func(o *Options) { o.Cluster = c })
			rec := f.do(t, request{path: "/health"}) // no credentials: /health is open
			if rec.Code != tt.status {
				t.Fatalf("GET /health = %d %s, want %d", rec.Code, rec.Body, tt.status)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
				t.Fatalf("Cache-Control %q", cc)
			}
			var body struct {
				Status  string `json:"status"`
				Error   string `json:"error"`
				Details []struct {
					Path string `json:"path"`
					Msg  string `json:"msg"`
				} `json:"details"`
				Checks map[string]struct {
					OK     bool   `json:"ok"`
					Detail string `json:"detail"`
				} `json:"checks"`
			}
			dec := json.NewDecoder(rec.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&body); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(body.Checks) != len(tt.checks) {
				t.Fatalf("checks %+v, want %d", body.Checks, len(tt.checks))
			}
			for _, want := range tt.checks {
				got, ok := body.Checks[want.Name]
				if !ok || got.OK != want.OK || got.Detail != want.Detail {
					t.Errorf("check %s = %+v (listed %v), want %+v", want.Name, got, ok, want)
				}
			}
			if tt.failing == nil {
				if body.Status != "ok" || body.Error != "" || len(body.Details) != 0 {
					t.Fatalf("passing body %+v", body)
				}
				return
			}
			if body.Status != "failing" || body.Error != "unhealthy: "+strings.Join(tt.failing, "; ") {
				t.Fatalf("status %q error %q, want failing with %q", body.Status, body.Error, tt.failing)
			}
			if len(body.Details) != len(tt.failing) {
				t.Fatalf("details %+v, want %q", body.Details, tt.failing)
			}
			for i, d := range body.Details {
				if d.Path+": "+d.Msg != tt.failing[i] {
					t.Errorf("details[%d] = %+v, want %q", i, d, tt.failing[i])
				}
			}
		})
	}
}
