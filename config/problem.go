package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Problem is one finding about a configuration: the path of the key it concerns
// ("servers.web.healthcheck.interval", "servers.web.access.rules[1]") and what is
// wrong with it.
type Problem struct {
	Path string `json:"path"`
	Msg  string `json:"msg"`
}

// Error is "path: msg", or msg alone when the problem concerns the whole file.
func (p Problem) Error() string {
	if p.Path == "" {
		return p.Msg
	}
	return p.Path + ": " + p.Msg
}

// Problems returns the Problem values inside err: err itself, the members of an
// errors.Join made by Validate, Load or NormalizeServer, or the type errors of a
// *DecodeError. Other errors (a syntax error) come back as problems without a
// path.
func Problems(err error) []Problem {
	if err == nil {
		return nil
	}
	var out []Problem
	var walk func(error)
	walk = func(e error) {
		if p, ok := e.(Problem); ok {
			out = append(out, p)
			return
		}
		if de, ok := e.(*DecodeError); ok && len(de.Problems) > 0 {
			out = append(out, de.Problems...)
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, m := range j.Unwrap() {
				walk(m)
			}
			return
		}
		var p Problem
		if errors.As(e, &p) {
			out = append(out, p)
			return
		}
		out = append(out, Problem{Msg: e.Error()})
	}
	walk(err)
	return out
}

// problems collects the findings of one validation pass.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns every problem, sorted, as one errors.Join, or nil.
func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	sortProblems(ps)
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errors.Join(errs...)
}

// sortProblems orders problems by path (indexes compared as numbers, so rules[2]
// comes before rules[10]), then by message.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		if c := comparePaths(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Msg, b.Msg)
	})
}

// comparePaths compares two paths piece by piece, where runs of digits compare
// numerically.
func comparePaths(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, ea := strconv.ParseUint(a[:da], 10, 64)
			nb, eb := strconv.ParseUint(b[:db], 10, 64)
			if ea == nil && eb == nil && na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
			if c := strings.Compare(a[:da], b[:db]); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			// A path is a prefix of its children: "a.b" < "a.b.c" and "a.b" < "a.b[0]".
			return cmpByte(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func cmpByte(x, y byte) int {
	// '.' and '[' separate pieces and sort before any character of a key.
	rank := func(c byte) int {
		switch c {
		case '.':
			return 0
		case '[':
			return 1
		}
		return int(c) + 2
	}
	return rank(x) - rank(y)
}

func digitRun(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// keyPiece writes one key of a path the way TOML would: bare when it is made of
// letters, digits, '_' and '-', quoted otherwise (a server named "a.b" is
// servers."a.b").
func keyPiece(k string) string {
	if k == "" {
		return `""`
	}
	for _, r := range k {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

// sub is the path of key inside table path.
func sub(path, key string) string {
	if path == "" {
		return keyPiece(key)
	}
	return path + "." + keyPiece(key)
}

// at is the path of element i of the array at path.
func at(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// serverPath is the path of the server named name.
func serverPath(name string) string { return sub("servers", name) }
