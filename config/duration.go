package config

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a Go duration written as a string ("500ms", "5s", "1m30s"; "0" means
// none). Decoding never fails: a value that does not parse is kept in Raw and
// reported by validation with its path, so that every bad key of a file is named in
// one pass instead of the decoder stopping at the first.
type Duration struct {
	D   time.Duration
	Raw string // the text as written, kept when it does not parse
	Bad bool   // Raw did not parse
}

// Dur returns a valid Duration of d.
func Dur(d time.Duration) Duration { return Duration{D: d} }

// DurPtr returns a pointer to a valid Duration of d.
func DurPtr(d time.Duration) *Duration { v := Dur(d); return &v }

func (d *Duration) set(s string) {
	d.Raw = s
	v, err := time.ParseDuration(s)
	if err != nil {
		d.D, d.Bad = 0, true
		return
	}
	d.D, d.Bad = v, false
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error { d.set(string(b)); return nil }

// UnmarshalTOML accepts a string; any other TOML value is kept as invalid.
func (d *Duration) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		d.set(x)
	default:
		d.Raw, d.D, d.Bad = fmt.Sprint(x), 0, true
	}
	return nil
}

// UnmarshalJSON accepts a string; any other JSON value is kept as invalid.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		d.Raw, d.D, d.Bad = string(b), 0, true
		return nil
	}
	d.set(s)
	return nil
}

// MarshalText writes the canonical form ("5s", "0s").
func (d Duration) MarshalText() ([]byte, error) {
	if d.Bad {
		return []byte(d.Raw), nil
	}
	return []byte(d.D.String()), nil
}

// Err is the validation error of a bad duration, or nil.
func (d Duration) Err() error {
	if d.Bad {
		return fmt.Errorf("invalid duration %q", d.Raw)
	}
	if d.D < 0 {
		return fmt.Errorf("negative duration %q", d.D.String())
	}
	return nil
}

func (d Duration) String() string { b, _ := d.MarshalText(); return string(b) }
