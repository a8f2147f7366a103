package service

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

// address decides where a service is reached. The rules, most specific
// first:
//
//  1. SERVICE_IP (or SERVICE_<port>_IP) names the address.
//  2. --useIpFromLabel names a label holding it ("/cidr" stripped).
//  3. Host networking: the host's address (--ip or the outbound address).
//  4. --internal, or a "container:<id>" network: the container's IP on one
//     network, chosen by SERVICE_NETWORK or a fixed rule, with the
//     container port.
//  5. Otherwise the published binding: its host IP, or for a wildcard
//     binding --ip or the host's outbound address, with the host port.
//
// An address and a port always come from the same side: a container IP is
// never paired with a host port (registrator does that on user networks).
func (b *builder) address(m map[string]entry, port container.Port) (string, int, bool) {
	inside := b.p.Internal || b.sharedNS() || !port.Published()
	sidePort := func() int {
		if inside || b.c.HostNetwork {
			return port.Port
		}
		return pickBinding(port.Bindings).HostPort
	}

	if e, ok := m["ip"]; ok {
		ip, err := parseIP(e.Value)
		if err != nil {
			b.reject(e, err.Error())
			return "", 0, false
		}
		return ip, sidePort(), true
	}
	if b.p.IPFromLabel != "" {
		if v, ok := b.c.Labels[b.p.IPFromLabel]; ok {
			ip, err := parseIP(v)
			if err != nil {
				b.errs = append(b.errs, b.errf(b.p.IPFromLabel, v, "--useIpFromLabel: "+err.Error()))
				return "", 0, false
			}
			return ip, sidePort(), true
		}
		// registrator logs and falls back to the usual rules.
		b.errs = append(b.errs, b.errf(b.p.IPFromLabel, "", "--useIpFromLabel: label not set; using the usual address rules"))
	}
	if b.c.HostNetwork {
		ip, ok := b.hostAddress(port)
		return ip, port.Port, ok
	}
	if inside {
		n, ok := b.network(m)
		if !ok {
			return "", 0, false
		}
		ip := n.IP
		if ip == "" {
			ip = n.IPv6
		}
		if ip == "" {
			b.errs = append(b.errs, b.errf("network", n.Name, fmt.Sprintf("port %d/%s: container has no IP on this network", port.Port, port.Proto)))
			return "", 0, false
		}
		return ip, port.Port, true
	}
	bind := pickBinding(port.Bindings)
	if !isWildcard(bind.HostIP) {
		return bind.HostIP, bind.HostPort, true
	}
	ip, ok := b.hostAddress(port)
	return ip, bind.HostPort, ok
}

// hostAddress is --ip, else the host's outbound address.
func (b *builder) hostAddress(port container.Port) (string, bool) {
	if b.p.HostIP != "" {
		return b.p.HostIP, true
	}
	if b.p.DefaultIP != "" {
		return b.p.DefaultIP, true
	}
	b.errs = append(b.errs, b.errf("--ip", "", fmt.Sprintf("port %d/%s is published on every address and the host's address is unknown; set --ip", port.Port, port.Proto)))
	return "", false
}

// network picks the network whose IP a service uses: SERVICE_NETWORK if
// set, else the network named by the network mode, else "bridge", else the
// first by name. Never Go's map order.
func (b *builder) network(m map[string]entry) (container.Network, bool) {
	nets := b.c.Networks
	find := func(name string) (container.Network, bool) {
		i := slices.IndexFunc(nets, func(n container.Network) bool { return n.Name == name })
		if i < 0 {
			return container.Network{}, false
		}
		return nets[i], true
	}
	if e, ok := m["network"]; ok {
		if n, ok := find(e.Value); ok {
			return n, true
		}
		names := make([]string, len(nets))
		for i, n := range nets {
			names[i] = n.Name
		}
		b.reject(e, fmt.Sprintf("container is not on this network (it is on %s)", strings.Join(names, ", ")))
		return container.Network{}, false
	}
	if n, ok := find(b.c.NetworkMode); ok {
		return n, true
	}
	if n, ok := find("bridge"); ok {
		return n, true
	}
	if len(nets) > 0 {
		sorted := slices.SortedFunc(slices.Values(nets), func(a, b container.Network) int { return cmp.Compare(a.Name, b.Name) })
		return sorted[0], true
	}
	b.errs = append(b.errs, b.errf("network", b.c.NetworkMode, "container is on no network with an IP"))
	return container.Network{}, false
}

// pickBinding chooses one binding deterministically: IPv4 before IPv6, then
// by address and port. Docker lists 0.0.0.0 and :: for a plain "-p 8080".
func pickBinding(bs []container.Binding) container.Binding {
	if len(bs) == 0 {
		return container.Binding{}
	}
	return slices.MinFunc(bs, func(a, b container.Binding) int {
		return cmp.Or(
			cmp.Compare(b2i(isV6(a.HostIP)), b2i(isV6(b.HostIP))),
			cmp.Compare(a.HostIP, b.HostIP),
			cmp.Compare(a.HostPort, b.HostPort),
		)
	})
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

func isV6(ip string) bool { return strings.Contains(ip, ":") }

func isWildcard(ip string) bool { return ip == "" || ip == "0.0.0.0" || ip == "::" }

// parseIP accepts an IPv4 or IPv6 address with an optional "/cidr" suffix.
func parseIP(s string) (string, error) {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return "", fmt.Errorf("not an IP address")
	}
	if ip.IsUnspecified() {
		return "", fmt.Errorf("unspecified address is not reachable")
	}
	return ip.String(), nil
}
