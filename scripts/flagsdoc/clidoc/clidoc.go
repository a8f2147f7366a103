// Package clidoc reads the flags of the registrar and renderer cli apps
// and writes them as the README's markdown flag reference, between
// <!-- flags:NAME:begin --> and <!-- flags:NAME:end --> markers.
//
// Both apps are built by newApp in their package main, which nothing can
// import. Load therefore compiles the binary with one extra file, given to
// `go build -overlay` (nothing on disk changes): an init that builds the
// app, writes its flags and commands as JSON and exits before main. The
// reference is made from the real flag definitions (names, aliases, env
// vars, defaults, usage), never from parsing --help.
package clidoc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Flag is one cli flag as the app defines it.
type Flag struct {
	Names      []string // the name first, then the aliases
	Env        []string
	Default    string // the default as --help shows it ("" when none)
	Usage      string
	Type       string // string, bool, int, duration, float, list
	TakesValue bool
	Hidden     bool
}

// Command is a subcommand; Flags are those it has beyond the app's own.
type Command struct {
	Name, Usage, ArgsUsage string
	Flags                  []Flag
	// Missing names app flags the command does not take.
	Missing []string
}

// App is a cli app's documented surface.
type App struct {
	Name, Usage, ArgsUsage string
	Flags                  []Flag
	Commands               []Command
}

// Spec says where an app's package main is and how it builds the app.
type Spec struct {
	Name   string // registrar, renderer
	Dir    string // the package main, relative to the module root
	NewApp string // a Go expression of type *cli.App inside that package
}

// Apps are the binaries documented in the README, in its order.
var Apps = []Spec{
	{Name: "registrar", Dir: "registrar", NewApp: "newApp(io.Discard, nil)"},
	{Name: "renderer", Dir: "renderer", NewApp: "newApp(io.Discard, io.Discard)"},
}

// SpecOf returns the Spec of a documented app.
func SpecOf(name string) (Spec, error) {
	for _, s := range Apps {
		if s.Name == name {
			return s, nil
		}
	}
	return Spec{}, fmt.Errorf("no app %q (have registrar, renderer)", name)
}

// dumpEnv makes the overlaid init dump the app instead of running it.
const dumpEnv = "SWITCHYARD_FLAGSDOC_DUMP"

// dumpSource is the file overlaid into the app's package main. Its names
// start with flagsdoc so they cannot clash with the package's own.
const dumpSource = `package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
)

type flagsdocFlag struct {
	Names      []string
	Env        []string
	Default    string
	Usage      string
	Type       string
	TakesValue bool
	Hidden     bool
}

type flagsdocCommand struct {
	Name, Usage, ArgsUsage string
	Flags                  []flagsdocFlag
}

func flagsdocFlags(fs []cli.Flag) []flagsdocFlag {
	out := []flagsdocFlag{}
	for _, f := range fs {
		j := flagsdocFlag{Names: f.Names(), Type: fmt.Sprintf("%%T", f)}
		if d, ok := f.(cli.DocGenerationFlag); ok {
			j.Env, j.Default, j.Usage, j.TakesValue = d.GetEnvVars(), d.GetDefaultText(), d.GetUsage(), d.TakesValue()
		}
		if v, ok := f.(cli.VisibleFlag); ok {
			j.Hidden = !v.IsVisible()
		}
		out = append(out, j)
	}
	return out
}

func init() {
	if os.Getenv(%q) != "1" {
		return
	}
	var _ io.Writer
	app := %s
	cmds := []flagsdocCommand{}
	for _, c := range app.Commands {
		if !c.Hidden {
			cmds = append(cmds, flagsdocCommand{Name: c.Name, Usage: c.Usage, ArgsUsage: c.ArgsUsage, Flags: flagsdocFlags(c.Flags)})
		}
	}
	err := json.NewEncoder(os.Stdout).Encode(map[string]any{
		"Name": app.Name, "Usage": app.Usage, "ArgsUsage": app.ArgsUsage,
		"Flags": flagsdocFlags(app.Flags), "Commands": cmds,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}
`

// Load builds the app with the dump overlaid and returns what it dumps.
// root is the module root.
func Load(ctx context.Context, root string, spec Spec) (*App, error) {
	dir, err := os.MkdirTemp("", "flagsdoc-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "dump.go")
	if err := os.WriteFile(src, fmt.Appendf(nil, dumpSource, dumpEnv, spec.NewApp), 0o644); err != nil {
		return nil, err
	}
	overlay, err := json.Marshal(map[string]any{"Replace": map[string]string{
		filepath.Join(root, spec.Dir, "zz_flagsdoc_dump.go"): src,
	}})
	if err != nil {
		return nil, err
	}
	ovPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovPath, overlay, 0o644); err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, spec.Name)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-overlay", ovPath, "-o", bin, "./"+spec.Dir)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build -overlay ./%s (did newApp's signature change? update clidoc.Apps): %w\n%s", spec.Dir, err, out)
	}
	run := exec.CommandContext(ctx, bin)
	// Only the switch: defaults must not depend on the caller's environment.
	run.Env = []string{dumpEnv + "=1"}
	var stderr bytes.Buffer
	run.Stderr = &stderr
	out, err := run.Output()
	if err != nil {
		return nil, fmt.Errorf("dump %s's flags: %w\n%s", spec.Name, err, stderr.Bytes())
	}
	return decode(out)
}

func decode(b []byte) (*App, error) {
	var app App
	if err := json.Unmarshal(b, &app); err != nil {
		return nil, fmt.Errorf("decode the flag dump: %w", err)
	}
	for i := range app.Flags {
		normalise(&app.Flags[i])
	}
	own := map[string]bool{}
	for _, f := range app.Flags {
		own[f.Names[0]] = true
	}
	for i := range app.Commands {
		c := &app.Commands[i]
		var extra []Flag
		has := map[string]bool{}
		for _, f := range c.Flags {
			normalise(&f)
			has[f.Names[0]] = true
			if !own[f.Names[0]] {
				extra = append(extra, f)
			}
		}
		c.Flags = extra
		for _, f := range app.Flags {
			if !has[f.Names[0]] {
				c.Missing = append(c.Missing, f.Names[0])
			}
		}
	}
	return &app, nil
}

// normalise turns the dump's Go type and --help default into plain words.
func normalise(f *Flag) {
	t := strings.TrimSuffix(strings.TrimPrefix(f.Type, "*cli."), "Flag")
	switch t {
	case "String", "Bool", "Int", "Duration":
		f.Type = strings.ToLower(t)
	case "Float64":
		f.Type = "number"
	case "StringSlice":
		f.Type = "list"
	default:
		f.Type = strings.ToLower(t)
	}
	if s, err := strconv.Unquote(f.Default); err == nil {
		f.Default = s
	}
	if f.Type == "list" && f.Default == "[]" {
		f.Default = ""
	}
}
