package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["consul"] = newConsul }

// consulMaxWait is the longest wait Consul grants a blocking query; it is also
// the wait without a deadline (timeout 0).
const consulMaxWait = 10 * time.Minute

// consulProvider lists the instances of one Consul service from the health
// endpoint (/v1/health/service/<name>) with the official client, built once and
// reused. It is a Watcher: Watch is a blocking query on the X-Consul-Index of
// the previous answer. One Source uses it at a time (index is not guarded).
type consulProvider struct {
	health      *api.Health
	service     string
	tag         string
	passingOnly bool
	// index is the X-Consul-Index of the last answer, 0 before the first one
	// or after Consul's index went backwards (the next query then returns at once).
	index uint64
}

// newConsul builds the client: TLS (consul_tls_*) with the client certificate
// and CA read now, basic auth only when a user or password is set, the ACL
// token sent as X-Consul-Token. Left empty, the token falls back to
// CONSUL_HTTP_TOKEN(_FILE) as in every Consul client.
func newConsul(cfg config.Discovery) (Provider, error) {
	if cfg.ConsulHost == "" || cfg.ConsulServiceName == "" {
		return nil, errors.New("consul_host and consul_service_name are required")
	}
	if strings.Contains(cfg.ConsulHost, "://") {
		return nil, fmt.Errorf("consul_host %q: want host:port (consul_tls_enabled selects https)", cfg.ConsulHost)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	scheme := "http"
	if cfg.ConsulTlsEnabled {
		tc, err := api.SetupTLSConfig(&api.TLSConfig{
			Address:  cfg.ConsulHost,
			CAFile:   cfg.ConsulTlsCacertPath,
			CertFile: cfg.ConsulTlsCertPath,
			KeyFile:  cfg.ConsulTlsKeyPath,
		})
		if err != nil {
			return nil, fmt.Errorf("consul tls: %w", err)
		}
		tr.TLSClientConfig = tc
		scheme = "https"
	}
	c := &api.Config{
		Address:    cfg.ConsulHost,
		Scheme:     scheme,
		Datacenter: cfg.ConsulDatacenter,
		Token:      cfg.ConsulAclToken,
		HttpClient: &http.Client{Transport: cappedBodies{tr}},
	}
	if cfg.ConsulAuthUsername != "" || cfg.ConsulAuthPassword != "" {
		c.HttpAuth = &api.HttpBasicAuth{Username: cfg.ConsulAuthUsername, Password: cfg.ConsulAuthPassword}
	}
	client, err := api.NewClient(c)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	return &consulProvider{
		health:      client.Health(),
		service:     cfg.ConsulServiceName,
		tag:         cfg.ConsulServiceTag,
		passingOnly: cfg.ConsulServicePassingOnly,
	}, nil
}

// Fetch asks for the current instances without waiting.
func (p *consulProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	return p.query(ctx, 0, 0)
}

// Watch is a blocking query: Consul answers when the service's index passes
// the one of the previous answer, or after the wait with the unchanged list.
// The first Watch (no index yet) answers at once.
func (p *consulProvider) Watch(ctx context.Context) ([]config.Backend, error) {
	return p.query(ctx, p.index, consulWait(ctx))
}

func (p *consulProvider) query(ctx context.Context, index uint64, wait time.Duration) ([]config.Backend, error) {
	q := &api.QueryOptions{WaitIndex: index, WaitTime: wait}
	entries, meta, err := p.health.Service(p.service, p.tag, p.passingOnly, q.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul service %q: %w", p.service, err)
	}
	list, err := consulBackends(entries)
	if err != nil {
		return nil, fmt.Errorf("consul service %q: %w", p.service, err)
	}
	p.index = nextConsulIndex(p.index, meta.LastIndex)
	return list, nil
}

// consulWait is the wait of a blocking query under ctx. Consul may add up to
// wait/16 of jitter, and the answer must arrive before ctx's deadline (the
// discovery timeout, 2s by default) or the fetch fails; so the wait is the time
// left, less a margin for the network (a quarter of it, at most 2s), divided by
// 17/16: 1.41s of a 2s timeout, 4m40s of a 5m one. A longer timeout means
// fewer empty answers, not a later change: a change ends the wait at once.
func consulWait(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return consulMaxWait
	}
	left := time.Until(d)
	w := (left - min(left/4, 2*time.Second)) * 16 / 17
	return min(max(w, time.Millisecond), consulMaxWait)
}

// nextConsulIndex applies the rules of Consul's blocking-query documentation:
// an index that goes backwards (a snapshot restore, a new leader) resets to 0,
// and an index of 0 becomes 1 so that the next query blocks.
func nextConsulIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0
	case got == 0:
		return 1
	}
	return got
}

// consulBackends converts health entries: host = Service.Address, else
// Node.Address; port = Service.Port; weight = Service.Weights.Passing (1 when
// unset); priority 1; sni = the value of a tag "sni=<name>". An entry without a
// host or with a value a backend line cannot hold fails the whole answer.
func consulBackends(entries []*api.ServiceEntry) ([]config.Backend, error) {
	out := make([]config.Backend, 0, len(entries))
	for i, e := range entries {
		if e == nil || e.Service == nil {
			return nil, fmt.Errorf("entry %d: no service", i)
		}
		s := e.Service
		host := s.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" {
			return nil, fmt.Errorf("entry %d (service id %q): no service or node address", i, s.ID)
		}
		b := config.Backend{
			Target:   config.Target{Host: host, Port: strconv.Itoa(s.Port)},
			Weight:   1,
			Priority: 1,
		}
		if s.Weights.Passing > 0 {
			b.Weight = s.Weights.Passing
		}
		for _, tag := range s.Tags {
			if v, ok := strings.CutPrefix(tag, "sni="); ok {
				b.Sni = v
				break
			}
		}
		b, err := lineChecked(b)
		if err != nil {
			return nil, fmt.Errorf("entry %d (service id %q): %w", i, s.ID, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// lineChecked returns b if ParseBackend reads its backend line back as b, so
// that a backend built from an API answer obeys the rules of a backend line: a
// host without blanks, an IPv6 host without brackets, a port from 1 to 65535,
// counts that fit, an sni without blanks.
func lineChecked(b config.Backend) (config.Backend, error) {
	line := config.FormatBackend(b)
	got, err := config.ParseBackend(line)
	if err != nil {
		return config.Backend{}, err
	}
	if got != b {
		return config.Backend{}, fmt.Errorf("backend %q does not read back as itself", line)
	}
	return got, nil
}

// cappedBodies reads every response body through readPayload before the client
// decodes it, so an endless or huge answer is a failed fetch.
type cappedBodies struct{ next http.RoundTripper }

func (c cappedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := readPayload(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}
