package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/urfave/cli/v2"

	"github.com/switchyard/switchyard/scripts/testenv"
)

func runCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := newApp(&out, &errb).RunContext(ctx, append([]string{"renderer"}, args...))
	code := 0
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		code = ec.ExitCode()
	} else if err != nil {
		code = -1
	}
	if err != nil {
		errb.WriteString("\n" + err.Error())
	}
	return out.String(), errb.String(), code
}

// TestOncePlanAndHCL covers the one-shot commands and an operator's
// existing consul-template HCL file, against a real Consul.
func TestOncePlanAndHCL(t *testing.T) {
	nginx := testenv.NginxBinary(t)
	consul := testenv.StartConsul(t)
	if err := consul.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		Name: "web", ID: "web-1", Address: "127.0.0.1", Port: 9001,
	}); err != nil {
		t.Fatal(err)
	}
	tmpl, _ := filepath.Abs("../templates/nginx.conf.tmpl")
	dir := t.TempDir()
	dest := filepath.Join(dir, "nginx.conf")
	common := []string{"--consul-addr", consul.Addr, "--nginx-bin", nginx, "--timeout", "30s"}
	t.Setenv("SWITCHYARD_LISTEN", "127.0.0.1:1")

	t.Run("plan changes nothing", func(t *testing.T) {
		out, errs, code := runCmd(t, append([]string{"plan", "--template", tmpl + ":" + dest}, common...)...)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, errs)
		}
		if !strings.Contains(out, "+        server 127.0.0.1:9001") {
			t.Errorf("plan output lacks the diff:\n%s", out)
		}
		if _, err := os.Stat(dest); !os.IsNotExist(err) {
			t.Errorf("plan wrote %s", dest)
		}
	})

	t.Run("once writes the file and exits 0", func(t *testing.T) {
		_, errs, code := runCmd(t, append([]string{"once", "--template", tmpl + ":" + dest}, common...)...)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, errs)
		}
		b, err := os.ReadFile(dest)
		if err != nil || !bytes.Contains(b, []byte("server 127.0.0.1:9001")) {
			t.Fatalf("dest after once: %v\n%s", err, b)
		}
	})

	t.Run("once with a rejected config exits 2", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.tmpl")
		os.WriteFile(bad, []byte("events {}\nhttp { {{ range services }}nonsense_{{ .Name }} on;{{ end }} }\n"), 0o644)
		bdest := filepath.Join(dir, "bad.conf")
		_, errs, code := runCmd(t, append([]string{"once", "--template", bad + ":" + bdest}, common...)...)
		if code != exitRejected {
			t.Fatalf("exit %d, want %d\n%s", code, exitRejected, errs)
		}
		if _, err := os.Stat(bdest); !os.IsNotExist(err) {
			t.Error("rejected config reached the destination")
		}
	})

	t.Run("HCL config: templates, wait, command replaced with a warning", func(t *testing.T) {
		hdest := filepath.Join(dir, "hcl", "nginx.conf")
		hcl := filepath.Join(dir, "ct.hcl")
		os.WriteFile(hcl, []byte(`
consul { address = "`+consul.Addr+`" }
wait { min = "50ms" max = "500ms" }
template {
  source      = "`+tmpl+`"
  destination = "`+hdest+`"
  command     = "nginx -s reload"
}
`), 0o644)
		_, errs, code := runCmd(t, "once", "--config", hcl, "--nginx-bin", nginx, "--timeout", "30s")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, errs)
		}
		if !strings.Contains(errs, "command is ignored") {
			t.Errorf("no warning about the command stanza:\n%s", errs)
		}
		if b, _ := os.ReadFile(hdest); !bytes.Contains(b, []byte("svc_web")) {
			t.Errorf("HCL template not rendered:\n%s", b)
		}
	})

	t.Run("unsafe functions denied by default", func(t *testing.T) {
		evil := filepath.Join(dir, "evil.tmpl")
		os.WriteFile(evil, []byte(`{{ plugin "/bin/true" }}`), 0o644)
		_, errs, code := runCmd(t, append([]string{"once", "--proxy", "none", "--template", evil + ":" + filepath.Join(dir, "evil.out")}, common...)...)
		if code == 0 || !strings.Contains(errs, "function is disabled") {
			t.Errorf("plugin was not denied: exit %d\n%s", code, errs)
		}
	})
}

func TestUsageErrorsNameTheFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--template", "a"}, "--template"},
		{[]string{"--template", "/nonexistent.tmpl:/tmp/x"}, "/nonexistent.tmpl"},
		{[]string{"--template", "a:b:squid"}, "squid"},
		{[]string{"--proxy-mode", "daemonize", "--template", "main.go:/tmp/x"}, "--proxy-mode"},
		{[]string{"--wait", "1s:10ms", "--template", "main.go:/tmp/x"}, "--wait"},
		{[]string{"--nginx-bin", "/no/nginx", "--template", "main.go:/tmp/x"}, "--nginx-bin"},
	} {
		_, errs, code := runCmd(t, c.args...)
		if code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, want %d naming %q:\n%s", c.args, code, exitUsage, c.want, errs)
		}
	}
}
