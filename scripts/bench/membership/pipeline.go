package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// The tools compared, in the order they are listed.
const (
	toolRuntime = "switchyard"        // the renderer, --runtime-apply (its default)
	toolReload  = "switchyard-reload" // the renderer, --runtime-apply=false
	toolCT      = "consul-template"   // its own binary, the template's command reloads
)

var tools = []string{toolRuntime, toolReload, toolCT}

// pipeline is one tool feeding one proxy of its own: a renderer that
// supervises the proxy, or consul-template and the proxy run as the
// service its command reloads. Every file is in dir.
type pipeline struct {
	kind   *proxyKind
	tool   string
	bin    string // the proxy's binary
	dir    string
	conf   string // the live file
	listen string // where the proxy serves, 127.0.0.1:port
	status string // the renderer's status server ("" for consul-template)
	admin  string // Caddy's admin API
	aux    int    // a port for the proxy's runtime side: nginx's membership endpoint, the renderer's DNS server for Caddy
	procs  []*proc
}

func (p *pipeline) name() string   { return p.kind.name + "/" + p.tool }
func (p *pipeline) socket() string { return filepath.Join(p.dir, "haproxy-master.sock") }

// newPipeline picks the pipeline's dir and ports.
func (b *bench) newPipeline(k *proxyKind, tool, bin string) (*pipeline, error) {
	dir := filepath.Join(b.dir, k.name, tool)
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	ports, err := testenv.PickPorts(4)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	p := &pipeline{kind: k, tool: tool, bin: bin, dir: dir, conf: filepath.Join(dir, k.conf),
		listen: addr(0), admin: addr(2), aux: ports[3]}
	if tool != toolCT {
		p.status = addr(1)
	}
	return p, nil
}

// start runs the pipeline and waits until its proxy serves the load's
// service.
func (b *bench) start(ctx context.Context, p *pipeline) error {
	tmpl := b.template(p.kind)
	env := append([]string{"CONSUL_HTTP_ADDR=" + b.consul.Addr}, p.kind.env(p)...)
	if p.tool == toolCT {
		if err := b.startCT(ctx, p, tmpl, env); err != nil {
			return err
		}
	} else {
		args := []string{b.renderer, "--consul-addr", b.consul.Addr, "--template", tmpl + ":" + p.conf,
			"--proxy", p.kind.name, "--proxy-mode", "supervise", "--status-addr", p.status,
			"--runtime-apply=" + strconv.FormatBool(p.tool == toolRuntime)}
		r, err := startProc("renderer", p.dir, env, syscall.SIGKILL, append(args, p.kind.rendererArgs(p)...)...)
		if err != nil {
			return err
		}
		p.procs = append(p.procs, r)
	}
	return b.waitServes(ctx, p)
}

// startCT runs consul-template with the template's command reloading the
// proxy, waits for its first render, then runs the proxy as a service
// would (its reload command fails harmlessly until then).
func (b *bench) startCT(ctx context.Context, p *pipeline, tmpl string, env []string) error {
	ct, err := startProc("consul-template", p.dir, env, syscall.SIGKILL, b.ct,
		"-consul-addr", b.consul.Addr, "-log-level", "info",
		"-template", tmpl+":"+p.conf+":"+p.kind.reload(p))
	if err != nil {
		return err
	}
	p.procs = append(p.procs, ct)
	err = waitCtx(ctx, 30*time.Second, func() error {
		if ct.exited() {
			return errors.New("consul-template exited")
		}
		_, err := os.Stat(p.conf)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: no first render: %w (log %s)", p.name(), err, ct.log)
	}
	px, err := startProc(p.kind.name, p.dir, env, stopSignal, p.kind.serve(p)...)
	if err != nil {
		return err
	}
	p.procs = append(p.procs, px)
	return nil
}

// waitServes waits up to 30s for a 2xx from the load's service.
func (b *bench) waitServes(ctx context.Context, p *pipeline) error {
	c := newClient(p.listen, workService+".localhost", "", false)
	err := waitCtx(ctx, 30*time.Second, func() error {
		for _, pr := range p.procs {
			if pr.exited() {
				return fmt.Errorf("%s exited (log %s)", pr.name, pr.log)
			}
		}
		if why := c.do(); why != "" {
			return errors.New(why)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s does not serve %s.localhost on %s: %w", p.name(), workService, p.listen, err)
	}
	return nil
}

// stop stops the processes in start order: consul-template before the
// proxy it reloads; a renderer stops the proxy it supervises.
func (p *pipeline) stop() {
	for _, pr := range p.procs {
		sig, grace := syscall.SIGTERM, 5*time.Second
		if pr.name == "renderer" {
			grace = 15 * time.Second // it stops its proxy first
		}
		pr.stop(sig, grace)
	}
}

// applies is how a pipeline applied changes so far: for the renderer its
// /status counters, for consul-template the commands it ran (each one a
// reload).
type applies struct {
	runtime, reload, fallback int64
	ok                        bool
}

func (p *pipeline) applies() applies {
	if p.tool == toolCT {
		b, err := os.ReadFile(p.procs[0].log)
		return applies{reload: int64(strings.Count(string(b), "(runner) executing command")), ok: err == nil}
	}
	var st struct {
		Proxies []struct {
			Reloads          int64 `json:"reloads"`
			RuntimeApplies   int64 `json:"runtime_applies"`
			RuntimeFallbacks int64 `json:"runtime_fallbacks"`
		} `json:"proxies"`
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.status + "/status")
	if err != nil {
		return applies{}
	}
	defer resp.Body.Close()
	if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Proxies) != 1 {
		return applies{}
	}
	s := st.Proxies[0]
	return applies{runtime: s.RuntimeApplies, reload: s.Reloads, fallback: s.RuntimeFallbacks, ok: true}
}

func (a applies) minus(b applies) applies {
	return applies{runtime: a.runtime - b.runtime, reload: a.reload - b.reload, fallback: a.fallback - b.fallback, ok: a.ok && b.ok}
}

// waitCtx is testenv.WaitFor that also ends with ctx.
func waitCtx(ctx context.Context, limit time.Duration, fn func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		if sleepCtx(ctx, 20*time.Millisecond) != nil {
			return ctx.Err()
		}
	}
}
