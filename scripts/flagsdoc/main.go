// Command flagsdoc prints the README's flag reference of the registrar and
// the renderer, generated from their cli apps (see package clidoc).
//
//	go run ./scripts/flagsdoc                  both blocks, markers included (to paste)
//	go run ./scripts/flagsdoc -app renderer    one of them
//	go run ./scripts/flagsdoc -check README.md exit 1 if a block differs
//	go run ./scripts/flagsdoc -write README.md rewrite the blocks in place
//
// The README holds each between <!-- flags:NAME:begin --> and
// <!-- flags:NAME:end -->; scripts/flagsdoc/clidoc's test fails when one
// drifts from the flag definitions.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/switchyard/switchyard/scripts/flagsdoc/clidoc"
	"github.com/switchyard/switchyard/scripts/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "flagsdoc:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("flagsdoc", flag.ContinueOnError)
	app := fs.String("app", "", "only this app (registrar or renderer)")
	check := fs.String("check", "", "compare the blocks in this file with the generated ones")
	write := fs.String("write", "", "replace the blocks in this file with the generated ones")
	if err := fs.Parse(args); err != nil {
		return err
	}
	specs := clidoc.Apps
	if *app != "" {
		s, err := clidoc.SpecOf(*app)
		if err != nil {
			return err
		}
		specs = []clidoc.Spec{s}
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	gen := map[string]string{}
	for _, s := range specs {
		a, err := clidoc.Load(ctx, root, s)
		if err != nil {
			return err
		}
		gen[s.Name] = clidoc.Markdown(a)
	}
	switch {
	case *check != "":
		return checkFile(*check, specs, gen)
	case *write != "":
		return writeFile(*write, specs, gen)
	}
	var blocks []string
	for _, s := range specs {
		blocks = append(blocks, clidoc.Block(s.Name, gen[s.Name]))
	}
	fmt.Println(strings.Join(blocks, "\n\n"))
	return nil
}

func checkFile(path string, specs []clidoc.Spec, gen map[string]string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range specs {
		have, err := clidoc.Extract(doc, s.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		} else if have != gen[s.Name] {
			errs = append(errs, fmt.Errorf("%s: the %s flag reference differs from the cli app (go run ./scripts/flagsdoc -write %s)", path, s.Name, path))
		}
	}
	return errors.Join(errs...)
}

func writeFile(path string, specs []clidoc.Spec, gen map[string]string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, s := range specs {
		if doc, err = clidoc.Replace(doc, s.Name, gen[s.Name]); err != nil {
			return fmt.Errorf("%s: %w (add the markers where the reference goes)", path, err)
		}
	}
	return os.WriteFile(path, doc, 0o644)
}
