package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/gobetween/gobetween/api"
	"github.com/gobetween/gobetween/cluster"
	"github.com/gobetween/gobetween/config"
)

// acmeRefresh is how often the leader checks that every acme host has a
// certificate. Renewal itself runs on autocert's timers; this pass loads the
// stored certificates into the leader's Manager (which starts those timers) and
// orders the missing ones.
const acmeRefresh = time.Minute

// blobPrefix namespaces the ACME cache entries among the cluster's blobs.
const blobPrefix = "acme/"

// errNotLeader refuses a request to the ACME CA from a node that does not lead.
var errNotLeader = errors.New("not the cluster leader: only the leader talks to the ACME CA")

// acmeCerts obtains certificates for the servers' tls.acme_hosts from an ACME
// CA (http-01 challenges answered on [acme] http_bind) and serves them: it is
// the proxy's CertSource.
//
// A single node keeps certificates in cache_dir (autocert.DirCache) as
// gobetween 0.8 did. In a cluster one node obtains and renews a certificate and
// every node serves it: the autocert cache is the Raft log (blobCache), so the
// account key, the certificates and the http-01 tokens reach every node. Only
// the leader talks to the CA: the Manager's HTTP client refuses every request
// on any other node (leaderOnly), which also stops autocert's renewal timers on
// a follower from ordering (they retry later, and adopt the leader's renewed
// certificate from the cache). Every node serves the newest certificate in the
// log (stored), so a renewal by the leader reaches followers as soon as they
// apply it. The leader orders a missing certificate at the first handshake that
// asks for it, and proactively: right after it becomes leader, when the acme
// hosts change, and every acmeRefresh.
//
// Its methods are safe for concurrent use.
type acmeCerts struct {
	node   *cluster.Node
	mgr    *autocert.Manager
	http01 http.Handler // the http-01 responder
	shared bool         // the certificates live in the Raft log
	bind   string
	log    *slog.Logger
	// isLeader reports whether this node may talk to the CA (node.IsLeader;
	// replaced in tests).
	isLeader func() bool

	hosts  atomic.Pointer[hostSet] // acme hosts of the last state looked at
	stored sync.Map                // cache key → *storedCert, parsed blobs
	ready  sync.Map                // host → serial last logged as ready
}

// hostSet is the union of the acme_hosts of a state's servers.
type hostSet struct {
	state *cluster.State
	names []string            // sorted, normalised
	set   map[string]struct{} // the same names
}

// storedCert is a certificate parsed from a blob, kept with the blob it came
// from so that a changed blob is parsed again.
type storedCert struct {
	raw  []byte
	cert *tls.Certificate
}

// newACME builds the ACME side of a node from [acme]. shared selects the Raft
// log as the cache (a cluster) instead of cfg.CacheDir. serversHost is
// [cluster] servers_host: like a server's bind, a wildcard http_bind listens
// on it.
func newACME(cfg *config.Acme, node *cluster.Node, shared bool, serversHost string, logger *slog.Logger) *acmeCerts {
	a := &acmeCerts{
		node:     node,
		shared:   shared,
		bind:     onServersHost(cfg.HttpBind, serversHost),
		log:      logger,
		isLeader: node.IsLeader,
	}
	var cache autocert.Cache = autocert.DirCache(cfg.CacheDir)
	if shared {
		cache = &blobCache{node: node}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	a.mgr = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      &reportingCache{Cache: cache, log: logger},
		HostPolicy: a.hostPolicy,
		Client: &acme.Client{
			DirectoryURL: cfg.DirectoryURL,
			UserAgent:    "gobetween/" + version,
			HTTPClient:   &http.Client{Transport: &leaderOnly{leader: func() bool { return a.isLeader() }, next: transport}},
		},
	}
	// Made before anything can order: autocert offers http-01 only once its
	// handler exists.
	a.http01 = a.mgr.HTTPHandler(nil)
	return a
}

