package proxy

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// caddyResolver is the loopback DNS server that Caddy's "dynamic srv"
// upstream sources ask for the members of a pool (see caddy_runtime.go):
// an SRV record per member, whose target is a name that encodes the
// member's IP, and the A or AAAA record of such a name, which Caddy's
// transport resolves when it dials. Caddy dials a resolver over the
// network its address names, TCP unless it says "udp/", whatever Go's
// resolver asks for; so a UDP answer can never be retried over TCP, and
// a pool whose answer does not fit in one datagram is not served over
// UDP (caddyFits).
type caddyResolver struct {
	log *slog.Logger

	mu    sync.RWMutex
	pools map[string][]netip.AddrPort // queried name (lower case, FQDN) -> members
	socks map[string]io.Closer        // "tcp/127.0.0.1:8053" -> listener or socket
	conns map[net.Conn]bool           // open TCP connections, closed by close
	done  bool

	wg sync.WaitGroup // serve goroutines
}

// caddyTargetZone is the zone of the SRV targets: "0a000001.addr.switchyard."
// is 10.0.0.1. Go's resolver rejects an IP literal as an SRV target.
const caddyTargetZone = "addr.switchyard."

// caddyMaxAnswer is the largest answer Go's resolver reads from one
// datagram (its EDNS0 buffer size); over TCP, the message size limit.
const (
	caddyMaxAnswer    = 1232
	caddyMaxTCPAnswer = 65535
)

func newCaddyResolver(log *slog.Logger) *caddyResolver {
	return &caddyResolver{log: log, pools: map[string][]netip.AddrPort{},
		socks: map[string]io.Closer{}, conns: map[net.Conn]bool{}}
}

// resolverAddr normalizes a resolver address as Caddy reads one
// ("127.0.0.1:8053" is TCP, "udp/127.0.0.1" is UDP port 53) to
// "network/ip:port", and reports whether the renderer may serve it: a
// loopback IP, the only place it listens.
func resolverAddr(a string) (string, bool) {
	network := "tcp"
	if n, rest, ok := strings.Cut(a, "/"); ok {
		network, a = n, rest
	}
	if network != "tcp" && network != "udp" {
		return "", false
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		a = net.JoinHostPort(strings.Trim(a, "[]"), "53")
	}
	ap, err := netip.ParseAddrPort(a)
	if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
		return "", false
	}
	return network + "/" + ap.String(), true
}

// answerLimit is the largest answer a client reads at a resolver address.
func answerLimit(addr string) int {
	if strings.HasPrefix(addr, "udp/") {
		return caddyMaxAnswer
	}
	return caddyMaxTCPAnswer
}

// listen serves at addr (normalized) from now on; a second call for it
// does nothing.
func (r *caddyResolver) listen(addr string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return errors.New("caddy resolver: closed")
	}
	if r.socks[addr] != nil {
		return nil
	}
	network, hostport, _ := strings.Cut(addr, "/")
	if network == "udp" {
		pc, err := net.ListenPacket("udp", hostport)
		if err != nil {
			return fmt.Errorf("caddy resolver: listen on %s (the address a dynamic srv source names): %w", addr, err)
		}
		r.socks[addr] = pc
		r.wg.Go(func() { r.serveUDP(pc) })
		return nil
	}
	ln, err := net.Listen("tcp", hostport)
	if err != nil {
		return fmt.Errorf("caddy resolver: listen on %s (the address a dynamic srv source names): %w", addr, err)
	}
	r.socks[addr] = ln
	r.wg.Go(func() { r.serveTCP(ln) })
	return nil
}

// serves reports whether the resolver listens at addr (normalized).
func (r *caddyResolver) serves(addr string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.socks[addr] != nil
}

// replace makes pools the whole table: a name it lacks gets NXDOMAIN,
// and Caddy falls back to that handler's static upstreams.
func (r *caddyResolver) replace(pools map[string][]netip.AddrPort) {
	r.mu.Lock()
	r.pools = pools
	r.mu.Unlock()
}

// set gives one pool its members.
func (r *caddyResolver) set(name string, members []netip.AddrPort) {
	r.mu.Lock()
	r.pools[name] = members
	r.mu.Unlock()
}

// close stops serving and waits for the serve goroutines.
func (r *caddyResolver) close() {
	r.mu.Lock()
	r.done = true
	for _, s := range r.socks {
		s.Close()
	}
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *caddyResolver) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 4096)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			r.stopped(pc.LocalAddr(), err)
			return
		}
		if out := r.answer(buf[:n], caddyMaxAnswer); out != nil {
			_, _ = pc.WriteTo(out, from) // a lost answer is asked again by Caddy's resolver
		}
	}
}

func (r *caddyResolver) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			r.stopped(ln.Addr(), err)
			return
		}
		r.mu.Lock()
		if r.done {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.conns[c] = true
		r.mu.Unlock()
		r.wg.Go(func() { r.serveConn(c) })
	}
}

