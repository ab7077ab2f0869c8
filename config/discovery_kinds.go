package config

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// discoveryKind holds what is particular to one discovery kind: its default
// timeout, the defaults of its keys and its validation. Common keys (kind,
// failpolicy, interval, timeout) are handled by Discovery itself.
type discoveryKind struct {
	// timeout applies when the section leaves timeout unset. gobetween 0.8
	// declared these per kind but never applied them (a bug); they apply here.
	timeout  time.Duration
	defaults func(d *Discovery)
	validate func(d *Discovery, path string, ps *problems)
}

// discoveryKinds is read-only.
var discoveryKinds = map[string]discoveryKind{
	"static":    {validate: validateStatic},
	"exec":      {timeout: 3 * time.Second, validate: validateExecDiscovery},
	"json":      {timeout: 5 * time.Second, defaults: jsonDefaults, validate: validateJSON},
	"plaintext": {timeout: 5 * time.Second, validate: validatePlaintext},
	"srv":       {timeout: 5 * time.Second, defaults: srvDefaults, validate: validateSrv},
	"consul":    {timeout: 2 * time.Second, validate: validateConsul},
	"docker":    {timeout: 5 * time.Second, validate: validateDocker},
	"lxd":       {timeout: 5 * time.Second, defaults: lxdDefaults, validate: validateLxd},
}

