// Package config is registrar's typed configuration: what the flags mean
// once parsed, and Validate, which rejects bad values at start-up with a
// message naming the flag and the value. It does no I/O.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Deregister modes (registrator's -deregister, plus never).
const (
	DeregisterAlways    = "always"
	DeregisterOnSuccess = "on-success"
	DeregisterNever     = "never"
)

// Shutdown modes (--on-shutdown).
const (
	ShutdownKeep       = "keep"
	ShutdownDeregister = "deregister"
)

// DefaultConsulAddr is where a local Consul agent listens.
const DefaultConsulAddr = "127.0.0.1:8500"

// Config is everything registrar needs to run.
type Config struct {
	// ConsulAddr is an address as consul/api takes it: "host:port",
	// "http://host:port", "https://host:port" or "unix:///path".
	ConsulAddr  string
	ConsulToken string
	// ConsulTokenFile is read again for every call to the agent: a
	// rotated or repaired token takes effect without a restart.
	ConsulTokenFile     string
	ConsulCACert        string
	ConsulClientCert    string // TLS client certificate, for verify_incoming
	ConsulClientKey     string
	ConsulTLSServerName string // name the agent's certificate must hold
	// ConsulTokenInArgs is set when --consul-token came on the command
	// line, where every user of the host can read it (ps).
	ConsulTokenInArgs bool
	// DockerHost overrides DOCKER_HOST; empty means Docker's default.
	DockerHost string

	NodeName    string // empty: the Docker engine's name
	HostIP      string // --ip
	Internal    bool
	Explicit    bool
	IPFromLabel string
	Tags        string   // Go template, comma list after execution
	LabelFilter []string // --label-filter: KEY or KEY=VALUE, all must match

	Resync        time.Duration // 0 disables periodic resync
	Deregister    string
	OnShutdown    string
	RetryAttempts int // start-up attempts to reach Consul and Docker; -1 forever
	RetryInterval time.Duration
	IOTimeout     time.Duration // deadline of each Docker and Consul call
	StallTimeout  time.Duration // a loop step running longer is not ready

	// Docker HEALTHCHECK and drain (see package health).
	Drain          bool          // --drain: maintenance on SIGTERM, until die
	WaitHealthy    bool          // --wait-healthy
	HealthStarting string        // --health-starting: critical or warning
	HealthTTL      time.Duration // --health-ttl
	// HealthDeregisterAfter is DeregisterCriticalServiceAfter of the
	// Docker health check; 0 disables.
	HealthDeregisterAfter time.Duration

	LogLevel   string
	LogFormat  string
	StatusAddr string // optional /ready and /healthz listener
}

var nodeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidateNodeName checks a node name, from --node-name or from Docker.
func ValidateNodeName(s string) error {
	if !nodeRE.MatchString(s) {
		return errors.New("want letters, digits, '.', '_' or '-' (it goes into service IDs and a Consul filter)")
	}
	return nil
}

// Validate checks every field and reports all problems at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag string, value any, why string) {
		errs = append(errs, fmt.Errorf("%s=%v: %s", flag, value, why))
	}
	c.validateConsul(bad)
	if c.NodeName != "" {
		if err := ValidateNodeName(c.NodeName); err != nil {
			bad("--node-name", strconv.Quote(c.NodeName), err.Error())
		}
	}
	if c.HostIP != "" {
		if ip := net.ParseIP(c.HostIP); ip == nil || ip.IsUnspecified() {
			bad("--ip", strconv.Quote(c.HostIP), "not a usable IP address")
		}
	}
	if c.Tags != "" {
		if _, err := template.New("tags").Parse(c.Tags); err != nil {
			bad("--tags", strconv.Quote(c.Tags), err.Error())
		}
	}
	if c.Resync < 0 {
		bad("--resync", c.Resync, "must not be negative (0 disables)")
	}
	switch c.Deregister {
	case DeregisterAlways, DeregisterOnSuccess, DeregisterNever:
	default:
		bad("--deregister", strconv.Quote(c.Deregister), "want always, on-success or never")
	}
	switch c.OnShutdown {
	case ShutdownKeep, ShutdownDeregister:
	default:
		bad("--on-shutdown", strconv.Quote(c.OnShutdown), "want keep or deregister")
	}
	c.validateTimes(bad)
	c.validateHealthAndLogs(bad)
	if c.StatusAddr != "" {
		if _, _, err := net.SplitHostPort(c.StatusAddr); err != nil {
			bad("--status-addr", strconv.Quote(c.StatusAddr), "want host:port")
		}
	}
	return errors.Join(errs...)
}

