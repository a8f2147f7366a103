package proxy

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// ErrNotLoaded is the Err of a ValidationError for a staged file that
// stands in for a file the proxy's configuration does not load: testing
// the configuration would not test it, so the set is not valid.
var ErrNotLoaded = errors.New("not loaded by the proxy's configuration")

// normalizeSet returns replace with every live path absolute and clean,
// so a lookup by the path the proxy's configuration names finds it.
func normalizeSet(replace map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(replace))
	for live, staged := range replace {
		abs, err := filepath.Abs(live)
		if err != nil {
			return nil, fmt.Errorf("validate set: %s: %w", live, err)
		}
		out[abs] = staged
	}
	return out, nil
}

// notLoaded is a ValidationError naming the live paths of replace that
// the walk of the configuration (used) never met, or nil.
func notLoaded(proxy string, replace map[string]string, used map[string]bool, by string) error {
	var missing []string
	for live := range replace {
		if !used[live] {
			missing = append(missing, live)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return &ValidationError{Proxy: proxy, Path: missing[0], Err: ErrNotLoaded,
		Output: fmt.Sprintf("%s: not loaded by %s", strings.Join(missing, ", "), by)}
}

// unstage rewrites the proxy's output so that it names live files, not the
// staged or shadow copies it read: the operator fixes the template of
// /etc/nginx/conf.d/default.conf, not a temp file. from and to are pairs;
// longer from strings go first, so a path is never half-replaced.
func unstage(out string, pairs map[string]string) string {
	froms := make([]string, 0, len(pairs))
	for from := range pairs {
		if from != "" {
			froms = append(froms, from)
		}
	}
	slices.SortFunc(froms, func(a, b string) int { return len(b) - len(a) })
	for _, from := range froms {
		out = strings.ReplaceAll(out, from, pairs[from])
	}
	return out
}

// culprit is the file to fix: the key of names (a path as the proxy's
// output names it -> the live path of replace it stands for) whose name
// out mentions first, or def when out names none of them.
func culprit(out string, names map[string]string, def string) string {
	best, at := def, len(out)+1
	for name, live := range names {
		if i := strings.Index(out, name+":"); i >= 0 && i < at {
			best, at = live, i
		}
	}
	return best
}

// identity maps each key of replace to itself, for culprit.
func identity(replace map[string]string) map[string]string {
	out := make(map[string]string, len(replace))
	for live := range replace {
		out[live] = live
	}
	return out
}
