package e2e

// Issue 10's routing contract end to end: services registered with
// route_* meta in a real Consul, the shipped templates rendered by
// consul-template (the library the renderer embeds; the plain binary must
// render the same bytes), the real nginx, HAProxy and Caddy started on the
// result, and requests through each reaching the right backend by Host,
// by path (prefix stripped), on a TCP port, in a 3:1 weighted split,
// through a WebSocket upgrade, with a sticky cookie and an https
// redirect, next to a hostile registration. What a proxy lacks (Caddy:
// TCP, weights; nginx OSS: sticky cookies) is not asked of it.

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ctconfig "github.com/hashicorp/consul-template/config"
	"github.com/hashicorp/consul-template/manager"
	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

func TestRoutingContract(t *testing.T) {
	_, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so")
	testenv.Need(t, err == nil, "nginx stream module (Debian: libnginx-mod-stream)")
	consul := testenv.StartConsul(t)
	ports, err := testenv.PickPorts(5)
	if err != nil {
		t.Fatal(err)
	}
	listen, tcpPort := fmt.Sprintf("127.0.0.1:%d", ports[0]), ports[1]
	registerRoutes(t, consul.Client, tcpPort)
	t.Setenv("SWITCHYARD_LISTEN", listen)
	t.Setenv("SWITCHYARD_NGINX_API_PORT", "")
	grpcListen := fmt.Sprintf("127.0.0.1:%d", ports[4]) // nginx only: h2c on a port of its own
	t.Setenv("SWITCHYARD_NGINX_GRPC_LISTEN", grpcListen)
	t.Setenv("SWITCHYARD_CADDY_ADMIN", fmt.Sprintf("127.0.0.1:%d", ports[2]))
	// No renderer answers the pools: Caddy uses the upstreams written.
	t.Setenv("SWITCHYARD_CADDY_RESOLVER", fmt.Sprintf("127.0.0.1:%d", ports[3]))
	for _, proxy := range []string{"nginx", "haproxy", "caddy"} {
		t.Run(proxy, func(t *testing.T) {
			dir := t.TempDir()
			conf := filepath.Join(dir, proxy+".conf")
			src, _ := filepath.Abs(map[string]string{"nginx": "../../templates/nginx.conf.tmpl",
				"haproxy": "../../templates/haproxy.cfg.tmpl", "caddy": "../../templates/Caddyfile.tmpl"}[proxy])
			db := map[string]string{"nginx": "svc_db", "haproxy": "svc_db", "caddy": `for "db"`}[proxy]
			out := renderOnce(t, consul.Addr, src, conf, `"zz-evil"`, db, "shop")
			if !strings.Contains(out, "route values ignored") || strings.Contains(out, "\ninclude") {
				t.Fatalf("render:\n%s", out)
			}
			plainBinarySame(t, consul.Addr, src, out)
			startProxy(t, proxy, dir, conf, listen)
			// Caddy's core has no TCP and no weights; nginx OSS no sticky cookie.
			routesWork(t, listen, tcpPort, proxy != "caddy")
			upgradeWorks(t, listen, "chat.example.test")
			redirectWorks(t, listen, "secure.example.test")
			if proxy == "nginx" {
				grpcWorks(t, grpcListen, "rpc.example.test")
			} else {
				grpcWorks(t, listen, "rpc.example.test")
			}
			if proxy != "nginx" {
				stickyWorks(t, listen, "cart.example.test")
			}
		})
	}
}

// registerRoutes registers the services, each with a backend of its own
// that answers its name: hosts, a path gateway, weights, TCP, sticky, and
// a hostile registration.
func registerRoutes(t *testing.T, c *api.Client, tcpPort int) {
	reg := func(name, id, body string, meta ...string) {
		t.Helper()
		r := &api.AgentServiceRegistration{Name: name, ID: id, Address: "127.0.0.1", Port: httpBackend(t, body), Meta: map[string]string{}}
		switch name {
		case "db":
			r.Port = tcpBackend(t, body)
		case "chat":
			r.Port = upgradeBackend(t)
		case "rpc":
			r.Port = h2cBackend(t, body)
		}
		for i := 0; i+1 < len(meta); i += 2 {
			r.Meta[meta[i]] = meta[i+1]
		}
		if err := c.Agent().ServiceRegister(r); err != nil {
			t.Fatal(err)
		}
	}
	reg("web", "web-1", "web", "route_host", "www.example.test")
	reg("users", "users-1", "users", "route_host", "api.example.test", "route_path", "/users", "route_strip", "true")
	reg("orders", "orders-1", "orders", "route_host", "api.example.test", "route_path", "/orders")
	reg("site", "site-1", "site", "route_host", "api.example.test")
	reg("shop", "shop-blue", "blue", "route_host", "shop.example.test", "route_weight", "3")
	reg("shop", "shop-green", "green", "route_weight", "1")
	reg("db", "db-1", "db", "route_proto", "tcp", "route_port", fmt.Sprint(tcpPort))
	reg("secure", "secure-1", "secure", "route_host", "secure.example.test", "route_https", "redirect")
	reg("rpc", "rpc-1", "rpc", "route_host", "rpc.example.test", "route_proto", "grpc")
	reg("chat", "chat-1", "chat", "route_host", "chat.example.test", "route_proto", "ws")
	reg("cart", "cart-a", "cart-a", "route_host", "cart.example.test", "route_sticky", "true")
	reg("cart", "cart-b", "cart-b", "route_host", "cart.example.test", "route_sticky", "true")
	// Hostile: bad values everywhere, and a claim on users' host and path.
	reg("zz-evil", "evil-1", "evil", "route_host", "api.example.test,x;include /etc/passwd", "route_path", "/users",
		"route_proto", "tcp;", "route_port", "0", "route_https", "}\nserver {", "route_weight", "-1")
}

