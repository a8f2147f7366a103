package clidoc

import (
	"bytes"
	"fmt"
	"strings"
)

// Markdown is the flag reference of one app: its command line, a table of
// its flags (definition order: the app groups them), and its subcommands
// with the flags they add. No trailing newline.
func Markdown(a *App) string {
	var b strings.Builder
	fmt.Fprintf(&b, "<!-- generated from %s's cli app by `go run ./scripts/flagsdoc`; edit the flag definitions, not this table -->\n", a.Name)
	line := a.Name + " [flags]"
	if a.ArgsUsage != "" {
		line += " " + a.ArgsUsage
	}
	fmt.Fprintf(&b, "`%s`\n\n", line)
	b.WriteString(table(a.Flags))
	if len(a.Commands) > 0 {
		b.WriteString("\n| command | what | flags |\n|---|---|---|\n")
		for _, c := range a.Commands {
			fmt.Fprintf(&b, "| `%s %s` | %s | %s |\n", a.Name, strings.TrimSpace(c.Name+" [flags] "+c.ArgsUsage), cell(c.Usage), commandFlags(c))
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func table(flags []Flag) string {
	var b strings.Builder
	b.WriteString("| flag | env | default | meaning |\n|---|---|---|---|\n")
	for _, f := range flags {
		if f.Hidden {
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", flagCell(f), codeList(f.Env), code(f.Default), cell(f.Usage))
	}
	return b.String()
}

// commandFlags says which flags a subcommand takes, relative to the app's.
func commandFlags(c Command) string {
	var parts []string
	if len(c.Missing) == 0 {
		parts = append(parts, "all of the above")
	} else {
		parts = append(parts, "the above but "+codeList(dashed(c.Missing)))
	}
	for _, f := range c.Flags {
		s := flagCell(f)
		if len(f.Env) > 0 {
			s += " (" + codeList(f.Env) + ")"
		}
		if f.Default != "" {
			s += " default " + code(f.Default)
		}
		parts = append(parts, s+": "+cell(f.Usage))
	}
	return strings.Join(parts, "; ")
}

func flagCell(f Flag) string {
	names := dashed(f.Names)
	s := "`" + names[0] + "`"
	if f.TakesValue && f.Type != "" && f.Type != "bool" {
		s += " " + f.Type
	}
	if len(names) > 1 {
		s += " (" + codeList(names[1:]) + ")"
	}
	return s
}

func dashed(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		if len(n) == 1 {
			out[i] = "-" + n
		} else {
			out[i] = "--" + n
		}
	}
	return out
}

func codeList(s []string) string {
	var out []string
	for _, v := range s {
		out = append(out, code(v))
	}
	return strings.Join(out, ", ")
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

// cellEscaper keeps a table cell one cell, and <port> visible (markdown
// renderers drop what looks like an HTML tag).
var cellEscaper = strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")

// cell makes text safe inside a table cell.
func cell(s string) string {
	return cellEscaper.Replace(strings.Join(strings.Fields(s), " "))
}

// Block is body between the app's markers, as the README holds it.
func Block(name, body string) string {
	begin, end := markers(name)
	return begin + "\n" + body + "\n" + end
}

func markers(name string) (begin, end string) {
	return "<!-- flags:" + name + ":begin -->", "<!-- flags:" + name + ":end -->"
}

// Extract returns what doc holds between the app's markers (without the
// newlines next to them).
func Extract(doc []byte, name string) (string, error) {
	i, j, err := span(doc, name)
	if err != nil {
		return "", err
	}
	return strings.Trim(string(doc[i:j]), "\n"), nil
}

// Replace puts body between the app's markers.
func Replace(doc []byte, name, body string) ([]byte, error) {
	i, j, err := span(doc, name)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	out.Write(doc[:i])
	out.WriteString("\n" + body + "\n")
	out.Write(doc[j:])
	return out.Bytes(), nil
}

// span is the byte range between the end of the begin marker and the
// start of the end marker.
func span(doc []byte, name string) (int, int, error) {
	begin, end := markers(name)
	if n := bytes.Count(doc, []byte(begin)); n != 1 {
		return 0, 0, fmt.Errorf("%d %q markers; want exactly one, followed by %q", n, begin, end)
	}
	i := bytes.Index(doc, []byte(begin)) + len(begin)
	j := bytes.Index(doc[i:], []byte(end))
	if j < 0 || bytes.Count(doc, []byte(end)) != 1 {
		return 0, 0, fmt.Errorf("no single %q after %q", end, begin)
	}
	return i, i + j, nil
}