// onServersHost is bind with a wildcard or empty host replaced by serversHost
// (when set), as proxy.Options.ServersHost does for servers.
func onServersHost(bind, serversHost string) string {
	host, port, err := net.SplitHostPort(bind)
	if serversHost == "" || err != nil {
		return bind
	}
	switch host {
	case "", "0.0.0.0", "::":
		return net.JoinHostPort(serversHost, port)
	}
	return bind
}

// GetCertificate implements proxy.CertSource. hello names one of a server's
// acme hosts.
func (a *acmeCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !a.shared {
		return a.mgr.GetCertificate(hello)
	}
	name := normalHost(hello.ServerName)
	for _, key := range []string{name, name + "+rsa"} {
		if c := a.storedCert(key, name); c != nil && hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	if !a.isLeader() {
		return nil, fmt.Errorf("acme: no certificate for %q yet; the cluster leader obtains it", name)
	}
	return a.mgr.GetCertificate(hello)
}

// storedCert is the certificate the log holds under key for host name, if it
// is valid now.
func (a *acmeCerts) storedCert(key, name string) *tls.Certificate {
	raw, ok := a.node.State().Blobs[blobPrefix+key]
	if !ok {
		return nil
	}
	var c *tls.Certificate
	if v, ok := a.stored.Load(key); ok && bytes.Equal(v.(*storedCert).raw, raw) {
		c = v.(*storedCert).cert
	} else {
		// autocert's entry: the private key, then the chain, all PEM;
		// X509KeyPair picks each part out of the same bytes.
		pair, err := tls.X509KeyPair(raw, raw)
		if err != nil {
			a.log.Warn("acme: stored certificate does not parse", "key", key, "err", err)
			return nil
		}
		c = &pair
		a.stored.Store(key, &storedCert{raw: raw, cert: c})
	}
	now := time.Now()
	if now.Before(c.Leaf.NotBefore) || now.After(c.Leaf.NotAfter) || c.Leaf.VerifyHostname(name) != nil {
		return nil
	}
	return c
}

// hostPolicy allows the acme hosts of the servers in the node's current state.
// autocert asks it before every certificate it serves or orders and before
// answering an http-01 request (whose Host may carry a port).
func (a *acmeCerts) hostPolicy(_ context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if _, ok := a.currentHosts().set[normalHost(host)]; !ok {
		return fmt.Errorf("acme: %q is not in any server's tls.acme_hosts", host)
	}
	return nil
}

// currentHosts is the union of the acme_hosts of the servers in the node's
// current state, computed once per state.
func (a *acmeCerts) currentHosts() *hostSet {
	st := a.node.State()
	if hs := a.hosts.Load(); hs != nil && hs.state == st {
		return hs
	}
	hs := &hostSet{state: st, set: map[string]struct{}{}}
	for _, e := range st.Servers {
		if e.Server.Tls == nil {
			continue
		}
		for _, h := range e.Server.Tls.AcmeHosts {
			hs.set[normalHost(h)] = struct{}{}
		}
	}
	for h := range hs.set {
		hs.names = append(hs.names, h)
	}
	slices.Sort(hs.names)
	a.hosts.Store(hs)
	return hs
}

// normalHost is a host name as acme_hosts match it: lower case, no trailing dot.
func normalHost(h string) string {
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// Handler answers the CA's http-01 requests from the cache (any node: the
// tokens are in the log) and redirects every other GET or HEAD to https.
func (a *acmeCerts) Handler() http.Handler { return a.http01 }

// Run keeps the leader's certificates in place until ctx ends: on the leader,
// right after it becomes leader, when the acme hosts change and every
// acmeRefresh, it asks autocert for every acme host's certificate, which
// orders a missing one. A pass in progress is abandoned at ctx's end (autocert
// bounds it by its own timeouts).
func (a *acmeCerts) Run(ctx context.Context) {
	changes, cancel := a.node.Subscribe()
	defer cancel()
	tick := time.NewTicker(time.Second) // leadership is polled
	defer tick.Stop()
	wasLeader := false
	var last time.Time
	var lastHosts []string
	for {
		leader := a.isLeader()
		hosts := a.currentHosts().names
		if leader && len(hosts) > 0 && (!wasLeader || !slices.Equal(hosts, lastHosts) || time.Since(last) >= acmeRefresh) {
			done := make(chan struct{})
			go func() { defer close(done); a.ensure(hosts) }()
			select {
			case <-done:
			case <-ctx.Done():
				return
			}
			last, lastHosts = time.Now(), hosts
		}
		wasLeader = leader
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-changes:
		}
	}
}

// ensure asks the Manager for the certificate of each host, concurrently; a
// host without one is ordered (the Manager orders a host once at a time).
func (a *acmeCerts) ensure(hosts []string) {
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Go(func() {
			// An ECDSA-capable client: the certificate most clients get.
			hello := &tls.ClientHelloInfo{ServerName: h, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}
			c, err := a.mgr.GetCertificate(hello)
			if err != nil {
				a.log.Warn("acme: no certificate", "host", h, "err", err)
				return
			}
			serial := c.Leaf.SerialNumber.String()
			if old, ok := a.ready.Swap(h, serial); !ok || old.(string) != serial {
				a.log.Info("acme: certificate ready", "host", h, "serial", serial, "not_after", c.Leaf.NotAfter, "issuer", c.Leaf.Issuer.CommonName)
			}
		})
	}
	wg.Wait()
}

