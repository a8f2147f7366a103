package service

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

// Translations of the routing conventions people bring along: fabio's
// urlprefix- tags and nginx-proxy's VIRTUAL_* variables. Both produce
// route_* values that normalizeRoute then checks like any label. What the
// routing meta cannot express is not translated half-way: the tag or
// variable is reported and left out, since a route that lost an option
// (fabio's allow=, nginx-proxy's https upstream) would be wrong.

// urlPrefix is fabio's default route tag prefix (registry.consul.tagprefix).
const urlPrefix = "urlprefix-"

// fabioRoute is one urlprefix- tag, parsed.
type fabioRoute struct {
	tag   string
	host  string // "" for any host
	path  string
	strip bool
	proto string // "", "grpc" or "tcp"
	port  string // the listen port, with tcp
}

// same reports whether two tags route alike but for the host, so that
// their hosts can share one route_host.
func (r fabioRoute) same(o fabioRoute) bool {
	return r.path == o.path && r.strip == o.strip && r.proto == o.proto && r.port == o.port
}

// parseURLPrefix reads a tag the way fabio does (registry/consul,
// parseURLPrefixTag): "urlprefix-<host>/<path>[ <opts>]" or
// "urlprefix-:<port> proto=tcp". ok is false for any other tag; reason is
// set for a urlprefix- tag the routing meta cannot express.
func parseURLPrefix(tag string) (r fabioRoute, reason string, ok bool) {
	s := strings.TrimSpace(tag)
	if !strings.HasPrefix(s, urlPrefix) {
		return r, "", false
	}
	r.tag = s
	route, opts, _ := strings.Cut(strings.TrimSpace(s[len(urlPrefix):]), " ")
	var strip string
	for _, o := range strings.Fields(opts) {
		switch {
		case o == "proto=tcp" || o == "proto=grpc":
			r.proto = o[len("proto="):]
		case strings.HasPrefix(o, "strip="):
			strip = o[len("strip="):]
		default:
			return r, fmt.Sprintf("option %q has no routing meta equivalent", o), true
		}
	}
	if port, isTCP := strings.CutPrefix(route, ":"); isTCP || r.proto == "tcp" {
		if !isTCP || r.proto != "tcp" || strip != "" {
			return r, "a TCP route is exactly urlprefix-:<port> proto=tcp", true
		}
		r.port = port
		return r, "", true
	}
	host, path, hasPath := strings.Cut(route, "/")
	if !hasPath {
		return r, "no /path (fabio's TCP+SNI form)", true
	}
	r.host, r.path = asciiLower(host), "/"+path // fabio lower-cases the host too
	if strip != "" && strings.TrimSuffix(strip, "/") != strings.TrimSuffix(r.path, "/") {
		return r, fmt.Sprintf("strip=%s is not the path %s (route_strip strips exactly route_path)", strip, r.path), true
	}
	r.strip = strip != ""
	return r, "", true
}

// routeFromTags translates a service's urlprefix- tags; key names the tags'
// label. fabio allows several routes per service, the routing meta one:
// the first translatable tag wins, tags that differ from it only in the
// host add theirs, the others are reported.
func routeFromTags(key string, tags []string) (map[string]routeValue, []*Error) {
	var first *fabioRoute
	var used, hosts []string
	anyHost := false
	var errs []*Error
	for _, tag := range tags {
		r, reason, ok := parseURLPrefix(tag)
		switch {
		case !ok:
			continue
		case reason != "":
			errs = append(errs, &Error{Key: key, Value: tag, Reason: "urlprefix- tag not translated: " + reason})
			continue
		case first == nil:
			first = &r
		case !r.same(*first):
			errs = append(errs, &Error{Key: key, Value: tag, Reason: fmt.Sprintf("urlprefix- tag not translated: one route per service, %q is used", first.tag)})
			continue
		}
		used = append(used, r.tag)
		if r.host == "" {
			anyHost = true
		} else {
			hosts = append(hosts, r.host)
		}
	}
	if first == nil {
		return nil, errs
	}
	val := func(v string) routeValue { return routeValue{Value: v, Key: key, Raw: strings.Join(used, ", ")} }
	out := map[string]routeValue{}
	if first.proto == "tcp" {
		out["route_proto"], out["route_port"] = val("tcp"), val(first.port)
		return out, errs
	}
	// A tag without a host matches every host, so it subsumes the others.
	if !anyHost {
		out["route_host"] = val(strings.Join(hosts, ","))
	}
	out["route_path"] = val(first.path)
	if first.strip {
		out["route_strip"] = val("true")
	}
	if first.proto != "" {
		out["route_proto"] = val(first.proto)
	}
	return out, errs
}

