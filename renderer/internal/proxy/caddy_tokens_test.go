package proxy

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/renderer/internal/membership"
	"github.com/switchyard/switchyard/scripts/testenv"
)

// withOtherMembers gives every reverse_proxy line that opens a block
// (the shipped template's pools) other upstreams: the first one dropped
// when there are several, and one new member, in place (the same for
// every pool, so proxies that share a pool keep one member list).
func withOtherMembers(file string, n int) string {
	lines := strings.Split(file, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != "reverse_proxy" || f[len(f)-1] != "{" {
			continue
		}
		head, ups := f[:1], f[1:len(f)-1]
		if strings.HasPrefix(ups[0], "@") {
			head, ups = f[:2], ups[1:]
		}
		if len(ups) > 1 {
			ups = ups[1:]
		}
		ups = append(ups, fmt.Sprintf("10.250.%d.1:8080", n))
		indent := l[:len(l)-len(strings.TrimLeft(l, " \t"))]
		lines[i] = indent + strings.Join(append(append(head, ups...), "{"), " ")
	}
	return strings.Join(lines, "\n")
}

// TestCaddyTokensAgreeWithAdapt: for every shipped Caddy golden, a
// membership change read from the Caddyfile's tokens against the
// golden (what RuntimeOnly and Patch now do) gives exactly the delta and
// pools that Caddy's own adapter and the JSON diff give. And the tokens
// do tell: the fast path applies to the shipped template's pools.
func TestCaddyTokensAgreeWithAdapt(t *testing.T) {
	goldens, _ := filepath.Glob(filepath.Join("..", "..", "..", "templates", "testdata", "*.Caddyfile"))
	if len(goldens) == 0 {
		t.Fatal("no shipped Caddy golden found")
	}
	a := &adapter{c: &Caddy{Bin: testenv.CaddyBinary(t), Timeout: 20 * time.Second, Log: slog.New(slog.DiscardHandler)}, dir: t.TempDir()}
	read := 0
	for _, g := range goldens {
		base, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		read += tokensAgree(t, a, filepath.Base(g), base)
	}
	if read == 0 {
		t.Fatal("no golden had a pool the tokens read: the test proves nothing")
	}
	t.Logf("%d goldens, %d pools read from tokens", len(goldens), read)
}

// adapter runs Caddy's own adapter on a file body.
type adapter struct {
	c   *Caddy
	dir string
}

func (a *adapter) adapt(t *testing.T, name, body string) []byte {
	t.Helper()
	p := filepath.Join(a.dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := a.c.adapt(t.Context(), p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tokensAgree changes the members of every pool of the golden named
// name and checks the tokens' delta and pools against the adapter's; it
// returns how many pools the tokens read.
func tokensAgree(t *testing.T, a *adapter, name string, base []byte) int {
	t.Helper()
	baseJSON := a.adapt(t, "base", string(base))
	basePools, _, err := membership.CaddyPools(baseJSON)
	if err != nil {
		t.Fatal(err)
	}
	next := withOtherMembers(string(base), 1)
	changed, why := membership.CaddyfileUpstreams(base, []byte(next))
	if why != "" {
		t.Errorf("%s: the tokens cannot tell a membership change: %s", name, why)
		return 0
	}
	fast, why := membership.CaddyfilePools(basePools, changed)
	if why != "" {
		t.Errorf("%s: %s", name, why)
		return 0
	}
	nextJSON := a.adapt(t, "next", next)
	want, err := membership.Caddy(baseJSON, nextJSON)
	if err != nil {
		t.Errorf("%s: the JSON diff calls it structural: %v", name, err)
		return 0
	}
	wantPools, _, _ := membership.CaddyPools(nextJSON)
	if got := membership.CaddyPoolsDelta(basePools, fast); !reflect.DeepEqual(got, want) {
		t.Errorf("%s: delta from tokens %+v, from adapt %+v", name, got, want)
	}
	if !reflect.DeepEqual(fast, wantPools) {
		t.Errorf("%s: pools from tokens %+v, from adapt %+v", name, fast, wantPools)
	}
	return len(changed)
}

// TestCaddyMembershipChangesAdaptNothing: after the first change (which
// adapts the running file: the base), membership changes are decided,
// applied and verified without adapting anything, through a real Caddy;
// a structural change still adapts, and is still not applied.
func TestCaddyMembershipChangesAdaptNothing(t *testing.T) {
	r := newCaddyRig(t)
	b := []*caddyBackend{newCaddyBackend(t, "b0"), newCaddyBackend(t, "b1"), newCaddyBackend(t, "b2")}
	running := r.write(t, r.config(b[:1], b[:1], ""))
	ctx := t.Context()
	if err := r.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	k := dialKeep(t, "127.0.0.1:"+r.port)
	for i, members := range [][]*caddyBackend{b[:2], b[1:], b[2:], b} {
		live := r.write(t, r.config(members, b[:1], ""))
		before := r.c.rt.adapts
		if !r.c.RuntimeOnly(running[r.c.Config], live[r.c.Config]) {
			t.Fatalf("change %d: RuntimeOnly = false for a membership change", i)
		}
		if patched, err := r.c.Patch(ctx, running, live); err != nil || !patched {
			t.Fatalf("change %d: Patch = %v, %v", i, patched, err)
		}
		if n := r.c.rt.adapts - before; i > 0 && n != 0 {
			t.Errorf("change %d adapted %d configs; want 0 (read from tokens)", i, n)
		}
		last := members[len(members)-1].name
		testenv.Eventually(t, 5*time.Second, func() error {
			if body := k.mustGet(t, "web.localhost"); body != last {
				return fmt.Errorf("answer from %s, waiting for %s", body, last)
			}
			return nil
		})
		running = live
	}
	before := r.c.rt.adapts
	live := r.write(t, r.config(b, b[1:2], ""))
	if r.c.RuntimeOnly(running[r.c.Config], live[r.c.Config]) {
		t.Fatal("RuntimeOnly = true for a change of a proxy without a dynamic source")
	}
	if patched, err := r.c.Patch(ctx, running, live); err != nil || patched {
		t.Fatalf("structural Patch = %v, %v; want false, nil", patched, err)
	}
	if r.c.rt.adapts == before {
		t.Error("a change the tokens cannot tell was not adapted")
	}
}
