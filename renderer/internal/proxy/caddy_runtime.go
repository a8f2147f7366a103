package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/membership"
)

// Membership changes without a reload (issue 9). Caddy 2.6 cannot change
// part of its config in place: /load and a PATCH of one upstream list
// alike provision the whole config anew and shut the old HTTP servers
// down, closing their idle keep-alive connections under the clients
// (measured, 50 changes under 32 keep-alive connections: 545-577 failed
// requests by `caddy reload`, 405-590 by a PATCH of the upstreams). What
// it does look up per request is a reverse_proxy's dynamic upstream
// source. So a pool that may change at runtime is written with both its
// static upstreams (the file's truth) and a "dynamic srv" source whose
// resolver is the renderer's loopback DNS server (caddyResolver), which
// answers with exactly those static upstreams:
//
//	reverse_proxy 10.0.0.1:80 10.0.0.2:80 {
//		dynamic srv web.8080.svc.switchyard. {
//			resolvers 127.0.0.1:8053
//			refresh 50ms
//		}
//		transport http {
//			resolvers 127.0.0.1:8053
//		}
//	}
//
// A membership change then only changes the answer (0 failed requests in
// the same test), and Caddy sees it within refresh. Whenever the lookup
// fails (the renderer is not there, a pool it cannot serve), Caddy uses
// the handler's static upstreams: those of the file it last loaded.

// caddyRuntime is the Caddy proxy's runtime-apply state.
type caddyRuntime struct {
	mu      sync.Mutex
	res     *caddyResolver    // nil until a config names a pool to serve
	adapted map[string][]byte // file-set digest -> adapted JSON (the last two)
	order   []string
	base    *caddyBase // the last Caddyfile Caddy adapted, nil before one
	adapts  int        // configs adapted by Caddy (a caddy process or an admin API call each)
}

// caddyBase is a Caddyfile Caddy adapted, with its pools: the file of a
// later membership-only change is read against it token by token
// (membership.CaddyfileUpstreams) instead of adapting it again, which
// starts a caddy process on every change.
type caddyBase struct {
	file    []byte
	adapted []byte
	pools   map[string]*membership.CaddyPool
	// read remembers the files read against this base, by digest: a
	// change's new file is read by RuntimeOnly, again by Patch, and is
	// the running file of the next change, and lexing a Caddyfile of
	// 1,000 pools takes about 5 ms. nil pools: the tokens cannot tell.
	read map[[sha256.Size]byte]baseRead
}

// baseRead is one file read against a base: its pools, or why the
// tokens cannot tell.
type baseRead struct {
	pools map[string]*membership.CaddyPool
	why   string
}

// maxBaseReads bounds caddyBase.read: a change needs the running file
// and the new one.
const maxBaseReads = 4

// poolsOf reads file against the base, once per distinct file; nil when
// the tokens cannot tell, with why.
func (b *caddyBase) poolsOf(file []byte) (map[string]*membership.CaddyPool, string) {
	key := sha256.Sum256(file)
	if r, ok := b.read[key]; ok {
		return r.pools, r.why
	}
	changed, why := membership.CaddyfileUpstreams(b.file, file)
	var pools map[string]*membership.CaddyPool
	if why == "" {
		pools, why = membership.CaddyfilePools(b.pools, changed)
	}
	if b.read == nil || len(b.read) >= maxBaseReads {
		b.read = map[[sha256.Size]byte]baseRead{}
	}
	b.read[key] = baseRead{pools, why}
	return pools, why
}

