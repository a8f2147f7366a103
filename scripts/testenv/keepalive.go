package testenv

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// KeepAliveLoad is clients sending GET requests through a proxy, each on
// one HTTP/1.1 keep-alive connection, until Stop: the load of issue 9's
// tests and benchmarks. A request is never retried (Go's http.Transport
// silently resends an idempotent request whose reused connection the
// server closed, which hides exactly the failures counted here); one
// fails when a step fails or its status is not 200, and a "Connection:
// close" answer is no failure (the next request dials).
type KeepAliveLoad struct {
	once    sync.Once
	done    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	result  KeepAliveResult
	stopped KeepAliveResult
}

// KeepAliveResult counts a load's requests; Reasons counts the failures
// by the step that failed ("dial", "write", "read", "body", "status N").
type KeepAliveResult struct {
	Requests, Failed int
	Reasons          map[string]int
}

// StartKeepAliveLoad starts n clients sending requests for host to addr.
func StartKeepAliveLoad(addr, host string, n int) *KeepAliveLoad {
	l := &KeepAliveLoad{done: make(chan struct{}), result: KeepAliveResult{Reasons: map[string]int{}}}
	for range n {
		l.wg.Go(func() {
			c := &keepAliveClient{addr: addr, req: "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n"}
			defer c.close()
			for {
				select {
				case <-l.done:
					return
				default:
				}
				l.count(c.do())
			}
		})
	}
	return l
}

func (l *KeepAliveLoad) count(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.result.Requests++
	if why != "" {
		l.result.Failed++
		l.result.Reasons[why]++
	}
}

// Stop stops the clients, waits for them and returns the counts; it may
// be called again (a test's cleanup), with the same answer.
func (l *KeepAliveLoad) Stop() KeepAliveResult {
	l.once.Do(func() {
		close(l.done)
		l.wg.Wait()
		l.mu.Lock()
		l.stopped = l.result
		l.mu.Unlock()
	})
	return l.stopped
}

type keepAliveClient struct {
	addr, req string
	conn      net.Conn
	br        *bufio.Reader
}

// do sends one request and returns why it failed, "" when it did not.
func (c *keepAliveClient) do() string {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return "dial"
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, c.req); err != nil {
		c.close()
		return "write"
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return "read"
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close() // the server said this connection ends here: not a failure
	}
	switch {
	case err != nil:
		return "body"
	case resp.StatusCode != http.StatusOK:
		return "status " + strconv.Itoa(resp.StatusCode)
	}
	return ""
}

func (c *keepAliveClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}
