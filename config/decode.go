package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

// DecodeError is a syntax or type error of a configuration text. A syntax
// error has its position when the decoder gives one; type errors (a string where
// a number belongs, ...) are all listed in Problems, with their paths.
type DecodeError struct {
	Format   string // "toml" or "json"
	Line     int    // 1-based; 0 when unknown
	Column   int    // 1-based; 0 when unknown
	Msg      string
	Problems []Problem // every type error, sorted by path
	Err      error     // the decoder's own error, if any
}

func (e *DecodeError) Error() string {
	if len(e.Problems) > 0 {
		lines := make([]string, len(e.Problems))
		for i, p := range e.Problems {
			lines[i] = e.Format + ": " + p.Error()
		}
		return strings.Join(lines, "\n")
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d, column %d: %s", e.Format, e.Line, e.Column, e.Msg)
	}
	return e.Format + ": " + e.Msg
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Decode parses a TOML ("toml") or JSON ("json") configuration into a Config,
// without defaults or validation. unknown lists every key that the types do not
// know, with its path ("servers.web.healthcheck.ping_timeout_duration"), sorted;
// a key under an unknown table is not listed again. err is a *DecodeError for a
// syntax or type error. A value of the wrong type for a duration is not an error
// here: it is kept and reported by Validate, with the other problems.
func Decode(data []byte, format string) (c *Config, unknown []Problem, err error) {
	c = new(Config)
	switch format {
	case "toml":
		unknown, err = decodeTOML(data, c)
	case "json":
		unknown, err = decodeJSON(data, c, "")
	default:
		return nil, nil, fmt.Errorf("unknown config format %q (want toml or json)", format)
	}
	if err != nil {
		return nil, unknown, err
	}
	return c, unknown, nil
}

// DecodeServerJSON decodes one server object, the JSON body of POST
// /servers/{name}, without defaults or validation. Unknown keys are reported
// with paths under "servers.<name>".
func DecodeServerJSON(name string, data []byte) (Server, []Problem, error) {
	var s Server
	unknown, err := decodeJSON(data, &s, serverPath(name))
	if err != nil {
		return Server{}, unknown, err
	}
	return s, unknown, nil
}

func decodeTOML(data []byte, c *Config) ([]Problem, error) {
	var generic map[string]any
	if _, err := toml.Decode(string(data), &generic); err != nil {
		return nil, tomlError(err)
	}
	unknown, mismatches := check(generic, reflect.TypeFor[Config](), "", tomlSyntax)
	if len(mismatches) > 0 {
		return unknown, &DecodeError{Format: "toml", Problems: mismatches}
	}
	if _, err := toml.Decode(string(data), c); err != nil {
		return unknown, tomlError(err)
	}
	return unknown, nil
}

func tomlError(err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &DecodeError{Format: "toml", Line: pe.Position.Line, Column: pe.Position.Col, Msg: pe.Message, Err: err}
	}
	return &DecodeError{Format: "toml", Msg: strings.TrimPrefix(err.Error(), "toml: "), Err: err}
}

// decodeJSON decodes data into v (a *Config or *Server); unknown keys and type
// errors get paths under prefix.
func decodeJSON(data []byte, v any, prefix string) ([]Problem, error) {
	if !json.Valid(data) {
		err := json.Unmarshal(data, new(any))
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			line, col := position(data, syn.Offset)
			return nil, &DecodeError{Format: "json", Line: line, Column: col, Msg: syn.Error(), Err: err}
		}
		return nil, &DecodeError{Format: "json", Msg: "invalid JSON", Err: err}
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return nil, &DecodeError{Format: "json", Msg: err.Error(), Err: err}
	}
	unknown, mismatches := check(generic, reflect.TypeOf(v).Elem(), prefix, jsonSyntax)
	if len(mismatches) > 0 {
		return unknown, &DecodeError{Format: "json", Problems: mismatches}
	}
	if err := json.Unmarshal(data, v); err != nil {
		msg := strings.TrimPrefix(err.Error(), "json: ")
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			line, col := position(data, te.Offset)
			return unknown, &DecodeError{Format: "json", Line: line, Column: col, Msg: msg, Err: err}
		}
		return unknown, &DecodeError{Format: "json", Msg: msg, Err: err}
	}
	return unknown, nil
}

// position converts a byte offset of data into a 1-based line and column.
func position(data []byte, offset int64) (line, col int) {
	offset = max(0, min(offset, int64(len(data))))
	before := data[:offset]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = len(before) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// knownMistakes are keys that gobetween 0.8 users write but that never existed,
// with what to write instead.
var knownMistakes = map[string]string{
	"ping_timeout_duration":     `healthcheck "timeout" is the ping timeout`,
	"sni_enabled":               "an [sni] section enables SNI",
	"consul_service_datacenter": `the key is "consul_datacenter"`,
	"prefer_server_ciphers":     "removed in gobetween 0.8.1",
	"transparent":               `"transparent" belongs in the [udp] section`,
}

func unknownKey(path, key string) Problem {
	msg := "unknown key"
	if strings.HasPrefix(path, "defaults.") && (key == "protocol" || key == "balance" || key == "bind") {
		msg += " ([defaults] only takes max_connections and the timeouts)"
	} else if hint, ok := knownMistakes[key]; ok {
		msg += " (" + hint + ")"
	}
	return Problem{Path: path, Msg: msg}
}
