package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
)

// oneShotServer answers each connection's first request with status and
// then closes it, without saying so unless the client asked for it: what
// an old proxy worker does to an idle keep-alive connection.
func oneShotServer(t *testing.T, status string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				hdr := "Content-Length: 2\r\n"
				if req.Close {
					hdr += "Connection: close\r\n" // as a proxy answers it
				}
				_, _ = c.Write([]byte("HTTP/1.1 " + status + "\r\n" + hdr + "\r\nok"))
			}()
		}
	}()
	return l.Addr().String()
}

func TestClientCountsAClosedKeepAliveConnection(t *testing.T) {
	c := newClient(oneShotServer(t, "200 OK"), "work.localhost", "", true)
	defer c.close()
	if why := c.do(); why != "" {
		t.Fatalf("first request failed: %s", why)
	}
	// The server closed the connection: a client that resends would hide
	// this failure.
	if why := c.do(); !strings.HasPrefix(why, "read: ") && !strings.HasPrefix(why, "write: ") {
		t.Fatalf("second request on the closed connection: %q, want a read or write failure", why)
	}
	if why := c.do(); why != "" {
		t.Fatalf("the request after a failure dials again and must succeed: %s", why)
	}
}

func TestClientNewConnectionPerRequest(t *testing.T) {
	c := newClient(oneShotServer(t, "200 OK"), "work.localhost", "", false)
	defer c.close()
	for i := range 3 {
		// The answer says "Connection: close", so the client dials anew
		// each time and no request fails.
		if why := c.do(); why != "" {
			t.Fatalf("request %d: %s", i, why)
		}
	}
}

func TestClientCountsNon2xx(t *testing.T) {
	c := newClient(oneShotServer(t, "502 Bad Gateway"), "work.localhost", "", false)
	defer c.close()
	if why := c.do(); why != "status 502 Bad Gateway" {
		t.Fatalf("got %q, want the 502 counted", why)
	}
}
