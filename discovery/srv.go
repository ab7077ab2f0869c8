package discovery

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["srv"] = newSrv }

// srvUDPSize is the EDNS0 buffer size advertised over UDP: the DNS flag day
// 2020 value, which avoids IP fragmentation (gobetween 0.8 advertised 4096). A
// larger answer comes back truncated and is asked again over TCP.
const srvUDPSize = 1232

// maxCNAMEHops bounds how far an answer's CNAME chain is followed.
const maxCNAMEHops = 8

// srvProvider asks one DNS server for the SRV records of one name. It holds
// only its settings, so concurrent Fetch calls are safe.
//
// What a fetch delivers (gobetween 0.8 semantics unless noted):
//   - one backend per SRV record: the port, priority and weight of the record,
//     sni = the target name without its trailing dot;
//   - the host is an address of the target: an A record, else an AAAA record,
//     from the additional section, else from an A then an AAAA query to the same
//     server (the first address listed when there are several);
//   - NXDOMAIN or an answer without SRV records is a successful fetch of no
//     backends (0.8: "empty response"), which empties the pool;
//   - any other error code (SERVFAIL, REFUSED...), a timeout or a network error,
//     in the SRV query or in a follow-up address query, fails the fetch, so the
//     failpolicy decides (0.8 read a SERVFAIL as an empty list and skipped a
//     target whose address query failed);
//   - a target with no address (NXDOMAIN or no A/AAAA data) is left out, as in
//     0.8; so are records that RFC 2782 makes unusable (target ".", port 0);
//   - a truncated UDP answer is asked again over TCP (0.8 used what fitted).
type srvProvider struct {
	server  string // host:port of the DNS server
	name    string // the SRV name, fully qualified
	network string // "udp" or "tcp"
}

func newSrv(cfg config.Discovery) (Provider, error) {
	if _, _, err := net.SplitHostPort(cfg.SrvLookupServer); err != nil {
		return nil, fmt.Errorf("srv_lookup_server %q: %w", cfg.SrvLookupServer, err)
	}
	name := dns.Fqdn(cfg.SrvLookupPattern)
	if _, ok := dns.IsDomainName(name); !ok || cfg.SrvLookupPattern == "" || name == "." {
		return nil, fmt.Errorf("srv_lookup_pattern %q is not a domain name", cfg.SrvLookupPattern)
	}
	network := cfg.SrvDnsProtocol
	switch network {
	case "":
		network = "udp"
	case "udp", "tcp":
	default:
		return nil, fmt.Errorf("srv_dns_protocol %q: want udp or tcp", cfg.SrvDnsProtocol)
	}
	return &srvProvider{server: cfg.SrvLookupServer, name: name, network: network}, nil
}

// Fetch queries the SRV records, then the addresses of the targets the answer
// carried none for, one target at a time under ctx.
func (p *srvProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	m, err := p.query(ctx, p.name, dns.TypeSRV)
	if err != nil {
		return nil, err
	}
	records := srvRecords(m, p.name)
	addrs := glueAddresses(m.Extra)
	asked := make(map[string]bool)
	for _, r := range records {
		target := dns.CanonicalName(r.Target)
		if _, ok := addrs[target]; ok || asked[target] {
			continue
		}
		asked[target] = true
		addr, err := p.lookupAddress(ctx, r.Target)
		if err != nil {
			return nil, fmt.Errorf("address of SRV target %s: %w", r.Target, err)
		}
		if addr != "" {
			addrs[target] = addr
		}
	}
	return srvBackends(records, addrs), nil
}

// lookupAddress returns the first A address of name, else its first AAAA
// address, else "" when the server knows none.
func (p *srvProvider) lookupAddress(ctx context.Context, name string) (string, error) {
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := p.query(ctx, name, qtype)
		if err != nil {
			return "", err
		}
		if addr := answerAddress(m, name, qtype); addr != "" {
			return addr, nil
		}
	}
	return "", nil
}

// query asks the server for name/qtype over the configured network, again over
// TCP when a UDP answer is truncated. An error code other than NOERROR or
// NXDOMAIN is an error.
func (p *srvProvider) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(srvUDPSize, false)
	what := fmt.Sprintf("%s %s", dns.TypeToString[qtype], name)
	network := p.network
	r, err := p.exchange(ctx, network, q)
	if err == nil && r.Truncated && network == "udp" {
		network = "tcp"
		r, err = p.exchange(ctx, network, q)
	}
	if err != nil {
		return nil, fmt.Errorf("query %s at %s over %s: %w", what, p.server, network, err)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("query %s at %s over %s: server answered %s", what, p.server, network, rcodeName(r.Rcode))
	}
	return r, nil
}

