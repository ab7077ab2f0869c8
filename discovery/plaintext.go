package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["plaintext"] = newPlaintext }

// plaintextProvider fetches plaintext_endpoint and reads one backend per
// non-blank line of the body.
type plaintextProvider struct {
	endpoint *httpEndpoint
	// re is plaintext_regex_pattern; nil means the backend line grammar of
	// config.ParseBackend (0.8's default pattern, with the options in any order).
	re *regexp.Regexp
}

func newPlaintext(cfg config.Discovery) (Provider, error) {
	ep, err := newHTTPEndpoint(cfg.PlaintextEndpoint)
	if err != nil {
		return nil, fmt.Errorf("plaintext_endpoint: %w", err)
	}
	p := &plaintextProvider{endpoint: ep}
	if cfg.PlaintextRegexPattern != "" {
		// gobetween 0.8 compiled the pattern with MustCompile at every line, so
		// a bad one panicked the process; config validation rejects it first.
		re, err := regexp.Compile(cfg.PlaintextRegexPattern)
		if err != nil {
			return nil, fmt.Errorf("plaintext_regex_pattern: %w", err)
		}
		names := re.SubexpNames()
		if !slices.Contains(names, "host") || !slices.Contains(names, "port") {
			return nil, errors.New("plaintext_regex_pattern: needs the named groups host and port")
		}
		p.re = re
	}
	return p, nil
}

// Fetch fails on a transport error, a non-2xx status, a body over maxPayload
// or any bad line (gobetween 0.8 skipped bad lines and ignored the status, so
// an error page could empty the pool).
func (p *plaintextProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	body, err := p.endpoint.get(ctx)
	if err != nil {
		return nil, err
	}
	list, err := parsePlaintext(string(body), p.re)
	if err != nil {
		return nil, fmt.Errorf("GET %s: body %w", p.endpoint.display, err)
	}
	return list, nil
}

// parsePlaintext reads the backends of a plaintext body: with re nil each
// non-blank line is a backend line; otherwise each non-blank line, trimmed,
// must match re, whose named groups give the fields (an empty or missing
// optional group means its default).
func parsePlaintext(text string, re *regexp.Regexp) ([]config.Backend, error) {
	if re == nil {
		return parseBackendLines(text, config.ParseBackend)
	}
	names := re.SubexpNames()
	return parseBackendLines(text, func(line string) (config.Backend, error) {
		line = strings.TrimSpace(line)
		m := re.FindStringSubmatch(line)
		if m == nil {
			return config.Backend{}, fmt.Errorf("%q does not match plaintext_regex_pattern", line)
		}
		// A name may label several groups (alternatives); the first that
		// matched something wins.
		var f backendFields
		for i, name := range names {
			if v := f.field(name); v != nil && *v == "" {
				*v = m[i]
			}
		}
		b, err := f.backend()
		if err != nil {
			return config.Backend{}, fmt.Errorf("%q: %w", line, err)
		}
		return b, nil
	})
}

// backendFields are the fields of one backend as text, as a regexp or a JSON
// document gives them; an empty optional field means its default.
type backendFields struct {
	host, port, weight, priority, maxConnections, sni string
}

// field returns the field of a plaintext_regex_pattern group name, or nil for
// other names. The names are gobetween 0.8's: host, port, weight, priority,
// max_connections and sni.
func (f *backendFields) field(name string) *string {
	switch name {
	case "host":
		return &f.host
	case "port":
		return &f.port
	case "weight":
		return &f.weight
	case "priority":
		return &f.priority
	case "max_connections":
		return &f.maxConnections
	case "sni":
		return &f.sni
	}
	return nil
}

// backend writes the fields as a backend line and parses it with
// config.ParseBackend, so that every kind checks hosts, ports and numbers the
// same way. A host may come with or without the brackets of an IPv6 address.
func (f *backendFields) backend() (config.Backend, error) {
	if f.host == "" {
		return config.Backend{}, errors.New("missing host")
	}
	if f.port == "" {
		return config.Backend{}, errors.New("missing port")
	}
	fields := []struct{ key, val string }{
		{"host", f.host}, {"port", f.port}, {"weight", f.weight}, {"priority", f.priority},
		{"max_connections", f.maxConnections}, {"sni", f.sni},
	}
	for _, v := range fields {
		if strings.ContainsAny(v.val, " \t\n\v\f\r") {
			return config.Backend{}, fmt.Errorf("%s %q contains blanks", v.key, v.val)
		}
	}
	host := f.host
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	var sb strings.Builder
	sb.WriteString(net.JoinHostPort(host, f.port))
	for _, opt := range fields[2:] {
		if opt.val != "" {
			sb.WriteString(" " + opt.key + "=" + opt.val)
		}
	}
	return config.ParseBackend(sb.String())
}

// httpEndpoint GETs one URL for a discovery kind. Its client is kept for the
// provider's life, so connections are reused between fetches (gobetween 0.8
// built a client per fetch). The fetch context bounds the whole exchange,
// body included.
type httpEndpoint struct {
	url     string
	display string // url with any password masked, for errors
	scheme  string
	client  *http.Client
}

// maxHTTPRedirects is net/http's default limit, kept explicit because
// CheckRedirect replaces the default policy.
const maxHTTPRedirects = 10

func newHTTPEndpoint(raw string) (*httpEndpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("bad URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http or https URL", u.Redacted())
	}
	e := &httpEndpoint{url: raw, display: u.Redacted(), scheme: u.Scheme}
	e.client = &http.Client{CheckRedirect: e.checkRedirect}
	return e, nil
}

// checkRedirect follows redirects within the endpoint's scheme only: an https
// endpoint is never downgraded to http, nor an http one sent elsewhere.
func (e *httpEndpoint) checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != e.scheme {
		return fmt.Errorf("redirect to %s refused: the endpoint is %s", req.URL.Redacted(), e.scheme)
	}
	if len(via) >= maxHTTPRedirects {
		return fmt.Errorf("stopped after %d redirects", maxHTTPRedirects)
	}
	return nil
}

// get returns the body of a 2xx answer; any other status is an error that
// names it. The body is capped at maxPayload.
func (e *httpEndpoint) get(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", e.display, err)
	}
	req.Header.Set("User-Agent", "gobetween")
	resp, err := e.client.Do(req)
	if err != nil {
		// The error names the method and URL already.
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("GET %s: status %s", e.display, resp.Status)
	}
	body, err := readPayload(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading body: %w", e.display, err)
	}
	return body, nil
}
