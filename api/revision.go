package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Response headers that carry a server's place in the log. The body of a single
// server stays gobetween 0.8's object, which POST and PUT accept back unchanged
// (they reject unknown keys, so no metadata may be mixed into it).
const (
	headerRevision = "X-Gobetween-Revision"
	headerOrigin   = "X-Gobetween-Origin"
)

// setRevisionHeaders sets ETag (a strong entity tag, "<revision>") and
// X-Gobetween-Revision. Revision 0 means unknown: no header rather than a tag
// that no If-Match could ever match.
func setRevisionHeaders(w http.ResponseWriter, revision uint64) {
	if revision == 0 {
		return
	}
	rev := strconv.FormatUint(revision, 10)
	w.Header().Set("ETag", `"`+rev+`"`)
	w.Header().Set(headerRevision, rev)
}

// setServerHeaders adds the origin and the time of the last change to the
// revision headers.
func setServerHeaders(w http.ResponseWriter, info ServerInfo) {
	setRevisionHeaders(w, info.Revision)
	if info.Origin != "" {
		w.Header().Set(headerOrigin, info.Origin)
	}
	if !info.Updated.IsZero() {
		w.Header().Set("Last-Modified", info.Updated.UTC().Format(http.TimeFormat))
	}
}

var errIfMatch = errors.New(`bad If-Match: want one revision as an entity tag, e.g. "12"`)

// parseIfMatch reads the If-Match header values as one revision; 0 means no
// condition (no header, or "*": any current version, and PUT requires one
// anyway). A strong tag ("12"), a weak one (W/"12") and a bare number (12) are
// all accepted, since clients copy the value by hand as often as from ETag. More
// than one tag is refused: a write can be conditioned on one revision only.
func parseIfMatch(values []string) (uint64, error) {
	var tags []string
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	switch {
	case len(tags) == 0 && len(values) == 0:
		return 0, nil
	case len(tags) != 1:
		return 0, fmt.Errorf("%w, got %q", errIfMatch, strings.Join(values, ", "))
	}
	tag := tags[0]
	if tag == "*" {
		return 0, nil
	}
	raw := strings.TrimPrefix(tag, "W/")
	if strings.HasPrefix(raw, `"`) || strings.HasSuffix(raw, `"`) {
		if len(raw) < 2 || !strings.HasPrefix(raw, `"`) || !strings.HasSuffix(raw, `"`) {
			return 0, fmt.Errorf("%w, got %q", errIfMatch, tag)
		}
		raw = raw[1 : len(raw)-1]
	} else if raw != tag {
		// W/ must be followed by a quoted tag.
		return 0, fmt.Errorf("%w, got %q", errIfMatch, tag)
	}
	rev, err := strconv.ParseUint(raw, 10, 64)
	if err != nil || rev == 0 {
		return 0, fmt.Errorf("%w, got %q", errIfMatch, tag)
	}
	return rev, nil
}
