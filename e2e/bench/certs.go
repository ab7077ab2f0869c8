package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// certFiles are a certificate and its key as the TLS contenders read them: Go
// and nginx take two files, HAProxy one with both.
type certFiles struct {
	Cert     string `json:"cert"`
	Key      string `json:"key"`
	Combined string `json:"combined"`
}

// writeCert generates a self-signed certificate for 127.0.0.1 and localhost
// with a new key of the given algorithm ("ecdsa": P-256, "rsa": 2048 bits) and
// writes it to dir under the name prefix.
func writeCert(dir, prefix, alg string) (certFiles, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return certFiles{}, fmt.Errorf("unknown key algorithm %q", alg)
	}
	if err != nil {
		return certFiles{}, fmt.Errorf("%s key: %w", alg, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "gobetween benchmark"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if alg == "rsa" {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return certFiles{}, fmt.Errorf("%s certificate: %w", alg, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return certFiles{}, fmt.Errorf("%s key: %w", alg, err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	f := certFiles{
		Cert:     filepath.Join(dir, prefix+".crt"),
		Key:      filepath.Join(dir, prefix+".key"),
		Combined: filepath.Join(dir, prefix+".pem"),
	}
	for path, b := range map[string][]byte{f.Cert: certPEM, f.Key: keyPEM, f.Combined: append(certPEM, keyPEM...)} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return certFiles{}, err
		}
	}
	return f, nil
}

// clientTLS is the load generator's TLS config. Every handshake is a full one
// doing the same work against every contender: one version, an X25519 key
// exchange, no session tickets or resumption. Go would otherwise offer
// X25519MLKEM768 first, which OpenSSL 3.0 does not know, so it would do more
// work against gobetween than against the others. P-256 is listed too, after
// X25519, because in TLS 1.2 OpenSSL serves an ECDSA P-256 certificate only to
// a client that lists the curve; X25519 stays the key exchange (checkTLS makes
// sure) and, in TLS 1.3, the only key share sent. The certificate chain is not
// verified: the harness made it, and verifying it would only add client work
// that is the same for every contender; the server's handshake signature is
// still checked.
func clientTLS(version uint16) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify:     true,
		MinVersion:             version,
		MaxVersion:             version,
		CurvePreferences:       []tls.CurveID{tls.X25519, tls.CurveP256},
		SessionTicketsDisabled: true,
	}
}
