package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/membership"
)

// Patch applies a change of membership only (servers added to, removed
// from or changed in backends the running config has) through the
// runtime API of the current worker, reached through the master CLI,
// instead of a reload: a reload makes the old worker close its idle
// keep-alive connections while clients may be sending on them (issue 9).
// It implements supervise.Patcher: (false, nil) for a structural change,
// (true, nil) once applied and verified with "show servers state", an
// error when an attempt failed (the caller reloads, which makes the
// worker equal to the files whatever the attempt left).
func (h *HAProxy) Patch(ctx context.Context, running, live map[string][]byte) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	ch, err := haproxyChange(running, live)
	var st *membership.Structural
	if errors.As(err, &st) {
		h.Log.Debug("change is structural; reloading", "proxy", "haproxy", "reason", err.Error())
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if ch.Empty() {
		return true, nil // comments alone: nothing to apply
	}
	rt, err := h.runtime(ctx)
	if err != nil {
		return false, fmt.Errorf("haproxy runtime apply: %w", err)
	}
	for _, p := range ch.Pools {
		if err := rt.apply(ctx, p, ch.Args); err != nil {
			return false, fmt.Errorf("haproxy runtime apply, backend %s: %w", p.Name, err)
		}
	}
	for _, p := range ch.Pools {
		if err := rt.verify(ctx, p); err != nil {
			return false, fmt.Errorf("haproxy runtime apply, backend %s: verify: %w", p.Name, err)
		}
	}
	h.Log.Info("haproxy backends patched through the runtime API", "proxy", "haproxy", "worker", rt.worker,
		"backends", poolNames(ch.Pools), "added", rt.counts.added, "removed", rt.counts.removed, "changed", rt.counts.changed)
	return true, nil
}

// haproxyChange diffs every file of the configuration: a file that is
// new, gone or not known as it runs is structural. A backend lives in one
// file; moving it makes both files differ structurally.
func haproxyChange(running, live map[string][]byte) (membership.HAProxyChange, error) {
	files := make([]string, 0, len(live))
	for f := range live {
		files = append(files, f)
	}
	sort.Strings(files)
	out := membership.HAProxyChange{Args: map[string][]string{}}
	for f := range running {
		if _, ok := live[f]; !ok {
			return out, &membership.Structural{Reason: fmt.Sprintf("%s: no live file", f)}
		}
	}
	for _, f := range files {
		old, ok := running[f]
		if !ok {
			return out, &membership.Structural{Reason: fmt.Sprintf("%s: not known as it runs", f)}
		}
		c, err := membership.HAProxyDiff(old, live[f])
		if err != nil {
			return out, fmt.Errorf("%s: %w", f, err)
		}
		out.Pools = append(out.Pools, c.Pools...)
		for k, v := range c.Args {
			out.Args[k] = v
		}
	}
	return out, nil
}

func poolNames(pools []membership.Pool) []string {
	var names []string
	for _, p := range pools {
		names = append(names, p.Name)
	}
	return names
}

// hxRuntime sends runtime commands to one worker: named by its pid
// ("@!PID"), not "@1", so that every command of a patch reaches the same
// process, and a worker that changed under us fails the patch.
type hxRuntime struct {
	h      *HAProxy
	worker int
	drain  time.Duration // how long removed servers get to finish their requests
	counts struct{ added, removed, changed int }
}

func (h *HAProxy) runtime(ctx context.Context) (*hxRuntime, error) {
	var p proc
	err := retryTransient(ctx, "haproxy master CLI show proc", func(ctx context.Context) (err error) {
		p, err = h.showProc(ctx)
		return err
	}, h.classify)
	if err != nil {
		return nil, err
	}
	if len(p.workers) != 1 {
		return nil, fmt.Errorf("the master lists %d current workers, want 1: %q", len(p.workers), p.raw)
	}
	rt := &hxRuntime{h: h, drain: h.timeout() / 2}
	for pid := range p.workers {
		rt.worker = pid
	}
	return rt, nil
}