// exchange sends q and reads its answer on a new connection, which is closed
// when ctx ends so that cancellation does not wait for the read deadline.
func (p *srvProvider) exchange(ctx context.Context, network string, q *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network}
	conn, err := c.DialContext(ctx, p.server)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, q, conn)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return r, nil
}

// ctxErr adds the context's error to err when the context ended or its
// deadline passed (a read deadline set from ctx fires before ctx does), so
// callers can tell a timeout with errors.Is.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return "rcode " + strconv.Itoa(rcode)
}

// srvRecords returns the usable SRV records of m's answer owned by qname or by
// a name its CNAME chain leads to, in answer order. Records with the target
// "." (RFC 2782: no such service here) or port 0 are left out.
func srvRecords(m *dns.Msg, qname string) []*dns.SRV {
	owners := cnameChain(m.Answer, qname)
	var out []*dns.SRV
	for _, rr := range m.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok || !owners[dns.CanonicalName(srv.Hdr.Name)] {
			continue
		}
		if srv.Target == "." || srv.Target == "" || srv.Port == 0 {
			continue
		}
		out = append(out, srv)
	}
	return out
}

// cnameChain returns name and the names its CNAME records in rrs lead to,
// canonical, following at most maxCNAMEHops links.
func cnameChain(rrs []dns.RR, name string) map[string]bool {
	names := map[string]bool{dns.CanonicalName(name): true}
	for range maxCNAMEHops {
		grew := false
		for _, rr := range rrs {
			c, ok := rr.(*dns.CNAME)
			if !ok || !names[dns.CanonicalName(c.Hdr.Name)] {
				continue
			}
			if t := dns.CanonicalName(c.Target); !names[t] {
				names[t] = true
				grew = true
			}
		}
		if !grew {
			break
		}
	}
	return names
}

// glueAddresses maps each owner name (canonical) of the A and AAAA records in
// rrs to its first A address, else its first AAAA address.
func glueAddresses(rrs []dns.RR) map[string]string {
	v4 := make(map[string]string)
	v6 := make(map[string]string)
	for _, rr := range rrs {
		name := dns.CanonicalName(rr.Header().Name)
		if a := rrAddress(rr, dns.TypeA); a != "" && v4[name] == "" {
			v4[name] = a
		}
		if a := rrAddress(rr, dns.TypeAAAA); a != "" && v6[name] == "" {
			v6[name] = a
		}
	}
	for name, a := range v4 {
		v6[name] = a
	}
	return v6
}

// answerAddress returns the first address of type qtype in m's answer owned by
// name or a name its CNAME chain leads to, or "".
func answerAddress(m *dns.Msg, name string, qtype uint16) string {
	owners := cnameChain(m.Answer, name)
	for _, rr := range m.Answer {
		if !owners[dns.CanonicalName(rr.Header().Name)] {
			continue
		}
		if a := rrAddress(rr, qtype); a != "" {
			return a
		}
	}
	return ""
}

// rrAddress returns the address of rr if it is a valid record of type qtype
// (A or AAAA), in canonical text form, else "".
func rrAddress(rr dns.RR, qtype uint16) string {
	var (
		ip   netip.Addr
		ok   bool
		want int
	)
	switch r := rr.(type) {
	case *dns.A:
		if qtype != dns.TypeA {
			return ""
		}
		ip, ok = netip.AddrFromSlice(r.A)
		want = 4
	case *dns.AAAA:
		if qtype != dns.TypeAAAA {
			return ""
		}
		ip, ok = netip.AddrFromSlice(r.AAAA)
		want = 16
	default:
		return ""
	}
	if !ok || ip.BitLen() != want*8 || !ip.IsValid() {
		return ""
	}
	return ip.String()
}

// srvBackends turns SRV records into backends, using addrs (canonical target
// name → address) for their hosts; records whose target has no address are
// left out.
func srvBackends(records []*dns.SRV, addrs map[string]string) []config.Backend {
	out := make([]config.Backend, 0, len(records))
	for _, r := range records {
		addr, ok := addrs[dns.CanonicalName(r.Target)]
		if !ok {
			continue
		}
		out = append(out, config.Backend{
			Target:   config.Target{Host: addr, Port: strconv.Itoa(int(r.Port))},
			Priority: int(r.Priority),
			Weight:   int(r.Weight),
			Sni:      strings.TrimSuffix(r.Target, "."),
		})
	}
	return out
}
