package logbridge

import (
	"bytes"
	"encoding/json"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is safe for the log package and the test to share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// keepGlobalLog puts the global log back as it was when the test ends and
// sends raw (unbridged) output to the returned buffer meanwhile.
func keepGlobalLog(t *testing.T) *lockedBuffer {
	t.Helper()
	out, flags, prefix := log.Writer(), log.Flags(), log.Prefix()
	t.Cleanup(func() {
		log.SetOutput(out)
		log.SetFlags(flags)
		log.SetPrefix(prefix)
	})
	raw := &lockedBuffer{}
	log.SetOutput(raw)
	log.SetFlags(log.LstdFlags)
	return raw
}

type record struct {
	Level, Msg, Component string
}

// bridged installs a bridge to a JSON logger at level and returns a
// function that decodes what reached that logger.
func bridged(t *testing.T, level slog.Level, o Options) (*Bridge, func() []record) {
	t.Helper()
	keepGlobalLog(t)
	out := &lockedBuffer{}
	b := New(slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})), o)
	t.Cleanup(b.Restore)
	return b, func() []record {
		var recs []record
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if l == "" {
				continue
			}
			var r record
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			recs = append(recs, r)
		}
		return recs
	}
}

func TestLevelsAndComponent(t *testing.T) {
	_, recs := bridged(t, slog.LevelDebug, Options{})
	for _, c := range []struct{ in, level, comp, msg string }{
		{"[TRACE] (view) a", "DEBUG", "view", "a"},
		{"[DEBUG] (runner) b", "DEBUG", "runner", "b"},
		{"[INFO] (runner) c", "INFO", "runner", "c"},
		{"[WARN] (watcher) d", "WARN", "watcher", "d"},
		{"[ERR] (view) health.service(web): e", "ERROR", "view", "health.service(web): e"},
		{"[ERROR] (cli) f", "ERROR", "cli", "f"},
		{"plain line", "INFO", "", "plain line"},
	} {
		log.Print(c.in)
		got := recs()
		last := got[len(got)-1]
		if last != (record{c.level, c.msg, c.comp}) {
			t.Errorf("%q -> %+v, want %s %q %q", c.in, last, c.level, c.comp, c.msg)
		}
	}
}

func TestLevelFilter(t *testing.T) {
	_, recs := bridged(t, slog.LevelWarn, Options{})
	log.Print("[TRACE] (view) x")
	log.Print("[DEBUG] (runner) x")
	log.Print("[INFO] (runner) x")
	log.Print("[WARN] (view) kept")
	if got := recs(); len(got) != 1 || got[0].Msg != "kept" {
		t.Errorf("records %+v, want only the warning", got)
	}
}

func TestParseStdLog(t *testing.T) {
	for _, c := range []struct{ in, comp, msg string }{
		{"[WARN] (runner) watching 200 dependencies", "runner", "watching 200 dependencies"},
		{"[ERR] (view) health.service(web): connection refused", "view", "health.service(web): connection refused"},
		{"[INFO] (runner): rendered", "runner", "rendered"},
		{"plain line", "", "plain line"},
	} {
		_, comp, msg := parseStdLog(c.in)
		if comp != c.comp || msg != c.msg {
			t.Errorf("%q -> %q %q", c.in, comp, msg)
		}
	}
}

// A stopped runner's view goroutines log after their owner has restored
// the bridge: nothing of that may reach the old writer (stderr), below the
// level or not, nor the logger its owner is done with.
func TestRestoreDropsStragglers(t *testing.T) {
	raw := keepGlobalLog(t)
	out := &lockedBuffer{}
	b := New(slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn})), Options{})
	b.Restore()
	log.Print("[TRACE] (view) catalog.services stopping poll (received on view stopCh)")
	log.Print("[WARN] (view) catalog.services (retry attempt 1 after \"250ms\")")
	if raw.String() != "" || out.String() != "" {
		t.Errorf("after Restore: raw %q, logger %q", raw.String(), out.String())
	}
	if log.Flags() != log.LstdFlags {
		t.Errorf("flags not restored: %d", log.Flags())
	}
}

func TestRestoreNested(t *testing.T) {
	_, recs := bridged(t, slog.LevelInfo, Options{})
	inner := New(slog.New(slog.DiscardHandler), Options{})
	inner.Restore()
	log.Print("[INFO] (runner) outer again")
	if got := recs(); len(got) != 1 || got[0].Msg != "outer again" {
		t.Errorf("outer bridge got %+v", got)
	}
}

