// Command scale measures issue 11: S services x 3 instances on a private
// Consul agent at its DEFAULT limits (http_max_conns_per_client 200), on
// its own loopback ports, and a template over all of them (range services,
// then service .Name). For our renderer and the consul-template binary,
// one after the other on the same agent: time to the first complete render
// (or "never" within -timeout), connections held to the agent, RSS, CPU
// seconds, and WARN lines logged. Run it with scripts/bench.sh scale.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"
)

const tmpl = `{{ range services }}{{ $n := .Name }}{{ range service .Name }}{{ $n }} {{ .Address }}:{{ .Port }}
{{ end }}{{ end }}`

// toolEnv is added to each tool's environment (-tool-env).
var toolEnv []string

func main() {
	sizes := flag.String("sizes", "100,300,1000", "service counts, comma-separated (3 instances each)")
	huge := flag.Bool("10000", false, "also run 10000 services")
	timeout := flag.Duration("timeout", 45*time.Second, "give up on a first complete render after this long")
	keep := flag.Bool("keep", false, "keep the work directory (logs, outputs) and print its path")
	tools := flag.String("tools", "switchyard,consul-template", "tools to run, comma-separated")
	flag.DurationVar(&loadWindow, "load", loadWindow, "the agent's CPU is also measured over a quiet window and a window of churn (a registration every 200ms) of this length each, with each tool running; 0 skips them")
	env := flag.String("tool-env", "", "KEY=VALUE pairs, comma-separated, set for each tool's process only (not the agent's), e.g. GOMEMLIMIT=130MiB")
	flag.Parse()
	if *env != "" {
		toolEnv = strings.Split(*env, ",")
	}
	var ss []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > 20000 {
			log.Fatalf("-sizes: %q", f)
		}
		ss = append(ss, n)
	}
	if *huge {
		ss = append(ss, 10000)
	}
	if err := run(ss, *timeout, *keep, strings.Split(*tools, ",")); err != nil {
		log.Fatal(err)
	}
}

func run(sizes []int, timeout time.Duration, keep bool, only []string) error {
	dir, err := os.MkdirTemp("", "switchyard-bench-scale-")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("work directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	built, err := testenv.Build("github.com/switchyard/switchyard/renderer")
	if err != nil {
		return err
	}
	// testenv builds into one folder per user, which other checkouts'
	// tests rebuild into: run a private copy of this checkout's binary.
	ours := filepath.Join(dir, "renderer")
	if err := copyFile(built, ours); err != nil {
		return err
	}
	ct := os.Getenv("SWITCHYARD_CONSUL_TEMPLATE")
	if ct == "" {
		return fmt.Errorf("SWITCHYARD_CONSUL_TEMPLATE is not set: run scripts/bench.sh scale")
	}
	src := filepath.Join(dir, "scale.tmpl")
	if err := os.WriteFile(src, []byte(tmpl), 0o644); err != nil {
		return err
	}
	raiseFileLimit(65536)
	var rows []row
	var ds []design
	for _, s := range sizes {
		r, d, err := measureSize(dir, src, ours, ct, s, timeout, only)
		if err != nil {
			return fmt.Errorf("S=%d: %w", s, err)
		}
		rows = append(rows, r...)
		ds = append(ds, d)
		printTable(r, timeout) // as each size ends: a long run shows progress
	}
	fmt.Println("\nall sizes:")
	printTable(rows, timeout)
	printDesigns(ds)
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
