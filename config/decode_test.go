package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSubstituteEnv(t *testing.T) {
	env := map[string]string{"HOST": "10.0.0.1", "PORT": "80", "A:-b": "odd", "": "empty-name"}
	getenv := func(k string) string { return env[k] }
	tests := []struct{ in, want string }{
		{`bind = "${HOST}:${PORT}"`, `bind = "10.0.0.1:80"`},
		{`x = "${MISSING}"`, `x = ""`},
		{`x = "$HOST"`, `x = "$HOST"`},             // no $NAME form
		{`x = "${A:-b}"`, `x = "odd"`},             // no defaults: the whole text is the name
		{`x = "${}"`, `x = "empty-name"`},          // shortest match, even empty
		{`x = "${HOST}}"`, `x = "10.0.0.1}"`},      // stops at the first }
		{`x = "$${HOST}"`, `x = "$10.0.0.1"`},      // no escaping
		{"x = \"${HO\nST}\"", "x = \"${HO\nST}\""}, // one line only
		{`x = "${HOST"`, `x = "${HOST"`},           // unclosed
		{`${HOST}${PORT}${HOST}`, `10.0.0.18010.0.0.1`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := string(SubstituteEnv([]byte(tt.in), getenv)); got != tt.want {
				t.Fatalf("SubstituteEnv(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	t.Run("os.Getenv by default", func(t *testing.T) {
		t.Setenv("GOBETWEEN_CONFIG_TEST", "yes")
		if got := string(SubstituteEnv([]byte("${GOBETWEEN_CONFIG_TEST}"), nil)); got != "yes" {
			t.Fatalf("got %q", got)
		}
	})
}

func paths(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Path
	}
	return out
}

func TestUnknownKeysTOML(t *testing.T) {
	const doc = `
typo_top = 1
[logging]
levle = "debug"
[api.basic_auth]
login = "a"
passwd = "b"
[defaults]
protocol = "tcp"
[servers.web]
bind = ":1"
BALANCE = "roundrobin" # known: keys match case-insensitively, as in 0.8
transparent = true
[servers.web.healthcheck]
kind = "ping"
interval = "1s"
ping_timeout_duration = "500ms"
[servers.web.discovery]
kind = "static"
static_list = ["a:1"]
nested.deeper = 1
[servers.web.extra]
a = 1
b = 2
[[servers.web.list]]
x = 1
[[servers.web.list]]
y = 2
[servers."a.b"]
bind = ":2"
sni_enabled = true
`
	c, unknown, err := Decode([]byte(doc), "toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"api.basic_auth.passwd",
		"defaults.protocol",
		"logging.levle",
		`servers."a.b".sni_enabled`,
		"servers.web.discovery.nested",
		"servers.web.extra",
		"servers.web.healthcheck.ping_timeout_duration",
		"servers.web.list",
		"servers.web.transparent",
		"typo_top",
	}
	if got := paths(unknown); !reflect.DeepEqual(got, want) {
		t.Fatalf("unknown keys\n got %q\nwant %q", got, want)
	}
	if c.Servers["web"].Balance != "roundrobin" {
		t.Errorf("BALANCE not decoded: %+v", c.Servers["web"])
	}
	for _, p := range unknown {
		if !strings.HasPrefix(p.Msg, "unknown key") {
			t.Errorf("%v: message %q", p.Path, p.Msg)
		}
	}
}

func TestUnknownKeysJSON(t *testing.T) {
	const doc = `{
  "typo_top": 1,
  "logging": {"levle": "debug"},
  "api": {"basic_auth": {"login": "a", "passwd": "b"}},
  "defaults": {"protocol": "tcp", "max_connections": 1},
  "servers": {
    "web": {
      "bind": ":1",
      "Balance": "roundrobin",
      "client_idle_timeout": "1s",
      "transparent": true,
      "healthcheck": {"kind": "ping", "interval": "1s", "ping_timeout_duration": "500ms"},
      "discovery": {"kind": "static", "static_list": ["a:1"], "nested": {"deeper": 1}},
      "extra": [{"a": 1}, {"b": 2}]
    },
    "a.b": {"bind": ":2", "sni_enabled": true}
  }
}`
	c, unknown, err := Decode([]byte(doc), "json")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"api.basic_auth.passwd",
		"defaults.protocol",
		"logging.levle",
		`servers."a.b".sni_enabled`,
		"servers.web.discovery.nested",
		"servers.web.extra",
		"servers.web.healthcheck.ping_timeout_duration",
		"servers.web.transparent",
		"typo_top",
	}
	if got := paths(unknown); !reflect.DeepEqual(got, want) {
		t.Fatalf("unknown keys\n got %q\nwant %q", got, want)
	}
	web := c.Servers["web"]
	if web.Balance != "roundrobin" || web.ClientIdleTimeout == nil || web.ClientIdleTimeout.D != time.Second {
		t.Errorf("known keys not decoded: %+v", web)
	}
}

