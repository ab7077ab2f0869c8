package api

import (
	"fmt"

	"github.com/gobetween/gobetween/config"
)

// secretFields are the secrets Server.Redacted hides, with their JSON paths
// under the server.
func secretFields(d *config.Discovery) []struct {
	path  string
	value *string
} {
	return []struct {
		path  string
		value *string
	}{
		{"discovery.consul_auth_password", &d.ConsulAuthPassword},
		{"discovery.consul_acl_token", &d.ConsulAclToken},
		{"discovery.lxd_server_remote_password", &d.LxdServerRemotePassword},
	}
}

// hasRedacted reports whether s carries a "<redacted>" secret, as a definition
// copied from a GET does.
func hasRedacted(s config.Server) bool {
	if s.Discovery == nil {
		return false
	}
	for _, f := range secretFields(s.Discovery) {
		if *f.value == config.RedactedValue {
			return true
		}
	}
	return false
}

// keepSecrets replaces every "<redacted>" secret of s with cur's value, so that
// a definition read with GET (secrets redacted) can be PUT back without
// overwriting the secrets with the marker. A marker with no stored value to
// keep is a problem: storing it would break discovery silently.
func keepSecrets(name string, s *config.Server, cur *config.Server) []config.Problem {
	if s.Discovery == nil {
		return nil
	}
	var curFields map[string]string
	if cur != nil && cur.Discovery != nil {
		c := *cur.Discovery
		curFields = map[string]string{}
		for _, f := range secretFields(&c) {
			curFields[f.path] = *f.value
		}
	}
	var problems []config.Problem
	for _, f := range secretFields(s.Discovery) {
		if *f.value != config.RedactedValue {
			continue
		}
		if v := curFields[f.path]; v != "" {
			*f.value = v
			continue
		}
		problems = append(problems, config.Problem{
			Path: fmt.Sprintf("servers.%s.%s", name, f.path),
			Msg:  fmt.Sprintf("%q stands for a stored secret, and there is none to keep: send the value", config.RedactedValue),
		})
	}
	return problems
}
