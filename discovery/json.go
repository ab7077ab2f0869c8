package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["json"] = newJSON }

// jsonProvider fetches json_endpoint, a JSON array with one element per
// backend, and reads each field at its json_*_pattern path.
type jsonProvider struct {
	endpoint *httpEndpoint
	paths    jsonPaths
}

// jsonPaths are the parsed json_*_pattern paths, relative to one element.
type jsonPaths struct {
	host, port, weight, priority, maxConnections, sni jsonPath
}

func newJSON(cfg config.Discovery) (Provider, error) {
	ep, err := newHTTPEndpoint(cfg.JsonEndpoint)
	if err != nil {
		return nil, fmt.Errorf("json_endpoint: %w", err)
	}
	var paths jsonPaths
	var errs []error
	for _, f := range []struct {
		key, pattern, dflt string
		dst                *jsonPath
	}{
		{"json_host_pattern", cfg.JsonHostPattern, "host", &paths.host},
		{"json_port_pattern", cfg.JsonPortPattern, "port", &paths.port},
		{"json_weight_pattern", cfg.JsonWeightPattern, "weight", &paths.weight},
		{"json_priority_pattern", cfg.JsonPriorityPattern, "priority", &paths.priority},
		{"json_max_connections_pattern", cfg.JsonMaxConnectionsPattern, "max_connections", &paths.maxConnections},
		{"json_sni_pattern", cfg.JsonSniPattern, "sni", &paths.sni},
	} {
		// The defaults are config's; a config built by hand may leave them out.
		pattern := f.pattern
		if pattern == "" {
			pattern = f.dflt
		}
		p, err := parseJSONPath(pattern)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.key, err))
			continue
		}
		*f.dst = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &jsonProvider{endpoint: ep, paths: paths}, nil
}

// Fetch fails on a transport error, a non-2xx status, a body over maxPayload,
// a body that is not a JSON array, or any bad element (gobetween 0.8 ignored
// the status).
func (p *jsonProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	body, err := p.endpoint.get(ctx)
	if err != nil {
		return nil, err
	}
	list, err := p.paths.parse(body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: body: %w", p.endpoint.display, err)
	}
	return list, nil
}

// parse reads the backends of a JSON document: a top-level array, one backend
// per element. As in gobetween 0.8, host (a string) and port (a string or a
// number) are required; weight, priority, max_connections and sni are optional
// and default to 1, 1, 0 and "" when their path leads nowhere or to null. Unlike
// 0.8, an optional field that is there but unusable (weight "heavy", priority
// 2.5, a numeric sni) fails the fetch instead of quietly meaning its default;
// numbers may also come as decimal strings.
func (ps jsonPaths) parse(body []byte) ([]config.Backend, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty, not a JSON array")
		}
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("not JSON: data after the top-level value at offset %d", dec.InputOffset())
	}
	elems, ok := doc.([]any)
	if !ok {
		return nil, fmt.Errorf("a JSON %s, not an array", jsonKind(doc))
	}
	out := make([]config.Backend, 0, len(elems))
	var bad badEntries
	for i, el := range elems {
		b, err := ps.backend(el)
		if err != nil {
			bad.add(fmt.Errorf("element [%d]: %w", i, err))
			continue
		}
		out = append(out, b)
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// backend reads one element's fields.
func (ps jsonPaths) backend(el any) (config.Backend, error) {
	var f backendFields
	var errs []error
	for _, field := range []struct {
		name     string
		path     jsonPath
		dst      *string
		required bool
		number   bool
	}{
		{"host", ps.host, &f.host, true, false},
		{"port", ps.port, &f.port, true, true},
		{"weight", ps.weight, &f.weight, false, true},
		{"priority", ps.priority, &f.priority, false, true},
		{"max_connections", ps.maxConnections, &f.maxConnections, false, true},
		{"sni", ps.sni, &f.sni, false, false},
	} {
		v, err := field.path.lookup(el)
		if err == nil && v == nil {
			err = errors.New("null")
		}
		if err != nil {
			if field.required {
				errs = append(errs, fmt.Errorf("%s (%s): %w", field.name, field.path, err))
			}
			continue
		}
		var s string
		switch {
		case field.number:
			s, err = jsonCount(v)
		case field.name == "host":
			s, err = jsonString(v, false)
		default:
			s, err = jsonString(v, true)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", field.name, field.path, err))
			continue
		}
		*field.dst = s
	}
	if len(errs) > 0 {
		return config.Backend{}, errors.Join(errs...)
	}
	return f.backend()
}

// jsonString returns a JSON string value; an empty one is refused unless
// emptyOK.
func jsonString(v any, emptyOK bool) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("a JSON %s, want a string", jsonKind(v))
	}
	if s == "" && !emptyOK {
		return "", errors.New("empty string")
	}
	return s, nil
}

