package testenv

import (
	"net"
	"strconv"
	"testing"
)

// PickPorts hands out distinct ports below the kernel's ephemeral range,
// each free to bind.
func TestPickPortsBelowTheEphemeralRange(t *testing.T) {
	ports, err := PickPorts(50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < portsFrom || p >= portsTo || seen[p] {
			t.Fatalf("port %d: out of %d-%d or handed out twice (%v)", p, portsFrom, portsTo, ports)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