// consul-template logs its final config, token included, on every runner
// build at debug.
func TestRedactsConfiguredSecrets(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	os.WriteFile(file, []byte("file-secret-7f3a\n"), 0o600)
	_, recs := bridged(t, slog.LevelDebug, Options{
		Secrets:     []string{"flag-secret-91c2", ""},
		SecretFiles: []string{file, filepath.Join(dir, "missing")},
	})
	log.Print(`[DEBUG] (runner) final config: {"Consul":{"Address":"127.0.0.1:8500","Token":"flag-secret-91c2","TokenFile":""}}`)
	log.Print(`[WARN] (view) Get "http://127.0.0.1:8500/v1/kv/x?stale=&token=file-secret-7f3a": EOF`)
	log.Print(`[ERR] (flag-secret-91c2) odd component`)
	for _, r := range recs() {
		all := r.Msg + r.Component
		if strings.Contains(all, "secret") {
			t.Errorf("secret logged: %+v", r)
		}
		if !strings.Contains(all, Redacted) {
			t.Errorf("no %s in %+v", Redacted, r)
		}
	}
}

// A message that printed a pkg/errors error with %+v, as
// log.Printf("[WARN] (view) %+v (retry attempt %d after %q)", err, ...)
// gives it, at ERR: the retry lines themselves are debug (see
// TestRetryLinesDemoted), and the stack is what is tested here.
const pkgErrorsMsg = "[ERR] (view) dial tcp 127.0.0.1:8500: connect: connection refused\n" +
	"github.com/hashicorp/consul-template/dependency.(*HealthServiceQuery).Fetch\n" +
	"\t/go/pkg/mod/github.com/hashicorp/consul-template@v0.42.1/dependency/health_service.go:154\n" +
	"github.com/hashicorp/consul-template/watch.(*View).fetch\n" +
	"\t/go/pkg/mod/github.com/hashicorp/consul-template@v0.42.1/watch/view.go:218\n" +
	"runtime.goexit\n" +
	"\t/usr/local/go/src/runtime/asm_amd64.s:1771\n" +
	"health.service(web|passing)\n" +
	"github.com/hashicorp/consul-template/dependency.(*HealthServiceQuery).Fetch\n" +
	"\t/go/pkg/mod/github.com/hashicorp/consul-template@v0.42.1/dependency/health_service.go:155\n" +
	"runtime.goexit\n" +
	"\t/usr/local/go/src/runtime/asm_amd64.s:1771 (retry attempt 3 after \"1s\")\n"

func TestStackTraceDroppedBelowDebug(t *testing.T) {
	_, recs := bridged(t, slog.LevelInfo, Options{})
	log.Print(pkgErrorsMsg)
	want := "dial tcp 127.0.0.1:8500: connect: connection refused\n" +
		"health.service(web|passing) (retry attempt 3 after \"1s\")"
	if got := recs(); len(got) != 1 || got[0].Msg != want {
		t.Errorf("records %+v\nwant msg %q", got, want)
	}
}

func TestStackTraceKeptAtDebug(t *testing.T) {
	_, recs := bridged(t, slog.LevelDebug, Options{})
	log.Print(pkgErrorsMsg)
	if got := recs(); len(got) != 1 || strings.Count(got[0].Msg, "\n\t") != 5 {
		t.Errorf("debug lost the trace: %+v", got)
	}
}

func TestStripStackLeavesOtherMultilineMessages(t *testing.T) {
	for _, msg := range []string{
		"nginx: [emerg] unknown directive\n\tin /etc/nginx/nginx.conf:12",
		"line one\nline two",
		"single",
	} {
		if got := stripStack(msg); got != msg {
			t.Errorf("stripStack(%q) = %q", msg, got)
		}
	}
}

// Issue 11: a view's retry line comes once per dependency per retry (a
// thousand a second against a throttling agent); the supervisor reports
// the errors once per backoff step, so the bridge logs them at debug. The
// "watching N dependencies" warning comes once per pass: once a minute.
func TestRetryLinesDemoted(t *testing.T) {
	_, recs := bridged(t, slog.LevelWarn, Options{})
	for i := range 50 {
		log.Printf("[WARN] (view) health.service(s%d|passing): Unexpected response code: 429 (retry attempt 1 after \"250ms\")", i)
		log.Print("[WARN] (runner) watching 302 dependencies - watching this many dependencies could DDoS your servers")
	}
	log.Print("[WARN] (runner) something else")
	got := recs()
	if len(got) != 2 || !strings.HasPrefix(got[0].Msg, "watching 302") || got[1].Msg != "something else" {
		t.Fatalf("records %+v", got)
	}
}

// Issue 11: with the read mirror, consul-template's watches are local
// connections; its warning that they could DDoS Consul goes to debug.
func TestDependencyCountWarningQuietWithTheMirror(t *testing.T) {
	_, recs := bridged(t, slog.LevelWarn, Options{WatchesAreLocal: true})
	log.Print("[WARN] (runner) watching 3002 dependencies - watching this many dependencies could DDoS your servers")
	log.Print("[WARN] (runner) something else")
	if got := recs(); len(got) != 1 || got[0].Msg != "something else" {
		t.Fatalf("records %+v", got)
	}
}
