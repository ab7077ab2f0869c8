package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobetween/gobetween/config"
)

// jsonTestPaths parses patterns given as host, port, weight, priority,
// max_connections, sni; an empty one means its default name.
func jsonTestPaths(t testing.TB, patterns ...string) jsonPaths {
	t.Helper()
	patterns = append(patterns, make([]string, 6-len(patterns))...)
	p, err := newJSON(config.Discovery{
		Kind: "json", JsonEndpoint: "http://h/x",
		JsonHostPattern: patterns[0], JsonPortPattern: patterns[1], JsonWeightPattern: patterns[2],
		JsonPriorityPattern: patterns[3], JsonMaxConnectionsPattern: patterns[4], JsonSniPattern: patterns[5],
	})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*jsonProvider).paths
}

func TestJSONParse(t *testing.T) {
	defaults := jsonTestPaths(t)
	nested := jsonTestPaths(t, "addr.ip", "ports.[0].num", "meta.w", "meta.'p.q'", `"x.y".[1]`, "tls.[0].[0]")
	full := config.Backend{Target: config.Target{Host: "10.0.0.1", Port: "80"}, Weight: 5, Priority: 2, MaxConnections: 10, Sni: "a.example"}
	tests := []struct {
		name    string
		paths   jsonPaths
		body    string
		want    []config.Backend
		wantErr []string
	}{
		{"all fields", defaults, `[{"host":"10.0.0.1","port":80,"weight":5,"priority":2,"max_connections":10,"sni":"a.example"}]`,
			[]config.Backend{full}, nil},
		{"defaults: weight 1, priority 1", defaults, `[{"host":"a","port":"1"},{"host":"b","port":2,"weight":null,"sni":""}]`,
			[]config.Backend{backend("a", "1", 1, 1), backend("b", "2", 1, 1)}, nil},
		{"empty array", defaults, ` [ ] `, []config.Backend{}, nil},
		{"numbers as strings and in other notations", defaults, `[{"host":"a","port":8.08e3,"weight":"3","priority":2.0}]`,
			[]config.Backend{backend("a", "8080", 3, 2)}, nil},
		{"ipv6 with or without brackets", defaults, `[{"host":"::1","port":80},{"host":"[::2]","port":80}]`,
			[]config.Backend{backend("::1", "80", 1, 1), backend("::2", "80", 1, 1)}, nil},
		{"0.8 path syntax", nested, `[{"addr":{"ip":"10.0.0.1"},"ports":[{"num":80}],"meta":{"w":5,"p.q":2},"x.y":[0,10],"tls":[["a.example"]]}]`,
			[]config.Backend{full}, nil},
		{"0.8 paths, optional fields missing", nested, `[{"addr":{"ip":"10.0.0.1"},"ports":[{"num":"80"}],"meta":{},"x.y":[],"tls":"x"}]`,
			[]config.Backend{backend("10.0.0.1", "80", 1, 1)}, nil},
		{"extra fields ignored", defaults, `[{"host":"a","port":1,"colour":"red"}]`, []config.Backend{backend("a", "1", 1, 1)}, nil},

		{"object", defaults, `{"host":"a","port":1}`, nil, []string{"a JSON object, not an array"}},
		{"null", defaults, `null`, nil, []string{"a JSON null, not an array"}},
		{"garbage", defaults, `<html>oops</html>`, nil, []string{"not JSON"}},
		{"empty body", defaults, ``, nil, []string{"empty, not a JSON array"}},
		{"truncated", defaults, `[{"host":"a","port":1}`, nil, []string{"not JSON"}},
		{"trailing data", defaults, `[] []`, nil, []string{"data after the top-level value"}},
		{"host missing", defaults, `[{"host":"a","port":1},{"port":1}]`, nil, []string{"element [1]", `host (host): "host": missing`}},
		{"host null", defaults, `[{"host":null,"port":1}]`, nil, []string{"element [0]", "host (host): null"}},
		{"host not a string", defaults, `[{"host":10,"port":1}]`, nil, []string{"a JSON number, want a string"}},
		{"port missing", defaults, `[{"host":"a"}]`, nil, []string{"port (port)", "missing"}},
		{"port out of range", defaults, `[{"host":"a","port":70000}]`, nil, []string{"70000"}},
		{"port fractional", defaults, `[{"host":"a","port":80.5}]`, nil, []string{"80.5 is not an integer"}},
		{"weight not a number", defaults, `[{"host":"a","port":1,"weight":"heavy"}]`, nil, []string{"weight"}},
		{"weight boolean", defaults, `[{"host":"a","port":1,"weight":true}]`, nil, []string{"weight (weight): a JSON boolean, want a number"}},
		{"negative priority", defaults, `[{"host":"a","port":1,"priority":-1}]`, nil, []string{"priority", "not a non-negative integer"}},
		{"sni not a string", defaults, `[{"host":"a","port":1,"sni":5}]`, nil, []string{"sni (sni): a JSON number"}},
		{"blank in a value", defaults, `[{"host":"a b","port":1}]`, nil, []string{`host "a b" contains blanks`}},
		{"element not an object", defaults, `["10.0.0.1:80"]`, nil, []string{"element [0]", "not an object"}},
		{"many bad elements counted", defaults, `[1,2,3,4,5,6,7]`, nil, []string{"element [4]", "and 2 more"}},
		{"nested path into the wrong type", nested, `[{"addr":"10.0.0.1","ports":[{"num":80}]}]`, nil, []string{`host (addr.ip): "ip": a JSON string, not an object`}},
		{"index out of range", nested, `[{"addr":{"ip":"a"},"ports":[]}]`, nil, []string{"port (ports.[0].num): [0]: index out of range"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.paths.parse([]byte(tc.body))
			checkParse(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func TestJSONPath(t *testing.T) {
	tests := []struct {
		in      string
		want    jsonPath
		str     string
		wantErr string
	}{
		{"host", jsonPath{{key: "host"}}, "host", ""},
		{"addr.ip", jsonPath{{key: "addr"}, {key: "ip"}}, "addr.ip", ""},
		{"ports.[0].num", jsonPath{{key: "ports"}, {index: 0, isIndex: true}, {key: "num"}}, "ports.[0].num", ""},
		{"[12]", jsonPath{{index: 12, isIndex: true}}, "[12]", ""},
		{"a..b.", jsonPath{{key: "a"}, {key: "b"}}, "a.b", ""},
		{".", jsonPath{}, ".", ""},
		{`'a.b'.c`, jsonPath{{key: "a.b"}, {key: "c"}}, `'a.b'.c`, ""},
		{`"it's".x`, jsonPath{{key: "it's"}, {key: "x"}}, `"it's".x`, ""},
		{"[]", jsonPath{{key: "[]"}}, "[]", ""},
		{"[x]", nil, "", "an array index must be a non-negative integer"},
		{"a.[-1]", nil, "", "an array index must be a non-negative integer"},
		{"[+1]", nil, "", "an array index must be a non-negative integer"},
		{"[1234567890]", nil, "", "an array index must be a non-negative integer"},
		{"'a.b", nil, "", "unterminated ' quote"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseJSONPath(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseJSONPath = %v, %v; want an error mentioning %q", got, err, tc.wantErr)
				}
			} else if err != nil || !slices.Equal(got, tc.want) || got.String() != tc.str {
				t.Fatalf("parseJSONPath = %v (%q), %v; want %v (%q)", got, got.String(), err, tc.want, tc.str)
			}
			if cfgErr := jsonPathConfigError(t, tc.in); (cfgErr == nil) != (tc.wantErr == "") {
				t.Fatalf("config validation says %v, discovery says %v", cfgErr, err)
			}
		})
	}
}

// jsonPathConfigError is what config validation says of path as
// json_port_pattern.
func jsonPathConfigError(t testing.TB, path string) error {
	t.Helper()
	doc, err := json.Marshal(map[string]any{"servers": map[string]any{"web": map[string]any{
		"bind":      "127.0.0.1:3000",
		"discovery": map[string]any{"kind": "json", "json_endpoint": "http://h/x", "json_port_pattern": path},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = config.Load(doc, config.LoadOptions{Format: "json"})
	if err != nil {
		for _, p := range config.Problems(err) {
			if p.Path != "servers.web.discovery.json_port_pattern" {
				t.Fatalf("unexpected problem %v", p)
			}
		}
	}
	return err
}

func TestJSON(t *testing.T) {
	e := newTestEndpoint(t)
	reg := NewRegistry()
	p, err := reg.New(config.Discovery{Kind: "json", JsonEndpoint: e.srv.URL + "/backends"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("answers change between fetches", func(t *testing.T) {
		steps := []struct {
			body string
			want []config.Backend
		}{
			{`[{"host":"10.0.0.1","port":80}]`, list(bA)},
			{`[{"host":"10.0.0.1","port":80},{"host":"10.0.0.2","port":"80"}]`, list(bA, bB)},
			{`[{"host":"10.0.0.1","port":80,"weight":5},{"host":"10.0.0.2","port":80}]`, list(bA5, bB)},
			{`[{"host":"10.0.0.2","port":80}]`, list(bB)},
			{`[]`, []config.Backend{}},
		}
		for i, st := range steps {
			e.set(http.StatusOK, st.body)
			got, err := fetchWithin(p, 5*time.Second)
			if err != nil {
				t.Fatalf("fetch %d: %v", i, err)
			}
			if !slices.Equal(got, st.want) {
				t.Fatalf("fetch %d = %v, want %v", i, got, st.want)
			}
		}
		hits, conns, agents := e.stats()
		if hits != len(steps) || conns != 1 {
			t.Errorf("%d requests over %d connections, want %d over 1 (a client reused)", hits, conns, len(steps))
		}
		if len(agents) == 0 || agents[0] != "gobetween" {
			t.Errorf("User-Agent %q", agents)
		}
	})

	failures := []struct {
		name    string
		status  int
		body    string
		target  error
		wantErr string
	}{
		{"not found", http.StatusNotFound, `[]`, nil, "status 404 Not Found"},
		{"bad gateway", http.StatusBadGateway, `[{"host":"a","port":1}]`, nil, "status 502 Bad Gateway"},
		{"garbage", http.StatusOK, "<html>oops</html>", nil, "body: not JSON"},
		{"object", http.StatusOK, `{"backends":[]}`, nil, "body: a JSON object, not an array"},
		{"body over maxPayload", http.StatusOK, "[" + strings.Repeat(`{"host":"a","port":1},`, maxPayload/22) + `{"host":"a","port":1}]`, errPayloadTooLarge, ""},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			e.set(tc.status, tc.body)
			got, err := fetchWithin(p, 5*time.Second)
			if err == nil {
				t.Fatalf("Fetch = %d backends, want an error", len(got))
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("error %v, want %v", err, tc.target)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), e.srv.URL) {
				t.Errorf("error %q does not mention %q and the URL", err, tc.wantErr)
			}
		})
	}

	t.Run("slow server", func(t *testing.T) {
		e.setSlow(false, true)
		start := time.Now()
		_, err := fetchWithin(p, 200*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Fetch error %v, want the deadline", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Fetch returned after %v", d)
		}
	})

	t.Run("factory errors", func(t *testing.T) {
		for _, cfg := range []config.Discovery{
			{Kind: "json"},
			{Kind: "json", JsonEndpoint: "unix:///x"},
			{Kind: "json", JsonEndpoint: "http://h/x", JsonHostPattern: "a.[x]"},
			{Kind: "json", JsonEndpoint: "http://h/x", JsonSniPattern: `"open`},
		} {
			if _, err := reg.New(cfg); err == nil {
				t.Errorf("New(%+v) succeeded", cfg)
			}
		}
	})
}

// TestJSONFailpolicy runs the kind through a Source against a real server.
func TestJSONFailpolicy(t *testing.T) {
	e := newTestEndpoint(t)
	testFailpolicies(t, failpolicyCase{
		cfg: config.Discovery{Kind: "json", JsonEndpoint: e.srv.URL},
		serve: func(lines []string) {
			if lines == nil {
				e.set(http.StatusOK, `{"error":"registry down"}`)
				return
			}
			var doc []map[string]any
			for _, l := range lines {
				b, err := config.ParseBackend(l)
				if err != nil {
					t.Fatal(err)
				}
				doc = append(doc, map[string]any{"host": b.Host, "port": b.Port, "weight": b.Weight})
			}
			body, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			e.set(http.StatusOK, string(body))
		},
		fetches: func() int { hits, _, _ := e.stats(); return hits },
	})
}

// FuzzJSON feeds documents to the default and to nested paths: no panic, and
// whatever is accepted is a valid backend.
func FuzzJSON(f *testing.F) {
	all := []jsonPaths{
		jsonTestPaths(f),
		jsonTestPaths(f, "addr.ip", "ports.[0].num", "meta.w", "meta.'p.q'", `"x.y".[1]`, "tls.[0].[0]"),
		jsonTestPaths(f, ".", ".", "", "", "", ""),
	}
	for _, seed := range []string{
		`[{"host":"10.0.0.1","port":80,"weight":5,"priority":2,"max_connections":10,"sni":"a.example"}]`,
		`[{"host":"::1","port":"80"},{"host":"[::2]","port":8.08e3,"weight":"3","priority":2.0}]`,
		`[{"addr":{"ip":"10.0.0.1"},"ports":[{"num":80}],"meta":{"w":5,"p.q":2},"x.y":[0,10],"tls":[["a.example"]]}]`,
		`["a:80", 80, null, true, [], {}]`, `{"host":"a"}`, `[1e400]`, `[{"host":"a","port":-0}]`, `[[[[[[[[[[]]]]]]]]]]`,
		`[{"host":"a","port":1e9}]`, `[{"host":"a","port":99999999999999999999}]`, "\xff", `[] x`,
	} {
		for mode := range all {
			f.Add([]byte(seed), uint8(mode))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		list, err := all[int(mode)%len(all)].parse(body)
		if err != nil {
			if list != nil {
				t.Fatalf("a list with an error: %v", list)
			}
			return
		}
		checkFuzzedBackends(t, list)
	})
}

// FuzzJSONPath checks that config validation and discovery agree on which
// paths are valid, and that a valid path never panics a lookup.
func FuzzJSONPath(f *testing.F) {
	for _, seed := range []string{"host", "addr.ip", "ports.[0].num", "'a.b'.c", `"it's"`, "[x]", "[-1]", "[]", "..", "'open", "[0000000001]", "[1234567890]", "é.[1]"} {
		f.Add(seed)
	}
	var doc any
	if err := json.Unmarshal([]byte(`{"a":[{"b":1}],"host":["x"],"0":{"1":[[2]]}}`), &doc); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path string) {
		// A config text is UTF-8: the JSON encoding of path would change it.
		path = strings.ToValidUTF8(path, "\uFFFD")
		p, err := parseJSONPath(path)
		if cfgErr := jsonPathConfigError(t, path); (cfgErr == nil) != (err == nil) {
			t.Fatalf("config validation says %v, discovery says %v", cfgErr, err)
		}
		if err == nil {
			_, _ = p.lookup(doc)
		}
	})
}
