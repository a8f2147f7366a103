package service

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

// Routing meta (issue 10): the route_* keys the shipped nginx, HAProxy and
// Caddy templates route by. Their values end up in proxy syntax, so each
// one is held to a narrow grammar here, before it reaches Consul; a
// template can then use them without quoting surprises.

const routePrefix = "route_"

// routeValue is one route_* value and where it came from, so a rejection
// names what the user wrote.
type routeValue struct {
	Value string // the value to check
	Key   string // as written: SERVICE_8080_ROUTE_HOST, VIRTUAL_HOST, SERVICE_TAGS
	Raw   string // the value as written: for a urlprefix- tag the whole tag
}

func (v routeValue) reject(reason string) *Error {
	return &Error{Key: v.Key, Value: v.Raw, Reason: reason}
}

// routeRule normalises one trimmed, non-empty value. norm is "" when the
// value is rejected; problems say why (route_host may keep some names and
// report others).
type routeRule func(v string) (norm string, problems []string)

var routeRules = map[string]routeRule{
	"route_host":   normHosts,
	"route_path":   normPath,
	"route_strip":  normBool,
	"route_proto":  oneOf("http", "ws", "grpc", "tcp"),
	"route_port":   normInt(1, 65535),
	"route_weight": normInt(1, 256),
	"route_health": normPath,
	"route_sticky": normBool,
	"route_https":  oneOf("redirect"),
}

// widening are the keys that say which requests reach the service. Left
// out, the template's default (any host, path /, http) would send it more
// traffic than asked for, so a bad one drops the whole route instead.
var widening = map[string]bool{"route_host": true, "route_path": true, "route_proto": true}

// normalizeRoute checks and normalises a service's route_* values. A bad
// value drops only its key, except a bad widening key, which drops every
// route key of the service (the service itself is still registered).
func normalizeRoute(in map[string]routeValue) (map[string]string, []*Error) {
	out := map[string]string{}
	var errs []*Error
	void := false
	for _, k := range slices.Sorted(maps.Keys(in)) {
		v := in[k]
		rule, ok := routeRules[k]
		if !ok {
			errs = append(errs, v.reject(fmt.Sprintf("unknown routing key %s; dropped (known: %s)", k, strings.Join(slices.Sorted(maps.Keys(routeRules)), ", "))))
			continue
		}
		val := strings.TrimSpace(v.Value)
		if val == "" {
			continue // an empty value counts as not set
		}
		norm, problems := rule(val)
		suffix := "; dropped"
		if norm == "" && widening[k] {
			suffix = "; the service is registered without routing meta, since without " + k + " its route would be wider than asked"
			void = true
		}
		for i, p := range problems {
			if i == len(problems)-1 {
				p += suffix
			}
			errs = append(errs, v.reject(k+": "+p))
		}
		if norm != "" {
			out[k] = norm
		}
	}
	if void {
		return map[string]string{}, errs
	}
	if p, ok := out["route_port"]; ok && out["route_proto"] != "tcp" {
		delete(out, "route_port")
		errs = append(errs, in["route_port"].reject(fmt.Sprintf("route_port %s: only for route_proto=tcp; dropped", p)))
	}
	return out, errs
}

// normHosts lower-cases, trims and deduplicates a comma list of host
// names, keeping the user's order (the first is nginx's primary name). A
// bad name is dropped on its own: the route stays limited to the others.
func normHosts(v string) (string, []string) {
	var hosts, problems []string
	for h := range strings.SplitSeq(v, ",") {
		h = asciiLower(strings.TrimSpace(h))
		switch {
		case h == "":
		case !validHost(h):
			problems = append(problems, fmt.Sprintf("%q is not a host name (letters, digits and '-' in labels of 1-63, at most 253 bytes, optionally *. in front; no port, IDNs in punycode)", h))
		case !slices.Contains(hosts, h):
			hosts = append(hosts, h)
		}
	}
	joined := strings.Join(hosts, ",")
	if len(joined) > maxMetaValueLen {
		return "", append(problems, fmt.Sprintf("host list longer than %d bytes", maxMetaValueLen))
	}
	if joined == "" && len(problems) == 0 {
		problems = append(problems, "no host name")
	}
	return joined, problems
}

