// Command registrar keeps the local Consul agent's services equal to the
// containers running on this Docker host. It is a drop-in successor to
// gliderlabs/registrator: same flags, same SERVICE_* metadata, same
// positional consul://host:port.
//
// This file is wiring only: flags to config, adapters to interfaces.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/registrar/internal/config"
	"github.com/switchyard/switchyard/registrar/internal/consul"
	"github.com/switchyard/switchyard/registrar/internal/docker"
	"github.com/switchyard/switchyard/registrar/internal/health"
	"github.com/switchyard/switchyard/registrar/internal/hostaddr"
	"github.com/switchyard/switchyard/registrar/internal/reconcile"
	"github.com/switchyard/switchyard/registrar/internal/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp(os.Stderr, run).RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "registrar:", err)
		os.Exit(1)
	}
}

// runFunc is what the app does with a valid config; tests swap it.
type runFunc func(ctx context.Context, cfg config.Config, stderr io.Writer) error

func newApp(stderr io.Writer, runner runFunc) *cli.App {
	return &cli.App{
		Name:            "registrar",
		Usage:           "register Docker containers as Consul services (a registrator successor)",
		ArgsUsage:       "[consul://host:port | consul-tls://host:port | consul-unix:///path]",
		Flags:           flags(),
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			maintCommand("drain", "put every service of this host (this node's registrar) into Consul maintenance, for host work", true, stderr),
			maintCommand("undrain", "take every service of this host out of Consul maintenance", false, stderr),
		},
		// registrator users write flags after nothing but flags; keep Go's
		// flag rules (both -flag and --flag) and no flag reordering.
		Action: func(c *cli.Context) error {
			cfg, err := configFrom(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			if err := cfg.Validate(); err != nil {
				return cli.Exit("invalid configuration:\n"+err.Error(), 2)
			}
			if err := runner(c.Context, cfg, stderr); err != nil {
				var ue usageError
				if errors.As(err, &ue) {
					return cli.Exit(err.Error(), 2)
				}
				return cli.Exit(err.Error(), 1)
			}
			return nil
		},
	}
}

