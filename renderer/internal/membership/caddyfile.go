package membership

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/switchyard/switchyard/renderer/internal/caddyfile"
)

// CaddyfileUpstreams compares two Caddyfiles token by token, without
// Caddy. When they differ only in the static upstreams of reverse_proxy
// blocks that name a dynamic srv pool, it returns each changed pool's
// new upstreams as written, by the pool's name as CaddyPool names it,
// and "". Otherwise it returns why it cannot tell from the tokens, and
// the caller adapts both files and diffs the JSON (Caddy), which
// decides. Reading tokens costs microseconds where `caddy adapt` costs a
// process start (60-170 ms measured on a busy 2-core machine), and a
// membership change through Caddy would pay it every time.
//
// It is deliberately narrow: the lines of both files must pair up one
// to one, and every pair must be equal (quoting included) except for
// the upstream arguments of a reverse_proxy line or of a `to` line
// directly in a reverse_proxy block.
func CaddyfileUpstreams(old, new []byte) (map[string][]string, string) {
	for _, f := range [][]byte{old, new} {
		switch {
		case bytes.Contains(f, []byte("<<")):
			return nil, "a heredoc (<<), which is not read here"
		case bytes.Contains(f, []byte("{$")):
			// Caddy expands these before it reads tokens: the text here
			// is not what Caddy reads.
			return nil, "an environment placeholder ({$...})"
		}
	}
	a, b := caddyfile.QuotedLines(string(old)), caddyfile.QuotedLines(string(new))
	if len(a) != len(b) {
		return nil, fmt.Sprintf("the files have %d and %d lines", len(a), len(b))
	}
	w := caddyfileWalk{pools: map[string][]string{}, changed: map[string][]string{}}
	for i := range a {
		if why := w.line(a[i], b[i]); why != "" {
			return nil, fmt.Sprintf("line %d of %d: %s", i+1, len(b), why)
		}
	}
	if len(w.stack) != 0 {
		return nil, "a block is not closed"
	}
	return w.changed, ""
}

// caddyfileWalk pairs the lines of two Caddyfiles, keeping the open
// blocks (of the new file: both have the same structure or the walk
// stops) and the pools whose upstreams changed.
type caddyfileWalk struct {
	stack   []*caddyfileBlock
	pools   map[string][]string // pool name -> new upstreams, every proxy
	changed map[string][]string // the pools whose upstreams changed
}

// caddyfileBlock is an open block; for a reverse_proxy, its upstreams in
// both files and the pool its dynamic srv source names.
type caddyfileBlock struct {
	proxy    bool
	old, new []string
	pool     string // "" until a dynamic srv line names one
	poolWhy  string // why the pool cannot be named from the tokens
}

// line takes one pair of lines; it returns why the files differ in more
// than upstreams, or "".
func (w *caddyfileWalk) line(a, b []string) string {
	switch {
	case len(b) == 1 && b[0] == "}":
		if !slices.Equal(a, b) {
			return "a block closes in one file only"
		}
		return w.close()
	case b[0] == "reverse_proxy" && a[0] == "reverse_proxy":
		return w.proxyLine(a, b)
	case b[0] == "to" && a[0] == "to" && w.inProxy():
		top := w.stack[len(w.stack)-1]
		top.old, top.new = append(top.old, a[1:]...), append(top.new, b[1:]...)
		return ""
	case !slices.Equal(a, b):
		return fmt.Sprintf("%q differs from %q", strings.Join(b, " "), strings.Join(a, " "))
	}
	if b[0] == "dynamic" && w.inProxy() {
		w.namePool(b)
	}
	if b[len(b)-1] == "{" {
		w.stack = append(w.stack, &caddyfileBlock{})
	}
	return ""
}

// proxyLine pairs two reverse_proxy lines: the matcher and the block
// opening must be equal; the rest are upstreams.
func (w *caddyfileWalk) proxyLine(a, b []string) string {
	split := func(l []string) (head, ups []string, opens bool) {
		head, ups = l[:1], l[1:]
		if len(ups) > 0 && caddyfile.Matcher(caddyfile.Unquoted(ups[0])) {
			head, ups = l[:2], l[2:]
		}
		if n := len(ups); n > 0 && ups[n-1] == "{" {
			return head, ups[:n-1], true
		}
		return head, ups, false
	}
	ha, ua, oa := split(a)
	hb, ub, ob := split(b)
	if !slices.Equal(ha, hb) || oa != ob {
		return fmt.Sprintf("reverse_proxy %q differs from %q in its matcher or block", strings.Join(b, " "), strings.Join(a, " "))
	}
	blk := &caddyfileBlock{proxy: true, old: ua, new: ub}
	if !ob {
		return w.settle(blk) // one line: no dynamic source
	}
	w.stack = append(w.stack, blk)
	return ""
}

