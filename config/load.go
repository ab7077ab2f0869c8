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
	unknown = append(unknown, dropIgnored(c)...)
	sortProblems(unknown)
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

// dropIgnored removes the sections gobetween 0.8 accepted and silently ignored
// on a server of another protocol ([udp] on tcp or tls, [tls] on udp), so that
// a 0.8 file still loads; each one is reported like an unknown key (a warning,
// an error with Strict). The REST API, which 0.8 users never relied on for
// this, rejects them through NormalizeServer.
func dropIgnored(c *Config) []Problem {
	var ps []Problem
	for name, s := range c.Servers {
		udp := s.Protocol == "udp"
		changed := false
		if s.Udp != nil && !udp && (s.Protocol == "" || s.Protocol == "tcp" || s.Protocol == "tls") {
			ps = append(ps, Problem{Path: "servers." + name + ".udp", Msg: "ignored: only with protocol udp (gobetween 0.8 ignored it too)"})
			s.Udp, changed = nil, true
		}
		if s.Tls != nil && udp {
			ps = append(ps, Problem{Path: "servers." + name + ".tls", Msg: "ignored: not supported with protocol udp (gobetween 0.8 ignored it too)"})
			s.Tls, changed = nil, true
		}
		if changed {
			c.Servers[name] = s
		}
	}
	return ps
}
