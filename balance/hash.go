package balance

import "net/netip"

// The hashes here are part of the cluster contract: every node must map a client
// to the same backend, so they are fixed functions written out here rather than
// a library's, whose output may change between versions.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211

	// golden is 2^64/phi; consecutive multiples are far apart, so the inputs of
	// one backend's virtual nodes differ in many bits before mixing.
	golden = 0x9e3779b97f4a7c15
)

// fnv1a64 is FNV-1a 64 of s.
func fnv1a64(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return h
}

// mix64 is the MurmurHash3 finalizer: a bijection that spreads every input bit
// over the whole word, so the top bits (which the ring compares) and the low
// bits (which iphash takes modulo n) are both uniform.
func mix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// hashIP hashes the 16-byte form of ip, so 192.0.2.1 and ::ffff:192.0.2.1 (as
// a dual-stack socket reports it) hash alike. The zone is ignored; the zero Addr
// hashes as ::.
func hashIP(ip netip.Addr) uint64 {
	a := ip.As16()
	h := uint64(fnvOffset64)
	for _, b := range a {
		h ^= uint64(b)
		h *= fnvPrime64
	}
	return mix64(h)
}

// clientIP tolerates a nil request.
func clientIP(req *Request) netip.Addr {
	if req == nil {
		return netip.Addr{}
	}
	return req.ClientIP
}