// asciiLower lower-cases A-Z only: Unicode case folding maps some
// look-alikes to ASCII (the Kelvin sign to k), which must stay rejected.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// validHost accepts a lower-case DNS name or *. followed by one, 253
// bytes in all (the shipped templates' bound, wildcard included).
func validHost(h string) bool {
	return len(h) <= 253 && validDNSName(strings.TrimPrefix(h, "*."))
}

func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := range len(label) {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// maxRoutePath is the longest route_path or route_health the shipped
// templates take; a longer one would be ignored there, widening the route.
const maxRoutePath = 128

// normPath accepts an absolute path of URL-safe characters that need no
// quoting in any proxy's syntax. Empty and dot segments are refused:
// proxies normalise request paths, so such a prefix would never match.
func normPath(v string) (string, []string) {
	if !strings.HasPrefix(v, "/") {
		return "", []string{fmt.Sprintf("%q does not start with /", v)}
	}
	if len(v) > maxRoutePath {
		return "", []string{fmt.Sprintf("path longer than %d bytes", maxRoutePath)}
	}
	for i := range len(v) {
		if !pathChar(v[i]) {
			return "", []string{fmt.Sprintf("%q: only letters, digits and . _ ~ / - are allowed", v)}
		}
	}
	segs := strings.Split(v[1:], "/")
	for i, seg := range segs {
		if seg == "." || seg == ".." || seg == "" && i < len(segs)-1 {
			return "", []string{fmt.Sprintf("%q has an empty, . or .. segment", v)}
		}
	}
	return v, nil
}

func pathChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._~/-", c) >= 0
}

func normBool(v string) (string, []string) {
	b, ok := ParseBool(v)
	if !ok {
		return "", []string{fmt.Sprintf("%q is not a boolean (true/false)", v)}
	}
	return strconv.FormatBool(b), nil
}

func oneOf(allowed ...string) routeRule {
	return func(v string) (string, []string) {
		if l := asciiLower(v); slices.Contains(allowed, l) {
			return l, nil
		}
		return "", []string{fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", "))}
	}
}

func normInt(lo, hi int) routeRule {
	return func(v string) (string, []string) {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return "", []string{fmt.Sprintf("%q is not an integer %d-%d", v, lo, hi)}
		}
		return strconv.Itoa(n), nil
	}
}

// route is the service's routing meta: its SERVICE_*ROUTE_* keys win, key
// by key, over what fabio's urlprefix- tags or else nginx-proxy's
// VIRTUAL_* variables say.
func (b *builder) route(m map[string]entry, port container.Port) map[string]string {
	derived, errs := b.derivedRoute(m, port)
	in := maps.Clone(derived)
	if in == nil {
		in = map[string]routeValue{}
	}
	for k, e := range m {
		if strings.HasPrefix(k, routePrefix) && strings.TrimSpace(e.Value) != "" {
			in[k] = routeValue{Value: e.Value, Key: e.Raw, Raw: e.Value}
		}
	}
	out, verrs := normalizeRoute(in)
	for _, e := range append(errs, verrs...) {
		b.errs = append(b.errs, b.errf(e.Key, e.Value, e.Reason))
	}
	return out
}

// derivedRoute translates the registrator-era routing conventions. Tags
// win over VIRTUAL_*: SERVICE_TAGS is ours and can be scoped to a port.
func (b *builder) derivedRoute(m map[string]entry, port container.Port) (map[string]routeValue, []*Error) {
	var fromTags map[string]routeValue
	var errs []*Error
	if e, ok := m["tags"]; ok {
		fromTags, errs = routeFromTags(e.Raw, SplitTags(e.Value))
	}
	fromEnv, envErrs := routeFromVirtual(virtualEnv(b.c.Env), b.c.Ports, port)
	if len(fromTags) == 0 {
		return fromEnv, append(errs, envErrs...)
	}
	if len(fromEnv) > 0 {
		errs = append(errs, fromEnv["route_host"].reject("VIRTUAL_* not translated: the service's urlprefix- tags say where it is routed"))
	}
	return fromTags, errs
}