func TestDecodeServerJSON(t *testing.T) {
	body := `{"bind":"0.0.0.0:3001","protocol":"tcp","balance":"leastconn","client_idle_timeout":"10m",
"discovery":{"kind":"static","static_list":["10.0.0.1:80 weight=2"]},
"healthcheck":{"kind":"ping","interval":"2s","timeout":"1s","fails":3,"ping_timeout_duration":"1s"}}`
	s, unknown, err := DecodeServerJSON("api1", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if got := paths(unknown); !reflect.DeepEqual(got, []string{"servers.api1.healthcheck.ping_timeout_duration"}) {
		t.Fatalf("unknown = %q", got)
	}
	if s.Bind != "0.0.0.0:3001" || s.Healthcheck.Fails != 3 || s.ClientIdleTimeout.D != 10*time.Minute {
		t.Fatalf("decoded %+v", s)
	}
	if _, _, err := DecodeServerJSON("x", []byte(`{"bind": 5}`)); err == nil || !strings.Contains(err.Error(), "bind") {
		t.Fatalf("type error = %v", err)
	}
	if _, _, err := DecodeServerJSON("x", []byte(`{`)); err == nil {
		t.Fatal("no syntax error")
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, format, doc string
		line              int
		want              string
	}{
		{"toml syntax", "toml", "[servers.web]\nbind = \":1\"\nprotocol = \"tcp\n", 3, "strings cannot contain newlines"},
		{"toml duplicate", "toml", "[api]\nbind = \"a\"\nbind = \"b\"\n", 3, "already been defined"},
		{"json syntax", "json", "{\n  \"servers\": {\n    \"web\": {,}\n  }\n}", 3, "invalid character ','"},
		{"json trailing data", "json", "{} {}", 1, "invalid character '{' after top-level value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Decode([]byte(tt.doc), tt.format)
			if err == nil {
				t.Fatalf("no error, config %+v", c)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("%T is not a *DecodeError: %v", err, err)
			}
			if de.Line != tt.line {
				t.Errorf("line %d, want %d (%v)", de.Line, tt.line, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
			if c != nil {
				t.Error("config returned with an error")
			}
		})
	}
	if _, _, err := Decode(nil, "yaml"); err == nil || !strings.Contains(err.Error(), `unknown config format "yaml"`) {
		t.Fatalf("format error = %v", err)
	}
}

// Every value of the wrong type is reported at once, with its path.
func TestTypeErrors(t *testing.T) {
	tests := []struct {
		format, doc string
		want        []Problem
	}{
		{"toml", `
[api]
enabled = "yes"
[cluster]
join = "a:1"
[servers.web]
bind = 3000
max_connections = "ten"
[servers.web.udp]
max_requests = -1
[servers.web.access]
rules = ["allow ::1", 5]
[servers.web.discovery]
static_list = [{host = "a"}]
docker_container_private_port = 1.5
[servers.web.healthcheck]
fails = 2020-01-01
`, []Problem{
			{"api.enabled", "cannot use TOML string as a boolean (true or false)"},
			{"cluster.join", "cannot use TOML string as an array"},
			{"servers.web.access.rules[1]", "cannot use TOML integer as a string"},
			{"servers.web.bind", "cannot use TOML integer as a string"},
			{"servers.web.discovery.docker_container_private_port", "cannot use TOML float as an integer"},
			{"servers.web.discovery.static_list[0]", "cannot use TOML table as a string"},
			{"servers.web.healthcheck.fails", "cannot use TOML datetime as an integer"},
			{"servers.web.max_connections", "cannot use TOML string as an integer"},
			{"servers.web.udp.max_requests", "cannot use TOML integer as a non-negative integer"},
		}},
		{"json", `{
"api": {"enabled": "yes", "basic_auth": null},
"cluster": {"join": "a:1"},
"servers": {"web": {
  "bind": 3000,
  "max_connections": "ten",
  "udp": {"max_requests": -1},
  "access": {"rules": ["allow ::1", 5]},
  "discovery": {"static_list": [{"host": "a"}], "docker_container_private_port": 1.5},
  "healthcheck": {"fails": 99999999999999999999}
}, "db": 7}}`, []Problem{
			{"api.enabled", "cannot use JSON string as a boolean (true or false)"},
			{"cluster.join", "cannot use JSON string as an array"},
			{"servers.db", "cannot use JSON number 7 as a table"},
			{"servers.web.access.rules[1]", "cannot use JSON number 5 as a string"},
			{"servers.web.bind", "cannot use JSON number 3000 as a string"},
			{"servers.web.discovery.docker_container_private_port", "cannot use JSON number 1.5 as an integer"},
			{"servers.web.discovery.static_list[0]", "cannot use JSON object as a string"},
			{"servers.web.healthcheck.fails", "cannot use JSON number 99999999999999999999 as an integer"},
			{"servers.web.max_connections", "cannot use JSON string as an integer"},
			{"servers.web.udp.max_requests", "cannot use JSON number -1 as a non-negative integer"},
		}},
		{"json", `[1, 2]`, []Problem{{"", "cannot use JSON array as a table"}}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			c, _, err := Decode([]byte(tt.doc), tt.format)
			var de *DecodeError
			if !errors.As(err, &de) || c != nil {
				t.Fatalf("Decode = %v, %v; want a *DecodeError", c, err)
			}
			if got := Problems(err); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("problems\n%v\nwant\n%v", got, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want[0].Error()) {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

// A duration of the wrong type never stops decoding: every bad key of the file
// is reported by one Load.
func TestDurationsNeverStopDecoding(t *testing.T) {
	for format, doc := range map[string]string{
		"toml": `
[servers.web]
bind = ":1"
client_idle_timeout = 5
[servers.web.healthcheck]
kind = "ping"
interval = { every = 5 }
timeout = [1, 2]
[servers.web.discovery]
kind = "static"
static_list = ["a:1"]
interval = true
`,
		"json": `{"servers": {"web": {"bind": ":1", "client_idle_timeout": 5,
"healthcheck": {"kind": "ping", "interval": {"every": 5}, "timeout": [1, 2]},
"discovery": {"kind": "static", "static_list": ["a:1"], "interval": true}}}}`,
	} {
		t.Run(format, func(t *testing.T) {
			_, warnings, err := Load([]byte(doc), LoadOptions{Format: format})
			if len(warnings) != 0 {
				t.Errorf("warnings %v", warnings)
			}
			want := []string{
				"servers.web.client_idle_timeout",
				"servers.web.discovery.interval",
				"servers.web.healthcheck.interval",
				"servers.web.healthcheck.timeout",
			}
			ps := Problems(err)
			if got := paths(ps); !reflect.DeepEqual(got, want) {
				t.Fatalf("problems %v, want paths %q", ps, want)
			}
			for _, p := range ps {
				if !strings.HasPrefix(p.Msg, "invalid duration") {
					t.Errorf("%v", p)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	const doc = `
[servers.web]
bind = "${HOST}:3000"
unknown_key = 1
[servers.web.discovery]
kind = "static"
static_list = ["${BACKEND}"]
`
	getenv := func(k string) string {
		return map[string]string{"HOST": "127.0.0.1", "BACKEND": "10.0.0.1:80 weight=2"}[k]
	}
	t.Run("env and warnings", func(t *testing.T) {
		c, warnings, err := Load([]byte(doc), LoadOptions{Env: true, Getenv: getenv})
		if err != nil {
			t.Fatal(err)
		}
		if got := paths(warnings); !reflect.DeepEqual(got, []string{"servers.web.unknown_key"}) {
			t.Fatalf("warnings %v", warnings)
		}
		if s := c.Servers["web"]; s.Bind != "127.0.0.1:3000" || s.Discovery.StaticList[0] != "10.0.0.1:80 weight=2" {
			t.Fatalf("not substituted: %+v", s)
		}
	})
	t.Run("no env without the option", func(t *testing.T) {
		_, _, err := Load([]byte(doc), LoadOptions{Getenv: getenv})
		if got := paths(Problems(err)); !reflect.DeepEqual(got, []string{"servers.web.discovery.static_list[0]"}) {
			t.Fatalf("problems %v", err)
		}
	})
	t.Run("strict", func(t *testing.T) {
		c, warnings, err := Load([]byte(doc), LoadOptions{Env: true, Getenv: getenv, Strict: true})
		if c != nil || len(warnings) != 0 {
			t.Fatalf("strict load gave %v %v", c, warnings)
		}
		ps := Problems(err)
		if len(ps) != 1 || ps[0].Path != "servers.web.unknown_key" {
			t.Fatalf("problems %v", ps)
		}
	})
	t.Run("strict with a decode error keeps both", func(t *testing.T) {
		_, _, err := Load([]byte("x = 1\n[servers.web]\nbind = 1\n"), LoadOptions{Strict: true})
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("err %v is not a *DecodeError", err)
		}
		want := []Problem{
			{Path: "servers.web.bind", Msg: "cannot use TOML integer as a string"},
			{Path: "x", Msg: "unknown key"},
		}
		if !strings.Contains(err.Error(), "toml: x: unknown key") {
			t.Errorf("Error() = %q", err)
		}
		if got := Problems(err); !reflect.DeepEqual(got, want) {
			t.Fatalf("problems %v", got)
		}
	})
	t.Run("json", func(t *testing.T) {
		c, _, err := Load([]byte(`{"servers":{"w":{"bind":":1","discovery":{"kind":"static","static_list":["a:1"]}}}}`), LoadOptions{Format: "json"})
		if err != nil || c.Servers["w"].Protocol != "tcp" {
			t.Fatalf("%v %+v", err, c)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		c, _, err := Load(nil, LoadOptions{})
		if err != nil || len(c.Servers) != 0 || c.Logging.Level != "info" {
			t.Fatalf("%v %+v", err, c)
		}
	})
}

func TestProblemError(t *testing.T) {
	p := Problem{Path: "servers.web.healthcheck.interval", Msg: `invalid duration "5"`}
	if got := p.Error(); got != `servers.web.healthcheck.interval: invalid duration "5"` {
		t.Fatalf("Error() = %q", got)
	}
	if got := (Problem{Msg: "m"}).Error(); got != "m" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestProblemOrder(t *testing.T) {
	ps := problems{
		{Path: "servers.web.access.rules[10]", Msg: "a"},
		{Path: "servers.web.access.rules[2]", Msg: "a"},
		{Path: "servers.web.access", Msg: "b"},
		{Path: "servers.web.access", Msg: "a"},
		{Path: "servers.web10.bind", Msg: "a"},
		{Path: "servers.web2.bind", Msg: "a"},
		{Path: "servers.web.bind", Msg: "a"},
		{Path: "servers.web.access.default", Msg: "a"},
		{Path: "api.bind", Msg: "a"},
	}
	got := Problems(ps.err())
	want := []string{
		"api.bind",
		"servers.web.access",
		"servers.web.access",
		"servers.web.access.default",
		"servers.web.access.rules[2]",
		"servers.web.access.rules[10]",
		"servers.web.bind",
		"servers.web2.bind",
		"servers.web10.bind",
	}
	if !reflect.DeepEqual(paths(got), want) {
		t.Fatalf("order %q", paths(got))
	}
	if got[1].Msg != "a" || got[2].Msg != "b" {
		t.Fatalf("same path not ordered by message: %v", got[1:3])
	}
	if (problems{}).err() != nil || Problems(nil) != nil {
		t.Fatal("no problems must be a nil error")
	}
}
