package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gobetween/gobetween/config"
)

func init() { builtinKinds["static"] = newStatic }

// staticProvider returns the backends of static_list. It is immutable.
type staticProvider struct {
	lines []string
}

func newStatic(cfg config.Discovery) (Provider, error) {
	return &staticProvider{lines: slices.Clone(cfg.StaticList)}, nil
}

// Fetch parses every line; bad lines make it fail, each named with its index
// (gobetween 0.8 skipped them with a warning). Duplicates are left to the Source.
func (p *staticProvider) Fetch(ctx context.Context) ([]config.Backend, error) {
	out := make([]config.Backend, 0, len(p.lines))
	var errs []error
	for i, line := range p.lines {
		b, err := config.ParseBackend(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("static_list[%d]: %w", i, err))
			continue
		}
		out = append(out, b)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
