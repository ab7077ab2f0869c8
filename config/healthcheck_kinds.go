package config

import (
	"fmt"
	"regexp"
	"strconv"
	"unicode/utf8"
)

// healthcheckKind holds what is particular to one health check kind: the
// defaults of its keys and its validation. Common keys (interval, timeout, fails,
// passes, initial_status) are handled by Healthcheck itself.
type healthcheckKind struct {
	defaults func(h *Healthcheck)
	validate func(h *Healthcheck, protocol, path string, ps *problems)
}

// healthcheckKinds is read-only.
var healthcheckKinds = map[string]healthcheckKind{
	"none": {},
	"ping": {validate: validatePing},
	"probe": {
		defaults: func(h *Healthcheck) { setString(&h.ProbeStrategy, "starts_with") },
		validate: validateProbe,
	},
	"exec": {validate: validateExecCheck},
}

const healthcheckKindNames = "none, ping, probe or exec"

func (h *Healthcheck) validate(protocol, path string, ps *problems) {
	kind, ok := healthcheckKinds[h.Kind]
	switch {
	case h.Kind == "":
		ps.add(sub(path, "kind"), "required when the section is present (%s)", healthcheckKindNames)
	case !ok:
		ps.add(sub(path, "kind"), "unknown kind %q (want %s)", h.Kind, healthcheckKindNames)
	}
	if err := h.Interval.Err(); err != nil {
		ps.add(sub(path, "interval"), "%v", err)
	} else if ok && h.Kind != "none" && h.Interval.D <= 0 {
		ps.add(sub(path, "interval"), "required for kind %s: a duration > 0, as in \"2s\"", h.Kind)
	}
	if err := h.Timeout.Err(); err != nil {
		ps.add(sub(path, "timeout"), "%v", err)
	}
	if h.InitialStatus != "healthy" && h.InitialStatus != "unhealthy" {
		ps.add(sub(path, "initial_status"), "unknown status %q (want healthy or unhealthy)", h.InitialStatus)
	}
	switch h.ClusterVerdict {
	case "majority", "any", "all", "local":
	default:
		ps.add(sub(path, "cluster_verdict"), "unknown verdict %q (want majority, any, all or local)", h.ClusterVerdict)
	}
	if ok && kind.validate != nil {
		kind.validate(h, protocol, path, ps)
	}
}

func validatePing(h *Healthcheck, protocol, path string, ps *problems) {
	if protocol == "udp" {
		ps.add(sub(path, "kind"), "ping is not supported with protocol udp (use probe with probe_protocol udp)")
	}
}

func validateProbe(h *Healthcheck, protocol, path string, ps *problems) {
	switch h.ProbeProtocol {
	case "tcp", "udp", "tls":
	case "":
		ps.add(sub(path, "probe_protocol"), "required for kind probe (tcp, udp or tls)")
	default:
		ps.add(sub(path, "probe_protocol"), "unknown protocol %q (want tcp, udp or tls)", h.ProbeProtocol)
	}
	if h.ProbeSend == "" {
		ps.add(sub(path, "probe_send"), "required for kind probe")
	} else if _, err := UnquoteProbe(h.ProbeSend); err != nil {
		ps.add(sub(path, "probe_send"), "%v", err)
	}
	recvRequired := h.ProbeRecv == ""
	if recvRequired {
		ps.add(sub(path, "probe_recv"), "required for kind probe")
	}
	switch h.ProbeStrategy {
	case "starts_with":
		if h.ProbeRecvLen != 0 {
			ps.add(sub(path, "probe_recv_len"), "must be 0 with probe_strategy starts_with (the length of probe_recv is read)")
		}
		if !recvRequired {
			if _, err := UnquoteProbe(h.ProbeRecv); err != nil {
				ps.add(sub(path, "probe_recv"), "%v", err)
			}
		}
	case "regexp":
		if h.ProbeRecvLen <= 0 {
			ps.add(sub(path, "probe_recv_len"), "must be > 0 with probe_strategy regexp (the number of bytes to read)")
		}
		if !recvRequired {
			if _, err := regexp.Compile(h.ProbeRecv); err != nil {
				ps.add(sub(path, "probe_recv"), "bad regexp: %v", err)
			}
		}
	default:
		ps.add(sub(path, "probe_strategy"), "unknown strategy %q (want starts_with or regexp)", h.ProbeStrategy)
	}
}

func validateExecCheck(h *Healthcheck, protocol, path string, ps *problems) {
	if h.ExecCommand == "" {
		ps.add(sub(path, "exec_command"), "required for kind exec")
	}
}

// UnquoteProbe interprets the Go escape sequences of probe_send and of a
// starts_with probe_recv ("\n", "\r", "\t", "\xNN", "\uNNNN", "\\", ...) once,
// as gobetween 0.8 did at config time; a quote needs no escape. \xNN yields the
// byte NN, so binary probes can be written in TOML.
func UnquoteProbe(s string) (string, error) {
	out := make([]byte, 0, len(s))
	for rest := s; rest != ""; {
		if rest[0] != '\\' {
			out = append(out, rest[0])
			rest = rest[1:]
			continue
		}
		if len(rest) >= 2 && rest[0] == '\\' && (rest[1] == '"' || rest[1] == '\'') {
			out = append(out, rest[1])
			rest = rest[2:]
			continue
		}
		c, multibyte, tail, err := strconv.UnquoteChar(rest, 0)
		if err != nil {
			return "", fmt.Errorf("bad escape sequence at byte %d of %q", len(s)-len(rest), s)
		}
		if c < utf8.RuneSelf || !multibyte {
			out = append(out, byte(c))
		} else {
			out = utf8.AppendRune(out, c)
		}
		rest = tail
	}
	return string(out), nil
}
