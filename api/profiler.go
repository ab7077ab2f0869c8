package api

import (
	"net/http"
	"net/http/pprof"
)

// NewProfilerHandler serves net/http/pprof under /debug/pprof/ on its own mux.
// gobetween 0.8 registered pprof on http.DefaultServeMux, which also exposed it on
// the metrics port (and /metrics on the profiler port); nothing here touches the
// default mux. (Importing net/http/pprof registers its handlers on the default mux
// as a side effect; no listener of gobetween serves that mux.)
func NewProfilerHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also serves the named profiles: heap, goroutine, …
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
