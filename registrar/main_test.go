package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/switchyard/switchyard/registrar/internal/config"
)

// parse runs the app with a runner that only captures the config.
func parse(t *testing.T, env map[string]string, args ...string) (config.Config, string, error) {
	t.Helper()
	for _, k := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_CACERT",
		"CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME", "DOCKER_HOST"} {
		t.Setenv(k, "") // restored at the end of the test
		os.Unsetenv(k)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var got config.Config
	var stderr bytes.Buffer
	app := newApp(&stderr, func(_ context.Context, cfg config.Config, _ io.Writer) error {
		got = cfg
		return nil
	})
	app.ExitErrHandler = func(*cli.Context, error) {} // report, do not exit
	err := app.RunContext(t.Context(), append([]string{"registrar"}, args...))
	return got, stderr.String(), err
}

func TestRegistratorCommandLine(t *testing.T) {
	cfg, _, err := parse(t, nil, "-ip", "1.2.3.4", "-internal", "consul://127.0.0.1:8500")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HostIP != "1.2.3.4" || !cfg.Internal || cfg.ConsulAddr != "http://127.0.0.1:8500" {
		t.Fatalf("cfg = %+v", cfg)
	}
}

func TestSingleAndDoubleDashParse(t *testing.T) {
	args := func(dash string) []string {
		return []string{
			dash + "ip", "10.0.0.1", dash + "internal", dash + "explicit", dash + "useIpFromLabel", "ip.label",
			dash + "tags", "a,b", dash + "resync", "30", dash + "deregister", "on-success", dash + "cleanup",
			dash + "retry-attempts", "3", dash + "retry-interval", "500", dash + "ttl", "30", dash + "ttl-refresh", "15",
			dash + "node-name", "n1", dash + "on-shutdown", "deregister", dash + "log-level", "debug", dash + "log-format", "json",
			dash + "io-timeout", "3s", dash + "stall-timeout", "2m",
			dash + "drain=false", dash + "wait-healthy", dash + "health-starting", "warning",
			dash + "health-ttl", "15s", dash + "health-deregister-after", "5m",
			dash + "label-filter", "team=web", dash + "label-filter", "expose",
		}
	}
	want := config.Config{
		ConsulAddr: config.DefaultConsulAddr, HostIP: "10.0.0.1", Internal: true, Explicit: true, IPFromLabel: "ip.label",
		Tags: "a,b", Resync: 30 * time.Second, Deregister: "on-success", RetryAttempts: 3, RetryInterval: 500 * time.Millisecond,
		NodeName: "n1", OnShutdown: "deregister", LogLevel: "debug", LogFormat: "json",
		IOTimeout: 3 * time.Second, StallTimeout: 2 * time.Minute,
		Drain: false, WaitHealthy: true, HealthStarting: "warning", HealthTTL: 15 * time.Second, HealthDeregisterAfter: 5 * time.Minute,
		LabelFilter: []string{"team=web", "expose"},
	}
	for _, dash := range []string{"-", "--"} {
		cfg, _, err := parse(t, nil, args(dash)...)
		if err != nil {
			t.Fatalf("%s: %v", dash, err)
		}
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("%s flags:\n got %+v\nwant %+v", dash, cfg, want)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, _, err := parse(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		ConsulAddr: config.DefaultConsulAddr, Resync: time.Minute, Deregister: "always", OnShutdown: "keep",
		RetryAttempts: -1, RetryInterval: 2 * time.Second, LogLevel: "info", LogFormat: "text",
		IOTimeout: 10 * time.Second, StallTimeout: time.Minute,
		Drain: true, HealthStarting: "critical", HealthTTL: 30 * time.Second, HealthDeregisterAfter: 10 * time.Minute,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestEnvironment(t *testing.T) {
	env := map[string]string{
		"CONSUL_HTTP_ADDR": "consul.local:8500", "CONSUL_HTTP_TOKEN": "tok", "CONSUL_HTTP_TOKEN_FILE": "/tf",
		"CONSUL_CACERT": "/ca.pem", "DOCKER_HOST": "unix:///d.sock",
		"CONSUL_CLIENT_CERT": "/c.pem", "CONSUL_CLIENT_KEY": "/k.pem", "CONSUL_TLS_SERVER_NAME": "server.dc1.consul",
		"REGISTRAR_IP": "10.1.1.1", "REGISTRAR_INTERNAL": "true", "REGISTRAR_EXPLICIT": "1",
		"REGISTRAR_USE_IP_FROM_LABEL": "l", "REGISTRAR_TAGS": "t", "REGISTRAR_RESYNC": "2m",
		"REGISTRAR_DEREGISTER": "never", "REGISTRAR_CLEANUP": "true", "REGISTRAR_RETRY_ATTEMPTS": "5",
		"REGISTRAR_RETRY_INTERVAL": "100", "REGISTRAR_TTL": "1", "REGISTRAR_TTL_REFRESH": "1",
		"REGISTRAR_NODE_NAME": "envnode", "REGISTRAR_ON_SHUTDOWN": "deregister", "REGISTRAR_LOG_LEVEL": "warn",
		"REGISTRAR_LOG_FORMAT": "json", "REGISTRAR_STATUS_ADDR": "127.0.0.1:9999",
		"REGISTRAR_IO_TIMEOUT": "4s", "REGISTRAR_STALL_TIMEOUT": "90s",
		"REGISTRAR_DRAIN": "false", "REGISTRAR_WAIT_HEALTHY": "true", "REGISTRAR_HEALTH_STARTING": "warning",
		"REGISTRAR_HEALTH_TTL": "20s", "REGISTRAR_HEALTH_DEREGISTER_AFTER": "0", "REGISTRAR_LABEL_FILTER": "a=1,b",
	}
	cfg, _, err := parse(t, env)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		ConsulAddr: "consul.local:8500", ConsulToken: "tok", ConsulTokenFile: "/tf", ConsulCACert: "/ca.pem",
		DockerHost: "unix:///d.sock", HostIP: "10.1.1.1", Internal: true, Explicit: true, IPFromLabel: "l", Tags: "t",
		Resync: 2 * time.Minute, Deregister: "never", RetryAttempts: 5, RetryInterval: 100 * time.Millisecond,
		NodeName: "envnode", OnShutdown: "deregister", LogLevel: "warn", LogFormat: "json", StatusAddr: "127.0.0.1:9999",
		IOTimeout: 4 * time.Second, StallTimeout: 90 * time.Second,
		WaitHealthy: true, HealthStarting: "warning", HealthTTL: 20 * time.Second,
		ConsulClientCert: "/c.pem", ConsulClientKey: "/k.pem", ConsulTLSServerName: "server.dc1.consul",
		LabelFilter: []string{"a=1", "b"},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestPositionalURIWinsOverEnv(t *testing.T) {
	cfg, _, err := parse(t, map[string]string{"CONSUL_HTTP_ADDR": "elsewhere:8500"}, "consul-tls://consul.example:8501")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConsulAddr != "https://consul.example:8501" {
		t.Fatalf("ConsulAddr = %q", cfg.ConsulAddr)
	}
	cfg, _, _ = parse(t, nil, "consul-unix:///run/consul.sock")
	if cfg.ConsulAddr != "unix:///run/consul.sock" {
		t.Fatalf("ConsulAddr = %q", cfg.ConsulAddr)
	}
}

func TestBadInputNamesFlagAndValue(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-deregister", "sometimes"}, `--deregister="sometimes"`},
		{[]string{"-ip", "nope"}, `--ip="nope"`},
		{[]string{"-resync", "soon"}, `--resync="soon"`},
		{[]string{"etcd://127.0.0.1:2379"}, `etcd://127.0.0.1:2379`},
		{[]string{"consul://a", "consul://b"}, "one backend URI"},
		{[]string{"--io-timeout", "0s"}, "--io-timeout=0s"},
		{[]string{"--health-starting", "passing"}, `--health-starting="passing"`},
		{[]string{"--health-deregister-after", "30s"}, "--health-deregister-after=30s"},
		{[]string{"--consul-client-cert", "/c.pem"}, `--consul-client-cert/--consul-client-key="/c.pem"/""`},
	}
	for _, tt := range tests {
		_, _, err := parse(t, nil, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one naming %s", tt.args, err, tt.want)
		}
	}
}

func TestConsulTLSFlags(t *testing.T) {
	cfg, _, err := parse(t, nil, "--consul-cacert", "/ca.pem", "--consul-client-cert", "/c.pem", "--consul-client-key", "/k.pem",
		"--consul-tls-server-name", "server.dc1.consul", "consul-tls://10.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ConsulAddr != "https://10.0.0.5:8501" || cfg.ConsulCACert != "/ca.pem" || cfg.ConsulClientCert != "/c.pem" ||
		cfg.ConsulClientKey != "/k.pem" || cfg.ConsulTLSServerName != "server.dc1.consul" {
		t.Fatalf("cfg = %+v", cfg)
	}
}

// A token given on the command line is visible in ps; one from the
// environment is not flagged.
func TestTokenInArgsIsNoticed(t *testing.T) {
	cfg, _, err := parse(t, nil, "--consul-token", "s3cret")
	if err != nil || !cfg.ConsulTokenInArgs || cfg.ConsulToken != "s3cret" {
		t.Fatalf("token in argv: in args %t, %v", cfg.ConsulTokenInArgs, err)
	}
	cfg, _, err = parse(t, map[string]string{"CONSUL_HTTP_TOKEN": "s3cret"})
	if err != nil || cfg.ConsulTokenInArgs || cfg.ConsulToken != "s3cret" {
		t.Fatalf("token in env: in args %t, %v", cfg.ConsulTokenInArgs, err)
	}
}

// --help never shows a token, wherever it came from.
func TestHelpHidesToken(t *testing.T) {
	t.Setenv("CONSUL_HTTP_TOKEN", "s3cret-env")
	var out bytes.Buffer
	app := newApp(&out, func(context.Context, config.Config, io.Writer) error { return nil })
	app.Writer = &out
	app.ExitErrHandler = func(*cli.Context, error) {}
	if err := app.RunContext(t.Context(), []string{"registrar", "--consul-token", "s3cret-arg", "--help"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--consul-token-file") || strings.Contains(out.String(), "s3cret") {
		t.Fatalf("help without the flags, or with the token:\n%s", out.String())
	}
}
