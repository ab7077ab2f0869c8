package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
)

// LoadOptions say how Load reads a configuration text.
type LoadOptions struct {
	Format string              // "toml" (also when empty) or "json"
	Env    bool                // substitute ${NAME} before decoding (the -e flag)
	Getenv func(string) string // looks variables up; nil means os.Getenv
	Strict bool                // unknown keys are errors, not warnings (--strict)
}

// Load reads a whole configuration: optional environment substitution, Decode,
// ApplyDefaults, Validate. On success c is ready to run and warnings lists the
// unknown keys (none with Strict). Otherwise err is either a *DecodeError or an
// errors.Join of every Problem (unknown keys included with Strict), sorted by
// path; Problems(err) lists them. The warnings come back in both cases.
func Load(data []byte, opts LoadOptions) (c *Config, warnings []Problem, err error) {
	format := opts.Format
	if format == "" {
		format = "toml"
	}
	if opts.Env {
		getenv := opts.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		data = SubstituteEnv(data, getenv)
	}
	c, unknown, err := Decode(data, format)
	if err != nil {
		var de *DecodeError
		if opts.Strict && len(unknown) > 0 && errors.As(err, &de) {
			// Type errors and unknown keys are both found by the walk that
			// precedes decoding, and come back together, sorted.
			merged := *de
			merged.Problems = append(slices.Clone(de.Problems), unknown...)
			sortProblems(merged.Problems)
			return nil, nil, &merged
		}
		if opts.Strict {
			return nil, nil, err
		}
		return nil, unknown, err
	}
	c.ApplyDefaults()
	ps := problems(Problems(c.Validate()))
	if opts.Strict {
		ps = append(ps, unknown...)
		unknown = nil
	}
	if err := ps.err(); err != nil {
		return nil, unknown, err
	}
	return c, unknown, nil
}

// NormalizeServer applies defaults to s, with the [defaults] section given, and
// validates it exactly as Load does for a server of a file; problem paths start
// with "servers.<name>". The checks that need the other servers or the global
// sections (a bind or ACME host used twice, acme_hosts without [acme]) are left
// to the caller, which knows the running set. The REST API calls it for POSTed
// servers.
func NormalizeServer(name string, s *Server, defaults ConnectionOptions) error {
	if s == nil {
		return fmt.Errorf("server %q: no definition", name)
	}
	s.applyDefaults(defaults)
	var ps problems
	s.validate(name, &ps)
	return ps.err()
}