// Answers of the runtime API (HAProxy 2.6) that mean success; the
// commands not listed here answer nothing when they succeed.
const (
	hxAdded   = "New server registered."
	hxDeleted = "Server deleted."
)

func silent(out string) bool { return strings.TrimSpace(out) == "" }

func says(s string) func(string) bool {
	return func(out string) bool { return strings.Contains(out, s) }
}

// addrSet: "set server ... addr" reports what it changed.
func addrSet(out string) bool {
	out = strings.TrimSpace(out)
	return strings.HasPrefix(out, "IP changed") || strings.HasPrefix(out, "no need to change")
}

// run sends one command to the worker and checks the answer with ok (nil:
// any answer). The answer is in the error when ok refuses it.
func (rt *hxRuntime) run(ctx context.Context, ok func(string) bool, cmd string) (string, error) {
	out, err := rt.h.cli(ctx, "@!"+strconv.Itoa(rt.worker)+" "+cmd)
	if err != nil {
		return out, fmt.Errorf("%s: %w", cmd, err)
	}
	if ok != nil && !ok(out) {
		return out, fmt.Errorf("%s: haproxy answered %q", cmd, strings.TrimSpace(out))
	}
	return out, nil
}

// hxPlan is what one backend needs, in the order it is done: servers are
// added before any is taken out, so the backend keeps its capacity.
type hxPlan struct {
	add    []membership.Server // created: new names
	weight []membership.Server // weight set in place
	down   []membership.Server // put into maintenance (disabled in the config now)
	remove []string            // drained, then deleted
	readd  []membership.Server // drained, deleted and created again: "disabled" in the config cannot be cleared at runtime
	readdr []membership.Server // drained, then given their new address
}

func planPool(p membership.Pool) hxPlan {
	var pl hxPlan
	old := map[string]membership.Server{}
	for _, s := range p.Old {
		old[s.Name] = s
	}
	keep := map[string]bool{}
	for _, s := range p.Servers {
		keep[s.Name] = true
		o, ok := old[s.Name]
		switch {
		case !ok:
			pl.add = append(pl.add, s)
			continue
		case o.Down && !s.Down:
			pl.readd = append(pl.readd, s)
			continue
		}
		if s.Weight != o.Weight {
			pl.weight = append(pl.weight, s)
		}
		if s.Addr != o.Addr {
			pl.readdr = append(pl.readdr, s)
		} else if s.Down && !o.Down {
			pl.down = append(pl.down, s)
		}
	}
	for _, s := range p.Old {
		if !keep[s.Name] {
			pl.remove = append(pl.remove, s.Name)
		}
	}
	return pl
}

// apply brings one backend of the worker from p.Old to p.Servers.
func (rt *hxRuntime) apply(ctx context.Context, p membership.Pool, args map[string][]string) error {
	state, err := rt.state(ctx, p.Name)
	if err != nil {
		return err
	}
	for _, s := range p.Old {
		if _, ok := state[s.Name]; !ok {
			return fmt.Errorf("the worker has no server %s, which the running config has", s.Name)
		}
	}
	pl := planPool(p)
	rt.counts.added += len(pl.add)
	rt.counts.removed += len(pl.remove)
	rt.counts.changed += len(pl.weight) + len(pl.down) + len(pl.readd) + len(pl.readdr)
	for _, s := range pl.add {
		if err := rt.add(ctx, p.Name, s, args[p.Name+"/"+s.Name]); err != nil {
			return err
		}
	}
	for _, s := range pl.weight {
		if _, err := rt.run(ctx, silent, fmt.Sprintf("set server %s/%s weight %d", p.Name, s.Name, s.Weight)); err != nil {
			return err
		}
	}
	for _, s := range pl.down {
		if err := rt.setState(ctx, p.Name, s.Name, "maint"); err != nil {
			return err
		}
	}
	if err := rt.drainAndSwap(ctx, p.Name, pl); err != nil {
		return err
	}
	for _, s := range pl.readd {
		if err := rt.add(ctx, p.Name, s, args[p.Name+"/"+s.Name]); err != nil {
			return err
		}
	}
	for _, s := range pl.readdr {
		if !s.Down {
			if err := rt.setState(ctx, p.Name, s.Name, "ready"); err != nil {
				return err
			}
		}
	}
	return nil
}

