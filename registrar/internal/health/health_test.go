package health

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	def := Policy{TTL: 30 * time.Second}
	wait := Policy{WaitHealthy: true}
	warn := Policy{Starting: Warning}
	tests := []struct {
		name    string
		state   string
		p       Policy
		k       Keys
		want    Decision
		wantErr bool
	}{
		{"no healthcheck", "", def, Keys{}, Decision{Register: true}, false},
		{"docker says none", "none", def, Keys{}, Decision{Register: true}, false},
		{"no healthcheck ignores wait", "", wait, Keys{}, Decision{Register: true}, false},
		{"healthy", Healthy, def, Keys{}, Decision{true, Passing, true}, false},
		{"unhealthy", Unhealthy, def, Keys{}, Decision{true, Critical, true}, false},
		{"unknown state is critical", "sick", def, Keys{}, Decision{true, Critical, true}, false},
		{"starting default critical", Starting, def, Keys{}, Decision{true, Critical, true}, false},
		{"starting warning by flag", Starting, warn, Keys{}, Decision{true, Warning, true}, false},
		{"starting warning by label", Starting, def, Keys{Starting: "Warning"}, Decision{true, Warning, true}, false},
		{"label overrides flag", Starting, warn, Keys{Starting: "critical"}, Decision{true, Critical, true}, false},
		{"bad starting label keeps default", Starting, def, Keys{Starting: "passing"}, Decision{true, Critical, true}, true},
		{"wait healthy while starting", Starting, wait, Keys{}, Decision{true, Critical, false}, false},
		{"wait healthy by label", Starting, def, Keys{WaitHealthy: "true"}, Decision{true, Critical, false}, false},
		{"label turns wait off", Starting, wait, Keys{WaitHealthy: "no"}, Decision{true, Critical, true}, false},
		{"wait healthy once healthy", Healthy, wait, Keys{}, Decision{true, Passing, true}, false},
		{"wait healthy, unhealthy after start", Unhealthy, wait, Keys{}, Decision{true, Critical, true}, false},
		{"bad wait label keeps flag", Starting, wait, Keys{WaitHealthy: "maybe"}, Decision{true, Critical, false}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs := Decide(tc.state, tc.p, tc.k)
			if got != tc.want {
				t.Errorf("Decide(%q) = %+v, want %+v", tc.state, got, tc.want)
			}
			if (len(errs) > 0) != tc.wantErr {
				t.Errorf("errors %v, want some: %t", errs, tc.wantErr)
			}
		})
	}
}

func TestDrain(t *testing.T) {
	tests := []struct {
		global  bool
		label   string
		want    bool
		wantErr bool
	}{
		{true, "", true, false},
		{false, "", false, false},
		{true, "false", false, false},
		{false, "true", true, false},
		{false, "ON", true, false},
		{true, "later", true, true},
	}
	for _, tc := range tests {
		got, err := Drain(Policy{Drain: tc.global}, Keys{Drain: tc.label})
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("Drain(global %t, %q) = %t, %v; want %t, error %t", tc.global, tc.label, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestStopSignal(t *testing.T) {
	for sig, want := range map[string]bool{"15": true, "SIGTERM": true, "term": true, "9": false, "SIGKILL": false, "1": false, "HUP": false, "": false} {
		if got := StopSignal(sig); got != want {
			t.Errorf("StopSignal(%q) = %t, want %t", sig, got, want)
		}
	}
}