// Patch implements supervise.Patcher: a change of the static upstreams of
// served pools only is applied by the renderer's resolver and verified
// by asking it as Caddy does. Caddy's admin API must report the config
// the files give, less those upstreams, or it is an error (the caller
// reloads).
func (c *Caddy) Patch(ctx context.Context, running, live map[string][]byte) (bool, error) {
	rt := &c.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.res == nil || !sameKeys(running, live) {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	d, pools, structure, err := c.delta(ctx, running, live)
	if s := (*membership.Structural)(nil); errors.As(err, &s) {
		c.Log.Debug("caddy: not a runtime change", "proxy", "caddy", "reason", s.Reason)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	want, why := c.servable(d, pools)
	if why != "" {
		c.Log.Debug("caddy: not a runtime change", "proxy", "caddy", "reason", why)
		return false, nil
	}
	if err := c.runsStructure(ctx, structure); err != nil {
		return false, err
	}
	for name, m := range want {
		rt.res.set(name, m.members)
	}
	if err := verifyPools(ctx, want); err != nil {
		return false, err
	}
	return true, nil
}

// servedPool is what the resolver must answer for one pool, and where.
type servedPool struct {
	members []netip.AddrPort
	addrs   []string // normalized resolver addresses
}

// servable returns, for every pool of d (pools: those of the new
// config), what the resolver must answer and where, or why it cannot
// (then the change reloads).
func (c *Caddy) servable(d membership.Delta, pools map[string]*membership.CaddyPool) (map[string]servedPool, string) {
	out := map[string]servedPool{}
	for _, p := range d.Pools {
		cp := pools[p.Name]
		if cp == nil {
			return nil, fmt.Sprintf("pool %s is not served", p.Name)
		}
		sp, why := c.rt.poolOf(cp)
		if why != "" {
			return nil, why
		}
		out[p.Name] = sp
	}
	return out, ""
}

// poolOf checks that the resolver serves every address cp asks and that
// its answer fits in a datagram.
func (rt *caddyRuntime) poolOf(cp *membership.CaddyPool) (servedPool, string) {
	var sp servedPool
	for _, r := range cp.Resolvers {
		a, ok := resolverAddr(r)
		if !ok || rt.res == nil || !rt.res.serves(a) {
			return sp, fmt.Sprintf("pool %s asks resolver %s, which the renderer does not serve", cp.Name, r)
		}
		if !slices.Contains(sp.addrs, a) {
			sp.addrs = append(sp.addrs, a)
		}
	}
	for _, s := range cp.Servers {
		ap, err := netip.ParseAddrPort(s.Addr)
		if err != nil {
			return sp, fmt.Sprintf("pool %s: member %s: %v", cp.Name, s.Addr, err)
		}
		// The resolver answers ::ffff:a.b.c.d as a.b.c.d, as Go dials it.
		sp.members = append(sp.members, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	for _, a := range sp.addrs {
		if !caddyFits(cp.Name, sp.members, answerLimit(a)) {
			return sp, fmt.Sprintf("pool %s: the SRV answer for its %d members is larger than a DNS message at %s (%d bytes)", cp.Name, len(sp.members), a, answerLimit(a))
		}
	}
	return sp, ""
}

// runsStructure checks, by GET /config/, that Caddy runs cfg but for the
// static upstreams of reverse_proxy handlers: otherwise a resolver answer
// would not reach the handlers the files describe.
func (c *Caddy) runsStructure(ctx context.Context, cfg []byte) error {
	b, err := c.get(ctx, "/config/")
	if err != nil {
		return fmt.Errorf("caddy admin API %s: %w", c.Admin, err)
	}
	if _, err := membership.Caddy(b, cfg); err != nil {
		return fmt.Errorf("caddy admin API %s reports a config other than the files: %w", c.Admin, err)
	}
	return nil
}

// verifyPools asks the resolver, as Caddy does, for every pool of want at
// every address Caddy asks.
func verifyPools(ctx context.Context, want map[string]servedPool) error {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, a := range want[n].addrs {
			got, err := caddyLookup(ctx, a, n)
			if err != nil {
				return err
			}
			if !sameMembers(got, want[n].members) {
				return fmt.Errorf("caddy resolver %s: pool %s answers %v, want %v", a, n, got, want[n].members)
			}
		}
	}
	return nil
}

func sameMembers(a, b []netip.AddrPort) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, func(x, y netip.AddrPort) int { return x.Compare(y) })
	slices.SortFunc(b, func(x, y netip.AddrPort) int { return x.Compare(y) })
	return slices.Equal(a, b)
}

func sameKeys(a, b map[string][]byte) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			return false
		}
	}
	return true
}

// syncRuntime makes the resolver answer for every pool of the config the
// files on disk give, which Caddy is about to load (Start, Reload): from
// then on a lookup returns the same members as the static upstreams
// Caddy loads. A pool it cannot serve, or a config it cannot read, gets
// no answer, so Caddy uses the static upstreams: still the file's.
func (c *Caddy) syncRuntime(ctx context.Context) {
	rt := &c.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	cfg, err := c.adaptFiles(ctx, nil)
	var pools map[string]*membership.CaddyPool
	var bad map[string]string
	if err == nil {
		pools, bad, err = membership.CaddyPools(cfg)
	}
	if err != nil {
		c.Log.Warn("caddy: cannot read the pools of the config; Caddy uses its static upstreams", "proxy", "caddy", "err", err)
		if rt.res != nil {
			rt.res.replace(map[string][]netip.AddrPort{})
		}
		return
	}
	for name, why := range bad {
		c.Log.Info("caddy: pool not served at runtime; its changes reload", "proxy", "caddy", "pool", name, "reason", why)
	}
	t := rt.table(pools, c)
	if rt.res != nil {
		rt.res.replace(t)
	}
}

