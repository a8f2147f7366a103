package service

import (
	"reflect"
	"testing"
	"text/template"
)

type templateT = template.Template

func TestSplitTags(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"c,b,a", []string{"c", "b", "a"}},
		{` a , b `, []string{"a", "b"}},
		{`a\,b,c`, []string{"a,b", "c"}},
		{`a\b`, []string{`a\b`}},
		{`a\`, []string{`a\`}},
		{",,", nil},
		{`x=Host(\,y)`, []string{"x=Host(,y)"}},
	}
	for _, tt := range tests {
		if got := SplitTags(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitTags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"", nil, false},
		{"/bin/true", []string{"/bin/true"}, false},
		{"  a   b  ", []string{"a", "b"}, false},
		{`a "b c" 'd e'`, []string{"a", "b c", "d e"}, false},
		{`a "b \"c\"" 'it''s'`, []string{"a", `b "c"`, "its"}, false},
		{`a\ b`, []string{"a b"}, false},
		{`""`, []string{""}, false},
		{`echo $HOME; rm -rf /`, []string{"echo", "$HOME;", "rm", "-rf", "/"}, false},
		{`"x`, nil, true},
		{`'x`, nil, true},
		{`x\`, nil, true},
	}
	for _, tt := range tests {
		got, err := SplitArgs(tt.in)
		if (err != nil) != tt.wantErr || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("SplitArgs(%q) = %q, %v; want %q, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseBool(t *testing.T) {
	tests := []struct {
		in       string
		v, valid bool
	}{
		{"true", true, true}, {"TRUE", true, true}, {"1", true, true}, {"yes", true, true}, {"on", true, true},
		{"false", false, true}, {"0", false, true}, {"no", false, true}, {"off", false, true}, {"", false, true},
		{"maybe", false, false},
	}
	for _, tt := range tests {
		if v, ok := ParseBool(tt.in); v != tt.v || ok != tt.valid {
			t.Errorf("ParseBool(%q) = %v, %v", tt.in, v, ok)
		}
	}
}

func TestParseMetadataScopes(t *testing.T) {
	md, errs := ParseMetadata(
		[]string{"SERVICE_NAME=env", "PATH=/bin", "SERVICE_80_NAME=p80env", "NOEQUALS", "SERVICE_X=a=b"},
		map[string]string{"SERVICE_NAME": "label", "SERVICE_80_UDP_NAME": "p80udp", "other": "x"},
	)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	get := func(port int, proto, key string) string { return md.For(port, proto)[key].Value }
	if got := get(1, "tcp", "name"); got != "label" {
		t.Errorf("generic name = %q", got)
	}
	if got := get(80, "tcp", "name"); got != "p80env" {
		t.Errorf("80/tcp name = %q", got)
	}
	if got := get(80, "udp", "name"); got != "p80udp" {
		t.Errorf("80/udp name = %q", got)
	}
	if got := get(1, "tcp", "x"); got != "a=b" {
		t.Errorf("value with '=' = %q", got)
	}
}

func TestParseMetadataRejects(t *testing.T) {
	for _, key := range []string{"SERVICE_", "SERVICE_80", "SERVICE_80_", "SERVICE_0_NAME", "SERVICE_70000_NAME", "SERVICE_99999999999999999999_NAME"} {
		_, errs := ParseMetadata(nil, map[string]string{key: "v"})
		if !hasErr(errs, key) {
			t.Errorf("%s: no rejection naming it: %v", key, errs)
		}
	}
}
