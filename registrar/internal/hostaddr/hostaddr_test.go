package hostaddr

import (
	"net/netip"
	"testing"
)

func TestChoose(t *testing.T) {
	c := func(name string, idx int, addr string) Candidate {
		return Candidate{Interface: name, Index: idx, Addr: netip.MustParseAddr(addr)}
	}
	tests := []struct {
		name  string
		cands []Candidate
		want  string
	}{
		{"never 127.0.1.1 or loopback", []Candidate{c("lo", 1, "127.0.1.1"), c("lo", 1, "127.0.0.1"), c("eth0", 2, "10.0.0.5")}, "10.0.0.5"},
		{"host interface before docker0", []Candidate{c("docker0", 2, "172.17.0.1"), c("eth0", 3, "10.0.0.5")}, "10.0.0.5"},
		{"IPv4 before IPv6", []Candidate{c("eth0", 2, "2001:db8::5"), c("eth0", 2, "10.0.0.5")}, "10.0.0.5"},
		{"no link-local", []Candidate{c("eth0", 2, "fe80::1"), c("eth0", 2, "169.254.1.1"), c("eth1", 3, "2001:db8::5")}, "2001:db8::5"},
		{"lowest index", []Candidate{c("eth1", 3, "10.0.1.5"), c("eth0", 2, "10.0.0.5")}, "10.0.0.5"},
		{"only docker", []Candidate{c("docker0", 2, "172.17.0.1")}, "172.17.0.1"},
		{"nothing usable", []Candidate{c("lo", 1, "127.0.1.1")}, ""},
	}
	for _, tt := range tests {
		got, err := Choose(tt.cands)
		if got != tt.want || (tt.want == "") != (err != nil) {
			t.Errorf("%s: Choose = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestOutboundIsNeverLoopback(t *testing.T) {
	got, err := Outbound()
	if err != nil {
		t.Skipf("no outbound address on this host: %v", err)
	}
	if ip := netip.MustParseAddr(got); ip.IsLoopback() {
		t.Fatalf("Outbound() = %s", got)
	}
}