// table listens wherever a pool asks and returns the answers.
func (rt *caddyRuntime) table(pools map[string]*membership.CaddyPool, c *Caddy) map[string][]netip.AddrPort {
	out := map[string][]netip.AddrPort{}
	for _, name := range sortedPoolNames(pools) {
		p := pools[name]
		for _, r := range p.Resolvers {
			a, ok := resolverAddr(r)
			if !ok {
				continue // poolOf says why, if the pool ever changes
			}
			if rt.res == nil {
				rt.res = newCaddyResolver(c.Log)
			}
			if err := rt.res.listen(a); err != nil {
				c.Log.Error("caddy: pool not served at runtime", "proxy", "caddy", "pool", name, "err", err)
			}
		}
		if sp, why := rt.poolOf(p); why == "" {
			out[name] = sp.members
		} else {
			c.Log.Info("caddy: pool not served at runtime; its changes reload", "proxy", "caddy", "pool", name, "reason", why)
		}
	}
	return out
}

func sortedPoolNames(m map[string]*membership.CaddyPool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Stop stops a supervised Caddy, then the resolver: Caddy asks it until
// its last request is done.
func (c *Caddy) Stop(ctx context.Context) error {
	err := c.supervised.Stop(ctx)
	c.rt.mu.Lock()
	defer c.rt.mu.Unlock()
	if c.rt.res != nil {
		c.rt.res.close()
		c.rt.res = nil
	}
	return err
}

// adaptCached is adaptFiles, remembered for the last two file sets: the
// live set of one change is the running set of the next.
func (c *Caddy) adaptCached(ctx context.Context, files map[string][]byte) ([]byte, error) {
	h := sha256.New()
	for _, k := range sortedKeysOf(files) {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(files[k]))
		h.Write(files[k])
	}
	key := string(h.Sum(nil))
	if b, ok := c.rt.adapted[key]; ok {
		return b, nil
	}
	c.rt.adapts++
	b, err := c.adaptFiles(ctx, files)
	if err != nil {
		return nil, err
	}
	if c.rt.adapted == nil {
		c.rt.adapted = map[string][]byte{}
	}
	c.rt.adapted[key] = b
	c.rt.order = append(c.rt.order, key)
	if len(c.rt.order) > 2 {
		delete(c.rt.adapted, c.rt.order[0])
		c.rt.order = c.rt.order[1:]
	}
	return b, nil
}

func sortedKeysOf(m map[string][]byte) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// adaptFiles returns the JSON config Caddy would load from its main file,
// with each file of files (live path -> bytes) in place of the one on
// disk; nil files means the files on disk.
func (c *Caddy) adaptFiles(ctx context.Context, files map[string][]byte) ([]byte, error) {
	main := c.MainConfig
	if main == "" {
		main = c.Config
	}
	main, err := filepath.Abs(main)
	if err != nil {
		return nil, err
	}
	if c.adapter(main) == nil { // JSON already; it imports nothing
		if b, ok := files[main]; ok {
			return b, nil
		}
		return os.ReadFile(main)
	}
	if files == nil {
		b, err := os.ReadFile(main)
		if err != nil {
			return nil, err
		}
		if selfContained(b) {
			if out, err := c.adaptByAdmin(ctx, b); err == nil {
				return out, nil
			}
		}
		return c.adapt(ctx, main)
	}
	if b, ok := files[main]; ok && len(files) == 1 && selfContained(b) {
		if out, err := c.adaptByAdmin(ctx, b); err == nil {
			return out, nil
		}
	}
	return c.adaptShadow(ctx, main, files)
}

