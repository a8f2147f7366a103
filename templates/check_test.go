package templates_test

// Readers of the three renders: each turns a rendered file back into
// routes (pools, hosts, paths, settings) for comparison with the model,
// and fails on any line the template does not write.

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var (
	summaryRe = regexp.MustCompile(`(?m)\A# Generated [^\n]*\n# every [^\n]*\n# switchyard: (\d+) instances and (\d+) services skipped, (\d+) route values ignored\n`)
	// A Go-quoted string, as printf %q writes it.
	quoted         = `"(?:[^"\\]|\\.)*"`
	skipServiceRe  = regexp.MustCompile(`^ *# skipped ` + quoted + `: \S`)
	skipInstanceRe = regexp.MustCompile(`^ *# skipped ` + quoted + `/` + quoted + `: \S`)
	ignoredRe      = regexp.MustCompile(`^ *# ignored ` + quoted + `/` + quoted + `: (route_(host|path|strip|proto|port|health|sticky|https|weight) ` + quoted + ` is not .+|host \S+ path /\S* is routed to ` + quoted + ` already)$`)
	noRouteRe      = regexp.MustCompile(`^ *# no route for ` + quoted + `: (no passing instance|no instance can be routed|every host and path it asks for is routed to another service|route_proto tcp needs Caddy's layer4 plugin \(not in Caddy's core\)|route_proto grpc needs SWITCHYARD_NGINX_GRPC_LISTEN \(nginx 1\.22 serves h2c only on a port of its own\))$`)
	name           = `([A-Za-z0-9][A-Za-z0-9_-]{0,62})`
	lname          = `([a-z0-9][a-z0-9_-]{0,62})`
	host           = `(\*\.[a-z0-9.-]+|[a-z0-9][a-z0-9.-]*|` + lname + `\.\*)`
	path           = `(/[A-Za-z0-9._~/-]*)`
)

// checkComments checks what every render shares: the summary counts the
// "# skipped" and "# ignored" lines and matches the model, comments are
// well formed and short enough for nginx (a token, comments included,
// must fit its 4 KiB buffer), and every other line is fixed or matches
// one of dynamic.
func checkComments(out []byte, want expectation, fixed map[string]bool, dynamic ...*regexp.Regexp) error {
	m := summaryRe.FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("no skip summary at the top")
	}
	inst, _ := strconv.Atoi(string(m[1]))
	svc, _ := strconv.Atoi(string(m[2]))
	ign, _ := strconv.Atoi(string(m[3]))
	if inst != want.skippedInstances || svc != want.skippedServices || ign != want.ignore {
		return fmt.Errorf("summary says %d instances, %d services, %d values; model %d, %d, %d", inst, svc, ign, want.skippedInstances, want.skippedServices, want.ignore)
	}
	var skipI, skipS, ignored, noRoute int
lines:
	for i, l := range strings.Split(string(out), "\n") {
		if len(l) > 3000 {
			return fmt.Errorf("line %d is %d bytes long", i+1, len(l))
		}
		trimmed := strings.TrimSpace(l)
		switch {
		case skipInstanceRe.MatchString(l):
			skipI++
		case skipServiceRe.MatchString(l):
			skipS++
		case ignoredRe.MatchString(l):
			ignored++
		case noRouteRe.MatchString(l):
			noRoute++
		case strings.HasPrefix(trimmed, "# skipped"), strings.HasPrefix(trimmed, "# no route"), strings.HasPrefix(trimmed, "# ignored"):
			return fmt.Errorf("malformed line %d: %q", i+1, l)
		case fixed[l], i == 2:
		default:
			for _, re := range dynamic {
				if re.MatchString(l) {
					continue lines
				}
			}
			return fmt.Errorf("line %d is not one the template writes: %q", i+1, l)
		}
	}
	if skipI != inst || skipS != svc || ignored != ign {
		return fmt.Errorf("%d instance, %d service skip and %d ignore lines; summary says %d, %d, %d", skipI, skipS, ignored, inst, svc, ign)
	}
	if noRoute != want.noRouteLines {
		return fmt.Errorf("%d no-route lines, model %d", noRoute, want.noRouteLines)
	}
	return nil
}

// reading collects the routes of a render, by pool name.
type reading struct {
	routes map[string]*route
	hosts  []hostRoute
}

func (r *reading) pool(name string) *route {
	if r.routes[name] == nil {
		r.routes[name] = &route{name: name}
	}
	return r.routes[name]
}

// compare checks a reading against the model. applied says which
// settings the proxy applies (the others are not compared).
func compare(got reading, want expectation, ordered bool, applied func(r route) route) error {
	var names, wantNames []string
	for n := range got.routes {
		names = append(names, n)
	}
	for _, r := range want.routes {
		wantNames = append(wantNames, r.name)
	}
	slices.Sort(names)
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		return fmt.Errorf("routed %v; model %v", names, wantNames)
	}
	for _, w := range want.routes {
		w = applied(w)
		g := *got.routes[w.name]
		if fmt.Sprint(g) != fmt.Sprint(w) {
			return fmt.Errorf("route %s:\ngot   %+v\nmodel %+v", w.name, g, w)
		}
	}
	gh, wh := slices.Clone(got.hosts), slices.Clone(want.hosts)
	if !ordered {
		cmp := func(a, b hostRoute) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) }
		slices.SortFunc(gh, cmp)
		slices.SortFunc(wh, cmp)
	}
	if !slices.Equal(gh, wh) {
		return fmt.Errorf("hosts:\ngot   %v\nmodel %v", gh, wh)
	}
	return nil
}

// effective is a route's settings as a proxy that applies them all does:
// the path lives in hosts, strip needs a path and is no gRPC setting,
// health is probed over HTTP/1 only, and TCP routes have none of them.
func effective(r route) route {
	r.strip = r.strip && r.path != "/" && r.proto != "grpc" && r.proto != "tcp"
	r.path = ""
	if r.proto == "tcp" {
		r.https, r.sticky, r.health = false, false, ""
	}
	if r.proto == "grpc" {
		r.health = ""
	}
	if r.proto != "tcp" {
		r.port = ""
	}
	return r
}

func indexRe(res ...string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(res))
	for i, s := range res {
		out[i] = regexp.MustCompile(s)
	}
	return out
}

func lineSet(out []byte, extra []string) map[string]bool {
	m := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		m[l] = true
	}
	for _, l := range extra {
		m[l] = true
	}
	return m
}
