package consul

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"
)

// Config says how to reach the agent. Every field is optional: unset ones
// keep consul/api's defaults, which read the CONSUL_* environment.
type Config struct {
	Address string // "host:port", "http(s)://host:port" or "unix:///path"
	Token   string
	// TokenFile holds the ACL token. It is read again for every request,
	// so a rotated or repaired token takes effect without a restart, and
	// wins over Token when it is not empty (Consul's CLI precedence).
	TokenFile  string
	CACert     string
	ClientCert string // client certificate, for an agent with verify_incoming
	ClientKey  string
	ServerName string // name the agent's certificate must hold
}

// tokenHeader is where the agent reads the ACL token.
const tokenHeader = "X-Consul-Token"

// Open builds a client for the agent and returns the catalog of services
// owned by node. Its errors name the agent and say which flag to check.
func Open(cfg Config, node string) (*Catalog, error) {
	client, agent, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	c := New(client, node)
	c.agent = agent
	return c, nil
}

func newClient(cfg Config) (*api.Client, *agentInfo, error) {
	c := api.DefaultConfig()
	if cfg.Address != "" {
		c.Address = cfg.Address
	}
	tokens, err := newTokenSource(cfg, c.Token)
	if err != nil {
		return nil, nil, err
	}
	// consul/api reads a token file once, when the client is built; the
	// transport sets the token of each request from the file instead.
	c.Token, c.TokenFile = "", ""
	tr, err := transport(cfg, c)
	if err != nil {
		return nil, nil, err
	}
	c.HttpClient = &http.Client{Transport: &tokenTransport{base: tr, tokens: tokens}}
	client, err := api.NewClient(c)
	if err != nil {
		return nil, nil, fmt.Errorf("consul client for %q: %w", cfg.Address, err)
	}
	return client, &agentInfo{addr: agentAddr(cfg.Address, c), cfg: cfg, tokens: tokens}, nil
}

// transport is the HTTP transport to the agent: TLS as the flags say, and
// for a unix socket a dialer to it. consul/api would build its own client
// for a unix:// address, without our token transport, so the address is
// rewritten to a plain host that the dialer ignores.
func transport(cfg Config, c *api.Config) (*http.Transport, error) {
	if cfg.CACert != "" {
		c.TLSConfig.CAFile = cfg.CACert
	}
	if cfg.ClientCert != "" || cfg.ClientKey != "" {
		c.TLSConfig.CertFile, c.TLSConfig.KeyFile = cfg.ClientCert, cfg.ClientKey
		if _, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey); err != nil {
			return nil, fmt.Errorf("--consul-client-cert=%s --consul-client-key=%s: %w", cfg.ClientCert, cfg.ClientKey, err)
		}
	}
	if cfg.ServerName != "" {
		c.TLSConfig.Address = cfg.ServerName
	}
	tlsConf, err := api.SetupTLSConfig(&c.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("TLS to the consul agent (--consul-cacert=%s): %w", c.TLSConfig.CAFile, err)
	}
	tr := c.Transport
	tr.TLSClientConfig = tlsConf
	// HTTP/1.1: over HTTP/2 a TLS alert (a client certificate refused
	// after the handshake) surfaces as "client conn could not be
	// established", which names neither the cause nor the flag to fix.
	tr.ForceAttemptHTTP2 = false
	if path, ok := strings.CutPrefix(c.Address, "unix://"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		c.Address, c.Scheme = "localhost", "http"
	}
	return tr, nil
}

// agentAddr is the agent as errors name it: the socket, or scheme and
// address as api.NewClient left them in c.
func agentAddr(configured string, c *api.Config) string {
	if strings.HasPrefix(configured, "unix://") {
		return configured
	}
	return c.Scheme + "://" + c.Address
}

// tokenSource gives the ACL token of each request.
type tokenSource struct {
	static string // --consul-token or CONSUL_HTTP_TOKEN
	file   string // --consul-token-file or CONSUL_HTTP_TOKEN_FILE

	mu   sync.Mutex
	last string // last token read from file, for redaction
}

// newTokenSource reads the token file once, so that a wrong path fails at
// start-up naming the flag; later reads that fail fail their request.
func newTokenSource(cfg Config, envToken string) (*tokenSource, error) {
	s := &tokenSource{static: cfg.Token, file: cfg.TokenFile}
	if s.static == "" {
		s.static = envToken
	}
	if s.file == "" {
		s.file = os.Getenv(api.HTTPTokenFileEnvName)
	}
	if _, err := s.token(); err != nil {
		return nil, err
	}
	return s, nil
}

// token reads the file if there is one; an empty file falls back to the
// static token, as consul/api does.
func (s *tokenSource) token() (string, error) {
	if s.file == "" {
		return s.static, nil
	}
	b, err := os.ReadFile(s.file)
	if err != nil {
		// The *PathError names the file, never its content.
		return "", fmt.Errorf("--consul-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return s.static, nil
	}
	s.mu.Lock()
	s.last = tok
	s.mu.Unlock()
	return tok, nil
}

// secrets are the token values this source has handed out.
func (s *tokenSource) secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, v := range []string{s.static, s.last} {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

// tokenTransport sets the ACL token of every request from its source.
type tokenTransport struct {
	base   http.RoundTripper
	tokens *tokenSource
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.tokens.token()
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	req = req.Clone(req.Context()) // a RoundTripper must not change its request
	if tok == "" {
		req.Header.Del(tokenHeader)
	} else {
		req.Header.Set(tokenHeader, tok)
	}
	return t.base.RoundTrip(req)
}
