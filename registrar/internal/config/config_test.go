package config

import (
	"strings"
	"testing"
	"time"
)

func valid() Config {
	return Config{
		ConsulAddr: DefaultConsulAddr, Deregister: DeregisterAlways, OnShutdown: ShutdownKeep,
		RetryAttempts: -1, RetryInterval: 2 * time.Second, LogLevel: "info", LogFormat: "text",
		Resync: time.Minute, IOTimeout: 10 * time.Second, StallTimeout: time.Minute,
		HealthStarting: "critical", HealthTTL: 30 * time.Second, HealthDeregisterAfter: 10 * time.Minute, Drain: true,
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"client cert and key", func(c *Config) { c.ConsulClientCert, c.ConsulClientKey = "/c.pem", "/k.pem" }, ""},
		{"client cert alone", func(c *Config) { c.ConsulClientCert = "/c.pem" }, `--consul-client-cert/--consul-client-key="/c.pem"/""`},
		{"client key alone", func(c *Config) { c.ConsulClientKey = "/k.pem" }, `--consul-client-cert/--consul-client-key=""/"/k.pem"`},
		{"on-success", func(c *Config) { c.Deregister = DeregisterOnSuccess }, ""},
		{"never", func(c *Config) { c.Deregister = DeregisterNever }, ""},
		{"bad deregister", func(c *Config) { c.Deregister = "sometimes" }, `--deregister="sometimes"`},
		{"bad on-shutdown", func(c *Config) { c.OnShutdown = "panic" }, `--on-shutdown="panic"`},
		{"bad ip", func(c *Config) { c.HostIP = "1.2.3" }, `--ip="1.2.3"`},
		{"unspecified ip", func(c *Config) { c.HostIP = "0.0.0.0" }, `--ip="0.0.0.0"`},
		{"ipv6 ip", func(c *Config) { c.HostIP = "fd00::1" }, ""},
		{"bad node", func(c *Config) { c.NodeName = `a"b` }, `--node-name=`},
		{"bad tags template", func(c *Config) { c.Tags = "{{.Name" }, `--tags=`},
		{"template tags", func(c *Config) { c.Tags = "a,{{.Name}}" }, ""},
		{"negative resync", func(c *Config) { c.Resync = -time.Second }, "--resync"},
		{"retry attempts", func(c *Config) { c.RetryAttempts = -2 }, "--retry-attempts=-2"},
		{"retry interval", func(c *Config) { c.RetryInterval = 0 }, "--retry-interval=0"},
		{"io timeout", func(c *Config) { c.IOTimeout = 0 }, "--io-timeout=0s"},
		{"stall timeout", func(c *Config) { c.StallTimeout = -time.Second }, "--stall-timeout=-1s"},
		{"log level", func(c *Config) { c.LogLevel = "loud" }, `--log-level="loud"`},
		{"log format", func(c *Config) { c.LogFormat = "xml" }, `--log-format="xml"`},
		{"status addr", func(c *Config) { c.StatusAddr = "8080" }, `--status-addr="8080"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseBackendURI(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"consul://127.0.0.1:8500", "http://127.0.0.1:8500", ""},
		{"consul://consul", "http://consul:8500", ""},
		{"consul://", "http://127.0.0.1:8500", ""},
		{"consul://[::1]:8500", "http://[::1]:8500", ""},
		{"consul-tls://consul.example:8501", "https://consul.example:8501", ""},
		{"consul-tls://consul.example", "https://consul.example:8501", ""},
		{"consul-unix:///var/run/consul.sock", "unix:///var/run/consul.sock", ""},
		{"consul-unix://", "", "no socket path"},
		{"etcd://127.0.0.1:2379", "", "only consul"},
		{"127.0.0.1:8500", "", "want consul://"},
		{"localhost", "", "want consul://"},
	}
	for _, tt := range tests {
		got, err := ParseBackendURI(tt.in)
		if got != tt.want || (tt.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParseBackendURI(%q) = %q, %v; want %q, %q", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParseResync(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"60", time.Minute, false},
		{"0", 0, false},
		{"1m30s", 90 * time.Second, false},
		{" 5 ", 5 * time.Second, false},
		{"soon", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseResync(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ParseResync(%q) = %v, %v", tt.in, got, err)
		}
	}
}
