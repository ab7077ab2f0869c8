package config

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// syntax is what check needs to know of a decoder: the name of the format, the
// struct tag it reads, and what each of its generic values is.
type syntax struct {
	format string
	tag    string
	// kind names the generic value v as the format's users know it ("string",
	// "integer", "table"...).
	kind func(v any) string
}

var tomlSyntax = syntax{format: "TOML", tag: "toml", kind: func(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	case time.Time:
		return "datetime"
	}
	return "date or time"
}}

var jsonSyntax = syntax{format: "JSON", tag: "json", kind: func(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}}

var durationType = reflect.TypeFor[Duration]()

// check walks a generic decoded document alongside the Go type it will decode
// into, before the real decoding, and reports keys the type does not know
// (unknown) and values the decoder would refuse (mismatches), every one with its
// path. The real decoders stop at the first bad value; this lets one pass name
// them all. Field names follow the decoders: the format's tag, embedded structs
// flattened, an exact name preferred and a case-insensitive match accepted. Keys
// under an unknown key are not visited, so an unknown table is reported once.
func check(v any, t reflect.Type, path string, sx syntax) (unknown, mismatches []Problem) {
	c := checker{sx: sx}
	c.walk(v, t, path)
	sortProblems(c.unknown)
	sortProblems(c.mismatches)
	return c.unknown, c.mismatches
}

type checker struct {
	sx                  syntax
	unknown, mismatches []Problem
}

func (c *checker) mismatch(v any, want, path string) {
	got := c.sx.kind(v)
	if n, ok := v.(json.Number); ok {
		got += " " + n.String()
	}
	c.mismatches = append(c.mismatches, Problem{Path: path, Msg: fmt.Sprintf("cannot use %s %s as %s", c.sx.format, got, want)})
}

func (c *checker) walk(v any, t reflect.Type, path string) {
	if v == nil {
		// JSON null leaves any value at its zero; TOML has no null.
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		// Duration takes any value and keeps a bad one for Validate.
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			c.mismatch(v, "a table", path)
			return
		}
		fields := fieldsByName(t, c.sx.tag)
		for key, val := range obj {
			ft, ok := fields[key]
			if !ok {
				for name, typ := range fields {
					if strings.EqualFold(name, key) {
						ft, ok = typ, true
						break
					}
				}
			}
			if !ok {
				c.unknown = append(c.unknown, unknownKey(sub(path, key), key))
				continue
			}
			c.walk(val, ft, sub(path, key))
		}
	case reflect.Map:
		obj, ok := v.(map[string]any)
		if !ok {
			c.mismatch(v, "a table", path)
			return
		}
		for key, val := range obj {
			c.walk(val, t.Elem(), sub(path, key))
		}
	case reflect.Slice:
		switch arr := v.(type) {
		case []any:
			for i, e := range arr {
				c.walk(e, t.Elem(), at(path, i))
			}
		case []map[string]any:
			for i, e := range arr {
				c.walk(e, t.Elem(), at(path, i))
			}
		default:
			c.mismatch(v, "an array", path)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			c.mismatch(v, "a string", path)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.mismatch(v, "a boolean (true or false)", path)
		}
	case reflect.Int, reflect.Int64:
		if !isInt(v, false) {
			c.mismatch(v, "an integer", path)
		}
	case reflect.Uint, reflect.Uint64:
		if !isInt(v, true) {
			c.mismatch(v, "a non-negative integer", path)
		}
	default:
		c.mismatch(v, t.String(), path)
	}
}

// isInt reports whether v decodes into a 64-bit integer (unsigned: a
// non-negative one).
func isInt(v any, unsigned bool) bool {
	switch n := v.(type) {
	case int64:
		return !unsigned || n >= 0
	case json.Number:
		if unsigned {
			_, err := strconv.ParseUint(n.String(), 10, 64)
			return err == nil
		}
		_, err := strconv.ParseInt(n.String(), 10, 64)
		return err == nil
	}
	return false
}

// fieldsByName maps the names that tag gives t's fields to their types, with
// embedded structs without a name flattened, as both decoders do.
func fieldsByName(t reflect.Type, tag string) map[string]reflect.Type {
	fields := make(map[string]reflect.Type)
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get(tag), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			embedded = append(embedded, f.Type)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	// Fields of the outer struct win over embedded ones of the same name.
	for _, et := range embedded {
		for n, typ := range fieldsByName(et, tag) {
			if _, taken := fields[n]; !taken {
				fields[n] = typ
			}
		}
	}
	return fields
}