func flags() []cli.Flag {
	env := func(name string) []string { return []string{"REGISTRAR_" + name} }
	return []cli.Flag{
		// registrator's flags.
		&cli.StringFlag{Name: "ip", EnvVars: env("IP"), Usage: "address to register for ports published on every address (default: the host's outbound address)"},
		&cli.BoolFlag{Name: "internal", EnvVars: env("INTERNAL"), Usage: "register the container IP and container port (exposed ports, published or not)"},
		&cli.BoolFlag{Name: "explicit", EnvVars: env("EXPLICIT"), Usage: "only register containers that set SERVICE_NAME or SERVICE_<port>_NAME"},
		&cli.StringFlag{Name: "useIpFromLabel", Aliases: []string{"use-ip-from-label"}, EnvVars: env("USE_IP_FROM_LABEL"), Usage: "take the service address from this container label (a /cidr suffix is stripped)"},
		&cli.StringSliceFlag{Name: "label-filter", EnvVars: env("LABEL_FILTER"), Usage: "only register containers with this label: KEY or KEY=VALUE; repeat (or separate with commas) to require several; a container without them gets no services, as with SERVICE_IGNORE (e.g. two registrars on one host, or one team's containers)"},
		&cli.StringFlag{Name: "tags", EnvVars: env("TAGS"), Usage: "comma-separated tags added to every service; a Go template over the container's inspect data"},
		&cli.StringFlag{Name: "resync", Value: "60", EnvVars: env("RESYNC"), Usage: "full resync interval: seconds or a duration (0 disables)"},
		&cli.StringFlag{Name: "deregister", Value: config.DeregisterAlways, EnvVars: env("DEREGISTER"), Usage: "services of a stopped container: always, on-success (keep after a non-zero exit not caused by a signal) or never"},
		&cli.BoolFlag{Name: "cleanup", EnvVars: env("CLEANUP"), Usage: "accepted for compatibility: cleanup of owned services is always on"},
		&cli.IntFlag{Name: "retry-attempts", Value: -1, EnvVars: env("RETRY_ATTEMPTS"), Usage: "start-up attempts to reach Docker and Consul (-1: forever); later failures are always retried"},
		&cli.IntFlag{Name: "retry-interval", Value: 2000, EnvVars: env("RETRY_INTERVAL"), Usage: "milliseconds between start-up attempts"},
		&cli.IntFlag{Name: "ttl", EnvVars: env("TTL"), Usage: "accepted for compatibility; no effect with Consul"},
		&cli.IntFlag{Name: "ttl-refresh", EnvVars: env("TTL_REFRESH"), Usage: "accepted for compatibility; no effect with Consul"},
		// Ours.
		&cli.StringFlag{Name: "node-name", EnvVars: env("NODE_NAME"), Usage: "node name in service IDs and ownership meta (default: the Docker engine's name)"},
		&cli.StringFlag{Name: "on-shutdown", Value: config.ShutdownKeep, EnvVars: env("ON_SHUTDOWN"), Usage: "on SIGTERM: keep the services (an upgrade must not blink) or deregister them"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: env("LOG_LEVEL"), Usage: "debug, info, warn or error"},
		&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: env("LOG_FORMAT"), Usage: "text or json"},
		&cli.StringFlag{Name: "status-addr", EnvVars: env("STATUS_ADDR"), Usage: "serve /ready, /status, /healthz and /metrics on this host:port (off by default); bound before anything else starts"},
		&cli.DurationFlag{Name: "io-timeout", Value: 10 * time.Second, EnvVars: env("IO_TIMEOUT"), Usage: "deadline of each Docker and Consul call"},
		&cli.DurationFlag{Name: "stall-timeout", Value: time.Minute, EnvVars: env("STALL_TIMEOUT"), Usage: "/ready fails while one reconcile step has run longer than this"},
		&cli.BoolFlag{Name: "drain", Value: true, EnvVars: env("DRAIN"), Usage: "on SIGTERM (docker stop), put the container's services into Consul maintenance until it dies; SERVICE_DRAIN overrides"},
		&cli.BoolFlag{Name: "wait-healthy", EnvVars: env("WAIT_HEALTHY"), Usage: "register a container with a Docker HEALTHCHECK only once it is no longer starting; SERVICE_WAIT_HEALTHY overrides"},
		&cli.StringFlag{Name: "health-starting", Value: "critical", EnvVars: env("HEALTH_STARTING"), Usage: "Consul status of the Docker health check while Docker says starting: critical or warning; SERVICE_HEALTH_STARTING overrides"},
		&cli.DurationFlag{Name: "health-ttl", Value: 30 * time.Second, EnvVars: env("HEALTH_TTL"), Usage: "TTL of the Consul check mirroring a Docker HEALTHCHECK (refreshed every third of it)"},
		&cli.DurationFlag{Name: "health-deregister-after", Value: 10 * time.Minute, EnvVars: env("HEALTH_DEREGISTER_AFTER"), Usage: "Consul removes a service whose Docker health check stayed critical this long (0: never)"},
		&cli.StringFlag{Name: "consul-addr", Value: config.DefaultConsulAddr, EnvVars: []string{"CONSUL_HTTP_ADDR"}, Usage: "Consul agent address; the positional consul:// URI wins"},
		// The token's value is never shown, not even in --help.
		&cli.StringFlag{Name: "consul-token", EnvVars: []string{"CONSUL_HTTP_TOKEN"}, DefaultText: "none", Usage: "Consul ACL token; on the command line every user of the host sees it (ps): prefer --consul-token-file"},
		&cli.StringFlag{Name: "consul-token-file", EnvVars: []string{"CONSUL_HTTP_TOKEN_FILE"}, Usage: "file holding the Consul ACL token, read again for every call (a rotated token needs no restart)"},
		&cli.StringFlag{Name: "consul-cacert", EnvVars: []string{"CONSUL_CACERT"}, Usage: "CA certificate (PEM) the agent's certificate must be signed by, for consul-tls://"},
		&cli.StringFlag{Name: "consul-client-cert", EnvVars: []string{"CONSUL_CLIENT_CERT"}, Usage: "client certificate (PEM) for consul-tls://, for an agent with verify_incoming; needs --consul-client-key"},
		&cli.StringFlag{Name: "consul-client-key", EnvVars: []string{"CONSUL_CLIENT_KEY"}, Usage: "private key (PEM) of --consul-client-cert"},
		&cli.StringFlag{Name: "consul-tls-server-name", EnvVars: []string{"CONSUL_TLS_SERVER_NAME"}, Usage: "name the agent's certificate must hold (default: the host of the address)"},
		&cli.StringFlag{Name: "docker-host", EnvVars: []string{"DOCKER_HOST"}, Usage: "Docker endpoint (default: the local socket)"},
	}
}

