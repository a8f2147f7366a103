// Package logbridge carries consul-template's log lines into slog.
// consul-template logs through Go's global log package as
// "[LEVEL] (component) message"; the bridge turns each line into one slog
// record at the matching level, with the component as a key, secrets
// redacted and, below debug, pkg/errors stack traces dropped.
package logbridge

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Bridge.
type Options struct {
	// Secrets are values that must never reach a log line: the Consul
	// token (flag or CONSUL_HTTP_TOKEN), Vault tokens. Empty ones are
	// ignored.
	Secrets []string
	// SecretFiles each hold one secret (--consul-token-file); their
	// trimmed contents join Secrets. A file we cannot read adds nothing:
	// consul-template reports that itself when it reads the file.
	SecretFiles []string
	// WatchesAreLocal: consul-template's watches go to the renderer's
	// read mirror, not to the agent, so its "watching N dependencies ...
	// could DDoS your servers" warning is wrong and goes to debug.
	WatchesAreLocal bool
}

// Bridge owns Go's global log output while it is installed.
type Bridge struct {
	w          *writer
	prevOut    *writer // a bridge installed before this one, if any
	prevFlags  int
	prevPrefix string
	once       sync.Once
}

// New installs a bridge from the global log package to logger.
func New(logger *slog.Logger, o Options) *Bridge {
	secrets := append([]string(nil), o.Secrets...)
	for _, f := range o.SecretFiles {
		if f == "" {
			continue
		}
		if b, err := os.ReadFile(f); err == nil {
			secrets = append(secrets, string(b))
		}
	}
	b := &Bridge{
		w:          &writer{log: logger, redact: NewRedactor(secrets...), localWatches: o.WatchesAreLocal},
		prevFlags:  log.Flags(),
		prevPrefix: log.Prefix(),
	}
	b.prevOut, _ = log.Writer().(*writer)
	// Flags would put a timestamp before "[LEVEL]"; slog adds its own.
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(b.w)
	return b
}

// Redactor returns the redaction the bridge applies to every line, for
// other text that may carry the same secrets (errors shown on /status).
func (b *Bridge) Redactor() Redactor { return b.w.redact }

// Restore ends the bridge. It does not hand the global log back to the
// plain writer it found (stderr): consul-template's Runner.Stop only
// closes its views' stop channels, and their goroutines go on to log
// "[TRACE] (view) ... stopping poll" after the runner's owner has
// returned. With stderr back, those lines would bypass the level filter
// and the redactor. So the bridge writer stays installed and from now on
// drops every line: it comes from a stopped runner about fetches nobody
// will read, and the logger's owner may be done with its output (a test
// reading its buffer). Only a bridge installed before this one (nested
// use) gets the output back, since it filters and redacts too.
func (b *Bridge) Restore() {
	b.once.Do(func() {
		b.w.done.Store(true)
		if log.Writer() == b.w && b.prevOut != nil {
			log.SetOutput(b.prevOut)
		}
		log.SetFlags(b.prevFlags)
		log.SetPrefix(b.prevPrefix)
	})
}

type writer struct {
	log    *slog.Logger
	redact Redactor
	done   atomic.Bool // set by Restore: drop everything
	// lastDDoS: unix nanos of the last "watching N dependencies" line let
	// through; consul-template repeats it on every pass.
	lastDDoS     atomic.Int64
	localWatches bool // Options.WatchesAreLocal
}

func (w *writer) Write(p []byte) (int, error) {
	if w.done.Load() {
		return len(p), nil
	}
	ctx := context.Background()
	// The log package makes one Write per message; a message may span
	// lines (a proxy's output inside an error) and stays one record.
	// The level comes first so filtered lines cost no redaction.
	line := string(bytes.TrimRight(p, "\n"))
	level := w.levelFor(line, time.Now())
	if !w.log.Enabled(ctx, level) {
		return len(p), nil
	}
	// Redact the whole line before parsing: a secret must not survive
	// by being read as the component.
	_, component, msg := parseStdLog(w.redact(line))
	if !w.log.Enabled(ctx, slog.LevelDebug) {
		msg = stripStack(msg)
	}
	if component != "" {
		w.log.Log(ctx, level, msg, "component", component)
	} else {
		w.log.Log(ctx, level, msg)
	}
	return len(p), nil
}

// ddosEvery: consul-template warns "watching N dependencies - ... could
// DDoS your servers" on every pass once N > 128; once a minute says it.
const ddosEvery = time.Minute

// levelFor is the level a line is logged at. Two consul-template warnings
// are demoted to debug because they repeat without news: a view's
// "(retry attempt N after ...)", once per dependency per retry, which
// the supervisor reports as one line per backoff step with counts and
// the cause; and the "watching N dependencies" warning past its first
// line a minute.
func (w *writer) levelFor(line string, now time.Time) slog.Level {
	level := levelOf(line)
	if level != slog.LevelWarn {
		return level
	}
	switch {
	case strings.HasPrefix(line, "[WARN] (view) ") && strings.Contains(line, "(retry attempt "):
		return slog.LevelDebug
	case strings.HasPrefix(line, "[WARN] (runner) watching ") && strings.Contains(line, "dependencies"):
		if w.localWatches {
			return slog.LevelDebug
		}
		last := w.lastDDoS.Load()
		if last != 0 && now.UnixNano()-last < int64(ddosEvery) {
			return slog.LevelDebug
		}
		if !w.lastDDoS.CompareAndSwap(last, now.UnixNano()) {
			return slog.LevelDebug // another line won the race
		}
	}
	return level
}

// levelOf maps the "[LEVEL]" tag that starts a line to a slog level.
// Lines without a known tag are info.
func levelOf(s string) slog.Level {
	level, _ := cutLevel(s)
	return level
}

// cutLevel splits "[WARN] rest" into its level and the rest.
func cutLevel(s string) (slog.Level, string) {
	rest, ok := strings.CutPrefix(s, "[")
	if !ok {
		return slog.LevelInfo, s
	}
	tag, after, ok := strings.Cut(rest, "]")
	if !ok {
		return slog.LevelInfo, s
	}
	level := slog.LevelInfo
	switch tag {
	case "TRACE", "DEBUG":
		level = slog.LevelDebug
	case "WARN":
		level = slog.LevelWarn
	case "ERR", "ERROR":
		level = slog.LevelError
	}
	return level, strings.TrimSpace(after)
}
