// Package proxy runs gobetween's servers: listeners, the TCP data path, the pool
// of backends of each server (counters, candidate snapshots) and the reconciling
// of running servers with the desired set. See DESIGN.md in this directory for
// who owns a connection, how many goroutines it costs and how snapshots swap.
//
// proxy consumes discovery, health checking and balancing through the interfaces
// and constructor functions it declares here; cmd wires the real packages, tests
// wire in-memory twins.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gobetween/gobetween/balance"
	"github.com/gobetween/gobetween/config"
	"github.com/gobetween/gobetween/discovery"
)

// Discoverer delivers backend lists for one server until ctx is done
// (discovery.Source satisfies it). update may be called from any goroutine; the
// slice is copied before Run's next call to update, so a Discoverer may reuse it.
type Discoverer interface {
	Run(ctx context.Context, update func([]config.Backend))
}

// FetchReporter is a Discoverer that can tell how its last fetch went
// (discovery.Source does); the server's stats show it.
type FetchReporter interface {
	LastFetch() (discovery.FetchResult, bool)
}

// HealthMonitor checks the backends of one server (healthcheck.Monitor, adapted
// by cmd, satisfies it). proxy calls SetTargets from one goroutine at a time and
// PassiveFailure from any connection's goroutine; the onChange callback handed to
// NewMonitor may be called from any goroutine, also from inside SetTargets or
// Reconfigure, and never blocks. PassiveFailure must be safe after Close.
type HealthMonitor interface {
	SetTargets(ts []config.Target)
	Healthy(t config.Target) bool
	PassiveFailure(t config.Target)
	Reconfigure(cfg config.Healthcheck) error
	Close()
}

// CheckObserver is a HealthMonitor that reports each active health check it
// completes (healthcheck.Monitor, adapted by cmd, is one): proxy counts them
// for metrics. OnCheck is called once, before the first SetTargets; fn must
// not block.
type CheckObserver interface {
	OnCheck(fn func(t config.Target, passed bool, took time.Duration))
}

// Options are the dependencies of a Runtime.
type Options struct {
	// Logger receives the runtime's logs; nil discards them.
	Logger *slog.Logger
	// NewDiscovery builds the discovery of one server. nil: servers have no backends.
	NewDiscovery func(server string, cfg config.Discovery) (Discoverer, error)
	// NewMonitor builds the health monitor of one server; onChange reports verdict
	// flips. nil: every discovered backend is healthy.
	NewMonitor func(server string, cfg config.Healthcheck, onChange func(t config.Target, healthy bool)) (HealthMonitor, error)
	// NewBalancer builds an immutable balancer over a candidate set (balance.New).
	// It is never called with an empty set. Required.
	NewBalancer func(strategy string, sni *config.Sni, cands []*balance.Candidate) (balance.Balancer, error)
	// ServersHost, when set, replaces the wildcard or empty host of a server's
	// bind (":3000", "0.0.0.0:3000", "[::]:3000"), so that several nodes
	// sharing one config can run on one machine (127.0.0.1, 127.0.0.2, …).
	// A bind with a specific host is used as written.
	ServersHost string
	// NodeID is the name of this node in stats (BackendCluster.Nodes); ""
	// is "local".
	NodeID string
	// ACME serves the certificates of the host names in servers' tls.acme_hosts.
	// nil: a server with acme_hosts does not start (ErrUnsupported).
	ACME CertSource
}

// CertSource supplies certificates obtained elsewhere (an ACME client) during
// TLS handshakes. It is called from the handshake of any connection, and
// concurrently; hello.ServerName is one of the server's acme_hosts.
type CertSource interface {
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// Administrative states of a backend, the values of ApplyState's overrides and
// of BackendCounters.State.
const (
	// BackendDrain: no new connections; open ones continue until they end.
	BackendDrain = "drain"
	// BackendDisable: no new connections; open ones are closed.
	BackendDisable = "disable"
)

var (
	// ErrBindFailed wraps a listen error (address in use, permission denied, …).
	ErrBindFailed = errors.New("bind failed")
	// ErrUnsupported marks a server feature this runtime cannot serve as
	// configured: tls.acme_hosts without an [acme] section (Options.ACME nil).
	ErrUnsupported = errors.New("not supported yet")
	// ErrInvalid marks a definition this node cannot run as written: a
	// certificate or CA file that is missing or unreadable.
	ErrInvalid = errors.New("cannot run the server")
	// ErrClosed is returned by Apply and Upsert after Shutdown.
	ErrClosed = errors.New("proxy runtime is shut down")
)

// bindError keeps the listen error's text ("listen tcp :3000: bind: address
// already in use") while errors.Is finds ErrBindFailed.
type bindError struct{ err error }

func (e *bindError) Error() string   { return e.err.Error() }
func (e *bindError) Unwrap() []error { return []error{ErrBindFailed, e.err} }

// Runnable reports why this node could not start s now: a feature whose runtime
// is not built in (wraps ErrUnsupported) or a bind address that is taken (wraps
// ErrBindFailed). A store checks it before it commits a new server, so that a
// definition that cannot start is refused with a reason rather than accepted and
// left idle. The bind check is a probe: the port can still be taken between the
// probe and the start, which the runtime then logs.
//
// Runnable probes s.Bind as written and has no CertSource (a server with
// acme_hosts is unsupported); Runtime.Runnable applies the runtime's
// Options.ServersHost and Options.ACME.
func Runnable(ctx context.Context, s config.Server) error {
	return runnable(ctx, s, s.Bind, nil)
}

func runnable(ctx context.Context, s config.Server, bind string, acme CertSource) error {
	if err := unsupported(s); err != nil {
		return err
	}
	// Files the server reads (certificates, CA) are read now, so that a bad
	// path is refused before the definition is stored.
	if _, err := newSettings(s, acme); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	l, err := listen(ctx, s.Protocol, bind)
	if err != nil {
		return err
	}
	return l.closeSocket()
}
