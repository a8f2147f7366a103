package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// requestTimeout bounds one request, dial to last byte of the body.
const requestTimeout = 5 * time.Second

// client sends HTTP/1.1 requests on one connection of its own, and never
// retries: Go's http.Transport (and browsers) silently resend an
// idempotent request whose reused connection the server closed, which
// hides exactly the failures this benchmark counts. Like wrk, a request
// fails when any step fails (dial, write, read) or its status is not 2xx.
type client struct {
	addr string
	req  []byte
	conn net.Conn
	br   *bufio.Reader
}

// newClient prepares requests for host through addr; pipe, if set, goes
// in an X-Bench-Pipe header so a backend can tell the pipelines apart.
// keepAlive false asks for a new connection per request.
func newClient(addr, host, pipe string, keepAlive bool) *client {
	req := fmt.Sprintf("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: switchyard-bench\r\n", host)
	if pipe != "" {
		req += "X-Bench-Pipe: " + pipe + "\r\n"
	}
	if !keepAlive {
		req += "Connection: close\r\n"
	}
	return &client{addr: addr, req: []byte(req + "\r\n")}
}

// do sends one request and reads the whole answer. It returns "" when the
// request succeeded, else a short reason (stage and error class).
func (c *client) do() string {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, requestTimeout)
		if err != nil {
			return "dial: " + errClass(err)
		}
		c.conn, c.br = conn, bufio.NewReader(conn)
	}
	_ = c.conn.SetDeadline(time.Now().Add(requestTimeout))
	if _, err := c.conn.Write(c.req); err != nil {
		c.close()
		return "write: " + errClass(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return "read: " + errClass(err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		c.close() // the server said this connection ends here: not a failure
	}
	switch {
	case err != nil:
		return "body: " + errClass(err)
	case resp.StatusCode/100 != 2:
		return "status " + resp.Status
	}
	return ""
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.br = nil, nil
	}
}

// errClass names an error by what happened, not by its addresses, so
// reasons can be counted.
func errClass(err error) string {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return err.Error()
}
