package config

import (
	"crypto/tls"
	"slices"
)

// tlsVersions are gobetween 0.8's names of TLS versions ("ssl3" was removed in
// 0.8.1).
var tlsVersions = map[string]uint16{
	"tls1":   tls.VersionTLS10,
	"tls1.1": tls.VersionTLS11,
	"tls1.2": tls.VersionTLS12,
	"tls1.3": tls.VersionTLS13,
}

// TLSVersion returns the crypto/tls version of a min_version/max_version name
// ("tls1", "tls1.1", "tls1.2", "tls1.3"). The empty name is 0, meaning Go's
// default; ok is false for an unknown name.
func TLSVersion(name string) (version uint16, ok bool) {
	if name == "" {
		return 0, true
	}
	v, ok := tlsVersions[name]
	return v, ok
}

// cipherSuites maps every cipher suite name crypto/tls knows, secure and
// insecure, to its id, plus the names Go used for the ChaCha20 suites before
// Go 1.14, which gobetween 0.8 configs may carry. Read-only after init.
var cipherSuites = func() map[string]uint16 {
	m := map[string]uint16{
		"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	}
	for _, s := range slices.Concat(tls.CipherSuites(), tls.InsecureCipherSuites()) {
		m[s.Name] = s.ID
	}
	return m
}()

// CipherSuiteID returns the id of a cipher suite by its Go name
// ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"); ok is false for an unknown name.
func CipherSuiteID(name string) (id uint16, ok bool) {
	id, ok = cipherSuites[name]
	return id, ok
}
