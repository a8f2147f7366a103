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

func main() {
	sizes := flag.String("sizes", "100,300,1000", "service counts, comma-separated (3 instances each)")
	huge := flag.Bool("10000", false, "also run 10000 services")
	timeout := flag.Duration("timeout", 45*time.Second, "give up on a first complete render after this long")
	flag.Parse()
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
	if err := run(ss, *timeout); err != nil {
		log.Fatal(err)
	}
}

func run(sizes []int, timeout time.Duration) error {
	dir, err := os.MkdirTemp("", "switchyard-bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ours, err := testenv.Build("github.com/switchyard/switchyard/renderer")
	if err != nil {
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
	var rows []row
	for _, s := range sizes {
		r, err := measureSize(dir, src, ours, ct, s, timeout)
		if err != nil {
			return fmt.Errorf("S=%d: %w", s, err)
		}
		rows = append(rows, r...)
	}
	printTable(rows, timeout)
	return nil
}