// Serve runs the http-01 listener on http_bind until ctx ends. A bind failure
// is returned (run logs it; the balancer keeps serving).
func (a *acmeCerts) Serve(ctx context.Context) error {
	return api.Serve(ctx, a.bind, a.Handler(), nil, a.log)
}

// leaderOnly is the ACME client's transport: it passes requests on only while
// this node leads.
type leaderOnly struct {
	leader func() bool
	next   http.RoundTripper
}

func (l *leaderOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if !l.leader() {
		return nil, errNotLeader
	}
	return l.next.RoundTrip(r)
}

// blobCache is an autocert.Cache in the cluster's Raft log: Get reads this
// node's applied state, Put and Delete are log writes (forwarded to the leader
// by Node.Apply).
type blobCache struct{ node *cluster.Node }

func (c *blobCache) Get(_ context.Context, key string) ([]byte, error) {
	v, ok := c.node.State().Blobs[blobPrefix+key]
	if !ok {
		return nil, autocert.ErrCacheMiss
	}
	return bytes.Clone(v), nil
}

func (c *blobCache) Put(ctx context.Context, key string, data []byte) error {
	if _, err := c.node.Apply(ctx, cluster.Command{Type: cluster.PutBlob, Name: blobPrefix + key, Value: data}); err != nil {
		return fmt.Errorf("acme cache: %w", err)
	}
	// Followers learn that an entry committed with the next append; a barrier
	// sends one now, so that an http-01 token is on every node before the CA
	// asks any of them.
	if c.node.IsLeader() {
		_ = c.node.Barrier(ctx)
	}
	return nil
}

func (c *blobCache) Delete(ctx context.Context, key string) error {
	if _, err := c.node.Apply(ctx, cluster.Command{Type: cluster.DeleteBlob, Name: blobPrefix + key}); err != nil {
		return fmt.Errorf("acme cache: %w", err)
	}
	return nil
}

// reportingCache logs every certificate this node stores: autocert stores a
// certificate right after the CA issued it to this node (first order or
// renewal).
type reportingCache struct {
	autocert.Cache
	log *slog.Logger
}

func (c *reportingCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	// Certificate keys are the host, or host+rsa; account keys, tokens and
	// tls-alpn-01 token certificates have other suffixes.
	if host, kind, found := strings.Cut(key, "+"); !found || kind == "rsa" {
		attrs := []any{"host", host, "key", key}
		if pair, perr := tls.X509KeyPair(data, data); perr == nil {
			attrs = append(attrs, "serial", pair.Leaf.SerialNumber.String(), "not_after", pair.Leaf.NotAfter)
		}
		if err != nil {
			c.log.Error("acme: certificate obtained, but not stored", append(attrs, "err", err)...)
		} else {
			c.log.Info("acme: certificate obtained and stored", attrs...)
		}
	}
	return err
}
