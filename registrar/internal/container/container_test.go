package container

import "testing"

func TestBaseImageName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"app", "app"},
		{"app:1.2", "app"},
		{"team/app:1.2", "app"},
		{"reg:5000/team/app:1.2", "app"},
		{"reg:5000/team/app", "app"},
		{"app@sha256:0123abcd", "app"},
		{"reg:5000/team/app:1.2@sha256:0123abcd", "app"},
		{"reg.example.com/app@sha256:0123abcd", "app"},
		{"sha256:0123abcd", "sha256"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := BaseImageName(tt.in); got != tt.want {
			t.Errorf("BaseImageName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestShortID(t *testing.T) {
	if got := ShortID("0123456789abcdef"); got != "0123456789ab" {
		t.Errorf("ShortID = %q", got)
	}
	if got := ShortID("abc"); got != "abc" {
		t.Errorf("ShortID = %q", got)
	}
}
