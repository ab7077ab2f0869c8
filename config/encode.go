package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/BurntSushi/toml"
)

// Encode writes c as "toml" or "json", the formats Decode reads (GET /dump).
// Durations are strings ("5s"). JSON shows unset sections as null; TOML, which
// has no null, leaves them out, and also leaves out the keys of other kinds that
// JSON omits when empty. Decoding the output gives c back.
func Encode(c *Config, format string) ([]byte, error) {
	switch format {
	case "json":
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		// "<redacted>" reads as itself, not as \u003credacted\u003e.
		enc.SetEscapeHTML(false)
		if err := enc.Encode(c); err != nil {
			return nil, fmt.Errorf("encode json: %w", err)
		}
		return buf.Bytes(), nil
	case "toml":
		return encodeTOML(c)
	default:
		return nil, fmt.Errorf("unknown config format %q (want toml or json)", format)
	}
}

// encodeTOML goes through the JSON form so that the json tags decide what is
// written: the same omitted empty keys and the same names as JSON. TOML keys
// come out sorted.
func encodeTOML(c *Config) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode toml: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, fmt.Errorf("encode toml: %w", err)
	}
	v, err := tomlValue(generic)
	if err != nil {
		return nil, fmt.Errorf("encode toml: %w", err)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(v); err != nil {
		return nil, fmt.Errorf("encode toml: %w", err)
	}
	return buf.Bytes(), nil
}

// tomlValue converts a generic JSON value for the TOML encoder: nulls dropped,
// numbers as integers.
func tomlValue(v any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if e == nil {
				continue
			}
			tv, err := tomlValue(e)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = tv
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(x))
		for i, e := range x {
			tv, err := tomlValue(e)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out = append(out, tv)
		}
		return out, nil
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n, nil
		}
		if _, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return nil, fmt.Errorf("%s is above the largest TOML integer %d", x, int64(math.MaxInt64))
		}
		f, err := x.Float64()
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	return v, nil
}