// DiscoveryKinds returns the names of the discovery kinds, sorted.
func DiscoveryKinds() []string {
	names := make([]string, 0, len(discoveryKinds))
	for k := range discoveryKinds {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func (d *Discovery) validate(path string, ps *problems) {
	kind, ok := discoveryKinds[d.Kind]
	switch {
	case d.Kind == "":
		ps.add(sub(path, "kind"), "required (%s)", strings.Join(DiscoveryKinds(), ", "))
	case !ok:
		ps.add(sub(path, "kind"), "unknown kind %q (want %s)", d.Kind, strings.Join(DiscoveryKinds(), ", "))
	}
	if d.Failpolicy != "keeplast" && d.Failpolicy != "setempty" {
		ps.add(sub(path, "failpolicy"), "unknown policy %q (want keeplast or setempty)", d.Failpolicy)
	}
	if err := d.Interval.Err(); err != nil {
		ps.add(sub(path, "interval"), "%v", err)
	}
	if err := d.Timeout.Err(); err != nil {
		ps.add(sub(path, "timeout"), "%v", err)
	}
	switch d.Scope {
	case "", "cluster", "node":
	default:
		ps.add(sub(path, "scope"), "unknown scope %q (want cluster or node)", d.Scope)
	}
	if ok {
		kind.validate(d, path, ps)
	}
}

func validateStatic(d *Discovery, path string, ps *problems) {
	if len(d.StaticList) == 0 {
		ps.add(sub(path, "static_list"), "required for kind static: at least one backend line")
	}
	for i, line := range d.StaticList {
		if _, err := ParseBackend(line); err != nil {
			ps.add(at(sub(path, "static_list"), i), "%v", err)
		}
	}
}

func validateExecDiscovery(d *Discovery, path string, ps *problems) {
	if len(d.ExecCommand) == 0 || d.ExecCommand[0] == "" {
		ps.add(sub(path, "exec_command"), "required for kind exec: the program and its arguments")
	}
}

func jsonDefaults(d *Discovery) {
	setString(&d.JsonHostPattern, "host")
	setString(&d.JsonPortPattern, "port")
	setString(&d.JsonWeightPattern, "weight")
	setString(&d.JsonPriorityPattern, "priority")
	setString(&d.JsonSniPattern, "sni")
	setString(&d.JsonMaxConnectionsPattern, "max_connections")
}

func validateJSON(d *Discovery, path string, ps *problems) {
	checkHTTPURL(d.JsonEndpoint, "json", sub(path, "json_endpoint"), ps)
	// The paths use gobetween 0.8's syntax (elgs/gojq), which discovery/json.go
	// parses: steps split at dots outside '…' or "…" quotes, empty steps
	// ignored, a step [N] an array index. Here only its errors are looked for:
	// an unterminated quote, or a bracketed step that is not an index.
	checkPath := func(key, p string) {
		var quote rune
		step := ""
		var bad []string
		endStep := func() {
			if len(step) >= 3 && step[0] == '[' && step[len(step)-1] == ']' {
				inner := step[1 : len(step)-1]
				if strings.Trim(inner, "0123456789") != "" || len(strings.TrimLeft(inner, "0")) > 9 {
					bad = append(bad, step)
				}
			}
			step = ""
		}
		for _, r := range p {
			switch {
			case quote != 0 && r == quote:
				quote = 0
			case quote != 0:
				step += string(r)
			case r == '\'' || r == '"':
				quote = r
			case r == '.':
				endStep()
			default:
				step += string(r)
			}
		}
		endStep()
		if quote != 0 {
			ps.add(sub(path, key), "path %q: unterminated %c quote", p, quote)
		}
		for _, st := range bad {
			ps.add(sub(path, key), "path %q: step %s: an array index must be a non-negative integer", p, st)
		}
	}
	checkPath("json_host_pattern", d.JsonHostPattern)
	checkPath("json_port_pattern", d.JsonPortPattern)
	checkPath("json_weight_pattern", d.JsonWeightPattern)
	checkPath("json_priority_pattern", d.JsonPriorityPattern)
	checkPath("json_max_connections_pattern", d.JsonMaxConnectionsPattern)
	checkPath("json_sni_pattern", d.JsonSniPattern)
}

func validatePlaintext(d *Discovery, path string, ps *problems) {
	checkHTTPURL(d.PlaintextEndpoint, "plaintext", sub(path, "plaintext_endpoint"), ps)
	// An empty pattern means the backend line grammar of ParseBackend, which
	// gobetween 0.8 spelled as its default regexp.
	if d.PlaintextRegexPattern == "" {
		return
	}
	re, err := regexp.Compile(d.PlaintextRegexPattern)
	if err != nil {
		ps.add(sub(path, "plaintext_regex_pattern"), "bad regexp: %v", err)
		return
	}
	names := re.SubexpNames()
	if !slices.Contains(names, "host") || !slices.Contains(names, "port") {
		ps.add(sub(path, "plaintext_regex_pattern"), `needs the named groups host and port, as in (?P<host>\S+):(?P<port>\d+)`)
	}
}

func srvDefaults(d *Discovery) { setString(&d.SrvDnsProtocol, "udp") }

func validateSrv(d *Discovery, path string, ps *problems) {
	if d.SrvLookupServer == "" {
		ps.add(sub(path, "srv_lookup_server"), "required for kind srv: the DNS server as host:port")
	} else if err := checkHostPort(d.SrvLookupServer, false); err != nil {
		ps.add(sub(path, "srv_lookup_server"), "%v", err)
	}
	if d.SrvLookupPattern == "" {
		ps.add(sub(path, "srv_lookup_pattern"), "required for kind srv: the SRV name to query")
	} else if !isDomainName(d.SrvLookupPattern) {
		ps.add(sub(path, "srv_lookup_pattern"), "%q is not a domain name (labels of 1 to 63 bytes, 253 bytes in all)", d.SrvLookupPattern)
	}
	if d.SrvDnsProtocol != "udp" && d.SrvDnsProtocol != "tcp" {
		ps.add(sub(path, "srv_dns_protocol"), "unknown protocol %q (want udp or tcp)", d.SrvDnsProtocol)
	}
}

// isDomainName reports whether s, with or without its final dot, is a DNS
// name the srv kind can query (the root "." is not).
func isDomainName(s string) bool {
	name := strings.TrimSuffix(s, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

func validateConsul(d *Discovery, path string, ps *problems) {
	if d.ConsulHost == "" {
		ps.add(sub(path, "consul_host"), "required for kind consul: the Consul agent as host:port")
	} else if err := checkHostPort(d.ConsulHost, false); err != nil {
		// consul_tls_enabled, not a URL scheme, selects https (as in gobetween 0.8).
		ps.add(sub(path, "consul_host"), "%v", err)
	}
	if d.ConsulServiceName == "" {
		ps.add(sub(path, "consul_service_name"), "required for kind consul")
	}
	bothOrNeither(d.ConsulTlsCertPath, d.ConsulTlsKeyPath, path, "consul_tls_cert_path", "consul_tls_key_path", ps)
}

func validateDocker(d *Discovery, path string, ps *problems) {
	tcp := false
	switch u, err := url.Parse(d.DockerEndpoint); {
	case d.DockerEndpoint == "":
		ps.add(sub(path, "docker_endpoint"), `required for kind docker, as in "unix:///var/run/docker.sock"`)
	case err != nil:
		ps.add(sub(path, "docker_endpoint"), "bad URL %q", d.DockerEndpoint)
	case u.Scheme == "unix":
		if u.Host != "" || u.Path == "" {
			ps.add(sub(path, "docker_endpoint"), "%q: want unix:///path/to/docker.sock", d.DockerEndpoint)
		}
	case u.Scheme == "tcp" || u.Scheme == "http" || u.Scheme == "https":
		// http:// (0.8's sample) is tcp://; https:// is tcp:// with TLS.
		tcp = true
		if err := checkHostPort(u.Host, false); err != nil || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
			ps.add(sub(path, "docker_endpoint"), "%q: want %s://host:port", d.DockerEndpoint, u.Scheme)
		}
	default:
		ps.add(sub(path, "docker_endpoint"), "%q: want a unix://, tcp://, http:// or https:// endpoint", d.DockerEndpoint)
	}
	if d.DockerContainerPrivatePort <= 0 || d.DockerContainerPrivatePort > 65535 {
		ps.add(sub(path, "docker_container_private_port"), "required for kind docker: a port from 1 to 65535, got %d", d.DockerContainerPrivatePort)
	}
	if strings.HasPrefix(d.DockerContainerLabel, "=") {
		ps.add(sub(path, "docker_container_label"), "%q: want key or key=value", d.DockerContainerLabel)
	}
	if strings.Contains(d.DockerContainerHostEnvVar, "=") {
		ps.add(sub(path, "docker_container_host_env_var"), "%q: want the name of an environment variable", d.DockerContainerHostEnvVar)
	}
	// The TLS paths apply with docker_tls_enabled or an https:// endpoint (0.8
	// ignored them otherwise); an empty docker_tls_cacert_path means the system
	// roots.
	if d.DockerTlsEnabled && !tcp && d.DockerEndpoint != "" {
		ps.add(sub(path, "docker_tls_enabled"), "needs a tcp:// or https:// docker_endpoint")
	}
	bothOrNeither(d.DockerTlsCertPath, d.DockerTlsKeyPath, path, "docker_tls_cert_path", "docker_tls_key_path", ps)
}

func lxdDefaults(d *Discovery) {
	setString(&d.LxdServerRemoteName, "local")
	// Kept literal: the lxd provider expands $HOME when it runs.
	setString(&d.LxdConfigDirectory, "$HOME/.config/lxc")
	setString(&d.LxdContainerInterface, "eth0")
	setString(&d.LxdContainerAddressType, "IPv4")
}

func validateLxd(d *Discovery, path string, ps *problems) {
	switch {
	case d.LxdServerAddress == "":
		ps.add(sub(path, "lxd_server_address"), `required for kind lxd ("unix:" or "https://host:8443")`)
	case !strings.HasPrefix(d.LxdServerAddress, "unix:") && !strings.HasPrefix(d.LxdServerAddress, "https:"):
		ps.add(sub(path, "lxd_server_address"), "%q must start with unix: or https:", d.LxdServerAddress)
	case strings.HasPrefix(d.LxdServerAddress, "https:"):
		if u, err := url.Parse(d.LxdServerAddress); err != nil || u.Hostname() == "" {
			ps.add(sub(path, "lxd_server_address"), "%q is not https://host[:port]", d.LxdServerAddress)
		}
	}
	// The remote name names the saved server certificate, servercerts/<name>.crt.
	if n := d.LxdServerRemoteName; n == "." || n == ".." || strings.ContainsAny(n, `/\`) {
		ps.add(sub(path, "lxd_server_remote_name"), "%q cannot name a file", n)
	}
	if d.LxdContainerLabelValue != "" && d.LxdContainerLabelKey == "" {
		ps.add(sub(path, "lxd_container_label_value"), "needs lxd_container_label_key")
	}
	if d.LxdContainerAddressType != "IPv4" && d.LxdContainerAddressType != "IPv6" {
		ps.add(sub(path, "lxd_container_address_type"), "unknown address type %q (want IPv4 or IPv6)", d.LxdContainerAddressType)
	}
	if d.LxdContainerPort < 0 || d.LxdContainerPort > 65535 {
		ps.add(sub(path, "lxd_container_port"), "must be a port from 0 to 65535, got %d", d.LxdContainerPort)
	}
}

// checkHTTPURL reports an endpoint that is not an absolute http or https URL.
func checkHTTPURL(s, kind, path string, ps *problems) {
	if s == "" {
		ps.add(path, "required for kind %s: an http or https URL", kind)
		return
	}
	u, err := url.Parse(s)
	if err != nil {
		ps.add(path, "bad URL %q", s)
		return
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		ps.add(path, "%q is not an http or https URL", s)
	}
}

// bothOrNeither reports a certificate given without its key or the reverse.
func bothOrNeither(cert, key, path, certKey, keyKey string, ps *problems) {
	switch {
	case cert != "" && key == "":
		ps.add(sub(path, keyKey), "required with %s", certKey)
	case cert == "" && key != "":
		ps.add(sub(path, certKey), "required with %s", keyKey)
	}
}
