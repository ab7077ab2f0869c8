package discovery

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["lxd"] = newLxd }

// lxdProvider lists the running containers of an LXD server through its REST
// API (GET /1.0/instances?recursion=2), over the local unix socket or over
// HTTPS with a client certificate, as the lxc client does. Over HTTPS the
// first Fetch sets up the certificates and the trust (see lxdHTTPS) and later
// ones reuse the client; a failed setup is tried again at the next Fetch.
type lxdProvider struct {
	base   string       // "http://lxd" (unix socket) or "https://host:port"
	client *http.Client // nil until the HTTPS setup succeeded
	https  lxdHTTPS
	view   lxdView
}

// lxdHTTPS holds what the HTTPS setup needs; the files follow lxc's config
// directory layout: client.crt, client.key and servercerts/<remote>.crt.
type lxdHTTPS struct {
	host          string // host:port
	remote        string
	password      string
	dir           string
	generateCerts bool
	acceptCert    bool
}

// lxdView selects containers and turns them into backends.
type lxdView struct {
	labelKey, labelValue string
	port                 int
	portKey              string
	iface, ifaceKey      string
	sniKey               string
	family               string // "inet" or "inet6"
}

func newLxd(cfg config.Discovery) (Provider, error) {
	v := lxdView{
		labelKey: cfg.LxdContainerLabelKey, labelValue: cfg.LxdContainerLabelValue,
		port: cfg.LxdContainerPort, portKey: cfg.LxdContainerPortKey,
		iface: cmp.Or(cfg.LxdContainerInterface, "eth0"), ifaceKey: cfg.LxdContainerInterfaceKey,
		sniKey: cfg.LxdContainerSniKey,
	}
	switch cfg.LxdContainerAddressType {
	case "", "IPv4":
		v.family = "inet"
	case "IPv6":
		v.family = "inet6"
	default:
		return nil, fmt.Errorf("lxd_container_address_type %q: want IPv4 or IPv6", cfg.LxdContainerAddressType)
	}
	if v.port < 0 || v.port > 65535 {
		return nil, fmt.Errorf("lxd_container_port %d: want 0 to 65535", v.port)
	}
	addr := cfg.LxdServerAddress
	switch {
	case strings.HasPrefix(addr, "unix:"):
		sock := lxdSocket(addr)
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}
		return &lxdProvider{base: "http://lxd", client: &http.Client{Transport: tr}, view: v}, nil
	case strings.HasPrefix(addr, "https:"):
		u, err := url.Parse(addr)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("lxd_server_address %q: want https://host[:port]", addr)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "8443")
		}
		return &lxdProvider{base: "https://" + host, view: v, https: lxdHTTPS{
			host:          host,
			remote:        cmp.Or(cfg.LxdServerRemoteName, "local"),
			password:      cfg.LxdServerRemotePassword,
			dir:           os.ExpandEnv(cmp.Or(cfg.LxdConfigDirectory, "$HOME/.config/lxc")),
			generateCerts: cfg.LxdGenerateClientCerts,
			acceptCert:    cfg.LxdAcceptServerCert,
		}}, nil
	}
	return nil, fmt.Errorf("lxd_server_address %q: want unix:[path] or https://host[:port]", addr)
}

// lxdSocket is the socket of a "unix:" address: the path after it ("unix:/p"
// or "unix:///p"), else LXD's own default: $LXD_DIR/unix.socket, the snap's
// socket if it exists, /var/lib/lxd/unix.socket.
func lxdSocket(addr string) string {
	p := strings.TrimPrefix(strings.TrimPrefix(addr, "unix:"), "//")
	switch {
	case p != "":
		return p
	case os.Getenv("LXD_DIR") != "":
		return filepath.Join(os.Getenv("LXD_DIR"), "unix.socket")
	}
	const snap = "/var/snap/lxd/common/lxd/unix.socket"
	if _, err := os.Stat(snap); err == nil {
		return snap
	}
	return "/var/lib/lxd/unix.socket"
}

// Fetch lists the instances with their state in one request and keeps the
// running containers that pass the label filter, as lxdView.backends says.
func (p *lxdProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	if p.client == nil {
		c, err := p.https.setup(ctx)
		if err != nil {
			return nil, fmt.Errorf("lxd %s: %w", p.base, err)
		}
		p.client = c
	}
	meta, err := lxdGet(ctx, p.client, p.base+"/1.0/instances?recursion=2")
	if err != nil {
		return nil, fmt.Errorf("lxd %s: %w", p.base, err)
	}
	list, err := p.view.backends(meta)
	if err != nil {
		return nil, fmt.Errorf("lxd %s: %w", p.base, err)
	}
	return list, nil
}

// lxdResponse is LXD's response envelope.
type lxdResponse struct {
	Type       string          `json:"type"`
	StatusCode int             `json:"status_code"`
	Error      string          `json:"error"`
	ErrorCode  int             `json:"error_code"`
	Metadata   json.RawMessage `json:"metadata"`
}

