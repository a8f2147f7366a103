package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/switchyard/switchyard/renderer/internal/membership"
	"github.com/switchyard/switchyard/renderer/internal/nginxconf"
)

// nginxEndpointPath is the location that marks the membership endpoint
// of a config: the renderer finds the endpoint in the config nginx runs,
// so a template that moves it needs no flag, and one without it reloads.
const nginxEndpointPath = "/switchyard/upstreams"

// Patch implements supervise.Patcher. When the only differences between
// running and live are server lines of dynamic upstreams (upstreams with
// balancer_by_lua_block { switchyard.balance("NAME") }, see
// membership.NginxDiff), it posts each changed upstream's complete new
// list to the config's loopback endpoint, then reads the lists back
// through it and checks that every one is stored for the config
// generation the workers run. Every worker's Lua balancer reads the
// lists from one shared dict, so the read-back is what each worker uses.
// A change that is structural, or a config without an endpoint, returns
// (false, nil): the caller reloads. A change of comments or white space
// alone needs nothing from nginx: (true, nil).
func (n *Nginx) Patch(ctx context.Context, running, live map[string][]byte) (bool, error) {
	pools, err := nginxRuntimePools(running, live)
	if err != nil {
		n.logger().Debug("not a membership change; reloading", "proxy", "nginx", "reason", err)
		return false, nil
	}
	if len(pools) == 0 {
		return true, nil
	}
	ep, ok := nginxEndpoint(running)
	if !ok {
		n.logger().Debug("no loopback "+nginxEndpointPath+" endpoint in the config; reloading", "proxy", "nginx")
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	if err := pushNginxLists(ctx, ep, encodeNginxPush(pools)); err != nil {
		return false, err
	}
	dump, err := readNginxLists(ctx, ep)
	if err != nil {
		return false, err
	}
	if err := dump.check(pools); err != nil {
		return false, fmt.Errorf("nginx: endpoint %s: %w", ep, err)
	}
	return true, nil
}

func (n *Nginx) logger() *slog.Logger {
	if n.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return n.Log
}

// nginxRuntimePools diffs every file of the proxy. A file new or gone
// since the running load is structural.
func nginxRuntimePools(running, live map[string][]byte) ([]membership.NginxPool, error) {
	var pools []membership.NginxPool
	seen := map[string]string{}
	for _, path := range nginxFileOrder(live) {
		old, ok := running[path]
		if !ok {
			return nil, fmt.Errorf("%s: no running version", path)
		}
		ps, err := membership.NginxDiff(old, live[path])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, p := range ps {
			if other, dup := seen[p.Name]; dup {
				return nil, fmt.Errorf("upstream %s in %s and %s", p.Name, other, path)
			}
			seen[p.Name] = path
		}
		pools = append(pools, ps...)
	}
	for path := range running {
		if _, ok := live[path]; !ok {
			return nil, fmt.Errorf("%s: gone", path)
		}
	}
	return pools, nil
}

func nginxFileOrder(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// nginxEndpoint finds the membership endpoint in the running files: a
// server block with "location = /switchyard/upstreams" whose every listen
// is a loopback address with a port. The first file and block that
// qualify win; one that listens anywhere else is never used.
func nginxEndpoint(files map[string][]byte) (string, bool) {
	for _, path := range nginxFileOrder(files) {
		if ep, ok := endpointIn(nginxconf.Parse(files[path])); ok {
			return ep, true
		}
	}
	return "", false
}

func endpointIn(nodes []*nginxconf.Node) (string, bool) {
	for _, n := range nodes {
		if !n.Block {
			continue
		}
		if n.Name() == "server" {
			if ep, ok := serverEndpoint(n); ok {
				return ep, true
			}
			continue
		}
		if ep, ok := endpointIn(n.Children); ok {
			return ep, true
		}
	}
	return "", false
}

func serverEndpoint(srv *nginxconf.Node) (string, bool) {
	var listens []string
	marked := false
	for _, c := range srv.Children {
		switch v := c.Vals(); {
		case v[0] == "listen" && len(v) >= 2:
			listens = append(listens, v[1])
		case c.Block && slices.Equal(v, []string{"location", "=", nginxEndpointPath}):
			marked = true
		}
	}
	if !marked || len(listens) == 0 {
		return "", false
	}
	for _, l := range listens {
		ap, err := netip.ParseAddrPort(l)
		if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
			return "", false
		}
	}
	return listens[0], true
}

// encodeNginxPush writes pools in the endpoint's format: "upstream NAME",
// then one "server ADDR WEIGHT MAX_FAILS FAIL_TIMEOUT_MS up|down" line per
// server, in config order.
func encodeNginxPush(pools []membership.NginxPool) string {
	var b strings.Builder
	for _, p := range pools {
		fmt.Fprintf(&b, "upstream %s\n%s", p.Name, nginxListText(p.Servers))
	}
	return b.String()
}

func nginxListText(servers []membership.NginxServer) string {
	var b strings.Builder
	for _, s := range servers {
		state := "up"
		if s.Down {
			state = "down"
		}
		fmt.Fprintf(&b, "server %s %d %d %d %s\n", s.Addr, max(s.Weight, 1), s.MaxFails, s.FailTimeout.Milliseconds(), state)
	}
	return b.String()
}

// nginxRuntimeClient talks to the endpoint on loopback only: no proxy from
// the environment, and a new connection each time, so no request lands
// on a worker that a reload has since retired.
var nginxRuntimeClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// pushNginxLists posts body. A worker of an older config generation (one
// a reload is retiring) answers 409: the post is tried again, on a new
// connection, a few times.
func pushNginxLists(ctx context.Context, ep, body string) error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var code int
		var msg string
		code, msg, err = nginxEndpointCall(ctx, http.MethodPost, ep, body)
		switch {
		case err != nil:
			return err
		case code == http.StatusOK:
			return nil
		case code != http.StatusConflict:
			return fmt.Errorf("nginx: push to %s: %d %s", ep, code, msg)
		}
		err = fmt.Errorf("nginx: push to %s: %d %s", ep, code, msg)
	}
	return err
}

