package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/gobetween/gobetween/config"
)

// recoverer answers a panicking handler with a JSON 500 and logs the panic with its
// stack, so that one bad request never takes the process down (gobetween 0.8 had no
// recovery). http.ErrAbortHandler is re-raised: it is net/http's way to abort a
// response on purpose.
func recoverer(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sw := &statusWriter{ResponseWriter: w}
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("panic in api handler",
					"method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if sw.wroteHeader {
					// The status line is gone; abort so the client sees a broken
					// response rather than a truncated one that looks complete.
					panic(http.ErrAbortHandler)
				}
				writeError(w, http.StatusInternalServerError, "internal error")
			}()
			next.ServeHTTP(sw, r)
		})
	}
}

// statusWriter records whether the response has started.
type statusWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	w.wroteHeader = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// cors allows any origin to call the API from a browser. It echoes the request's
// Origin (with Vary: Origin) instead of sending "*" and never sends
// Access-Control-Allow-Credentials, which avoids gobetween 0.8's invalid pairing of
// "*" with credentials; a browser client authenticates by setting the Authorization
// header itself, which the allowed headers permit. Content-Type is allowed too, so
// a JSON POST passes preflight (0.8 allowed only Origin and Authorization).
func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Allow-Origin", origin)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Origin, Authorization, Content-Type")
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// basicAuth requires the one configured account. Both values are hashed before the
// constant-time comparison so that neither their contents nor their lengths leak
// through timing.
func basicAuth(account config.ApiBasicAuth) func(http.Handler) http.Handler {
	wantLogin := sha256.Sum256([]byte(account.Login))
	wantPassword := sha256.Sum256([]byte(account.Password))
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			login, password, ok := r.BasicAuth()
			gotLogin := sha256.Sum256([]byte(login))
			gotPassword := sha256.Sum256([]byte(password))
			match := subtle.ConstantTimeCompare(gotLogin[:], wantLogin[:]) &
				subtle.ConstantTimeCompare(gotPassword[:], wantPassword[:])
			if !ok || match != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="Authorization Required", charset="UTF-8"`)
				writeError(w, http.StatusUnauthorized, "unauthorized")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// sameOriginWrites refuses a browser's POST, PUT or DELETE sent from another
// origin (Sec-Fetch-Site, else Origin against Host: net/http's
// CrossOriginProtection). A browser that holds the API's basic-auth
// credentials, as the dashboard's users do, sends them with any request to the
// API, so without it a page elsewhere could drain a backend with a plain form.
// Clients that are not browsers send neither header and pass. With [api] cors
// the API is meant to be called from other origins, and this is not applied.
func sameOriginWrites(next http.Handler) http.Handler {
	p := http.NewCrossOriginProtection()
	p.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused: the API takes writes from its own origin only (set [api] cors = true to allow other origins)")
	}))
	return p.Handler(next)
}