// configFrom reads flags and the positional backend URI.
func configFrom(c *cli.Context) (config.Config, error) {
	cfg := config.Config{
		ConsulAddr:      c.String("consul-addr"),
		ConsulToken:     c.String("consul-token"),
		ConsulTokenFile: c.String("consul-token-file"),
		ConsulCACert:    c.String("consul-cacert"),
		DockerHost:      c.String("docker-host"),
		NodeName:        c.String("node-name"),
		HostIP:          c.String("ip"),
		Internal:        c.Bool("internal"),
		Explicit:        c.Bool("explicit"),
		IPFromLabel:     c.String("useIpFromLabel"),
		Tags:            c.String("tags"),
		LabelFilter:     c.StringSlice("label-filter"),
		Deregister:      c.String("deregister"),
		OnShutdown:      c.String("on-shutdown"),
		RetryAttempts:   c.Int("retry-attempts"),
		RetryInterval:   time.Duration(c.Int("retry-interval")) * time.Millisecond,
		IOTimeout:       c.Duration("io-timeout"),
		StallTimeout:    c.Duration("stall-timeout"),
		LogLevel:        c.String("log-level"),
		LogFormat:       c.String("log-format"),
		StatusAddr:      c.String("status-addr"),

		Drain:                 c.Bool("drain"),
		WaitHealthy:           c.Bool("wait-healthy"),
		HealthStarting:        c.String("health-starting"),
		HealthTTL:             c.Duration("health-ttl"),
		HealthDeregisterAfter: c.Duration("health-deregister-after"),

		ConsulClientCert:    c.String("consul-client-cert"),
		ConsulClientKey:     c.String("consul-client-key"),
		ConsulTLSServerName: c.String("consul-tls-server-name"),
		// Set from the environment, the flag is as good as the variable.
		ConsulTokenInArgs: c.IsSet("consul-token") && c.String("consul-token") != os.Getenv("CONSUL_HTTP_TOKEN"),
	}
	if cfg.ConsulAddr == "" { // CONSUL_HTTP_ADDR set but empty
		cfg.ConsulAddr = config.DefaultConsulAddr
	}
	resync, err := config.ParseResync(c.String("resync"))
	if err != nil {
		return cfg, err
	}
	cfg.Resync = resync
	if _, err := service.ParseLabelFilter(cfg.LabelFilter); err != nil {
		return cfg, err // before anything connects
	}
	switch c.NArg() {
	case 0:
	case 1:
		addr, err := config.ParseBackendURI(c.Args().First())
		if err != nil {
			return cfg, err
		}
		cfg.ConsulAddr = addr
	default:
		return cfg, fmt.Errorf("one backend URI expected, got %q (flags go before the URI)", c.Args().Slice())
	}
	return cfg, nil
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// usageError is a configuration found unusable only when acting on it (a
// --status-addr in use): it exits with the code of a bad flag.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// run wires the adapters and runs until ctx is done.
func run(ctx context.Context, cfg config.Config, stderr io.Writer) error {
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	// Bind before touching Docker or Consul: finding a bad --status-addr
	// after reconciling started would stop a registrar that had already
	// changed Consul (and with --on-shutdown=deregister, empty it).
	status, err := listenStatus(cfg.StatusAddr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	if status != nil {
		g.Go(func() error { return status.serve(gctx) })
	}
	rec, err := setUp(gctx, log, cfg, status)
	if err != nil {
		cancel()
		if serr := g.Wait(); serr != nil {
			return serr // the status server failed first
		}
		return err
	}
	status.setReconciler(rec)
	g.Go(func() error { return rec.Run(gctx) })
	err = g.Wait()

	if cfg.OnShutdown == config.ShutdownDeregister {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := rec.DeregisterAll(sctx); derr != nil {
			log.Error("deregister on shutdown incomplete", "error", derr)
			err = errors.Join(err, derr)
		}
	}
	log.Info("registrar stopped")
	return err
}

// setUp reaches Docker and Consul (retrying as --retry-attempts says) and
// returns the reconciler, not yet running.
func setUp(ctx context.Context, log *slog.Logger, cfg config.Config, status *statusServer) (*reconcile.Reconciler, error) {
	src, err := docker.New(cfg.DockerHost, log)
	if err != nil {
		return nil, err
	}
	src.Timeout = cfg.IOTimeout
	node := cfg.NodeName
	if node == "" {
		status.setPhase("waiting for docker")
		err := startupRetry(ctx, log, cfg, "docker", status, func(ctx context.Context) (err error) {
			node, err = src.NodeName(ctx)
			return err
		})
		if err != nil {
			return nil, err
		}
		if err := config.ValidateNodeName(node); err != nil {
			return nil, fmt.Errorf("docker engine name %q cannot be a node name (%w); set --node-name", node, err)
		}
	}

	cat, err := openConsul(log, cfg, node)
	if err != nil {
		return nil, err
	}
	status.setPhase("waiting for consul")
	if err := startupRetry(ctx, log, cfg, "consul", status, cat.Ping); err != nil {
		return nil, err
	}

	tags, err := service.ParseForceTags(cfg.Tags)
	if err != nil {
		return nil, fmt.Errorf("--tags=%q: %w", cfg.Tags, err)
	}
	filter, err := service.ParseLabelFilter(cfg.LabelFilter)
	if err != nil {
		return nil, err
	}
	policy := service.Policy{
		Node: node, HostIP: cfg.HostIP, Internal: cfg.Internal, Explicit: cfg.Explicit,
		IPFromLabel: cfg.IPFromLabel, ForceTags: tags, LabelFilter: filter,
		Health: health.Policy{
			WaitHealthy: cfg.WaitHealthy, Starting: cfg.HealthStarting, Drain: cfg.Drain,
			TTL: cfg.HealthTTL, DeregisterAfter: cfg.HealthDeregisterAfter,
		},
	}
	if cfg.HostIP == "" {
		ip, err := hostaddr.Outbound()
		if err != nil {
			log.Warn("host address unknown: ports published on every address need --ip", "error", err)
		}
		policy.DefaultIP = ip
	}
	rec := reconcile.New(src, cat, reconcile.Options{
		Policy: policy, Deregister: cfg.Deregister, Resync: cfg.Resync, Logger: log,
		CallTimeout: cfg.IOTimeout, StallAfter: cfg.StallTimeout, Recorder: status.recorder(),
	})
	log.Info("registrar started", "node", node, "consul", cfg.ConsulAddr, "docker", src.Client().Endpoint(),
		"ip", cfg.HostIP, "default_ip", policy.DefaultIP, "internal", cfg.Internal, "label_filter", cfg.LabelFilter, "resync", cfg.Resync,
		"deregister", cfg.Deregister, "drain", cfg.Drain, "wait_healthy", cfg.WaitHealthy, "on_shutdown", cfg.OnShutdown, "io_timeout", cfg.IOTimeout, "stall_timeout", cfg.StallTimeout)
	return rec, nil
}

// startupRetry tries fn --retry-attempts times (-1: until ctx is done),
// --retry-interval apart, as registrator does for its backend. Each failure
// is one log line, and shows on /ready and /status; a failed Consul call
// is counted in consul_errors_total.
func startupRetry(ctx context.Context, log *slog.Logger, cfg config.Config, what string, status *statusServer, fn func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, cfg.IOTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if what == "consul" {
			status.consulError()
		}
		if cfg.RetryAttempts >= 0 && attempt > cfg.RetryAttempts {
			return fmt.Errorf("%s not reachable after %d attempts: %w", what, attempt, err)
		}
		status.setPhase(fmt.Sprintf("waiting for %s (attempt %d failed): %v", what, attempt, err))
		log.Warn("waiting for "+what, "attempt", attempt, "error", err, "retry_in", cfg.RetryInterval)
		t := time.NewTimer(cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// consulConfig is how the flags say to reach the agent.
func consulConfig(cfg config.Config) consul.Config {
	return consul.Config{
		Address: cfg.ConsulAddr, Token: cfg.ConsulToken, TokenFile: cfg.ConsulTokenFile,
		CACert: cfg.ConsulCACert, ClientCert: cfg.ConsulClientCert, ClientKey: cfg.ConsulClientKey,
		ServerName: cfg.ConsulTLSServerName,
	}
}

// openConsul builds the agent's client, warning about settings that work
// but should not be used.
func openConsul(log *slog.Logger, cfg config.Config, node string) (*consul.Catalog, error) {
	if cfg.ConsulTokenInArgs {
		log.Warn("--consul-token on the command line is visible to every user of the host (ps): use --consul-token-file or CONSUL_HTTP_TOKEN")
	}
	tlsFlags := cfg.ConsulCACert != "" || cfg.ConsulClientCert != "" || cfg.ConsulTLSServerName != ""
	if tlsFlags && strings.HasPrefix(cfg.ConsulAddr, "http://") {
		log.Warn("TLS settings given, but the Consul address is plain HTTP: use consul-tls://host:port", "consul", cfg.ConsulAddr)
	}
	return consul.Open(consulConfig(cfg), node)
}
