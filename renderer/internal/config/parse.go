package config

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	texttemplate "text/template"

	cttemplate "github.com/hashicorp/consul-template/template"
)

// CheckTemplates parses every template the way consul-template will (its
// functions, ours in funcs, the operator's delimiters) and returns, by
// destination, the templates that do not parse, with file and line.
// consul-template itself only parses at the first execution, so without
// this a typo would start a daemon that never renders. It runs each
// template once against an empty data set, with the functions that write
// or run anything denied whatever --allow-unsafe-functions says: only a
// parse error counts, an execution error on missing data is expected.
func (c *Config) CheckTemplates(funcs texttemplate.FuncMap) map[string]error {
	out := map[string]error{}
	for _, t := range c.Templates {
		if err := checkTemplate(t, funcs); err != nil {
			out[t.Dest] = err
		}
	}
	return out
}

// Dests lists every template's destination.
func (c *Config) Dests() []string {
	out := make([]string, 0, len(c.Templates))
	for _, t := range c.Templates {
		out = append(out, t.Dest)
	}
	return out
}

// parseErr matches text/template's "template: NAME:LINE[:COL]: message"
// after consul-template's "parse: " prefix.
var parseErr = regexp.MustCompile(`^parse: template: [^:]*:(\d+)(?::\d+)?: (.*)$`)

func checkTemplate(t Template, funcs texttemplate.FuncMap) error {
	tmpl, err := cttemplate.NewTemplate(&cttemplate.NewTemplateInput{
		Source: t.Source, LeftDelim: t.LeftDelim, RightDelim: t.RightDelim,
		ExtFuncMap: funcs, FunctionDenylist: DeniedFunctions,
		SandboxPath: filepath.Dir(t.Source), Destination: t.Dest, ReaderFunc: os.ReadFile,
	})
	if err != nil {
		return fmt.Errorf("template %s: %w", t.Source, err)
	}
	_, err = tmpl.Execute(&cttemplate.ExecuteInput{Brain: cttemplate.NewBrain()})
	if err == nil || !strings.HasPrefix(err.Error(), "parse") {
		return nil
	}
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if m := parseErr.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("template %s: line %s: %s", t.Source, m[1], m[2])
	}
	return fmt.Errorf("template %s: %s", t.Source, msg)
}
