package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fill sets every field reachable from v to a non-zero value: pointers
// allocated, slices of two elements, maps of one entry.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		if v.Type() == durationType {
			v.Set(reflect.ValueOf(Dur(7 * time.Second)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(v.Index(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k := reflect.New(v.Type().Key()).Elem()
		fill(k)
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("secret-" + v.Type().Name())
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint64:
		v.SetUint(7)
	}
}

// shared reports a pointer, slice or map that a and b have in common.
func shared(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		return shared(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() {
				if p := shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); p != "" {
					return p
				}
			}
		}
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		for i := range a.Len() {
			if p := shared(a.Index(i), b.Index(i), path+"[]"); p != "" {
				return p
			}
		}
	case reflect.Map:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		for _, k := range a.MapKeys() {
			if p := shared(a.MapIndex(k), b.MapIndex(k), path+"{}"); p != "" {
				return p
			}
		}
	}
	return ""
}

func TestCloneIsDeep(t *testing.T) {
	var c Config
	fill(reflect.ValueOf(&c).Elem())
	cl := c.Clone()
	if !reflect.DeepEqual(&c, cl) {
		t.Fatal("Config.Clone differs from the original")
	}
	if p := shared(reflect.ValueOf(&c).Elem(), reflect.ValueOf(cl).Elem(), "Config"); p != "" {
		t.Fatalf("Config.Clone shares %s", p)
	}
	var s Server
	fill(reflect.ValueOf(&s).Elem())
	sc := s.Clone()
	if !reflect.DeepEqual(s, sc) {
		t.Fatal("Server.Clone differs from the original")
	}
	if p := shared(reflect.ValueOf(s), reflect.ValueOf(sc), "Server"); p != "" {
		t.Fatalf("Server.Clone shares %s", p)
	}
	if (*Config)(nil).Clone() != nil {
		t.Fatal("nil clone")
	}
	empty := Server{Access: &Access{Rules: []string{}}}
	if got := empty.Clone(); got.Access.Rules == nil {
		t.Fatal("an empty list became nil")
	}
}

func TestRedacted(t *testing.T) {
	var c Config
	fill(reflect.ValueOf(&c).Elem())
	r := c.Redacted()
	if p := shared(reflect.ValueOf(&c).Elem(), reflect.ValueOf(r).Elem(), "Config"); p != "" {
		t.Fatalf("Redacted shares %s", p)
	}
	dump, err := Encode(r, "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{`"password": "secret`, `"encrypt_key": "secret`, `"consul_auth_password": "secret`,
		`"consul_acl_token": "secret`, `"lxd_server_remote_password": "secret`} {
		if bytes.Contains(dump, []byte(secret)) {
			t.Errorf("dump contains %s", secret)
		}
	}
	if n := bytes.Count(dump, []byte(RedactedValue)); n != 5 {
		t.Errorf("%d redacted values, want 5:\n%s", n, dump)
	}
	if c.Api.BasicAuth.Password == RedactedValue || c.Cluster.EncryptKey == RedactedValue {
		t.Error("Redacted changed the original")
	}
	for _, s := range c.Servers {
		if s.Discovery.ConsulAclToken == RedactedValue {
			t.Error("Redacted changed the original's server")
		}
		if got := s.Redacted().Discovery; got.ConsulAclToken != RedactedValue || got.ConsulAuthUsername == RedactedValue {
			t.Errorf("Server.Redacted: %+v", got)
		}
	}
	// Unset secrets stay empty: nothing to hide, and it shows they are unset.
	empty := Config{Api: Api{BasicAuth: &ApiBasicAuth{Login: "a"}}}
	if got := empty.Redacted(); got.Api.BasicAuth.Password != "" {
		t.Errorf("empty password became %q", got.Api.BasicAuth.Password)
	}
}

func TestServerEqual(t *testing.T) {
	load := func(doc string) Server {
		t.Helper()
		return mustLoad(t, "[servers.s]\n"+doc+"\n[servers.s.discovery]\nkind = \"static\"\nstatic_list = [\"a:1\"]\n").Servers["s"]
	}
	base := load(`bind = ":1"
client_idle_timeout = "60s"`)
	tests := []struct {
		name  string
		other Server
		equal bool
	}{
		{"same text", load(`bind = ":1"
client_idle_timeout = "60s"`), true},
		{"same duration written otherwise", load(`bind = ":1"
client_idle_timeout = "1m"`), true},
		{"explicit defaults", load(`bind = ":1"
client_idle_timeout = "60s"
protocol = "tcp"
balance = "weight"`), true},
		{"another bind", load(`bind = ":2"
client_idle_timeout = "60s"`), false},
		{"another timeout", load(`bind = ":1"
client_idle_timeout = "61s"`), false},
		{"another balance", load(`bind = ":1"
client_idle_timeout = "60s"
balance = "iphash"`), false},
		{"a clone", base.Clone(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := base.Equal(tt.other); got != tt.equal {
				t.Fatalf("Equal = %v, want %v", got, tt.equal)
			}
			if got := tt.other.Equal(base); got != tt.equal {
				t.Fatalf("Equal is not symmetric")
			}
		})
	}
	withEmpty := base.Clone()
	withEmpty.Access = &Access{Default: "allow", Rules: []string{}}
	withNil := base.Clone()
	withNil.Access = &Access{Default: "allow"}
	if !withEmpty.Equal(withNil) {
		t.Error("an empty rule list differs from an absent one")
	}
	changed := base.Clone()
	changed.Discovery.StaticList[0] = "a:2"
	if base.Equal(changed) {
		t.Error("a changed backend list is equal")
	}
}

func TestEncode(t *testing.T) {
	c := mustLoad(t, `
[api.basic_auth]
login = "admin"
password = "pw"
[servers.web]
bind = ":1"
  [servers.web.discovery]
  kind = "static"
  static_list = ["a:1"]
`)
	toml, err := Encode(c, "toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`[servers.web.discovery]`, `timeout = "0s"`, `drain_timeout = "30s"`, `kind = "none"`, `password = "pw"`} {
		if !strings.Contains(string(toml), want) {
			t.Errorf("toml dump lacks %s:\n%s", want, toml)
		}
	}
	// Keys of other kinds are left out, as in JSON, and TOML has no null.
	for _, absent := range []string{"probe_", "json_", "lxd_", "acme", "null"} {
		if strings.Contains(string(toml), absent) {
			t.Errorf("toml dump contains %s:\n%s", absent, toml)
		}
	}
	js, err := Encode(c, "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"client_idle_timeout": "0s"`) || !strings.Contains(string(js), `"acme": null`) {
		t.Errorf("json dump:\n%s", js)
	}
	if _, err := Encode(c, "yaml"); err == nil {
		t.Error("yaml accepted")
	}
	huge := c.Clone()
	edit(huge, "web", func(s *Server) { s.Udp = &Udp{MaxRequests: 1 << 63} })
	if _, err := Encode(huge, "toml"); err == nil || !strings.Contains(err.Error(), "max_requests") {
		t.Errorf("a value TOML cannot hold: %v", err)
	}
}
