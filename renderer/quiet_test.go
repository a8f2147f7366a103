package main

import (
	"log"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// ctBelowWarn is a consul-template line below warn, raw or bridged.
var ctBelowWarn = regexp.MustCompile(`\[(TRACE|DEBUG|INFO)\]|level=(DEBUG|INFO)|"level":"(DEBUG|INFO)"`)

// TestOnceLogLevelHoldsAfterReturn: `renderer once --log-level warn`
// prints no consul-template line below warn, not even after it returned.
// consul-template's Runner.Stop only signals its view goroutines, which
// then log "[TRACE] (view) ... stopping poll"; if the bridge handed the
// global log back to stderr first, those lines went out raw.
func TestOnceLogLevelHoldsAfterReturn(t *testing.T) {
	consul, dir, _ := redactFixture(t)
	// Many dependencies, many views: each one logs when it stops.
	tmpl := filepath.Join(dir, "many.tmpl")
	body := `{{ range services }}{{ range service .Name }}{{ .Address }}{{ end }}{{ end }}
{{ range nodes }}{{ .Node }}{{ end }}{{ keyOrDefault "a" "" }}{{ keyOrDefault "b" "" }}
{{ range ls "c" }}{{ .Key }}{{ end }}{{ range service "web" }}{{ .Port }}{{ end }}`
	if err := os.WriteFile(tmpl, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// raw stands in for stderr: the global log's writer before the run.
	raw := &syncBuffer{}
	prevOut, prevFlags := log.Writer(), log.Flags()
	log.SetOutput(raw)
	t.Cleanup(func() { log.SetOutput(prevOut); log.SetFlags(prevFlags) })

	for i := range 5 {
		for _, format := range []string{"text", "json"} {
			_, errs, code := runCmd(t, "once", "--consul-addr", consul.Addr, "--proxy", "none",
				"--template", tmpl+":"+filepath.Join(dir, "many.out"), "--timeout", "30s",
				"--log-level", "warn", "--log-format", format)
			if code != 0 {
				t.Fatalf("run %d: exit %d\n%s", i, code, errs)
			}
			if m := ctBelowWarn.FindString(errs); m != "" {
				t.Errorf("run %d (%s): the renderer's log has %q:\n%s", i, format, m, errs)
			}
			// Let a stopped runner's goroutines have their say.
			time.Sleep(300 * time.Millisecond)
			if m := ctBelowWarn.FindString(raw.String()); m != "" {
				t.Fatalf("run %d (%s): %q reached stderr after the run returned:\n%s", i, format, m, raw.String())
			}
		}
	}
}
