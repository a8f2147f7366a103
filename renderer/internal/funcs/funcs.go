// Package funcs adds template functions that make untrusted Consul data
// (service names, tags, meta, addresses) safe to put into proxy configs.
// They are handed to consul-template through TemplateConfig.ExtFuncMap,
// the library's hook for embedders, so every template gets them next to
// consul-template's own functions.
package funcs

import (
	"regexp"
	"strings"
	"text/template"
)

// Map returns the extra functions:
//
//	nginxQuote s     "s" with \ and " escaped, safe as one nginx argument
//	haproxyQuote s   's' with ' escaped, safe as one HAProxy argument
//	isToken s        s is a plain identifier: [A-Za-z0-9][A-Za-z0-9_-]{0,62}
//	isHost s         s is an IP address or host name token
//	safeComment s    s with control chars removed, safe after a '#'
func Map() template.FuncMap {
	return template.FuncMap{
		"nginxQuote":   NginxQuote,
		"haproxyQuote": HAProxyQuote,
		"isToken":      IsToken,
		"isHost":       IsHost,
		"safeComment":  SafeComment,
	}
}

var (
	tokenRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)
	hostRe  = regexp.MustCompile(`^[A-Za-z0-9.:-]{1,253}$`)
)

// IsToken reports whether s can be used bare as a name in nginx and
// HAProxy configs and in a consul-template service query.
func IsToken(s string) bool { return tokenRe.MatchString(s) }

// IsHost reports whether s is made only of the characters of an IPv4 or
// IPv6 address or a DNS name.
func IsHost(s string) bool { return hostRe.MatchString(s) }

// NginxQuote returns s as one double-quoted nginx argument. Inside double
// quotes nginx treats \ and " specially, and many directives expand
// $variables in them; nginx has no escape for $, so it is dropped, as are
// control characters, so a value can neither read a variable nor span
// lines.
func NginxQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range dropControl(s) {
		switch r {
		case '$':
			continue
		case '\\', '"':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// HAProxyQuote returns s as one single-quoted HAProxy argument: inside
// single quotes HAProxy treats nothing specially but the quote itself,
// which is closed, escaped and reopened.
func HAProxyQuote(s string) string {
	return "'" + strings.ReplaceAll(dropControl(s), "'", `'\''`) + "'"
}

// SafeComment removes control characters (newlines above all), so s can
// follow a '#' without ending the comment.
func SafeComment(s string) string { return dropControl(s) }

func dropControl(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
