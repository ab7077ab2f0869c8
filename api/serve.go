package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gobetween/gobetween/config"
)

// Timeouts of every HTTP listener here. Reading headers is bounded against slow
// clients; writing is not, because a CPU profile streams for as long as asked.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	shutdownTimeout   = 5 * time.Second
)

// Server is the REST API listener.
type Server struct {
	opts    Options
	handler http.Handler
}

// NewServer builds the REST API server; Run starts it.
func NewServer(opts Options) *Server {
	return &Server{opts: opts, handler: NewHandler(opts)}
}

// Run serves the API on Config.Bind (HTTPS when Config.Tls is set) until ctx ends,
// then shuts down gracefully. It returns an error if the listener cannot start or
// fails while serving.
func (s *Server) Run(ctx context.Context) error {
	logger := s.opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return Serve(ctx, s.opts.Config.Bind, s.handler, s.opts.Config.Tls, logger.With("component", "api"))
}

// Serve listens on bind and serves h until ctx ends, then shuts down gracefully:
// it stops accepting, lets requests in flight finish for a few seconds and closes
// the rest. An empty bind means ":80" (":443" with TLS), as in gobetween 0.8.
// It returns nil after a shutdown caused by ctx, an error otherwise.
func Serve(ctx context.Context, bind string, h http.Handler, tlsCfg *config.ApiTls, logger *slog.Logger) error {
	if bind == "" {
		bind = ":80"
		if tlsCfg != nil {
			bind = ":443"
		}
	}
	// Certificates are loaded before listening so that a bad path is reported
	// without ever accepting a connection.
	var tc *tls.Config
	if tlsCfg != nil {
		cert, err := tls.LoadX509KeyPair(tlsCfg.CertPath, tlsCfg.KeyPath)
		if err != nil {
			return fmt.Errorf("load certificate for %s: %w", bind, err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", bind)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", bind, err)
	}
	return ServeListener(ctx, ln, h, tc, logger)
}

// ServeListener serves h on ln (wrapped in TLS when tc is not nil) until ctx ends,
// like Serve. It takes ownership of ln and closes it.
func ServeListener(ctx context.Context, ln net.Listener, h http.Handler, tc *tls.Config, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         tc,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	addr := ln.Addr().String()
	errc := make(chan error, 1)
	go func() {
		if tc != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	logger.Info("listening", "addr", addr, "tls", tc != nil)

	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("requests still running at shutdown; closing them", "addr", addr, "err", err)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", addr, err)
	}
	logger.Info("stopped", "addr", addr)
	return nil
}