func nginxEndpointCall(ctx context.Context, method, ep, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+ep+nginxEndpointPath, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "text/plain")
	resp, err := nginxRuntimeClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("nginx: %s %s: %w", method, ep, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, "", fmt.Errorf("nginx: %s %s: read: %w", method, ep, err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// nginxDump is what the endpoint's GET shows: the generation of the
// config nginx loaded last, that of the worker that answered, and each
// stored list with the generation it was pushed to.
type nginxDump struct {
	generation, worker int
	lists              map[string]nginxStored
}

type nginxStored struct {
	generation int
	text       string
}

func readNginxLists(ctx context.Context, ep string) (nginxDump, error) {
	code, body, err := nginxEndpointCall(ctx, http.MethodGet, ep, "")
	if err != nil {
		return nginxDump{}, err
	}
	if code != http.StatusOK {
		return nginxDump{}, fmt.Errorf("nginx: read back from %s: %d %s", ep, code, body)
	}
	d, err := parseNginxDump(body)
	if err != nil {
		return d, fmt.Errorf("nginx: read back from %s: %w", ep, err)
	}
	return d, nil
}

func parseNginxDump(body string) (nginxDump, error) {
	d := nginxDump{lists: map[string]nginxStored{}}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	if !sc.Scan() {
		return d, errors.New("empty answer")
	}
	if _, err := fmt.Sscanf(sc.Text(), "generation %d %d", &d.generation, &d.worker); err != nil {
		return d, fmt.Errorf("first line %q: %w", sc.Text(), err)
	}
	var cur string
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 3 && f[0] == "upstream" {
			gen, err := strconv.Atoi(f[2])
			if err != nil {
				return d, fmt.Errorf("line %q: %w", line, err)
			}
			cur = f[1]
			d.lists[cur] = nginxStored{generation: gen}
			continue
		}
		if cur == "" {
			return d, fmt.Errorf("line %q before any upstream", line)
		}
		s := d.lists[cur]
		s.text += line + "\n"
		d.lists[cur] = s
	}
	return d, sc.Err()
}

// check reports the first pool the dump does not hold exactly as pushed,
// for the generation nginx runs.
func (d nginxDump) check(pools []membership.NginxPool) error {
	if d.worker != d.generation {
		return fmt.Errorf("the worker that answered runs config generation %d, nginx loaded %d since", d.worker, d.generation)
	}
	for _, p := range pools {
		s, ok := d.lists[p.Name]
		switch want := nginxListText(p.Servers); {
		case !ok:
			return fmt.Errorf("upstream %s: no list stored", p.Name)
		case s.generation != d.generation:
			return fmt.Errorf("upstream %s: list stored for generation %d, nginx runs %d", p.Name, s.generation, d.generation)
		case s.text != want:
			return fmt.Errorf("upstream %s: stored list %q, pushed %q", p.Name, s.text, want)
		}
	}
	return nil
}

// RuntimeOnly reports whether next differs from live only in what Patch
// applies at runtime and then reads back from nginx: the server lines of
// dynamic upstreams, each still with a server, with the endpoint in the
// file to push them to. The pipeline then swaps next in without running
// nginx -t first (most of a membership change's latency) and validates
// it after the push.
func (n *Nginx) RuntimeOnly(live, next []byte) bool {
	pools, err := membership.NginxDiff(live, next)
	if err != nil {
		return false
	}
	for _, p := range pools {
		if len(p.Servers) == 0 {
			return false // nginx rejects an upstream without a server
		}
	}
	if len(pools) == 0 {
		return true
	}
	_, ok := nginxEndpoint(map[string][]byte{"": live})
	return ok
}
