package mirror

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// MaxUpstreamConns is the most connections the mirror ever holds to the
// agent: two long-held change watches (catalog dump, KV) and two for
// fetches. A default agent allows 200 per client address.
const MaxUpstreamConns = 4

// fetchSlots bounds concurrent fetches, so the two watches always find a
// connection free within MaxUpstreamConns.
const fetchSlots = MaxUpstreamConns - 2

// maxBody bounds one upstream answer read into memory.
const maxBody = 512 << 20

// Upstream is how the mirror reaches Consul: the base URL
// (http[s]://host:port), the token sent on every request, and the TLS
// settings of the transport it builds. NewUpstream fills the transport.
type Upstream struct {
	BaseURL string
	Token   string
	// TokenFile, when set, is read again for every request (a rotated
	// token takes effect without a restart); Token is the fallback while
	// it cannot be read.
	TokenFile string
	// Transport is a template (TLS settings); the mirror sets its own
	// connection limits and dialer on a clone.
	Transport *http.Transport
	// Network and Addr, when set, are dialed instead of BaseURL's host
	// (an agent on a unix socket).
	Network, Addr string
}

// response is one upstream answer, kept whole: the mirror serves Consul's
// own bytes, so what consul-template decodes is byte for byte what it
// would decode talking to the agent.
type response struct {
	status int
	header http.Header // the X-Consul-* and Content-Type headers worth passing on
	body   []byte
	index  uint64 // upstream X-Consul-Index
}

// passedHeaders are the response headers the Consul API client reads,
// besides X-Consul-Index, which the mirror sets itself.
var passedHeaders = []string{"Content-Type", "X-Consul-Knownleader", "X-Consul-Lastcontact",
	"X-Consul-Effective-Consistency", "X-Consul-Query-Backend", "X-Consul-Default-Acl-Policy",
	"X-Consul-Results-Filtered-By-Acls", "X-Cache", "Age"}

// upstream is the bounded client: one transport, at most MaxUpstreamConns
// connections, a semaphore for fetches, counters for /metrics.
type upstream struct {
	base      string
	token     string
	tokenFile string
	client    *http.Client
	slots     chan struct{}
	// open holds a token per socket until its close returned: the
	// transport frees its MaxConnsPerHost slot before it closes the old
	// socket, so its limit alone let a new dial overlap the closing one
	// (6 established connections measured against a limit of 4).
	open  chan struct{}
	conns atomic.Int64
	met   *metrics
}

func newUpstream(u Upstream, met *metrics) *upstream {
	var tr *http.Transport
	if u.Transport != nil {
		tr = u.Transport.Clone()
	} else {
		tr = &http.Transport{}
	}
	up := &upstream{base: u.BaseURL, token: u.Token, tokenFile: u.TokenFile, slots: make(chan struct{}, fetchSlots),
		open: make(chan struct{}, MaxUpstreamConns), met: met}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	tr.Proxy = nil // loopback or a known agent: never through HTTP_PROXY
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if u.Network != "" {
			network, addr = u.Network, u.Addr
		}
		select {
		case up.open <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			<-up.open
			return nil, err
		}
		met.upConns.Set(float64(up.conns.Add(1)))
		return &countedConn{Conn: c, up: up}, nil
	}
	tr.MaxConnsPerHost = MaxUpstreamConns
	tr.MaxIdleConnsPerHost = MaxUpstreamConns
	tr.MaxIdleConns = MaxUpstreamConns
	tr.IdleConnTimeout = 90 * time.Second
	tr.ForceAttemptHTTP2 = false
	up.client = &http.Client{Transport: tr}
	return up
}

// countedConn keeps the open-connection gauge honest.
type countedConn struct {
	net.Conn
	up     *upstream
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.Conn.Close()
	}
	err := c.Conn.Close() // returns once the descriptor is closed
	c.up.met.upConns.Set(float64(c.up.conns.Add(-1)))
	<-c.up.open
	return err
}

// Conns is the number of connections open to the agent now.
func (up *upstream) Conns() int { return int(up.conns.Load()) }

// errUpstream is an upstream answer the mirror cannot serve as data: a
// transport error or a 5xx. Its text goes to consul-template as a 500.
type errUpstream struct{ msg string }

func (e *errUpstream) Error() string { return e.msg }

// get asks the agent for pathQuery (path?query). Only transport errors and
// 5xx are errors: a 4xx is an answer the caller passes on as it is.
func (up *upstream) get(ctx context.Context, endpoint, pathQuery string) (*response, error) {
	return up.do(ctx, http.MethodGet, endpoint, pathQuery, nil, nil)
}

// fetch is get within a fetch slot.
func (up *upstream) fetch(ctx context.Context, endpoint, pathQuery string) (*response, error) {
	select {
	case up.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-up.slots }()
	return up.get(ctx, endpoint, pathQuery)
}

func (up *upstream) do(ctx context.Context, method, endpoint, pathQuery string, body io.Reader, hdr http.Header) (*response, error) {
	up.met.upRequests.WithLabelValues(endpoint).Inc()
	req, err := http.NewRequestWithContext(ctx, method, up.base+pathQuery, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if tok := up.currentToken(); tok != "" {
		req.Header.Set("X-Consul-Token", tok)
	}
	resp, err := up.client.Do(req)
	if err != nil {
		return nil, &errUpstream{msg: fmt.Sprintf("upstream consul: %v", err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, &errUpstream{msg: fmt.Sprintf("upstream consul: read %s: %v", endpoint, err)}
	}
	if resp.StatusCode >= 500 {
		return nil, &errUpstream{msg: fmt.Sprintf("upstream consul: %s: %d %s", endpoint, resp.StatusCode, firstLine(b))}
	}
	r := &response{status: resp.StatusCode, body: b, header: http.Header{}}
	for _, h := range passedHeaders {
		if v := resp.Header.Values(h); len(v) > 0 {
			r.header[h] = v
		}
	}
	r.index, _ = strconv.ParseUint(resp.Header.Get("X-Consul-Index"), 10, 64)
	return r, nil
}

func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' || i >= 200 {
			return string(b[:i])
		}
	}
	return string(b)
}

// currentToken is the token file's content now, or the token given.
func (up *upstream) currentToken() string {
	if up.tokenFile != "" {
		if b, err := os.ReadFile(up.tokenFile); err == nil {
			if tok := strings.TrimSpace(string(b)); tok != "" {
				return tok
			}
		}
	}
	return up.token
}
