package logbridge

import (
	"bytes"
	"encoding/json"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Redacted replaces every secret the bridge removes.
const Redacted = "[redacted]"

// Redactor removes secrets from a piece of text: the values it was built
// with, and token-shaped values it was not told about.
type Redactor func(string) string

// patterns find secrets by their context, for tokens we were not told
// about: an HCL file's consul or vault token, VAULT_TOKEN, a token inside
// a URL. Values already equal to Redacted are replaced by themselves.
var patterns = []struct {
	re   *regexp.Regexp
	repl string
}{
	// JSON, as in consul-template's "final config": "Token":"...",
	// "VaultToken", "Password", "SecretID". Empty values stay, they say
	// no token was set; "TokenFile" is a path and stays.
	{regexp.MustCompile(`("(?i:[a-z_]*token|password|secret_?id)"\s*:\s*")(?:[^"\\]|\\.)+(")`), "${1}" + Redacted + "${2}"},
	// Headers, printed plain or as a Go or JSON map:
	// X-Consul-Token: v, X-Consul-Token:[v], "X-Vault-Token":["v"].
	{regexp.MustCompile(`(?i)(x-(?:consul|vault|nomad)-token"?\s*[:=]\s*\[?"?)[^\s"\],;&]+`), "${1}" + Redacted},
	{regexp.MustCompile(`(?i)(authorization"?\s*[:=]\s*\[?"?bearer\s+)[^\s"\],;&]+`), "${1}" + Redacted},
	// Query strings and key=value text: ?token=v, access_token=v.
	{regexp.MustCompile(`(?i)([a-z_-]*token=)[^\s"'&#,;)\]]+`), "${1}" + Redacted},
	// Vault service, batch and recovery tokens carry a recognisable prefix.
	{regexp.MustCompile(`\bhv[sbr]\.[A-Za-z0-9_-]{20,}`), Redacted},
}

// jsonForms returns s as it appears inside a JSON string: json.Marshal
// (consul-template's final config) escapes <, > and & too, slog does not.
func jsonForms(s string) []string {
	var forms []string
	for _, html := range []bool{true, false} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		enc.Encode(s)
		forms = append(forms, strings.Trim(strings.TrimSpace(b.String()), `"`))
	}
	return forms
}

// NewRedactor returns a Redactor for secrets. Each secret is removed in
// the forms a log line may carry it: as is, URL-escaped and JSON-escaped.
// Even a short secret is removed everywhere: a garbled line is better than
// a leaked token.
func NewRedactor(secrets ...string) Redactor {
	var forms []string
	for _, s := range secrets {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		forms = append(forms, s, url.QueryEscape(s), url.PathEscape(s))
		forms = append(forms, jsonForms(s)...)
	}
	// Longest first: where one secret contains another, the whole goes.
	slices.SortFunc(forms, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	forms = slices.Compact(forms)
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, Redacted)
	}
	known := strings.NewReplacer(pairs...)
	return func(s string) string {
		s = known.Replace(s)
		for _, p := range patterns {
			s = p.re.ReplaceAllString(s, p.repl)
		}
		return s
	}
}