// lxdGet GETs an API path and returns the metadata of a sync answer.
func lxdGet(ctx context.Context, c *http.Client, u string) (json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return lxdDo(c, req)
}

func lxdDo(c *http.Client, req *http.Request) (json.RawMessage, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := readPayload(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	return lxdMetadata(body, resp.StatusCode)
}

// lxdMetadata checks an envelope: an error answer or anything but a sync
// success with HTTP 200 is an error.
func lxdMetadata(body []byte, status int) (json.RawMessage, error) {
	var r lxdResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("HTTP %d, not an LXD answer: %w", status, err)
	}
	switch {
	case r.Type == "error":
		return nil, fmt.Errorf("LXD error %d: %.200q", r.ErrorCode, r.Error)
	case status != http.StatusOK || r.Type != "sync" || r.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("unexpected answer: HTTP %d, type %.20q, status code %d", status, r.Type, r.StatusCode)
	}
	return r.Metadata, nil
}

// lxdInstance is the part of an instance (with recursion=2: its state too)
// the view uses.
type lxdInstance struct {
	Name           string            `json:"name"`
	Type           string            `json:"type"`
	Status         string            `json:"status"`
	Config         map[string]string `json:"config"`
	ExpandedConfig map[string]string `json:"expanded_config"`
	State          *struct {
		Network map[string]struct {
			Addresses []struct {
				Family  string `json:"family"`
				Address string `json:"address"`
				Scope   string `json:"scope"`
			} `json:"addresses"`
		} `json:"network"`
	} `json:"state"`
}

