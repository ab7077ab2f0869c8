package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func threeNodes() ClusterStatus {
	return ClusterStatus{NodeID: "n2", LeaderID: "n1", Revision: 42, Members: []ClusterMember{
		{ID: "n1", Address: "127.0.0.1:7947", Raft: "leader", Gossip: "alive"},
		{ID: "n2", Address: "127.0.0.2:7947", Raft: "voter", Gossip: "alive"},
		{ID: "n3", Address: "127.0.0.3:7947", Raft: "nonvoter", Gossip: "suspect"},
	}}
}

func TestClusterStatus(t *testing.T) {
	f := newFixture(t, withCluster(&fakeCluster{status: threeNodes()}))
	rec := f.do(t, request{path: "/cluster"})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /cluster = %d %s", rec.Code, rec.Body)
	}
	var got map[string]any
	decodeJSON(t, rec, &got)
	gotJSON, _ := json.Marshal(got)
	want := `{"leader_id":"n1","members":[` +
		`{"address":"127.0.0.1:7947","gossip":"alive","id":"n1","raft":"leader"},` +
		`{"address":"127.0.0.2:7947","gossip":"alive","id":"n2","raft":"voter"},` +
		`{"address":"127.0.0.3:7947","gossip":"suspect","id":"n3","raft":"nonvoter"}],` +
		`"node_id":"n2","revision":42}`
	if string(gotJSON) != want {
		t.Fatalf("GET /cluster =\n%s\nwant\n%s", gotJSON, want)
	}

	t.Run("no members is an empty list", func(t *testing.T) {
		f := newFixture(t, withCluster(&fakeCluster{status: ClusterStatus{NodeID: "n1"}}))
		if rec := f.do(t, request{path: "/cluster"}); !strings.Contains(rec.Body.String(), `"members": []`) {
			t.Fatalf("GET /cluster:\n%s", rec.Body)
		}
	})
}

func TestClusterJoin(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		joinErr   error
		status    int
		want      []string
		wantPaths []string
	}{
		{name: "addrs", body: `{"addrs":["127.0.0.1:7946","[::1]:7946"]}`, status: http.StatusOK, want: []string{"127.0.0.1:7946", "[::1]:7946"}},
		{name: "addr", body: `{"addr":"node3.lan:7946"}`, status: http.StatusOK, want: []string{"node3.lan:7946"}},
		{name: "both, deduplicated", body: `{"addrs":["127.0.0.1:7946","127.0.0.1:7946"],"addr":"127.0.0.2:7946"}`,
			status: http.StatusOK, want: []string{"127.0.0.1:7946", "127.0.0.2:7946"}},
		{name: "nothing", body: `{}`, status: http.StatusBadRequest},
		{name: "empty list", body: `{"addrs":[]}`, status: http.StatusBadRequest},
		{name: "bad json", body: `{"addrs":`, status: http.StatusBadRequest},
		{name: "empty body", body: ``, status: http.StatusBadRequest},
		{name: "unknown key", body: `{"address":"127.0.0.1:7946"}`, status: http.StatusBadRequest},
		{name: "data after the object", body: `{"addr":"127.0.0.1:7946"} {}`, status: http.StatusBadRequest},
		{name: "every bad address listed", body: `{"addrs":["127.0.0.1","127.0.0.1:7946",":7946"],"addr":"x:0"}`,
			status: http.StatusBadRequest, wantPaths: []string{"addrs[0]", "addrs[2]", "addr"}},
		{name: "no leader", body: `{"addr":"127.0.0.1:7946"}`, joinErr: fmt.Errorf("%w: no leader", ErrUnavailable), status: http.StatusServiceUnavailable},
		{name: "peers unreachable", body: `{"addr":"127.0.0.1:7946"}`, joinErr: errors.New("dial tcp 127.0.0.1:7946: connection refused"), status: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeCluster{joinErr: tt.joinErr}
			f := newFixture(t, withCluster(c))
			rec := f.do(t, request{method: http.MethodPost, path: "/cluster/join", body: tt.body})
			if tt.status != http.StatusOK {
				e := errorBody(t, rec, tt.status)
				var paths []string
				for _, d := range e.Details {
					paths = append(paths, d.Path)
				}
				if !slices.Equal(paths, tt.wantPaths) {
					t.Fatalf("details %v, want %v", paths, tt.wantPaths)
				}
				if tt.joinErr == nil && len(c.joined) != 0 {
					t.Fatalf("a refused join reached the cluster: %v", c.joined)
				}
				return
			}
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if len(c.joined) != 1 || !slices.Equal(c.joined[0], tt.want) {
				t.Fatalf("joined %v, want %v", c.joined, tt.want)
			}
			var got joinAnswer
			decodeJSON(t, rec, &got)
			if !slices.Equal(got.Joined, tt.want) {
				t.Fatalf("answer %v", got.Joined)
			}
		})
	}
}