// jsonCount returns an integer JSON number, or a string, as decimal text;
// config.ParseBackend then checks its range. gobetween 0.8 printed a port with
// %v, so 8080.0 meant 8080: an integral number in any notation is accepted.
func jsonCount(v any) (string, error) {
	switch v := v.(type) {
	case string:
		if v == "" {
			return "", errors.New("empty string")
		}
		return v, nil
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return strconv.FormatInt(n, 10), nil
		}
		f, err := v.Float64()
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return "", fmt.Errorf("%s is not an integer in range", v)
		}
		return strconv.FormatInt(int64(f), 10), nil
	default:
		return "", fmt.Errorf("a JSON %s, want a number", jsonKind(v))
	}
}

// jsonKind names the JSON type of a value decoded with UseNumber.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// jsonPath is a json_*_pattern in gobetween 0.8's syntax (elgs/gojq): steps
// separated by dots, where a step written [N] indexes an array and any other
// step is an object key; a dot inside '…' or "…" is part of the key (the
// quotes are dropped); empty steps are ignored, so "." is the element itself.
// Examples: "host", "addr.ip", "ports.[0].num", `"a.b".c`.
type jsonPath []jsonStep

type jsonStep struct {
	key     string
	index   int // used when isIndex
	isIndex bool
}

// parseJSONPath parses a path; an unterminated quote or a bracketed step that
// is not a non-negative integer is an error (0.8 failed the lookup, or
// panicked on [-1]).
func parseJSONPath(s string) (jsonPath, error) {
	var (
		steps []string
		cur   strings.Builder
		quote byte
	)
	flush := func() {
		if cur.Len() > 0 {
			steps = append(steps, cur.String())
			cur.Reset()
		}
	}
	// Every delimiter is ASCII, so bytes are walked: a key is kept byte for byte.
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '\'' || c == '"':
			quote = c
		case c == '.':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("path %q: unterminated %c quote", s, quote)
	}
	flush()
	path := make(jsonPath, 0, len(steps))
	for _, st := range steps {
		if len(st) >= 3 && st[0] == '[' && st[len(st)-1] == ']' {
			inner := st[1 : len(st)-1]
			// At most 9 significant digits: an index that fits any int, and
			// more than any array within maxPayload holds.
			n, err := strconv.Atoi(inner)
			if err != nil || strings.Trim(inner, "0123456789") != "" || len(strings.TrimLeft(inner, "0")) > 9 {
				return nil, fmt.Errorf("path %q: step %s: an array index must be a non-negative integer", s, st)
			}
			path = append(path, jsonStep{index: n, isIndex: true})
			continue
		}
		path = append(path, jsonStep{key: st})
	}
	return path, nil
}

// String writes the path back in its syntax, quoting keys that need it.
func (p jsonPath) String() string {
	if len(p) == 0 {
		return "."
	}
	parts := make([]string, len(p))
	for i, st := range p {
		switch {
		case st.isIndex:
			parts[i] = "[" + strconv.Itoa(st.index) + "]"
		case strings.ContainsAny(st.key, `.'"`) && !strings.Contains(st.key, "'"):
			parts[i] = "'" + st.key + "'"
		case strings.ContainsAny(st.key, `.'"`):
			parts[i] = `"` + st.key + `"`
		default:
			parts[i] = st.key
		}
	}
	return strings.Join(parts, ".")
}

// lookup follows p from v. A missing key, an index out of range, or a step
// into a value of the wrong type is an error saying where the path stopped.
func (p jsonPath) lookup(v any) (any, error) {
	for _, st := range p {
		if st.isIndex {
			arr, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("[%d]: a JSON %s, not an array", st.index, jsonKind(v))
			}
			if st.index >= len(arr) {
				return nil, fmt.Errorf("[%d]: index out of range (length %d)", st.index, len(arr))
			}
			v = arr[st.index]
			continue
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q: a JSON %s, not an object", st.key, jsonKind(v))
		}
		next, ok := obj[st.key]
		if !ok {
			return nil, fmt.Errorf("%q: missing", st.key)
		}
		v = next
	}
	return v, nil
}