func (w *caddyfileWalk) inProxy() bool {
	return len(w.stack) > 0 && w.stack[len(w.stack)-1].proxy
}

// namePool reads "dynamic srv NAME [{]" as Caddy's adapter names the
// pool (lower case, fully qualified); any other form of the source is
// left to the JSON diff.
func (w *caddyfileWalk) namePool(l []string) {
	top := w.stack[len(w.stack)-1]
	switch {
	case len(l) < 2 || l[1] != "srv":
		top.poolWhy = "a dynamic source other than srv"
	case len(l) < 3 || l[2] == "{":
		top.poolWhy = "a dynamic srv source named by its block (service, proto, name)"
	default:
		name := caddyfile.Unquoted(l[2])
		if strings.ContainsAny(name, "{}") {
			top.poolWhy = fmt.Sprintf("SRV name %q has a placeholder", name)
			return
		}
		top.pool = strings.ToLower(strings.TrimSuffix(name, ".")) + "."
	}
}

func (w *caddyfileWalk) close() string {
	n := len(w.stack)
	if n == 0 {
		return "a block closes that was not opened"
	}
	blk := w.stack[n-1]
	w.stack = w.stack[:n-1]
	if !blk.proxy {
		return ""
	}
	return w.settle(blk)
}

// settle records a closed reverse_proxy under its pool's name, as
// changed when its upstreams did; every proxy that asks for one pool
// must list the same members, or Caddy's adapted config would not let
// the renderer serve it.
func (w *caddyfileWalk) settle(blk *caddyfileBlock) string {
	same := slices.Equal(blk.old, blk.new)
	switch {
	case same && blk.pool == "":
		return ""
	case blk.poolWhy != "":
		return "reverse_proxy upstreams changed with " + blk.poolWhy
	case blk.pool == "":
		return "reverse_proxy upstreams changed in a block with no dynamic srv source"
	}
	ups := make([]string, len(blk.new))
	for i, u := range blk.new {
		ups[i] = caddyfile.Unquoted(u)
	}
	if prev, ok := w.pools[blk.pool]; ok && !slices.Equal(prev, ups) {
		return fmt.Sprintf("two reverse_proxy blocks ask for pool %s with different upstreams", blk.pool)
	}
	w.pools[blk.pool] = ups
	if !same {
		w.changed[blk.pool] = ups
	}
	return ""
}

// CaddyfilePools is the pools of a Caddyfile read against a base: the
// pools of a Caddyfile Caddy adapted (CaddyPools), and what
// CaddyfileUpstreams found changed from the base's file to this one.
// Both files have one structure, so only members differ; a changed pool
// must be one the base serves, and its members must be IP literals and
// ports, as in CaddyPools. Otherwise it returns why not.
func CaddyfilePools(base map[string]*CaddyPool, changed map[string][]string) (map[string]*CaddyPool, string) {
	out := make(map[string]*CaddyPool, len(base))
	for name, p := range base {
		out[name] = p
	}
	for name, ups := range changed {
		p := base[name]
		if p == nil {
			return nil, fmt.Sprintf("pool %s is not one the renderer serves", name)
		}
		dials := make([]any, len(ups))
		for i, u := range ups {
			dials[i] = map[string]any{"dial": u}
		}
		servers, err := caddyServers(dials)
		switch {
		case err != nil:
			return nil, fmt.Sprintf("pool %s: %v", name, err)
		case len(servers) == 0:
			return nil, fmt.Sprintf("pool %s has no static upstream", name)
		}
		q := *p
		q.Servers = servers
		out[name] = &q
	}
	return out, ""
}

// CaddyPoolsDelta is the Delta between two pool sets of one structure:
// the pools whose members differ, in name order.
func CaddyPoolsDelta(old, new map[string]*CaddyPool) Delta {
	var d Delta
	for name, p := range new {
		if q := old[name]; q != nil && !slices.Equal(q.Servers, p.Servers) {
			d.Pools = append(d.Pools, Pool{Name: name, Servers: p.Servers, Old: q.Servers})
		}
	}
	slices.SortFunc(d.Pools, func(a, b Pool) int { return strings.Compare(a.Name, b.Name) })
	return d
}