// startProxy runs the proxy on conf until the end of the test.
func startProxy(t *testing.T, proxy, dir, conf, listen string) {
	switch proxy {
	case "nginx":
		testenv.StartNginx(t, dir, conf, listen)
	case "haproxy":
		testenv.StartProcess(t, "haproxy", testenv.HAProxyBinary(t), []string{"-db", "-f", conf})
	default:
		testenv.StartProcess(t, "caddy", testenv.CaddyBinary(t), []string{"run", "--config", conf, "--adapter", "caddyfile"},
			"HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	}
}

// routesWork sends the requests every proxy must route alike.
func routesWork(t *testing.T, listen string, tcpPort int, tcpAndWeights bool) {
	t.Helper()
	for _, c := range []struct{ host, path, want string }{
		{"www.example.test", "/", "web /"},
		{"api.example.test", "/users/42", "users /42"},
		{"api.example.test", "/users", "users /"},
		{"api.example.test", "/orders/7", "orders /orders/7"},
		{"api.example.test", "/usersx", "site /usersx"},
		{"api.example.test:8080", "/", "site /"},
	} {
		testenv.Eventually(t, 10*time.Second, func() error {
			got, err := routeGet(listen, c.host, c.path)
			if err == nil && got != c.want {
				err = fmt.Errorf("got %q", got)
			}
			if err != nil {
				return fmt.Errorf("GET http://%s%s: %v, want %q", c.host, c.path, err, c.want)
			}
			return nil
		})
	}
	if !tcpAndWeights {
		return
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if line != "db\n" {
			return fmt.Errorf("TCP port %d: %q %v, want db", tcpPort, line, err)
		}
		return nil
	})
	n := map[string]int{}
	for range 400 {
		got, err := routeGet(listen, "shop.example.test", "/")
		if err != nil {
			t.Fatal(err)
		}
		n[got]++
	}
	if blue := float64(n["blue /"]) / 400; blue < 0.65 || blue > 0.85 || n["blue /"]+n["green /"] != 400 {
		t.Errorf("weights 3:1 gave %v", n)
	}
}

func routeGet(listen, host, path string) (string, error) {
	req, _ := http.NewRequest("GET", "http://"+listen+path, nil)
	req.Host = host
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), err
}