// backends converts the instance list. Skipped, as not (yet) backends:
// virtual machines, instances not Running, containers without the label key
// (or with another value than lxd_container_label_value when set), without a
// port (neither lxd_container_port nor the lxd_container_port_key config key),
// and without a global address of the family on the interface (the
// lxd_container_interface_key config key, else lxd_container_interface).
// Config keys are read from the expanded config, so profiles can set them.
// Present but bad values (a port key that is no port, an address that is no
// IP, an sni a backend line cannot hold) fail the whole answer.
func (v lxdView) backends(meta json.RawMessage) ([]config.Backend, error) {
	var instances []lxdInstance
	if err := json.Unmarshal(meta, &instances); err != nil {
		return nil, fmt.Errorf("instance list: %w", err)
	}
	out := make([]config.Backend, 0, len(instances))
	for _, in := range instances {
		if (in.Type != "" && in.Type != "container") || in.Status != "Running" {
			continue
		}
		conf := in.ExpandedConfig
		if conf == nil {
			conf = in.Config
		}
		if v.labelKey != "" {
			val, ok := conf[v.labelKey]
			if !ok || (v.labelValue != "" && val != v.labelValue) {
				continue
			}
		}
		port := v.port
		if s, ok := conf[v.portKey]; ok && v.portKey != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("container %.100q: %s %.20q is not a port from 1 to 65535", in.Name, v.portKey, s)
			}
			port = n
		}
		if port == 0 {
			continue
		}
		iface := v.iface
		if s, ok := conf[v.ifaceKey]; ok && v.ifaceKey != "" {
			iface = s
		}
		host, err := v.address(in, iface)
		if err != nil {
			return nil, fmt.Errorf("container %.100q: %w", in.Name, err)
		}
		if host == "" {
			continue
		}
		b := config.Backend{Target: config.Target{Host: host, Port: strconv.Itoa(port)}, Weight: 1, Priority: 1}
		if v.sniKey != "" {
			b.Sni = conf[v.sniKey]
		}
		if b, err = lineChecked(b); err != nil {
			return nil, fmt.Errorf("container %.100q: %w", in.Name, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// address is the first global address of the view's family on iface, "" if
// there is none (yet); link-local and loopback addresses cannot be dialed from
// the host, unlike gobetween 0.8 which took the first of any scope.
func (v lxdView) address(in lxdInstance, iface string) (string, error) {
	if in.State == nil {
		return "", nil
	}
	for _, a := range in.State.Network[iface].Addresses {
		if a.Family != v.family || (a.Scope != "global" && a.Scope != "") {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil || ip.Zone() != "" || ip.Is4() != (v.family == "inet") {
			return "", fmt.Errorf("%s address %.60q is not an IP%s address", iface, a.Address, strings.TrimPrefix(v.family, "inet"))
		}
		return ip.String(), nil
	}
	return "", nil
}

// setup returns the HTTPS client once the certificates are in place and the
// server trusts ours:
//   - client.crt/client.key from the config directory; missing, they are
//     generated when lxd_generate_client_certs is set, else it fails;
//   - servercerts/<remote>.crt, when present, pins the server certificate;
//     without it the server must verify against the system roots, or, when
//     lxd_accept_server_cert is set, its certificate is fetched, saved there
//     and pinned (trust on first use, as "lxc remote add" asks);
//   - GET /1.0 tells whether the server trusts our certificate; if not, it is
//     added with lxd_server_remote_password (POST /1.0/certificates) once.
func (h lxdHTTPS) setup(ctx context.Context) (*http.Client, error) {
	cert, err := h.clientCert()
	if err != nil {
		return nil, err
	}
	certPath := filepath.Join(h.dir, "servercerts", h.remote+".crt")
	pinned, err := readCertFile(certPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if pinned == nil {
		switch verr := h.verifyServer(ctx, cert); {
		case verr == nil:
		case !h.acceptCert:
			return nil, fmt.Errorf("server certificate not trusted (%w): set lxd_accept_server_cert or put it in %s", verr, certPath)
		default:
			if pinned, err = h.acceptServerCert(ctx, cert, certPath); err != nil {
				return nil, err
			}
		}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: lxdTLSConfig(cert, pinned)}}
	trusted, err := lxdTrusted(ctx, c, "https://"+h.host)
	if err != nil {
		return nil, err
	}
	if trusted {
		return c, nil
	}
	if h.password == "" {
		return nil, fmt.Errorf("the server does not trust %s: set lxd_server_remote_password or add it with lxc config trust add", filepath.Join(h.dir, "client.crt"))
	}
	body, _ := json.Marshal(map[string]string{"type": "client", "password": h.password})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+h.host+"/1.0/certificates", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if _, err := lxdDo(c, req); err != nil {
		return nil, fmt.Errorf("adding the client certificate with lxd_server_remote_password: %w", err)
	}
	if trusted, err = lxdTrusted(ctx, c, "https://"+h.host); err != nil || !trusted {
		return nil, fmt.Errorf("still not trusted after adding the client certificate (%v)", err)
	}
	return c, nil
}

// lxdTLSConfig presents cert and checks the server against pinned when set
// (the exact certificate, as lxc does for the remotes it added; the name does
// not matter), else against the system roots.
func lxdTLSConfig(cert tls.Certificate, pinned *x509.Certificate) *tls.Config {
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if pinned != nil {
		tc.InsecureSkipVerify = true // replaced by the pin check below
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !cs.PeerCertificates[0].Equal(pinned) {
				return errors.New("server certificate differs from the saved one")
			}
			return nil
		}
	}
	return tc
}

func lxdTrusted(ctx context.Context, c *http.Client, base string) (bool, error) {
	meta, err := lxdGet(ctx, c, base+"/1.0")
	if err != nil {
		return false, err
	}
	var s struct {
		Auth string `json:"auth"`
	}
	if err := json.Unmarshal(meta, &s); err != nil {
		return false, fmt.Errorf("GET /1.0: %w", err)
	}
	return s.Auth == "trusted", nil
}

// verifyServer handshakes with the system roots and reports why the server
// is not trusted, or nil.
func (h lxdHTTPS) verifyServer(ctx context.Context, cert tls.Certificate) error {
	d := tls.Dialer{Config: lxdTLSConfig(cert, nil)}
	conn, err := d.DialContext(ctx, "tcp", h.host)
	if err != nil {
		return err
	}
	return conn.Close()
}

// acceptServerCert fetches the server's certificate and saves it to path.
func (h lxdHTTPS) acceptServerCert(ctx context.Context, cert tls.Certificate, path string) (*x509.Certificate, error) {
	tc := lxdTLSConfig(cert, nil)
	tc.InsecureSkipVerify = true // trust on first use: the certificate is what we save
	d := tls.Dialer{Config: tc}
	conn, err := d.DialContext(ctx, "tcp", h.host)
	if err != nil {
		return nil, fmt.Errorf("fetching the server certificate: %w", err)
	}
	defer conn.Close()
	peers := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return nil, errors.New("the server sent no certificate")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peers[0].Raw}), 0o644); err != nil {
		return nil, fmt.Errorf("saving the server certificate: %w", err)
	}
	return peers[0], nil
}

// clientCert loads client.crt/client.key, generating them if they are both
// missing and lxd_generate_client_certs is set.
func (h lxdHTTPS) clientCert() (tls.Certificate, error) {
	crt, key := filepath.Join(h.dir, "client.crt"), filepath.Join(h.dir, "client.key")
	c, err := tls.LoadX509KeyPair(crt, key)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		if err != nil {
			err = fmt.Errorf("client certificate: %w", err)
		}
		return c, err
	}
	_, crtErr := os.Stat(crt)
	_, keyErr := os.Stat(key)
	if !h.generateCerts || !errors.Is(crtErr, fs.ErrNotExist) || !errors.Is(keyErr, fs.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("no client certificate %s and key %s: set lxd_generate_client_certs or create them with lxc remote add", crt, key)
	}
	certPEM, keyPEM, err := newClientCert()
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("saving the client key: %w", err)
	}
	if err := os.WriteFile(crt, certPEM, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("saving the client certificate: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// newClientCert makes a self-signed ECDSA P-384 client certificate valid ten
// years, as lxc generates.
func newClientCert() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"gobetween"}, CommonName: "gobetween@" + host},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// readCertFile reads the first certificate of a PEM file.
func readCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
