package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	ctconfig "github.com/hashicorp/consul-template/config"

	"github.com/switchyard/switchyard/renderer/internal/config"
	"github.com/switchyard/switchyard/renderer/internal/mirror"
	"github.com/switchyard/switchyard/renderer/internal/status"
)

const mirrorMaxBackoff = 2 * time.Second

// mirrorRun is the Consul read mirror of one run and its listener.
type mirrorRun struct {
	m  *mirror.Mirror
	ln net.Listener
}

// startMirror builds the mirror, listens on a loopback port and points
// consul-template and the probe at it, with a random per-run secret as
// their token: the mirror answers with the renderer's Consul token, so it
// answers nobody else. Not a unix socket, which consul-template supports
// too: thousands of watches dial at once when a runner starts, and a unix
// socket refuses connects past the listen backlog (EAGAIN, an error every
// watch reports) where TCP only retries the SYN.
func startMirror(cfg *config.Config, log *slog.Logger, hist *status.Histograms) (*mirrorRun, error) {
	up, err := cfg.MirrorUpstream()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg.Consul.MirrorAddr = "http://" + ln.Addr().String()
	cfg.Consul.MirrorSecret = hex.EncodeToString(secret)
	// The Consul API client consul-template builds starts from the
	// environment: CONSUL_HTTP_SSL=true would make it speak TLS to the
	// mirror's plain HTTP. The upstream settings were read above.
	os.Unsetenv("CONSUL_HTTP_SSL")
	// Two watches retrying every 2 s cost the agent nothing, and the
	// probe answers only once they do: a longer backoff (the runner's
	// --consul-retry-max-backoff paces thousands of watches) would only
	// delay the recovery after an outage.
	m := mirror.New(mirror.Options{Upstream: up, Log: log, MaxBackoff: min(cfg.Consul.RetryMaxBackoff, mirrorMaxBackoff),
		Secret: cfg.Consul.MirrorSecret})
	hist.Add(m.Collectors()...)
	log.Debug("consul mirror listening", "addr", ln.Addr().String())
	return &mirrorRun{m: m, ln: ln}, nil
}

func (r *mirrorRun) close() { r.ln.Close() }

// inline gives the runner built from ct a session that answers the
// service function from the mirror in process (see mirror.Inline): each
// template is read here and handed to consul-template as contents, with
// the session's trailer appended and its functions added.
//
// Not with deduplicate{}: followers take the leader's dependency data
// from Consul, and the leader's trailer key is not theirs, so they would
// never complete a pass. nil then.
func (r *mirrorRun) inline(ct *ctconfig.Config, log *slog.Logger) (*mirror.Inline, error) {
	if ct.Dedup != nil && ctconfig.BoolVal(ct.Dedup.Enabled) {
		log.Info("deduplicate{} is on: service is watched by consul-template, not read inline")
		return nil, nil
	}
	in, err := r.m.NewInline(mirror.InlineOptions{MaxStale: ctconfig.TimeDurationVal(ct.MaxStale),
		Namespace: ctconfig.StringVal(ct.Consul.Namespace), Log: log})
	if err != nil {
		return nil, fmt.Errorf("--consul-mirror-inline: %w", err)
	}
	if err := in.Apply(*ct.Templates); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}