// serveConn answers the length-prefixed queries of one TCP connection;
// Go's resolver sends one and closes it.
func (r *caddyResolver) serveConn(c net.Conn) {
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
		c.Close()
	}()
	for {
		if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return
		}
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		out := r.answer(q, caddyMaxTCPAnswer)
		if out == nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...)); err != nil {
			return
		}
	}
}

func (r *caddyResolver) stopped(at net.Addr, err error) {
	if !errors.Is(err, net.ErrClosed) {
		r.log.Warn("caddy resolver stopped", "proxy", "caddy", "addr", at.String(), "err", err)
	}
}

// answer builds the reply to one query, nil for a message that is no
// query of one question.
func (r *caddyResolver) answer(query []byte, limit int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
		return nil
	}
	name := strings.ToLower(q.Name.String())
	r.mu.RLock()
	members, pool := r.pools[name]
	r.mu.RUnlock()
	ip, target := caddyTargetIP(name)
	out, err := caddyAnswer(h.ID, q, members, pool, ip, target)
	if err != nil || len(out) > limit {
		return nil // caddyFits keeps such pools out; the lookup times out and Caddy falls back
	}
	return out
}

// caddyAnswer encodes the answer to q: the SRV records of a pool, the
// address of a target, no record for another type of a known name, or
// NXDOMAIN.
func caddyAnswer(id uint16, q dnsmessage.Question, members []netip.AddrPort, pool bool, ip netip.Addr, target bool) ([]byte, error) {
	// Authoritative: Go's resolver takes an empty, non-authoritative
	// answer for a lame referral.
	hdr := dnsmessage.Header{ID: id, Response: true, Authoritative: true}
	if !pool && !target {
		hdr.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), hdr)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	rh := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET} // TTL 0: Caddy's refresh is the cache
	var err error
	switch {
	case pool && q.Type == dnsmessage.TypeSRV:
		for _, m := range members {
			t, terr := dnsmessage.NewName(caddyTargetName(m.Addr()))
			if terr != nil {
				return nil, terr
			}
			if err = b.SRVResource(rh, dnsmessage.SRVResource{Weight: 1, Port: m.Port(), Target: t}); err != nil {
				return nil, err
			}
		}
	case target && q.Type == dnsmessage.TypeA && ip.Is4():
		err = b.AResource(rh, dnsmessage.AResource{A: ip.As4()})
	case target && q.Type == dnsmessage.TypeAAAA && ip.Is6():
		err = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: ip.As16()})
	}
	if err != nil {
		return nil, err
	}
	return b.Finish()
}

// caddyFits reports whether the SRV answer for a pool fits in limit
// bytes (answerLimit).
func caddyFits(name string, members []netip.AddrPort, limit int) bool {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return false
	}
	out, err := caddyAnswer(0, dnsmessage.Question{Name: n, Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET}, members, true, netip.Addr{}, false)
	return err == nil && len(out) <= limit
}

// caddyTargetName is the SRV target that stands for ip.
func caddyTargetName(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return hex.EncodeToString(b[:]) + "." + caddyTargetZone
	}
	b := ip.As16()
	return hex.EncodeToString(b[:]) + "." + caddyTargetZone
}

// caddyTargetIP decodes a target name (lower case, FQDN).
func caddyTargetIP(name string) (netip.Addr, bool) {
	label, ok := strings.CutSuffix(name, "."+caddyTargetZone)
	if !ok || (len(label) != 8 && len(label) != 32) {
		return netip.Addr{}, false
	}
	b, err := hex.DecodeString(label)
	if err != nil {
		return netip.Addr{}, false
	}
	return netip.AddrFromSlice(b)
}

// caddyLookup asks the resolver at addr (normalized) for a pool the way
// Caddy does (Go's resolver over the address's network) and returns the members it answers with, each target
// resolved as Caddy's transport resolves it when it dials.
func caddyLookup(ctx context.Context, addr, name string) ([]netip.AddrPort, error) {
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		network, hostport, _ := strings.Cut(addr, "/")
		return d.DialContext(ctx, network, hostport)
	}}
	_, srvs, err := res.LookupSRV(ctx, "", "", name)
	if err != nil {
		return nil, fmt.Errorf("caddy resolver %s: SRV %s: %w", addr, name, err)
	}
	out := make([]netip.AddrPort, 0, len(srvs))
	for _, s := range srvs {
		ips, err := res.LookupNetIP(ctx, "ip", s.Target)
		if err != nil || len(ips) != 1 {
			return nil, fmt.Errorf("caddy resolver %s: target %s of %s: %v (%d addresses)", addr, s.Target, name, err, len(ips))
		}
		out = append(out, netip.AddrPortFrom(ips[0].Unmap(), s.Port))
	}
	return out, nil
}