// add creates a server with the words of its config line. A dynamic
// server starts in maintenance with its health check off: both are
// turned on as a reload would have them (checked, and up until a check
// fails), unless the line says "disabled".
func (rt *hxRuntime) add(ctx context.Context, be string, s membership.Server, args []string) error {
	cmd := strings.Join(append([]string{"add server", be + "/" + s.Name, s.Addr}, args...), " ")
	if _, err := rt.run(ctx, says(hxAdded), cmd); err != nil {
		return err
	}
	if slices.Contains(args, "check") {
		if _, err := rt.run(ctx, silent, "enable health "+be+"/"+s.Name); err != nil {
			return err
		}
	}
	if s.Down {
		return nil
	}
	return rt.setState(ctx, be, s.Name, "ready")
}

func (rt *hxRuntime) setState(ctx context.Context, be, name, state string) error {
	_, err := rt.run(ctx, silent, "set server "+be+"/"+name+" state "+state)
	return err
}

// drainAndSwap puts every server that leaves its place (removed,
// re-added, re-addressed) into maintenance, which sends it no new
// request and closes its idle connections, waits (at most rt.drain) until
// its requests in flight are done, then deletes it or sets its new
// address. A server that does not drain in time fails the patch: the
// reload that follows lets the old worker finish those requests.
func (rt *hxRuntime) drainAndSwap(ctx context.Context, be string, pl hxPlan) error {
	swap := map[string]func(ctx context.Context) (bool, error){}
	del := func(name string) func(ctx context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			out, err := rt.run(ctx, nil, "del server "+be+"/"+name)
			switch {
			case err != nil:
				return false, err
			case strings.Contains(out, hxDeleted):
				return true, nil
			case strings.Contains(out, "connections"): // "still has connections attached": not drained after all
				return false, nil
			}
			return false, fmt.Errorf("del server %s/%s: haproxy answered %q", be, name, strings.TrimSpace(out))
		}
	}
	for _, name := range pl.remove {
		swap[name] = del(name)
	}
	for _, s := range pl.readd {
		swap[s.Name] = del(s.Name)
	}
	for _, s := range pl.readdr {
		swap[s.Name] = rt.readdress(be, s)
	}
	if len(swap) == 0 {
		return nil
	}
	for _, name := range sortedKeys(swap) {
		if err := rt.setState(ctx, be, name, "maint"); err != nil {
			return err
		}
	}
	return rt.awaitDrained(ctx, be, swap)
}

// readdress sets a drained server's new address and port.
func (rt *hxRuntime) readdress(be string, s membership.Server) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		ap, err := membership.HAProxyAddr(s.Addr)
		if err != nil {
			return false, err // the diff lets only literal addresses through
		}
		cmd := fmt.Sprintf("set server %s/%s addr %s port %d", be, s.Name, ap.Addr(), ap.Port())
		_, err = rt.run(ctx, addrSet, cmd)
		return err == nil, err
	}
}

