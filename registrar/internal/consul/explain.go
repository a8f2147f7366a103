package consul

import (
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/consul/api"
)

// agentInfo is what explains a failed call: which agent, with which
// flags, and the token values that must never be shown.
type agentInfo struct {
	addr   string
	cfg    Config
	tokens *tokenSource
}

// AgentError is a failed call to the agent, made readable: it names the
// agent, says which flag to check, and never contains the ACL token. It
// unwraps to consul/api's error, so a status code is still found.
type AgentError struct {
	Addr string
	Hint string // what to check; may be empty
	msg  string // the cause, token redacted
	err  error
}

func (e *AgentError) Error() string {
	s := "consul agent " + e.Addr + ": " + e.msg
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *AgentError) Unwrap() error { return e.err }

// explain wraps an error of a call to the agent; nil stays nil. A
// Catalog made by New, without Open, returns errors as they are.
func (c *Catalog) explain(err error) error {
	if err == nil || c.agent == nil {
		return err
	}
	var ae *AgentError
	if errors.As(err, &ae) {
		return err
	}
	a := c.agent
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		// The URL repeats the address, with a long escaped filter.
		msg = ue.Err.Error()
	}
	for _, secret := range a.tokens.secrets() {
		msg = strings.ReplaceAll(msg, secret, "[redacted]")
	}
	return &AgentError{Addr: a.addr, Hint: a.hint(err, msg), msg: msg, err: err}
}

// hint says which flag to check for the usual failures.
func (a *agentInfo) hint(err error, msg string) string {
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	var se api.StatusError
	switch {
	case errors.As(err, &unknownCA):
		return "its certificate is not signed by a CA in --consul-cacert=" + a.cfg.CACert
	case errors.As(err, &badName):
		return "its certificate does not hold this name: set --consul-tls-server-name to one it holds"
	case strings.Contains(msg, "remote error: tls:"):
		return "the agent refused the TLS handshake: it may want a client certificate it trusts, --consul-client-cert and --consul-client-key"
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return "the agent speaks plain HTTP here: use consul://"
	case errors.As(err, &se) && se.Code == http.StatusBadRequest && strings.Contains(se.Body, "HTTPS"):
		return "the agent wants HTTPS here: use consul-tls://"
	case errors.As(err, &se) && se.Code == http.StatusForbidden && strings.Contains(se.Body, "ACL not found"):
		return "the ACL token is wrong or revoked: put a valid one in --consul-token-file, read again for every call, or in CONSUL_HTTP_TOKEN"
	case errors.As(err, &se) && se.Code == http.StatusForbidden:
		return "the ACL token lacks a permission: see examples/consul/registrar-policy.hcl"
	}
	return ""
}
