package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// isBlank is the \s of gobetween 0.8's backend pattern (RE2: [\t\n\f\r ]) plus \v.
func isBlank(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\v' || r == '\f' || r == '\r'
}

// ParseBackend parses one backend line of static_list, exec or plaintext output:
//
//	host:port [weight=N] [priority=N] [max_connections=N] [sni=NAME]
//
// Unlike gobetween 0.8, which required this exact order and one blank between
// tokens, the options may come in any order, separated by any run of blanks,
// each at most once. Numbers are non-negative decimal integers; an IPv6 host is
// written in brackets ("[::1]:80") and Target.Host holds it without them; the
// port is 1-65535 and kept in canonical form. Defaults: weight=1, priority=1,
// max_connections=0 (no limit), sni="".
func ParseBackend(line string) (Backend, error) {
	fields := strings.FieldsFunc(line, isBlank)
	if len(fields) == 0 {
		return Backend{}, fmt.Errorf("empty backend line")
	}
	fail := func(format string, args ...any) (Backend, error) {
		return Backend{}, fmt.Errorf("backend %q: %s", strings.TrimFunc(line, isBlank), fmt.Sprintf(format, args...))
	}
	target, err := parseTarget(fields[0])
	if err != nil {
		return fail("%v", err)
	}
	b := Backend{Target: target, Weight: 1, Priority: 1}
	seen := make(map[string]bool, 4)
	for _, f := range fields[1:] {
		key, val, ok := strings.Cut(f, "=")
		if !ok {
			return fail("option %q is not key=value", f)
		}
		if seen[key] {
			return fail("duplicate option %q", key)
		}
		seen[key] = true
		switch key {
		case "weight", "priority", "max_connections":
			n, err := parseCount(val)
			if err != nil {
				return fail("%s: %v", key, err)
			}
			switch key {
			case "weight":
				b.Weight = n
			case "priority":
				b.Priority = n
			default:
				b.MaxConnections = n
			}
		case "sni":
			if val == "" {
				return fail("sni: empty value")
			}
			b.Sni = val
		default:
			return fail("unknown option %q (want weight, priority, max_connections or sni)", key)
		}
	}
	return b, nil
}

// parseTarget parses "host:port" or "[ipv6]:port".
func parseTarget(addr string) (Target, error) {
	if !strings.Contains(addr, ":") {
		return Target{}, fmt.Errorf("missing port in %q", addr)
	}
	if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
		return Target{}, fmt.Errorf("address %q: an IPv6 address needs brackets, as in [::1]:80", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Target{}, fmt.Errorf("bad address %q", addr)
	}
	if host == "" {
		return Target{}, fmt.Errorf("missing host in %q", addr)
	}
	if strings.HasPrefix(addr, "[") {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return Target{}, fmt.Errorf("address %q: brackets are only for IPv6 addresses", addr)
		}
	}
	p, err := parsePort(port)
	if err != nil {
		return Target{}, fmt.Errorf("address %q: %v", addr, err)
	}
	return Target{Host: host, Port: strconv.Itoa(p)}, nil
}

// parsePort parses a decimal port 1-65535.
func parsePort(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing port")
	}
	n, err := parseCount(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return n, nil
}

// parseCount parses a non-negative decimal integer that fits an int32.
func parseCount(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a non-negative integer", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > math.MaxInt32 {
		return 0, fmt.Errorf("%q is too large (at most %d)", s, math.MaxInt32)
	}
	return int(n), nil
}

// FormatBackend writes b as a backend line that ParseBackend reads back to b:
// weight and priority always, max_connections and sni when set.
func FormatBackend(b Backend) string {
	var sb strings.Builder
	sb.WriteString(b.Address())
	sb.WriteString(" weight=")
	sb.WriteString(strconv.Itoa(b.Weight))
	sb.WriteString(" priority=")
	sb.WriteString(strconv.Itoa(b.Priority))
	if b.MaxConnections != 0 {
		sb.WriteString(" max_connections=")
		sb.WriteString(strconv.Itoa(b.MaxConnections))
	}
	if b.Sni != "" {
		sb.WriteString(" sni=")
		sb.WriteString(b.Sni)
	}
	return sb.String()
}