func TestClusterRemoveMember(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		err     error
		status  int
		removed string
	}{
		{name: "member", path: "/cluster/members/n3", status: http.StatusOK, removed: "n3"},
		{name: "escaped id", path: "/cluster/members/node%2F3", status: http.StatusOK, removed: "node/3"},
		{name: "unknown", path: "/cluster/members/n9", err: fmt.Errorf("member n9: %w", ErrNotFound), status: http.StatusNotFound},
		{name: "no leader", path: "/cluster/members/n3", err: fmt.Errorf("%w: no leader", ErrUnavailable), status: http.StatusServiceUnavailable},
		{name: "failure", path: "/cluster/members/n3", err: errors.New("raft exploded"), status: http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeCluster{removeErr: tt.err}
			f := newFixture(t, withCluster(c))
			rec := f.do(t, request{method: http.MethodDelete, path: tt.path})
			if tt.status != http.StatusOK {
				errorBody(t, rec, tt.status)
				return
			}
			if rec.Code != http.StatusOK || !slices.Equal(c.removed, []string{tt.removed}) {
				t.Fatalf("status %d removed %v: %s", rec.Code, c.removed, rec.Body)
			}
		})
	}
}

func TestHealthAndReady(t *testing.T) {
	for _, path := range []string{"/health", "/ready"} {
		tests := []struct {
			name    string
			cluster *fakeCluster
			status  int
		}{
			{"not clustered", nil, http.StatusOK},
			{"ok", &fakeCluster{}, http.StatusOK},
			{"failing", &fakeCluster{healthErr: errors.New("proxy stopped"), readyErr: errors.New("no leader")}, http.StatusServiceUnavailable},
			{"failing only the other probe", &fakeCluster{
				healthErr: map[bool]error{true: errors.New("proxy stopped")}[path == "/ready"],
				readyErr:  map[bool]error{true: errors.New("no leader")}[path == "/health"],
			}, http.StatusOK},
		}
		for _, tt := range tests {
			t.Run(path+" "+tt.name, func(t *testing.T) {
				var opts []fixtureOption
				if tt.cluster != nil {
					opts = append(opts, withCluster(tt.cluster))
				}
				f := newFixture(t, opts...)
				rec := f.do(t, request{path: path})
				if tt.status != http.StatusOK {
					e := errorBody(t, rec, tt.status)
					if e.Error != "proxy stopped" && e.Error != "no leader" {
						t.Fatalf("error %q", e.Error)
					}
					return
				}
				var got map[string]string
				decodeJSON(t, rec, &got)
				if rec.Code != http.StatusOK || got["status"] != "ok" {
					t.Fatalf("%s = %d %s", path, rec.Code, rec.Body)
				}
			})
		}
	}
}

func TestNotClustered(t *testing.T) {
	f := newFixture(t)
	for _, r := range []request{
		{path: "/cluster"},
		{method: http.MethodPost, path: "/cluster/join", body: `{"addr":"127.0.0.1:7946"}`},
		{method: http.MethodDelete, path: "/cluster/members/n1"},
	} {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			if e := errorBody(t, f.do(t, r), http.StatusNotFound); e.Error != "not clustered" {
				t.Fatalf("error %q", e.Error)
			}
		})
	}
}

func TestBasicAuthOnNewRoutes(t *testing.T) {
	c := &fakeCluster{status: threeNodes()}
	f := newFixture(t, withAuth, withCluster(c))
	routes := []request{
		{method: http.MethodPut, path: "/servers/web", body: `{}`},
		{path: "/servers/web/meta"},
		{method: http.MethodPost, path: "/servers/web/backends/127.0.0.1:8001/drain"},
		{path: "/cluster"},
		{method: http.MethodPost, path: "/cluster/join", body: `{"addr":"127.0.0.1:7946"}`},
		{method: http.MethodDelete, path: "/cluster/members/n3"},
		{path: "/ready"},
	}
	for _, r := range routes {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			errorBody(t, f.do(t, r), http.StatusUnauthorized)
			authed := r
			authed.header = map[string]string{"Authorization": basicHeader("admin", apiPassword)}
			if rec := f.do(t, authed); rec.Code == http.StatusUnauthorized {
				t.Fatalf("correct credentials refused: %s", rec.Body)
			}
		})
	}
	if len(c.joined) != 1 || len(c.removed) != 1 {
		t.Fatalf("cluster calls: joined %v removed %v; only the authenticated ones may arrive", c.joined, c.removed)
	}

	t.Run("health is open", func(t *testing.T) {
		if rec := f.do(t, request{path: "/health"}); rec.Code != http.StatusOK {
			t.Fatalf("GET /health = %d %s", rec.Code, rec.Body)
		}
		c.mu.Lock()
		c.healthErr = errors.New("proxy stopped")
		c.mu.Unlock()
		errorBody(t, f.do(t, request{path: "/health"}), http.StatusServiceUnavailable)
	})
}

func basicHeader(login, password string) string {
	r, _ := http.NewRequest(http.MethodGet, "/", nil)
	r.SetBasicAuth(login, password)
	return r.Header.Get("Authorization")
}
