package service

import (
	"fmt"
	"strings"
)

// LabelMatch is one --label-filter: a container must carry the label Key,
// with the value Value unless AnyValue.
type LabelMatch struct {
	Key, Value string
	AnyValue   bool
}

// ParseLabelFilter reads --label-filter values, each KEY or KEY=VALUE (as
// docker ps --filter label=...). A container must match all of them.
func ParseLabelFilter(values []string) ([]LabelMatch, error) {
	var out []LabelMatch
	for _, v := range values {
		key, value, hasValue := strings.Cut(v, "=")
		if strings.TrimSpace(key) != key || key == "" {
			return nil, fmt.Errorf("--label-filter=%q: want KEY or KEY=VALUE with a non-empty KEY and no spaces around it", v)
		}
		out = append(out, LabelMatch{Key: key, Value: value, AnyValue: !hasValue})
	}
	return out, nil
}

// selected reports whether labels match every filter: a container that
// does not is not ours to register, as if it set SERVICE_IGNORE, and its
// labels are not checked (their mistakes are not ours to report).
func selected(labels map[string]string, filter []LabelMatch) bool {
	for _, f := range filter {
		v, ok := labels[f.Key]
		if !ok || (!f.AnyValue && v != f.Value) {
			return false
		}
	}
	return true
}
