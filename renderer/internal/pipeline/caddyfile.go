package pipeline

import (
	"fmt"
	"strings"

	"github.com/switchyard/switchyard/renderer/internal/caddyfile"
)

// CaddyUpstreams counts the static upstreams of every reverse_proxy of a
// Caddyfile, for the stale guard (issue 10): Caddy users get the same
// protection against a render that empties pools as nginx and HAProxy
// users. Upstreams are the addresses on the reverse_proxy line (after
// its matcher, if any) and on the `to` lines of its block; a `dynamic`
// source is not counted, the rendered file holds no member of it.
//
// A pool is named after its `dynamic srv` name when it has one (the
// shipped template gives each service its own), else after its site,
// the matchers of the blocks around it and its own, and its rank among
// pools named alike, so a pool keeps its name from render to render.
// The file is read with Caddy's own token rules (blanks separate, quotes
// and backticks group, '#' starts a comment only at a token's start,
// '{' and '}' open and close blocks only as tokens of their own), so
// Consul data in a quoted string or a comment cannot fake a pool.
func CaddyUpstreams(b []byte) Counts {
	out := Counts{}
	var stack []caddyBlock
	seen := map[string]int{}
	for _, line := range caddyfile.Lines(string(b)) {
		switch {
		case len(line) == 1 && line[0] == "}":
			if n := len(stack); n > 0 {
				stack[n-1].close(out, seen)
				stack = stack[:n-1]
			}
		case line[len(line)-1] == "{":
			hdr := line[:len(line)-1]
			if len(hdr) > 0 && hdr[0] != "reverse_proxy" {
				caddyDirective(hdr, stack, out, seen) // "dynamic srv NAME {" names the pool around it
			}
			stack = append(stack, newCaddyBlock(hdr, stack))
		default:
			caddyDirective(line, stack, out, seen)
		}
	}
	return out
}

// caddyBlock is an open block: its header, and when it is a
// reverse_proxy, the pool being counted.
type caddyBlock struct {
	header []string
	pool   *caddyPool
}

type caddyPool struct {
	scope string // site and matchers: the name when no dynamic srv
	srv   string
	n     int
}

func newCaddyBlock(header []string, stack []caddyBlock) caddyBlock {
	blk := caddyBlock{header: header}
	if len(header) > 0 && header[0] == "reverse_proxy" {
		blk.pool = &caddyPool{scope: caddyScope(stack, header), n: caddyAddrs(header[1:])}
	}
	return blk
}

// caddyDirective handles a line inside blocks: a one-line reverse_proxy
// is a pool of its own; `to` and `dynamic srv` belong to the enclosing
// reverse_proxy.
func caddyDirective(line []string, stack []caddyBlock, out Counts, seen map[string]int) {
	if line[0] == "reverse_proxy" {
		p := caddyPool{scope: caddyScope(stack, line), n: caddyAddrs(line[1:])}
		p.record(out, seen)
		return
	}
	n := len(stack)
	if n == 0 || stack[n-1].pool == nil {
		return
	}
	p := stack[n-1].pool
	switch {
	case line[0] == "to":
		p.n += len(line) - 1
	case line[0] == "dynamic" && len(line) >= 3 && line[1] == "srv":
		p.srv = line[2]
	}
}

func (b caddyBlock) close(out Counts, seen map[string]int) {
	if b.pool != nil {
		b.pool.record(out, seen)
	}
}

func (p caddyPool) record(out Counts, seen map[string]int) {
	name := "srv " + p.srv
	if p.srv == "" {
		seen[p.scope]++
		name = fmt.Sprintf("%s #%d", p.scope, seen[p.scope])
	}
	out[name] += p.n
}

// caddyScope names where a reverse_proxy is: the site's addresses and
// every matcher on the way down to it.
func caddyScope(stack []caddyBlock, line []string) string {
	var parts []string
	for i, blk := range stack {
		if i == 0 {
			parts = append(parts, strings.Join(blk.header, " "))
		} else if len(blk.header) > 1 && caddyfile.Matcher(blk.header[1]) {
			parts = append(parts, blk.header[0]+" "+blk.header[1])
		}
	}
	if len(line) > 1 && caddyfile.Matcher(line[1]) {
		parts = append(parts, line[1])
	}
	return strings.Join(parts, " > ")
}

// caddyAddrs counts the upstream addresses among a reverse_proxy's
// arguments: a leading matcher is not one.
func caddyAddrs(args []string) int {
	if len(args) > 0 && caddyfile.Matcher(args[0]) {
		args = args[1:]
	}
	return len(args)
}
