package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// tokenSecret is the ACL token the redaction tests hand the renderer. A dev
// agent runs without ACLs and accepts any token.
const tokenSecret = "redact-me-4f9c2e7a"

// redactFixture starts a real Consul with one service and writes a
// trivial template watching it.
func redactFixture(t *testing.T) (consul *testenv.Consul, dir, tmpl string) {
	t.Helper()
	consul = testenv.StartConsul(t)
	if err := consul.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "web", ID: "web-1", Address: "127.0.0.1", Port: 9001,
	}); err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	tmpl = filepath.Join(dir, "web.tmpl")
	body := "{{ range service \"web\" }}server {{ .Address }}:{{ .Port }}\n{{ end }}"
	if err := os.WriteFile(tmpl, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return consul, dir, tmpl
}

// TestTokenNeverLogged runs the real binary's `once` with the token from
// each source we know, at every level and format, and looks for it in
// everything the process printed. consul-template logs its final config,
// token included, at debug on every runner build.
func TestTokenNeverLogged(t *testing.T) {
	bin := testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer")
	consul, dir, tmpl := redactFixture(t)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(tokenSecret+"\n"), 0o600)
	// A token only the HCL file knows: run.go does not hand it to the
	// bridge, so only the pattern ("Token":"...") catches it.
	hcl := filepath.Join(dir, "consul.hcl")
	os.WriteFile(hcl, []byte(`consul { token = "`+tokenSecret+`" }`), 0o600)
	sources := []struct {
		name string
		args []string
		env  []string
	}{
		{"flag", []string{"--consul-token", tokenSecret}, nil},
		{"file", []string{"--consul-token-file", tokenFile}, nil},
		{"env", nil, []string{"CONSUL_HTTP_TOKEN=" + tokenSecret}},
		// consul-template reads VAULT_TOKEN itself, Vault disabled or not.
		{"vault-env", nil, []string{"VAULT_TOKEN=" + tokenSecret}},
		{"hcl", []string{"--config", hcl}, nil},
	}
	for _, src := range sources {
		for _, level := range []string{"debug", "info", "warn", "error"} {
			for _, format := range []string{"text", "json"} {
				t.Run(src.name+"/"+level+"/"+format, func(t *testing.T) {
					dest := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.out", src.name, level, format))
					args := append([]string{"once", "--consul-addr", consul.Addr, "--proxy", "none",
						"--template", tmpl + ":" + dest, "--timeout", "30s",
						"--log-level", level, "--log-format", format}, src.args...)
					cmd := exec.Command(bin, args...)
					cmd.Env = append(cleanEnv(), src.env...)
					out, err := cmd.CombinedOutput()
					if err != nil {
						t.Fatalf("renderer once: %v\n%s", err, out)
					}
					if strings.Contains(string(out), tokenSecret) {
						t.Errorf("the token was printed:\n%s", out)
					}
					// The test must see the line it guards against.
					if level == "debug" && !strings.Contains(string(out), "final config") {
						t.Errorf("no final config line at debug:\n%s", out)
					}
				})
			}
		}
	}
}

// TestTokenNeverLoggedDaemon runs the daemon at debug through a render, a
// change and a Consul outage (errors and retries), and looks for the
// token in everything it printed.
func TestTokenNeverLoggedDaemon(t *testing.T) {
	bin := testenv.BuildBinary(t, "github.com/switchyard/switchyard/renderer")
	consul, dir, tmpl := redactFixture(t)
	dest := filepath.Join(dir, "web.out")
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			p := testenv.StartProcess(t, "renderer", bin, []string{
				"--consul-addr", consul.Addr, "--consul-token", tokenSecret, "--proxy", "none",
				"--template", tmpl + ":" + dest, "--log-level", "debug", "--log-format", format,
				"--consul-retry-max-backoff", "200ms",
			})
			p.WaitLog(t, 30*time.Second, "final config")
			testenv.Eventually(t, 30*time.Second, func() error {
				_, err := os.Stat(dest)
				return err
			})
			consul.Stop()
			p.WaitLog(t, 30*time.Second, "connection refused")
			if err := consul.Start(); err != nil {
				t.Fatal(err)
			}
			p.Stop(10 * time.Second)
			if log := p.Log(); strings.Contains(log, tokenSecret) {
				t.Errorf("the token was printed:\n%s", log)
			}
		})
	}
}

// cleanEnv is our environment without Consul or Vault settings that would
// change what the renderer is told.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONSUL_") && !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return env
}
