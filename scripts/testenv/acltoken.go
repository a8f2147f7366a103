package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// registrarPolicy is the least-privilege policy users are told to give the
// registrar, relative to the module root.
const registrarPolicy = "examples/consul/registrar-policy.hcl"

// CreateRegistrarToken creates a token holding exactly the documented
// registrar policy, read from the file users copy rather than restated:
// the tests that use it prove that file suffices. name must be unique per
// agent (it names the policy too); it returns the secret and accessor IDs.
func (c *SecureConsul) CreateRegistrarToken(t testing.TB, name string) (secret, accessor string) {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(root, registrarPolicy))
	if err != nil {
		t.Fatal(err)
	}
	return c.CreateACLToken(t, name, string(rules))
}

// WriteTokenFile replaces the token file at once, as a secret manager
// does: a reader of --consul-token-file sees the old token or the new one,
// never a half-written file.
func WriteTokenFile(t testing.TB, path, token string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
