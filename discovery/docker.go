package discovery

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["docker"] = newDocker }

// dockerProvider lists the running containers of one Docker engine through a
// client it keeps for its lifetime (gobetween 0.8 built a client per fetch).
type dockerProvider struct {
	client   *client.Client
	endpoint string
	filters  filters.Args
	envVar   string // docker_container_host_env_var; "" = not used
	view     dockerView
}

// dockerView holds what turning a container list into backends needs; it is
// separate from the client so that the conversion is pure (and fuzzed).
type dockerView struct {
	privatePort uint16
	// engineHost replaces a published port's unspecified address (0.0.0.0,
	// ::): the host of a tcp:// endpoint, 127.0.0.1 for a unix:// one.
	engineHost string
}

// newDocker builds the docker provider. TLS applies with docker_tls_enabled
// or an https:// endpoint (0.8 ignored the paths otherwise); an empty
// docker_tls_cacert_path means the system roots, empty cert and key paths no
// client certificate.
func newDocker(cfg config.Discovery) (Provider, error) {
	ep, err := parseDockerEndpoint(cfg.DockerEndpoint)
	if err != nil {
		return nil, fmt.Errorf("docker_endpoint: %w", err)
	}
	if cfg.DockerContainerPrivatePort <= 0 || cfg.DockerContainerPrivatePort > 65535 {
		return nil, fmt.Errorf("docker_container_private_port: want a port from 1 to 65535, got %d", cfg.DockerContainerPrivatePort)
	}
	if strings.HasPrefix(cfg.DockerContainerLabel, "=") {
		return nil, fmt.Errorf("docker_container_label %q: want key or key=value", cfg.DockerContainerLabel)
	}
	opts := []client.Opt{client.WithHost(ep.host), client.WithAPIVersionNegotiation()}
	if cfg.DockerTlsEnabled || ep.tls {
		if strings.HasPrefix(ep.host, "unix://") {
			return nil, fmt.Errorf("docker_tls_enabled: TLS needs a tcp:// or https:// endpoint, got %q", cfg.DockerEndpoint)
		}
		if (cfg.DockerTlsCertPath == "") != (cfg.DockerTlsKeyPath == "") {
			return nil, fmt.Errorf("docker_tls_cert_path and docker_tls_key_path: give both or neither")
		}
		opts = append(opts, client.WithTLSClientConfig(cfg.DockerTlsCacertPath, cfg.DockerTlsCertPath, cfg.DockerTlsKeyPath))
	}
	c, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", cfg.DockerEndpoint, err)
	}
	args := filters.NewArgs(filters.Arg("status", "running"))
	if cfg.DockerContainerLabel != "" {
		args.Add("label", cfg.DockerContainerLabel)
	}
	return &dockerProvider{
		client:   c,
		endpoint: cfg.DockerEndpoint,
		filters:  args,
		envVar:   cfg.DockerContainerHostEnvVar,
		view:     dockerView{privatePort: uint16(cfg.DockerContainerPrivatePort), engineHost: ep.engineHost},
	}, nil
}

// dockerEndpoint is a parsed docker_endpoint.
type dockerEndpoint struct {
	host       string // for client.WithHost: unix:///path or tcp://host:port
	tls        bool   // https:// asks for TLS whatever docker_tls_enabled says
	engineHost string // the engine's host, for ports published on every interface
}

// parseDockerEndpoint accepts unix:///path, and tcp://, http:// (0.8's sample
// config; the same as tcp://) or https:// (tcp:// with TLS) followed by
// host:port and an optional "/".
func parseDockerEndpoint(s string) (dockerEndpoint, error) {
	u, err := url.Parse(s)
	if err != nil {
		return dockerEndpoint{}, fmt.Errorf("bad URL %q", s)
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || u.Path == "" {
			return dockerEndpoint{}, fmt.Errorf("%q: want unix:///path/to/docker.sock", s)
		}
		return dockerEndpoint{host: "unix://" + u.Path, engineHost: "127.0.0.1"}, nil
	case "tcp", "http", "https":
		h, port, err := net.SplitHostPort(u.Host)
		if err != nil || h == "" || (u.Path != "" && u.Path != "/") {
			return dockerEndpoint{}, fmt.Errorf("%q: want %s://host:port", s, u.Scheme)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return dockerEndpoint{}, fmt.Errorf("%q: want a port from 1 to 65535", s)
		}
		return dockerEndpoint{host: "tcp://" + u.Host, tls: u.Scheme == "https", engineHost: h}, nil
	default:
		return dockerEndpoint{}, fmt.Errorf("%q: want a unix://, tcp://, http:// or https:// endpoint", s)
	}
}

// Fetch lists the running containers that carry the label and turns them into
// backends (see dockerView.backends). With docker_container_host_env_var set,
// each container with a published private port is inspected for the variable;
// a container that is gone by then is left out.
func (p *dockerProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	list, err := p.client.ContainerList(ctx, container.ListOptions{Filters: p.filters})
	if err != nil {
		return nil, fmt.Errorf("list containers at %s: %w", p.endpoint, err)
	}
	var envHosts map[string]string
	if p.envVar != "" {
		list, envHosts, err = p.hostsFromEnv(ctx, list)
		if err != nil {
			return nil, err
		}
	}
	return p.view.backends(list, envHosts), nil
}

