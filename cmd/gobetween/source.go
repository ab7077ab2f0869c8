package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	consul "github.com/hashicorp/consul/api"

	"github.com/gobetween/gobetween/api"
	"github.com/gobetween/gobetween/cluster"
)

// Where the config text comes from: a file (-c, from-file), an HTTP(S) URL
// (from-url) or a Consul KV key (from-consul). Each is read at start, on SIGHUP
// and, with --watch, every interval; the text is decoded like a file.
const (
	sourceFile   = "file"
	sourceURL    = "url"
	sourceConsul = "consul"
)

const (
	// maxConfigSize caps a config read from the network.
	maxConfigSize = 8 << 20
	// fetchTimeout bounds one read of a network source.
	fetchTimeout = 30 * time.Second
)

// configSource reads the raw config text.
type configSource interface {
	// Read returns the config text as the source holds it now.
	Read(ctx context.Context) ([]byte, error)
	// String names the source in logs and error messages.
	String() string
	// Info is the source as GET / reports it.
	Info() api.ConfigSource
}

// newSource builds the source the command line names.
func newSource(opts options) (configSource, error) {
	switch opts.source {
	case sourceURL:
		return &urlSource{url: opts.sourceAddr, client: &http.Client{Timeout: fetchTimeout}}, nil
	case sourceConsul:
		return newConsulSource(opts.sourceAddr, opts.consulScheme, opts.consulKey)
	default:
		return fileSource{path: opts.configPath}, nil
	}
}

// fileSource is a config file.
type fileSource struct{ path string }

func (s fileSource) Read(context.Context) ([]byte, error) { return os.ReadFile(s.path) }
func (s fileSource) String() string                       { return s.path }
func (s fileSource) Info() api.ConfigSource {
	return api.ConfigSource{Kind: sourceFile, Path: s.path}
}

// urlSource is a config served over HTTP(S): a GET that must answer 2xx with a
// body of at most maxConfigSize bytes.
type urlSource struct {
	url    string
	client *http.Client
}

func (s *urlSource) Read(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", s.url, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", s.url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("GET %s: status %s", s.url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: reading the body: %w", s.url, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("GET %s: the config is larger than %d bytes", s.url, maxConfigSize)
	}
	return data, nil
}

func (s *urlSource) String() string { return s.url }
func (s *urlSource) Info() api.ConfigSource {
	return api.ConfigSource{Kind: sourceURL, URL: s.url}
}

// consulSource is a config kept as the value of one Consul KV key. The client
// takes its other settings (token, TLS files, datacenter) from Consul's usual
// environment variables (CONSUL_HTTP_TOKEN, CONSUL_CACERT, ...).
type consulSource struct {
	host, scheme, key string
	kv                *consul.KV
}

func newConsulSource(host, scheme, key string) (*consulSource, error) {
	cfg := consul.DefaultConfig()
	cfg.Address = host
	cfg.Scheme = scheme
	c, err := consul.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", host, err)
	}
	return &consulSource{host: host, scheme: scheme, key: key, kv: c.KV()}, nil
}

func (s *consulSource) Read(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	pair, _, err := s.kv.Get(s.key, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s, err)
	}
	if pair == nil {
		return nil, fmt.Errorf("%s: no such key", s)
	}
	if len(pair.Value) > maxConfigSize {
		return nil, fmt.Errorf("%s: the config is larger than %d bytes", s, maxConfigSize)
	}
	return pair.Value, nil
}

func (s *consulSource) String() string {
	return fmt.Sprintf("consul %s://%s key %q", s.scheme, s.host, s.key)
}

func (s *consulSource) Info() api.ConfigSource {
	return api.ConfigSource{Kind: sourceConsul, Host: s.host, Key: s.key}
}

// watchSource reads src every interval until ctx ends and sends the text on
// out each time it differs from the previous read (the first read is compared
// with initial, the text the process started with). A failed read is logged
// once until the source answers again; the running config is kept.
func watchSource(ctx context.Context, src configSource, interval time.Duration, initial []byte, out chan<- []byte, logger *slog.Logger) {
	last := initial
	var lastErr string
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := src.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if err.Error() != lastErr {
				logger.Error("watch: the config source failed; the running config is kept", "source", src.String(), "err", err)
				lastErr = err.Error()
			}
			continue
		}
		if lastErr != "" {
			logger.Info("watch: the config source answers again", "source", src.String())
			lastErr = ""
		}
		if bytes.Equal(data, last) {
			continue
		}
		last = data
		select {
		case out <- data:
		case <-ctx.Done():
			return
		}
	}
}

// errNoSource is returned when the command line names no config at all.
var errNoSource = errors.New("no config file, URL or Consul key: use -c FILE, from-url URL or from-consul HOST:PORT")

// originOf is the origin in the log of the servers the command line's config
// source defines.
func originOf(opts options) string {
	switch opts.source {
	case sourceURL:
		return cluster.OriginURL
	case sourceConsul:
		return cluster.OriginConsul
	}
	return cluster.OriginConfig
}