// awaitDrained polls "show servers conn" until each server of swap has no
// request in flight, then calls its swap, until all are done or rt.drain
// passed.
//
// A server's idle connections are closed first: they carry no request,
// and HAProxy 2.6 keeps them. A request in flight when the server went
// into maintenance hands its connection to the idle pool when it ends;
// the pool is purged by half every 5 s, never down to its last one; and
// "del server" refuses a server with any connection. HAProxy closes a
// server's idle connections when its address changes, and nothing else
// on the runtime API does: so the server is moved to the next port. It is
// in maintenance and about to be deleted or given its new address, so it
// sends nothing there.
func (rt *hxRuntime) awaitDrained(ctx context.Context, be string, swap map[string]func(context.Context) (bool, error)) error {
	conns := map[string]hxConns{}
	err := pollUntil(ctx, rt.drain, func(ctx context.Context) (bool, error) {
		now, err := rt.conns(ctx, be)
		if err != nil {
			return false, err
		}
		conns = now
		for _, name := range sortedKeys(swap) {
			c := conns[name]
			switch {
			case c.used > 0:
				continue
			case c.idle > 0:
				if err := rt.closeIdle(ctx, be, name, c); err != nil {
					return false, err
				}
				continue // the next poll sees them gone
			}
			done, err := swap[name](ctx)
			if err != nil {
				return false, err
			}
			if done {
				delete(swap, name)
			}
		}
		return len(swap) == 0, nil
	})
	if errors.Is(err, context.DeadlineExceeded) && len(swap) > 0 {
		var left []string
		for _, name := range sortedKeys(swap) {
			left = append(left, fmt.Sprintf("%s (%d requests in flight, %d idle connections)", name, conns[name].used, conns[name].idle))
		}
		return fmt.Errorf("servers not drained within %s: %s: %w", rt.drain, strings.Join(left, ", "), err)
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// hxServerState is a server's line of "show servers state".
type hxServerState struct {
	addr    netip.Addr // invalid when the server has none HAProxy shows as an IP
	port    int
	admin   int // srv_admin_state: a mask of the SRV_ADMF_* flags
	uweight int
}

// Admin state flags (HAProxy 2.6 management guide, "show servers state").
const (
	admForcedMaint  = 0x01
	admConfigMaint  = 0x04
	admForcedDrain  = 0x08
	admMaintByAdmin = admForcedMaint | admConfigMaint
)

// state reads "show servers state BACKEND" into server name -> state.
func (rt *hxRuntime) state(ctx context.Context, be string) (map[string]hxServerState, error) {
	out, err := rt.run(ctx, nil, "show servers state "+be)
	if err != nil {
		return nil, err
	}
	rows, err := hxTable(out, "# be_id ", "srv_name", "srv_addr", "srv_admin_state", "srv_uweight", "srv_port")
	if err != nil {
		return nil, fmt.Errorf("show servers state %s: %w", be, err)
	}
	m := map[string]hxServerState{}
	for _, r := range rows {
		var s hxServerState
		s.addr, _ = netip.ParseAddr(r["srv_addr"])
		s.port, _ = strconv.Atoi(r["srv_port"])
		s.admin, _ = strconv.Atoi(r["srv_admin_state"])
		s.uweight, _ = strconv.Atoi(r["srv_uweight"])
		m[r["srv_name"]] = s
	}
	return m, nil
}

// conns reads "show servers conn BACKEND" into server name -> connections
// in use and idle ones (maintenance closes those; del server refuses while
// any is left).
func (rt *hxRuntime) conns(ctx context.Context, be string) (map[string]hxConns, error) {
	out, err := rt.run(ctx, nil, "show servers conn "+be)
	if err != nil {
		return nil, err
	}
	rows, err := hxTable(out, "# bkname/svname ", "bkname/svname", "addr", "port", "used_cur", "idle_cur")
	if err != nil {
		return nil, fmt.Errorf("show servers conn %s: %w", be, err)
	}
	m := map[string]hxConns{}
	for _, r := range rows {
		var c hxConns
		c.used, _ = strconv.Atoi(r["used_cur"])
		c.idle, _ = strconv.Atoi(r["idle_cur"])
		c.port, _ = strconv.Atoi(r["port"])
		c.addr = r["addr"]
		_, name, _ := strings.Cut(r["bkname/svname"], "/")
		m[name] = c
	}
	return m, nil
}

// hxConns is a server's line of "show servers conn": its address, and
// its connections carrying a request (used) and kept for reuse (idle).
type hxConns struct {
	addr       string
	port       int
	used, idle int
}

// closeIdle closes a server's idle connections by moving it to the next
// port (see awaitDrained).
func (rt *hxRuntime) closeIdle(ctx context.Context, be, name string, c hxConns) error {
	port := c.port + 1
	if port > 65535 {
		port = 1
	}
	cmd := fmt.Sprintf("set server %s/%s addr %s port %d", be, name, c.addr, port)
	_, err := rt.run(ctx, addrSet, cmd)
	return err
}

// hxTable reads a runtime API table: a header line starting with header
// names its columns, each later line that is not a comment is a row. The
// columns listed in want must be there. Any other answer (an error
// message, an unknown backend) is an error quoting it.
func hxTable(out, header string, want ...string) ([]map[string]string, error) {
	var cols []string
	var rows []map[string]string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, header):
			cols = strings.Fields(strings.TrimPrefix(line, "#"))
		case cols == nil || strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
		default:
			f := strings.Fields(line)
			row := map[string]string{}
			for i, c := range cols {
				if i < len(f) {
					row[c] = f[i]
				}
			}
			rows = append(rows, row)
		}
	}
	if cols == nil {
		return nil, fmt.Errorf("no table in the answer %q", strings.TrimSpace(out))
	}
	for _, c := range want {
		if !slices.Contains(cols, c) {
			return nil, fmt.Errorf("no column %s in %q", c, strings.Join(cols, " "))
		}
	}
	return rows, nil
}

