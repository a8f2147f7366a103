package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ctconfig "github.com/hashicorp/consul-template/config"

	"github.com/switchyard/switchyard/renderer/internal/mirror"
)

// TestInlineSession: a runner's templates are handed over as contents
// with the trailer and the inline service; with deduplicate{} they are
// left to consul-template, whose followers could never read the leader's
// trailer key.
func TestInlineSession(t *testing.T) {
	src := filepath.Join(t.TempDir(), "t.tmpl")
	if err := os.WriteFile(src, []byte(`<{{ range service "web" }}{{ .Address }}{{ end }}>`), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &mirrorRun{m: mirror.New(mirror.Options{})}
	build := func(dedup bool) *ctconfig.Config {
		ct := ctconfig.DefaultConfig()
		ct.Dedup.Enabled = ctconfig.Bool(dedup)
		ct.Templates = &ctconfig.TemplateConfigs{{Source: ctconfig.String(src), LeftDelim: ctconfig.String("<{{"), RightDelim: ctconfig.String("}}>")}}
		ct.Finalize()
		return ct
	}
	log := slog.New(slog.DiscardHandler)

	ct := build(false)
	in, err := r.inline(ct, log)
	if err != nil || in == nil {
		t.Fatalf("inline = %v, %v", in, err)
	}
	defer in.Close()
	tc := (*ct.Templates)[0]
	if got := ctconfig.StringVal(tc.Contents); !strings.HasSuffix(got, mirror.Trailer("<{{", "}}>")) || ctconfig.StringVal(tc.Source) != "" {
		t.Errorf("contents %q, source %q: want the file with the trailer in its delimiters, no source", got, ctconfig.StringVal(tc.Source))
	}
	if tc.ExtFuncMap["service"] == nil || tc.ExtFuncMap[mirror.InlineKeyFunc] == nil {
		t.Error("the inline functions were not added")
	}

	ct = build(true)
	if in, err := r.inline(ct, log); in != nil || err != nil {
		t.Fatalf("with deduplicate{}: inline = %v, %v; want none", in, err)
	}
	if ctconfig.StringVal((*ct.Templates)[0].Source) != src {
		t.Error("with deduplicate{}: the template was rewritten")
	}
}