// validateTimes checks the retry and deadline flags.
func (c *Config) validateTimes(bad func(flag string, value any, why string)) {
	if c.RetryAttempts < -1 {
		bad("--retry-attempts", c.RetryAttempts, "want -1 (forever) or more")
	}
	if c.RetryInterval <= 0 {
		bad("--retry-interval", c.RetryInterval.Milliseconds(), "want a positive number of milliseconds")
	}
	if c.IOTimeout <= 0 {
		bad("--io-timeout", c.IOTimeout, "want a positive duration")
	}
	if c.StallTimeout <= 0 {
		bad("--stall-timeout", c.StallTimeout, "want a positive duration")
	}
}

// validateHealthAndLogs checks the Docker health and logging flags.
func (c *Config) validateHealthAndLogs(bad func(flag string, value any, why string)) {
	switch c.HealthStarting {
	case "critical", "warning":
	default:
		bad("--health-starting", strconv.Quote(c.HealthStarting), "want critical or warning")
	}
	if c.HealthTTL < time.Second {
		bad("--health-ttl", c.HealthTTL, "want at least 1s")
	}
	// Consul's reaper ignores anything below a minute.
	if c.HealthDeregisterAfter != 0 && c.HealthDeregisterAfter < time.Minute {
		bad("--health-deregister-after", c.HealthDeregisterAfter, "want 0 (off) or at least 1m")
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		bad("--log-level", strconv.Quote(c.LogLevel), "want debug, info, warn or error")
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("--log-format", strconv.Quote(c.LogFormat), "want text or json")
	}
}

// validateConsul checks how to reach the agent; files are read when the
// client is built, which names the flag of one that cannot be.
func (c *Config) validateConsul(bad func(flag string, value any, why string)) {
	if c.ConsulAddr == "" {
		bad("consul address", `""`, "empty")
	}
	if (c.ConsulClientCert == "") != (c.ConsulClientKey == "") {
		bad("--consul-client-cert/--consul-client-key", strconv.Quote(c.ConsulClientCert)+"/"+strconv.Quote(c.ConsulClientKey), "set both or neither")
	}
}

// ParseBackendURI reads registrator's positional backend URI. Only Consul
// backends exist here: consul://host[:port], consul-tls://host[:port] and
// consul-unix:///path/to/socket.
func ParseBackendURI(s string) (string, error) {
	if !strings.Contains(s, "://") {
		return "", fmt.Errorf("backend URI %q: want consul://host:port, consul-tls://host:port or consul-unix:///path", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("backend URI %q: %w", s, err)
	}
	switch u.Scheme {
	case "consul", "consul-tls":
		host := u.Host
		if host == "" {
			host = "127.0.0.1"
		}
		if _, _, err := net.SplitHostPort(host); err != nil {
			port := "8500"
			if u.Scheme == "consul-tls" {
				port = "8501"
			}
			host = net.JoinHostPort(strings.Trim(host, "[]"), port)
		}
		if u.Scheme == "consul-tls" {
			return "https://" + host, nil
		}
		return "http://" + host, nil
	case "consul-unix":
		p := u.Path
		if u.Host != "" { // consul-unix://relative/path
			p = u.Host + p
		}
		if p == "" {
			return "", fmt.Errorf("backend URI %q: no socket path", s)
		}
		return "unix://" + p, nil
	default:
		return "", fmt.Errorf("backend URI %q: only consul, consul-tls and consul-unix are supported, not %s", s, u.Scheme)
	}
}

// ParseResync reads -resync: registrator's whole seconds ("60"), or a Go
// duration ("1m30s"). "0" disables.
func ParseResync(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--resync=%q: want seconds (60) or a duration (1m)", s)
	}
	return d, nil
}
