package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gobetween/gobetween/config"
)

// ErrorBody is every error response: a message and, for an invalid definition,
// every problem with its path, e.g.
// {"path":"servers.web.healthcheck.interval","msg":"invalid duration \"5\""}.
// Details is an empty list, never null, when there are none.
type ErrorBody struct {
	Error   string           `json:"error"`
	Details []config.Problem `json:"details"`
}

// writeJSON answers with v indented like gobetween 0.8's IndentedJSON. A value that
// cannot be encoded is a bug in this package; it is answered with 500 rather than a
// truncated body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "    ")
	// "<redacted>" reads better than "\u003credacted\u003e"; nosniff below keeps
	// browsers from treating the unescaped body as HTML.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		status = http.StatusInternalServerError
		buf.Reset()
		_ = json.NewEncoder(&buf).Encode(ErrorBody{Error: "encode response: " + err.Error(), Details: []config.Problem{}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func writeError(w http.ResponseWriter, status int, msg string, details ...config.Problem) {
	if details == nil {
		details = []config.Problem{}
	}
	writeJSON(w, status, ErrorBody{Error: msg, Details: details})
}

func writeText(w http.ResponseWriter, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
