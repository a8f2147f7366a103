package service

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// prefix starts every key registrator reads; it is case-sensitive, the rest
// of the key is not (registrator lower-cases it).
const prefix = "SERVICE_"

// entry is one SERVICE_* value with where it came from, so that rejections
// can name the exact label or variable the user wrote.
type entry struct {
	Value  string
	Raw    string // the key as written: "SERVICE_80_NAME"
	Source string // "label" or "env"
	Level  int    // levelGeneric, levelPort or levelPortProto
}

const (
	levelGeneric = iota
	levelPort
	levelPortProto
)

type portProto struct {
	Port  int
	Proto string
}

// Metadata holds a container's SERVICE_* keys by scope. Keys are lower case
// without the prefix and scope: SERVICE_80_UDP_NAME is "name" in the
// scope (80, udp).
type Metadata struct {
	generic   map[string]entry
	port      map[int]map[string]entry
	portProto map[portProto]map[string]entry
}

// ParseMetadata reads SERVICE_* keys from env (first) and labels (second, so
// a label wins over a variable of the same key, as in registrator). Keys it
// cannot parse are returned as errors; the rest is kept.
func ParseMetadata(env []string, labels map[string]string) (Metadata, []error) {
	m := Metadata{
		generic:   map[string]entry{},
		port:      map[int]map[string]entry{},
		portProto: map[portProto]map[string]entry{},
	}
	var errs []error
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, prefix) {
			continue
		}
		if err := m.add(k, v, "env"); err != nil {
			errs = append(errs, err)
		}
	}
	// Sorted, so that SERVICE_NAME and SERVICE_name (the same key once
	// lower-cased) resolve the same way on every pass.
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if err := m.add(k, labels[k], "label"); err != nil {
			errs = append(errs, err)
		}
	}
	return m, errs
}

func (m *Metadata) add(raw, value, source string) error {
	rest := strings.ToLower(raw[len(prefix):])
	e := entry{Value: value, Raw: raw, Source: source}
	head, tail, scoped := strings.Cut(rest, "_")
	if !scoped || !isDigits(head) {
		if rest == "" || isDigits(rest) {
			return &Error{Key: raw, Value: value, Reason: "no key after " + prefix}
		}
		e.Level = levelGeneric
		m.generic[rest] = e
		return nil
	}
	port, err := strconv.Atoi(head)
	if err != nil || port < 1 || port > 65535 {
		return &Error{Key: raw, Value: value, Reason: fmt.Sprintf("port %q out of range 1-65535", head)}
	}
	if proto, key, ok := strings.Cut(tail, "_"); ok && isProto(proto) && key != "" {
		pp := portProto{port, proto}
		if m.portProto[pp] == nil {
			m.portProto[pp] = map[string]entry{}
		}
		e.Level = levelPortProto
		m.portProto[pp][key] = e
		return nil
	}
	if tail == "" {
		return &Error{Key: raw, Value: value, Reason: "no key after the port"}
	}
	if m.port[port] == nil {
		m.port[port] = map[string]entry{}
	}
	e.Level = levelPort
	m.port[port][tail] = e
	return nil
}

// For merges the scopes that apply to one container port: generic, then
// SERVICE_<port>_*, then SERVICE_<port>_<proto>_*, the most specific winning.
func (m Metadata) For(port int, proto string) map[string]entry {
	out := make(map[string]entry, len(m.generic))
	maps.Copy(out, m.generic)
	maps.Copy(out, m.port[port])
	maps.Copy(out, m.portProto[portProto{port, proto}])
	return out
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func isProto(s string) bool { return s == "tcp" || s == "udp" || s == "sctp" }

// ParseBool accepts the spellings people put in labels. ok is false for
// anything else; callers decide what an unknown value means.
func ParseBool(s string) (v, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "yes", "y", "on":
		return true, true
	case "", "0", "f", "false", "no", "n", "off":
		return false, true
	}
	return false, false
}

// SplitTags splits a SERVICE_TAGS value on commas, "\," standing for a
// literal comma. Tags are trimmed, empty ones dropped, order kept.
func SplitTags(s string) []string {
	var tags []string
	var cur strings.Builder
	flush := func() {
		if t := strings.TrimSpace(cur.String()); t != "" {
			tags = append(tags, t)
		}
		cur.Reset()
	}
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == ',':
			cur.WriteByte(',')
			i++
		case s[i] == ',':
			flush()
		default:
			cur.WriteByte(s[i])
		}
	}
	flush()
	return tags
}

// SplitArgs splits a check script into argv the way a POSIX shell splits
// words, without running a shell: single quotes, double quotes and
// backslash escapes are honoured, nothing is expanded.
func SplitArgs(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case quote == '"':
			switch {
			case c == '"':
				quote = 0
			case c == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0:
				cur.WriteByte(s[i+1])
				i++
			default:
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote = c
			inWord = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("trailing backslash")
			}
			cur.WriteByte(s[i+1])
			i++
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}
