package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// validConfig is a config Validate accepts, with one template whose
// source exists.
func validConfig(t *testing.T) *Config {
	t.Helper()
	src := filepath.Join(t.TempDir(), "a.tmpl")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tpl, err := ParseTemplate(src+":"+filepath.Join(t.TempDir(), "a.conf"), ProxyNone)
	if err != nil {
		t.Fatal(err)
	}
	return &Config{
		Templates: []Template{tpl}, Proxy: ProxyNone, ProxyMode: ModeExternal,
		Keep: 5, HoldDown: 30 * time.Second, CommandTimeout: 10 * time.Second,
	}
}

func TestValidateKeepHoldDownCommandTimeout(t *testing.T) {
	if err := validConfig(t).Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for _, c := range []struct {
		name string
		set  func(*Config)
		want string // "" = accepted
	}{
		{"keep 1", func(c *Config) { c.Keep = 1 }, "--keep 1"},
		{"keep 0", func(c *Config) { c.Keep = 0 }, "--keep 0"},
		{"keep 2", func(c *Config) { c.Keep = 2 }, ""},
		{"hold-down negative", func(c *Config) { c.HoldDown = -time.Second }, "--hold-down -1s"},
		{"hold-down 0", func(c *Config) { c.HoldDown = 0 }, ""},
		{"command-timeout 0", func(c *Config) { c.CommandTimeout = 0 }, "--command-timeout 0s"},
		{"command-timeout negative", func(c *Config) { c.CommandTimeout = -time.Second }, "--command-timeout -1s"},
		{"max-removal", func(c *Config) { c.MaxRemoval = 1.5 }, "--max-removal 1.5"},
	} {
		cfg := validConfig(t)
		c.set(cfg)
		err := cfg.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: rejected: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err %v, want one naming %q", c.name, err, c.want)
		}
	}
}

// user/group (and legacy uid/gid) of an HCL template stanza are kept and
// resolved to numeric ids by Validate; -1 when not set.
func TestLoadHCLUserGroup(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.tmpl", "b.tmpl", "c.tmpl"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hcl := filepath.Join(dir, "ct.hcl")
	if err := os.WriteFile(hcl, []byte(`
template {
  source      = "a.tmpl"
  destination = "a.conf"
  user        = "root"
  group       = "65534"
}
template {
  source      = "b.tmpl"
  destination = "b.conf"
  uid         = 65534
  gid         = 0
}
template {
  source      = "c.tmpl"
  destination = "c.conf"
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	c := validConfig(t)
	c.Templates = nil
	if err := c.LoadHCL(hcl, ProxyNone, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		user, group string
		uid, gid    int
	}{{"root", "65534", 0, 65534}, {"65534", "0", 65534, 0}, {"", "", -1, -1}}
	for i, w := range want {
		got := c.Templates[i]
		if got.User != w.user || got.Group != w.group || got.UID != w.uid || got.GID != w.gid {
			t.Errorf("template %d: user %q group %q -> %d:%d, want %q %q -> %d:%d",
				i, got.User, got.Group, got.UID, got.GID, w.user, w.group, w.uid, w.gid)
		}
	}
}

// An unknown user or group fails at start-up, naming the template and the
// value.
func TestValidateUnknownOwner(t *testing.T) {
	for _, c := range []struct{ user, group, want string }{
		{"no-such-user-x1", "", `user "no-such-user-x1"`},
		{"", "no-such-group-x1", `group "no-such-group-x1"`},
		{"99999999999", "", `user "99999999999"`},
	} {
		cfg := validConfig(t)
		cfg.Templates[0].User, cfg.Templates[0].Group = c.user, c.group
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), cfg.Templates[0].Source) {
			t.Errorf("%s/%s: err %v, want one naming the template and %s", c.user, c.group, err, c.want)
		}
	}
}