// verify reads the backend back: exactly the servers of p.Servers, each
// with its address and port, weight and maintenance as the config says.
// Anything else fails the patch, and the caller reloads.
func (rt *hxRuntime) verify(ctx context.Context, p membership.Pool) error {
	state, err := rt.state(ctx, p.Name)
	if err != nil {
		return err
	}
	var bad []string
	for _, s := range p.Servers {
		st, ok := state[s.Name]
		delete(state, s.Name)
		if !ok {
			bad = append(bad, s.Name+" is missing")
			continue
		}
		if d := stateDiff(s, st); d != "" {
			bad = append(bad, s.Name+" "+d)
		}
	}
	for _, name := range sortedKeys(state) {
		bad = append(bad, name+" is not in the config")
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// stateDiff says how a server's runtime state differs from its config
// line; "" when it does not. Health (up/down by checks) is not compared:
// it is the checks' business, as after a reload.
func stateDiff(s membership.Server, st hxServerState) string {
	var d []string
	if ap, err := membership.HAProxyAddr(s.Addr); err == nil &&
		(st.addr.Unmap() != ap.Addr().Unmap() || st.port != int(ap.Port())) {
		d = append(d, fmt.Sprintf("has address %s port %d, the config %s", st.addr, st.port, s.Addr))
	}
	if down := st.admin&admMaintByAdmin != 0; down != s.Down {
		d = append(d, fmt.Sprintf("has admin state %#x, the config disabled=%t", st.admin, s.Down))
	} else if !s.Down && st.admin&admForcedDrain != 0 {
		d = append(d, "is draining")
	}
	if st.uweight != s.Weight {
		d = append(d, fmt.Sprintf("has weight %d, the config %d", st.uweight, s.Weight))
	}
	return strings.Join(d, ", ")
}

// RuntimeOnly reports whether next differs from live only in what Patch
// applies through the runtime API, which parses each added server line
// as the config would and is verified with show servers state. The
// pipeline then swaps next in without haproxy -c first (about 0.4 s
// here) and validates it after the apply.
func (h *HAProxy) RuntimeOnly(live, next []byte) bool {
	_, err := membership.HAProxyDiff(live, next)
	return err == nil
}