// hostsFromEnv reads the host variable of every container whose private port
// is published, returning the list without the containers that disappeared
// meanwhile and the values found by container ID.
func (p *dockerProvider) hostsFromEnv(ctx context.Context, list []container.Summary) ([]container.Summary, map[string]string, error) {
	hosts := make(map[string]string)
	kept := list[:0:0]
	for _, c := range list {
		if !p.view.published(c) {
			kept = append(kept, c)
			continue
		}
		info, err := p.client.ContainerInspect(ctx, c.ID)
		if cerrdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("inspect container %s at %s: %w", c.ID, p.endpoint, err)
		}
		kept = append(kept, c)
		if info.Config == nil {
			continue
		}
		if h := envValue(info.Config.Env, p.envVar); h != "" {
			hosts[c.ID] = h
		}
	}
	return kept, hosts, nil
}

// Close releases the client's idle connections.
func (p *dockerProvider) Close() error { return p.client.Close() }

// envValue returns the value of name in a NAME=value list, brackets removed
// from an IPv6 address ("" if absent).
func envValue(env []string, name string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			v = strings.TrimSpace(v)
			if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return ""
}

// published reports whether c publishes the private port on the host.
func (v dockerView) published(c container.Summary) bool {
	return slices.ContainsFunc(c.Ports, func(p container.Port) bool {
		return p.PrivatePort == v.privatePort && p.PublicPort != 0
	})
}

// backends turns running containers into backends, weight and priority 1, sni
// from the container's label "sni" (as in 0.8). envHosts holds the
// docker_container_host_env_var values by container ID.
//
// A container that publishes the private port gives one backend per host
// address it is published on, port = the public port, host = (as in 0.8) the
// env var value if the container has it, else the published IP, else for 0.0.0.0
// or :: the engine host (0.8 left a unix endpoint's "0.0.0.0"). Published on
// both 0.0.0.0 and :: (or over tcp and udp) gives one target: the 0.0.0.0
// port, even when Docker gave :: another one.
//
// A container that does not publish it (0.8 gave port 0 there: issues #46,
// #47) is reached at its own address with the private port, whether the image
// exposes the port or not: the label says it serves there. The address is its
// IPv4 address on the first network in name order that has one, else the
// first global IPv6 address; with network mode "host" it is the engine host. A
// container without any address (network "none") gives no backend.
func (v dockerView) backends(list []container.Summary, envHosts map[string]string) []config.Backend {
	out := make([]config.Backend, 0, len(list))
	for _, c := range list {
		sni := c.Labels["sni"]
		first := len(out)
		add := func(host string, port uint16) {
			t := config.Target{Host: host, Port: strconv.Itoa(int(port))}
			if slices.ContainsFunc(out[first:], func(b config.Backend) bool { return b.Target == t }) {
				return
			}
			out = append(out, config.Backend{Target: t, Weight: 1, Priority: 1, Sni: sni})
		}
		// Docker allocates the host port of a wildcard binding separately for
		// 0.0.0.0 and ::, and they differ when one family's port is taken. Both
		// stand for the engine host: the IPv4 one is used, the IPv6 one only
		// when there is no IPv4 wildcard.
		v4wild := slices.ContainsFunc(c.Ports, func(p container.Port) bool {
			a := net.ParseIP(p.IP)
			return p.PrivatePort == v.privatePort && p.PublicPort != 0 && a != nil && a.IsUnspecified() && a.To4() != nil
		})
		for _, p := range c.Ports {
			if p.PrivatePort != v.privatePort || p.PublicPort == 0 {
				continue
			}
			if a := net.ParseIP(p.IP); v4wild && a != nil && a.IsUnspecified() && a.To4() == nil {
				continue
			}
			add(v.publishedHost(p.IP, envHosts[c.ID]), p.PublicPort)
		}
		if len(out) > first {
			continue
		}
		if host := v.containerHost(c); host != "" {
			add(host, v.privatePort)
		}
	}
	return out
}

// publishedHost is the host of a port published on ip.
func (v dockerView) publishedHost(ip, envHost string) string {
	if envHost != "" {
		return envHost
	}
	if a := net.ParseIP(ip); a == nil || a.IsUnspecified() {
		return v.engineHost
	}
	return ip
}

// containerHost is the address of the container itself ("" if it has none).
func (v dockerView) containerHost(c container.Summary) string {
	if c.HostConfig.NetworkMode == "host" {
		return v.engineHost
	}
	if c.NetworkSettings == nil {
		return ""
	}
	nets := c.NetworkSettings.Networks
	names := slices.Sorted(maps.Keys(nets))
	for _, name := range names {
		if ep := nets[name]; ep != nil {
			if ip := net.ParseIP(ep.IPAddress); ip.To4() != nil && !ip.IsUnspecified() {
				return ip.String()
			}
		}
	}
	for _, name := range names {
		if ep := nets[name]; ep != nil {
			if ip := net.ParseIP(ep.GlobalIPv6Address); ip != nil && !ip.IsUnspecified() {
				return ip.String()
			}
		}
	}
	return ""
}
