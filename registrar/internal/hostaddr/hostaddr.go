// Package hostaddr finds the host's outbound address: the address other
// hosts reach it on, used for ports published on every address when --ip
// is not set. It never resolves the hostname (Debian maps it to 127.0.1.1,
// which registrator then registered) and never returns a loopback address.
package hostaddr

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Outbound returns the source address of the default route, or else the
// first global address of a non-container interface.
func Outbound() (string, error) {
	// A UDP "connect" only asks the kernel for a route: no packet is sent.
	// 192.0.2.1 is TEST-NET-1, never a real peer.
	if conn, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		addr := conn.LocalAddr().(*net.UDPAddr)
		conn.Close()
		if ip, ok := netip.AddrFromSlice(addr.IP); ok && usable(ip.Unmap()) {
			return ip.Unmap().String(), nil
		}
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	var cands []Candidate
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				cands = append(cands, Candidate{Interface: ifc.Name, Index: ifc.Index, Addr: p.Addr()})
			}
		}
	}
	return Choose(cands)
}

// Candidate is one interface address.
type Candidate struct {
	Interface string
	Index     int
	Addr      netip.Addr
}

// Choose picks an address: IPv4 before IPv6, host interfaces before
// Docker's bridges and veths, then by interface index.
func Choose(cands []Candidate) (string, error) {
	cands = slices.DeleteFunc(slices.Clone(cands), func(c Candidate) bool { return !usable(c.Addr) })
	if len(cands) == 0 {
		return "", errors.New("no usable non-loopback address; set --ip")
	}
	rank := func(c Candidate) int {
		r := 0
		if !c.Addr.Is4() {
			r += 2
		}
		if isContainerIface(c.Interface) {
			r++
		}
		return r
	}
	best := slices.MinFunc(cands, func(a, b Candidate) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return a.Index - b.Index
	})
	return best.Addr.String(), nil
}

func usable(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsLoopback() && !ip.IsUnspecified() && !ip.IsLinkLocalUnicast() && !ip.IsMulticast()
}

func isContainerIface(name string) bool {
	for _, p := range []string{"docker", "br-", "veth", "cni", "flannel", "cali", "virbr"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
