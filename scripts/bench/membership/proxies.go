package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"
)

// proxyKind is what the bench knows of one proxy: how the renderer runs
// it, how it runs as the service consul-template reloads, how to see its
// worker generations, and how long its old workers may drain.
type proxyKind struct {
	name   string // as --proxy takes it
	tmpl   string // template under templates/
	conf   string // live file name in a pipeline's dir
	comm   string // command name of its processes, /proc/PID/stat
	binEnv string // env var that names its binary (scripts/setup.sh)

	rendererArgs func(p *pipeline) []string
	serve        func(p *pipeline) []string // the proxy consul-template reloads
	reload       func(p *pipeline) string   // consul-template's command
	workers      func(p *pipeline) workerLister
	poll         time.Duration  // how often workers are listed during a phase
	drain        *regexp.Regexp // the config's bound on old workers; unit in group 2
	drainUnit    time.Duration  // unit of a bare number
	env          func(p *pipeline) []string
}

// kinds are the proxies, in the order they run.
var kinds = []*proxyKind{
	{
		name: "nginx", tmpl: "nginx.conf.tmpl", conf: "nginx.conf", comm: "nginx", binEnv: "SWITCHYARD_NGINX",
		rendererArgs: func(p *pipeline) []string {
			return []string{"--nginx-bin", p.bin, "--nginx-prefix", p.dir}
		},
		serve: func(p *pipeline) []string {
			return []string{p.bin, "-p", p.dir, "-c", p.conf, "-g", "daemon off;"}
		},
		// What a packaged nginx's reload does: SIGHUP to the master.
		reload: func(p *pipeline) string {
			return fmt.Sprintf(`kill -HUP "$(cat %s)" || true`, filepath.Join(p.dir, "nginx.pid"))
		},
		workers:   func(p *pipeline) workerLister { return nginxWorkers(p.dir) },
		poll:      50 * time.Millisecond, // one read of /proc
		drain:     regexp.MustCompile(`(?m)^\s*worker_shutdown_timeout\s+(\d+)(ms|s|m|h)?\s*;`),
		drainUnit: time.Second,
		env: func(p *pipeline) []string {
			// No gRPC listener: the bench's services are plain HTTP.
			return []string{"SWITCHYARD_LISTEN=" + p.listen, "SWITCHYARD_NGINX_API_PORT=" + strconv.Itoa(p.aux),
				"SWITCHYARD_NGINX_GRPC_LISTEN="}
		},
	},
	{
		name: "haproxy", tmpl: "haproxy.cfg.tmpl", conf: "haproxy.cfg", comm: "haproxy", binEnv: "SWITCHYARD_HAPROXY",
		// The renderer's master CLI socket defaults to haproxy-master.sock
		// next to the config, where the bench looks for it.
		rendererArgs: func(p *pipeline) []string { return []string{"--haproxy-bin", p.bin} },
		serve: func(p *pipeline) []string {
			return []string{p.bin, "-W", "-S", p.socket() + ",mode,600", "-p", filepath.Join(p.dir, "haproxy.pid"), "-f", p.conf}
		},
		// What a packaged HAProxy's reload does in master-worker mode:
		// SIGUSR2 to the master.
		reload: func(p *pipeline) string {
			return fmt.Sprintf(`kill -USR2 "$(cat %s)" || true`, filepath.Join(p.dir, "haproxy.pid"))
		},
		workers:   func(p *pipeline) workerLister { return haproxyWorkers(p.socket()) },
		poll:      100 * time.Millisecond, // the master CLI: keep its load light
		drain:     regexp.MustCompile(`(?m)^\s*hard-stop-after\s+(\d+)(us|ms|s|m|h|d)?\s*$`),
		drainUnit: time.Millisecond,
		env:       func(p *pipeline) []string { return []string{"SWITCHYARD_LISTEN=" + p.listen} },
	},
	caddyKind,
}

// drainLimit reads the bound on old workers from a rendered config.
func (k *proxyKind) drainLimit(conf []byte) (time.Duration, bool) {
	if k.drain == nil {
		return 0, false
	}
	m := k.drain.FindSubmatch(conf)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(string(m[1]))
	if err != nil {
		return 0, false
	}
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
		"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[string(m[2])]
	if unit == 0 {
		unit = k.drainUnit
	}
	return time.Duration(n) * unit, true
}

// lookBin finds a proxy binary: the env var setup.sh writes, PATH, then
// /usr/sbin (Debian's nginx and haproxy, not on a non-root PATH).
func lookBin(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if p := filepath.Join("/usr/sbin", name); isFile(p) {
		return p, nil
	}
	return "", fmt.Errorf("%s not found (set %s or run scripts/setup.sh)", name, env)
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// stopSignal stops a proxy the bench runs itself: fast, the master stops
// its workers before it exits.
const stopSignal = syscall.SIGTERM