// virtualEnv picks nginx-proxy's VIRTUAL_* variables out of the env.
func virtualEnv(env []string) map[string]string {
	v := map[string]string{}
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "VIRTUAL_") {
			v[k] = val
		}
	}
	return v
}

// virtualPort is the container port nginx-proxy proxies to: VIRTUAL_PORT,
// else the only exposed port, else 80 (its docs, "Virtual Ports").
func virtualPort(v map[string]string, ports []container.Port) (int, *Error) {
	if s := strings.TrimSpace(v["VIRTUAL_PORT"]); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 65535 {
			return 0, &Error{Key: "VIRTUAL_PORT", Value: v["VIRTUAL_PORT"], Reason: "not a port 1-65535; VIRTUAL_HOST not translated"}
		}
		return n, nil
	}
	var nums []int
	for _, p := range ports {
		if !slices.Contains(nums, p.Port) {
			nums = append(nums, p.Port)
		}
	}
	if len(nums) == 1 {
		return nums[0], nil
	}
	return 80, nil
}

// routeFromVirtual translates nginx-proxy's variables for the service of
// the TCP port they name; any other port gets nothing.
func routeFromVirtual(v map[string]string, ports []container.Port, port container.Port) (map[string]routeValue, []*Error) {
	if mp, ok := v["VIRTUAL_HOST_MULTIPORTS"]; ok {
		// nginx-proxy lets it override VIRTUAL_HOST: translating the
		// latter alone would route what nginx-proxy would not.
		return nil, []*Error{{Key: "VIRTUAL_HOST_MULTIPORTS", Value: mp, Reason: "not translated, nor is VIRTUAL_HOST, which it overrides; use SERVICE_<port>_ROUTE_* labels"}}
	}
	host := v["VIRTUAL_HOST"]
	if strings.TrimSpace(host) == "" {
		return nil, nil
	}
	target, err := virtualPort(v, ports)
	if err != nil {
		return nil, []*Error{err}
	}
	if port.Port != target || port.Proto != "tcp" {
		return nil, nil
	}
	out := map[string]routeValue{"route_host": {Value: host, Key: "VIRTUAL_HOST", Raw: host}}
	if p := v["VIRTUAL_PATH"]; strings.TrimSpace(p) != "" {
		out["route_path"] = routeValue{Value: p, Key: "VIRTUAL_PATH", Raw: p}
	}
	switch d := v["VIRTUAL_DEST"]; strings.TrimSpace(d) {
	case "":
	case "/": // nginx-proxy's way to strip VIRTUAL_PATH
		out["route_strip"] = routeValue{Value: "true", Key: "VIRTUAL_DEST", Raw: d}
	default:
		return nil, []*Error{{Key: "VIRTUAL_DEST", Value: d, Reason: "VIRTUAL_HOST not translated: of VIRTUAL_DEST only / (strip VIRTUAL_PATH) has a routing meta equivalent"}}
	}
	switch p := v["VIRTUAL_PROTO"]; asciiLower(strings.TrimSpace(p)) {
	case "", "http":
	case "grpc": // plain-text HTTP/2 to the upstream in both
		out["route_proto"] = routeValue{Value: "grpc", Key: "VIRTUAL_PROTO", Raw: p}
	default:
		return nil, []*Error{{Key: "VIRTUAL_PROTO", Value: p, Reason: "VIRTUAL_HOST not translated: of VIRTUAL_PROTO only http and grpc have a routing meta equivalent"}}
	}
	return out, nil
}

// virtualUnplaced reports a VIRTUAL_HOST that no service carries: the
// port nginx-proxy would use is not among the ports registered.
func (b *builder) virtualUnplaced(candidates []container.Port) {
	v := virtualEnv(b.c.Env)
	if _, multi := v["VIRTUAL_HOST_MULTIPORTS"]; multi || strings.TrimSpace(v["VIRTUAL_HOST"]) == "" {
		return
	}
	target, err := virtualPort(v, b.c.Ports)
	if err != nil || slices.ContainsFunc(candidates, func(p container.Port) bool { return p.Port == target && p.Proto == "tcp" }) {
		return // a bad VIRTUAL_PORT is reported per port
	}
	b.errs = append(b.errs, b.errf("VIRTUAL_HOST", v["VIRTUAL_HOST"], fmt.Sprintf(
		"not translated: nginx-proxy's port is %d/tcp (VIRTUAL_PORT, else the only exposed port, else 80) and it is not registered (publish it, or run with -internal)", target)))
}
