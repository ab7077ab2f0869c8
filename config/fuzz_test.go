package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func addSeeds(f *testing.F, ext string) {
	for _, dir := range []string{"testdata/golden", "testdata/invalid"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*."+ext))
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

// checkDecoded is what must hold for any text that decodes: the later stages
// never panic, defaults are idempotent, validation is deterministic, and both
// encodings load back to the same config.
func checkDecoded(t *testing.T, c *Config) {
	first, err := Encode(c, "json")
	if err != nil {
		t.Fatalf("encode json: %v", err)
	}
	// A bad duration is encoded as its raw text, which may read back as a
	// valid one (the number 0 becomes the string "0"): such a config, which
	// Validate rejects, is not expected to survive a round trip.
	if !hasBadDuration(reflect.ValueOf(c).Elem()) {
		roundTrip(t, c, first, "json")
		if _, err := Encode(c, "toml"); err == nil {
			roundTrip(t, c, first, "toml")
		}
	}

	// Validate must not panic on a config whose defaults were never applied.
	_ = c.Clone().Validate()

	c.ApplyDefaults()
	once, _ := Encode(c, "json")
	c.ApplyDefaults()
	twice, _ := Encode(c, "json")
	if !bytes.Equal(once, twice) {
		t.Fatalf("ApplyDefaults is not idempotent:\n%s\n%s", once, twice)
	}
	err1, err2 := c.Validate(), c.Validate()
	if (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() {
		t.Fatalf("Validate is not deterministic:\n%v\n%v", err1, err2)
	}
	clone, _ := Encode(c.Clone(), "json")
	if !bytes.Equal(clone, once) {
		t.Fatal("Clone differs")
	}
	_ = c.Redacted()
	for name, s := range c.Servers {
		if !s.Equal(s.Clone()) {
			t.Fatalf("server %q differs from its clone", name)
		}
	}
}

func hasBadDuration(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer:
		return !v.IsNil() && hasBadDuration(v.Elem())
	case reflect.Struct:
		if d, ok := v.Interface().(Duration); ok {
			return d.Bad
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() && hasBadDuration(v.Field(i)) {
				return true
			}
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			if hasBadDuration(v.MapIndex(k)) {
				return true
			}
		}
	}
	return false
}

// roundTrip encodes c in format, decodes it, and checks that nothing is unknown
// and that the config is the same (compared through its JSON form, want).
func roundTrip(t *testing.T, c *Config, want []byte, format string) {
	text, err := Encode(c, format)
	if err != nil {
		t.Fatalf("encode %s: %v", format, err)
	}
	again, unknown, err := Decode(text, format)
	if err != nil || len(unknown) > 0 {
		t.Fatalf("the %s encoding does not decode: %v %v\n%s", format, err, unknown, text)
	}
	got, err := Encode(again, "json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the %s encoding decodes to another config\n--- %s\n%s\n--- got\n%s\n--- want\n%s", format, format, text, got, want)
	}
}

func FuzzDecodeTOML(f *testing.F) {
	addSeeds(f, "toml")
	f.Add([]byte("[servers.\"\"]\nbind = \"\\u0000\"\n[servers.\"\".healthcheck]\ninterval = {a = 1}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Decode(data, "toml")
		if err != nil {
			return
		}
		checkDecoded(t, c)
	})
}

func FuzzDecodeJSON(f *testing.F) {
	addSeeds(f, "json")
	f.Add([]byte(`{"servers":{"a":null,"b":{"client_idle_timeout":null,"udp":{"max_requests":18446744073709551615}}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Decode(data, "json")
		if err != nil {
			return
		}
		checkDecoded(t, c)
		if s, _, err := DecodeServerJSON("x", data); err == nil {
			sc := s.Clone()
			_ = NormalizeServer("x", &sc, ConnectionOptions{})
		}
	})
}