// httpBackend answers "<body> <path>" on a port of its own.
func httpBackend(t *testing.T, body string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", body, r.URL.Path)
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// tcpBackend writes "<body>\n" to every connection.
func tcpBackend(t *testing.T, body string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(body + "\n"))
			_ = c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// renderOnce renders src to dest from Consul with consul-template's
// Runner in once mode, the library the renderer embeds, once dest holds
// every string of want, and returns it.
func renderOnce(t *testing.T, consulAddr, src, dest string, want ...string) string {
	t.Helper()
	// The Runner logs every watch to the standard logger; the render is
	// what tells.
	log.SetOutput(io.Discard)
	defer log.SetOutput(os.Stderr)
	var out string
	testenv.Eventually(t, 20*time.Second, func() error {
		cfg := ctconfig.DefaultConfig()
		cfg.Consul.Address = ctconfig.String(consulAddr)
		cfg.Once = true
		cfg.Templates = &ctconfig.TemplateConfigs{{Source: ctconfig.String(src), Destination: ctconfig.String(dest)}}
		cfg.Finalize()
		r, err := manager.NewRunner(cfg, false)
		if err != nil {
			return err
		}
		go r.Start()
		defer r.Stop()
		select {
		case <-r.DoneCh:
		case err := <-r.ErrCh:
			return err
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no render in 10s")
		}
		b, err := os.ReadFile(dest)
		out = string(b)
		for _, w := range want {
			if !strings.Contains(out, w) {
				return fmt.Errorf("render lacks %s (Consul not caught up)", w)
			}
		}
		return err
	})
	return out
}

// plainBinarySame: the plain consul-template binary renders src to the
// same bytes (the templates use only its own functions).
func plainBinarySame(t *testing.T, consulAddr, src, want string) {
	t.Helper()
	bin := os.Getenv("SWITCHYARD_CONSUL_TEMPLATE")
	testenv.Need(t, bin != "", "the consul-template binary (SWITCHYARD_CONSUL_TEMPLATE, scripts/setup.sh builds it)")
	dest := filepath.Join(t.TempDir(), "out")
	b, err := exec.Command(bin, "-once", "-consul-addr", consulAddr, "-template", src+":"+dest).CombinedOutput()
	if err != nil {
		t.Fatalf("consul-template: %v\n%s", err, b)
	}
	if got, _ := os.ReadFile(dest); string(got) != want {
		t.Errorf("consul-template renders %s otherwise:\n%s", filepath.Base(src), got)
	}
}

// stickyWorks: a client that sends back the cookie it got stays on one
// instance; one that does not sees both.
func stickyWorks(t *testing.T, listen, host string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+listen+"/", nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if len(cookies) == 0 {
		t.Fatalf("no cookie from %s: %v", host, resp.Header)
	}
	seen := map[string]int{}
	for range 20 {
		req, _ := http.NewRequest("GET", "http://"+listen+"/", nil)
		req.Host = host
		req.AddCookie(cookies[0])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[string(b)]++
	}
	if len(seen) != 1 {
		t.Errorf("with cookie %s: %v, want one instance", cookies[0], seen)
	}
}

// upgradeBackend accepts a WebSocket handshake (HAProxy checks the key
// and the answer) and then echoes lines, unframed, on the connection.
func upgradeBackend(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "no upgrade", http.StatusBadRequest)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		rw.Flush()
		line, _ := rw.ReadString('\n')
		rw.WriteString("echo " + line)
		rw.Flush()
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// upgradeWorks: an Upgrade request for host gets its 101, and the
// connection then carries bytes both ways.
func upgradeWorks(t *testing.T, listen, host string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", listen, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /socket HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade through the proxy: %v %v", resp, err)
	}
	fmt.Fprint(c, "ping\n")
	if line, err := br.ReadString('\n'); line != "echo ping\n" {
		t.Errorf("after the upgrade: %q %v", line, err)
	}
}

// redirectWorks: route_https sends a plain request to https, and serves
// one whose TLS ended in front (X-Forwarded-Proto: https).
func redirectWorks(t *testing.T, listen, host string) {
	t.Helper()
	noFollow := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, proto := range []string{"", "https"} {
		req, _ := http.NewRequest("GET", "http://"+listen+"/x?y=1", nil)
		req.Host = host
		if proto != "" {
			req.Header.Set("X-Forwarded-Proto", proto)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if proto == "" && (resp.StatusCode != http.StatusPermanentRedirect || loc != "https://"+host+"/x?y=1") {
			t.Errorf("plain request: %d, Location %q", resp.StatusCode, loc)
		}
		if proto != "" && string(b) != "secure /x" {
			t.Errorf("behind TLS: %d %q", resp.StatusCode, b)
		}
	}
}

// h2cBackend answers gRPC-like requests (HTTP/2 without TLS, content-type
// application/grpc) with "<body> <path>" and a grpc-status trailer, and
// anything else with 400. Like a real gRPC server it reads the whole
// request before it answers: a server that answers first ends the stream
// with RST_STREAM while nginx 1.22 is still sending the request, and
// nginx then fails about 3 in 100 requests ("upstream rejected request
// with error 5"), which is the backend's doing, not the proxy's.
func h2cBackend(t *testing.T, body string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Header.Get("Content-Type") != "application/grpc" {
			http.Error(w, "not gRPC", http.StatusBadRequest)
			return
		}
		if msg, err := io.ReadAll(r.Body); err != nil || string(msg) != "x" {
			http.Error(w, fmt.Sprintf("request body %q, %v", msg, err), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		fmt.Fprintf(w, "%s %s", body, r.URL.Path)
		w.Header().Set("Grpc-Status", "0")
	})}
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

// grpcWorks sends gRPC-like requests (prior-knowledge h2c) to host
// through addr, on one connection as a gRPC client does, and wants every
// one answered with its body and its grpc-status trailer. A hundred, not
// one: a race between proxy and backend shows in a few of a hundred.
func grpcWorks(t *testing.T, addr, host string) {
	t.Helper()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	failed := 0
	for i := range 100 {
		req, _ := http.NewRequest("POST", "http://"+addr+"/pkg.Svc/Get", strings.NewReader("x"))
		req.Host = host
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("gRPC call %d through %s: %v", i, addr, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "rpc /pkg.Svc/Get" || err != nil || resp.Trailer.Get("Grpc-Status") != "0" {
			if failed++; failed <= 3 {
				t.Errorf("gRPC call %d through %s: %d %q (read: %v), grpc-status %q",
					i, addr, resp.StatusCode, b, err, resp.Trailer.Get("Grpc-Status"))
			}
		}
	}
	if failed > 0 {
		t.Errorf("gRPC through %s: %d of 100 calls failed", addr, failed)
	}
}
