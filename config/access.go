package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// AccessRule is one parsed access rule: whether it allows, and the addresses it
// matches (a single address is a full-length prefix).
type AccessRule struct {
	Allow  bool
	Prefix netip.Prefix
}

// Matches reports whether addr falls in the rule's prefix. An IPv4-mapped IPv6
// address matches IPv4 rules.
func (r AccessRule) Matches(addr netip.Addr) bool {
	return r.Prefix.Contains(addr.Unmap())
}

// ParseAccessRule parses "allow <ip|cidr>" or "deny <ip|cidr>" (IPv4 or IPv6).
// gobetween 0.8 required exactly one space between the two words; any run of
// blanks is accepted here.
func ParseAccessRule(rule string) (AccessRule, error) {
	f := strings.Fields(rule)
	if len(f) != 2 {
		return AccessRule{}, fmt.Errorf("rule %q is not \"allow|deny <ip or cidr>\"", rule)
	}
	var r AccessRule
	switch f[0] {
	case "allow":
		r.Allow = true
	case "deny":
	default:
		return AccessRule{}, fmt.Errorf("rule %q: action %q is not allow or deny", rule, f[0])
	}
	p, err := ParsePrefix(f[1])
	if err != nil {
		return AccessRule{}, fmt.Errorf("rule %q: %w", rule, err)
	}
	r.Prefix = p
	return r, nil
}

// ParsePrefix parses an IP address (a prefix of its full length) or a CIDR
// (masked); IPv4-mapped IPv6 addresses become IPv4.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad cidr %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad ip address %q", s)
	}
	a = a.WithZone("").Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