// adaptShadow adapts main in a shadow tree (caddyShadow) where each file
// of files stands in for the live one: its imports see them too.
func (c *Caddy) adaptShadow(ctx context.Context, main string, files map[string][]byte) ([]byte, error) {
	dir, err := os.MkdirTemp("", "switchyard-caddy-adapt-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	replace := map[string]string{}
	for i, live := range sortedKeysOf(files) {
		staged := filepath.Join(dir, strconv.Itoa(i))
		if err := os.WriteFile(staged, files[live], 0o600); err != nil {
			return nil, err
		}
		abs, err := filepath.Abs(live)
		if err != nil {
			return nil, err
		}
		replace[abs] = staged
	}
	s, err := newCaddyShadow(replace)
	if err != nil {
		return nil, err
	}
	defer s.remove()
	if err := s.addFile(main); err != nil {
		return nil, err
	}
	return c.adapt(ctx, s.path(main))
}

// selfContained reports whether a Caddyfile means the same wherever it is
// adapted: it imports no file (nor snippet: telling them apart needs the
// walk caddyShadow does) and names no environment variable ({$VAR} is
// expanded by the adapting process, and caddy reload adapts in ours).
func selfContained(b []byte) bool {
	if bytes.Contains(b, []byte("{$")) {
		return false
	}
	for _, line := range cdyLines(cdyTokenize(b)) {
		if line[0].val == "import" {
			return false
		}
	}
	return true
}

// adaptByAdmin has the running Caddy adapt a Caddyfile (POST /adapt): a
// few milliseconds, where starting the caddy binary to adapt takes a
// hundred or more.
func (c *Caddy) adaptByAdmin(ctx context.Context, b []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.Admin+"/adapt", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req) // bounded by ctx, body read included
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode, body: string(body)}
	}
	var out struct {
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Result) == 0 {
		return nil, fmt.Errorf("caddy admin API %s: /adapt answered no result: %v", c.Admin, err)
	}
	return out.Result, nil
}

// adapt runs caddy adapt on a Caddyfile and returns the JSON it prints.
// Its warnings (stderr) are not part of it.
func (c *Caddy) adapt(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Bin, "adapt", "--config", path, "--adapter", "caddyfile")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := Start(cmd)
	if err == nil {
		err = Wait(cmd)
	}
	if err != nil {
		return nil, fmt.Errorf("%s adapt %s: %w: %s", c.Bin, path, err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), nil
}

// RuntimeOnly reports whether next differs from live only in pool
// members Patch serves through the resolver and then checks over DNS.
// It reads both against the last adapted Caddyfile (delta), which is
// much cheaper than caddy validate: the pipeline swaps next in without
// validating it first and validates it after the apply. A Caddyfile
// imported by another is always validated first.
func (c *Caddy) RuntimeOnly(live, next []byte) bool {
	rt := &c.rt
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.res == nil || (c.MainConfig != "" && c.MainConfig != c.Config) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout())
	defer cancel()
	d, pools, _, err := c.delta(ctx, map[string][]byte{c.Config: live}, map[string][]byte{c.Config: next})
	if err != nil {
		return false
	}
	_, why := c.servable(d, pools)
	return why == ""
}

// delta is the membership change from the running files to the live
// ones, the pools of the live ones, and an adapted config of their
// structure (for runsStructure). A single Caddyfile that differs from
// the last adapted one only in pool members is read from its tokens;
// anything else is adapted by Caddy and diffed as JSON, and becomes the
// base the next changes are read against.
func (c *Caddy) delta(ctx context.Context, running, live map[string][]byte) (membership.Delta, map[string]*membership.CaddyPool, []byte, error) {
	if old, cur, ok := c.fastPools(running, live); ok {
		return membership.CaddyPoolsDelta(old, cur), cur, c.rt.base.adapted, nil
	}
	old, err := c.adaptCached(ctx, running)
	if err != nil {
		return membership.Delta{}, nil, nil, fmt.Errorf("caddy: adapt the running config: %w", err)
	}
	cur, err := c.adaptCached(ctx, live)
	if err != nil {
		return membership.Delta{}, nil, nil, fmt.Errorf("caddy: adapt the live config: %w", err)
	}
	pools, _, err := membership.CaddyPools(cur)
	if err != nil {
		return membership.Delta{}, nil, nil, err
	}
	if len(live) == 1 && live[c.Config] != nil {
		c.rt.base = &caddyBase{file: live[c.Config], adapted: cur, pools: pools}
	}
	d, err := membership.Caddy(old, cur)
	if err != nil {
		return membership.Delta{}, nil, nil, err
	}
	return d, pools, cur, nil
}

// fastPools reads the pools of both file sets against the base, from
// their tokens: only for the one Caddyfile the base was adapted from.
func (c *Caddy) fastPools(running, live map[string][]byte) (old, cur map[string]*membership.CaddyPool, ok bool) {
	b := c.rt.base
	if b == nil || len(running) != 1 || len(live) != 1 || running[c.Config] == nil || live[c.Config] == nil {
		return nil, nil, false
	}
	read := func(file []byte) map[string]*membership.CaddyPool {
		pools, why := b.poolsOf(file)
		if why != "" {
			c.Log.Debug("caddy: adapting: the tokens cannot tell the change", "proxy", "caddy", "reason", why)
		}
		return pools
	}
	if old = read(running[c.Config]); old == nil {
		return nil, nil, false
	}
	if cur = read(live[c.Config]); cur == nil {
		return nil, nil, false
	}
	return old, cur, true
}
