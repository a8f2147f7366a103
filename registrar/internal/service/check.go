package service

import (
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// checkKinds in registrator's precedence: the first one set is the check.
var checkKinds = []string{"check_http", "check_https", "check_script", "check_ttl", "check_tcp", "check_grpc"}

// checkOptions are the keys that tune a check.
var checkOptions = map[string]bool{
	"check_interval": true, "check_timeout": true, "check_initial_status": true,
	"check_deregister_after": true, "check_http_method": true,
	"check_tls_skip_verify": true, "check_grpc_use_tls": true,
}

var methodRE = regexp.MustCompile(`^[A-Z]{1,16}$`)

// check builds the service's check from check_* keys. A service whose check
// cannot be built is not registered (ok false): without its check it would
// look healthy to every proxy.
func (b *builder) check(m map[string]entry, addr string, port int) (*Check, bool) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		e := m[k]
		if strings.HasPrefix(k, "check_") && !checkOptions[k] && !isKind(k) {
			if k == "check_cmd" {
				b.reject(e, "check_cmd needs registrator's own image; use SERVICE_CHECK_SCRIPT; ignored")
			} else {
				b.reject(e, "unknown check key; ignored")
			}
		}
	}
	hostPort := net.JoinHostPort(addr, strconv.Itoa(port))
	var c Check
	kind := ""
	for _, k := range checkKinds {
		e, ok := m[k]
		if !ok || strings.TrimSpace(e.Value) == "" {
			continue
		}
		if kind != "" {
			b.reject(e, fmt.Sprintf("one check per service; %s wins", "SERVICE_"+strings.ToUpper(kind)))
			continue
		}
		v := strings.TrimSpace(e.Value)
		switch k {
		case "check_http", "check_https":
			if hasControl(v) || strings.ContainsAny(v, " \t") {
				b.reject(e, "check path has spaces or control characters")
				return nil, false
			}
			if !strings.HasPrefix(v, "/") {
				v = "/" + v
			}
			scheme := strings.TrimPrefix(k, "check_")
			c.HTTP = scheme + "://" + hostPort + v
		case "check_script":
			v = strings.NewReplacer("$SERVICE_IP", addr, "$SERVICE_PORT", strconv.Itoa(port)).Replace(v)
			args, err := SplitArgs(v)
			if err != nil || len(args) == 0 {
				reason := "empty command"
				if err != nil {
					reason = err.Error()
				}
				b.reject(e, "check script: "+reason)
				return nil, false
			}
			c.Args = args
		case "check_ttl":
			d, ok := b.duration(e)
			if !ok {
				return nil, false
			}
			c.TTL = d
		case "check_tcp":
			on, valid := ParseBool(v)
			if !valid {
				b.reject(e, "not a boolean; treated as true like registrator")
				on = true
			}
			if !on {
				continue
			}
			c.TCP = hostPort
		case "check_grpc":
			on, valid := ParseBool(v)
			switch {
			case valid && !on:
				continue
			case valid:
				c.GRPC = hostPort
			default: // a gRPC service name, as Consul's "host:port/service"
				c.GRPC = hostPort + "/" + v
			}
		}
		kind = k
	}
	if kind == "" {
		return nil, true
	}
	if c.TTL == 0 {
		c.Interval = defaultInterval
		if e, ok := m["check_interval"]; ok {
			d, ok := b.duration(e)
			if !ok {
				return nil, false
			}
			c.Interval = d
		}
	}
	if e, ok := m["check_timeout"]; ok {
		d, ok := b.duration(e)
		if !ok {
			return nil, false
		}
		c.Timeout = d
	}
	if e, ok := m["check_deregister_after"]; ok {
		d, ok := b.duration(e)
		if !ok {
			return nil, false
		}
		c.DeregisterAfter = d
	}
	if e, ok := m["check_initial_status"]; ok {
		switch s := strings.ToLower(strings.TrimSpace(e.Value)); s {
		case "passing", "warning", "critical":
			c.Status = s
		default:
			b.reject(e, "want passing, warning or critical")
			return nil, false
		}
	}
	if e, ok := m["check_http_method"]; ok && c.HTTP != "" {
		meth := strings.ToUpper(strings.TrimSpace(e.Value))
		if !methodRE.MatchString(meth) {
			b.reject(e, "not an HTTP method")
			return nil, false
		}
		c.Method = meth
	}
	if e, ok := m["check_tls_skip_verify"]; ok {
		v, valid := ParseBool(e.Value)
		if !valid {
			b.reject(e, "not a boolean")
			return nil, false
		}
		c.TLSSkipVerify = v
	}
	if e, ok := m["check_grpc_use_tls"]; ok && c.GRPC != "" {
		v, valid := ParseBool(e.Value)
		if !valid {
			b.reject(e, "not a boolean")
			return nil, false
		}
		c.GRPCUseTLS = v
	}
	return &c, true
}

func isKind(k string) bool { return slices.Contains(checkKinds, k) }

// duration parses a positive Go duration ("10s", "1m30s").
func (b *builder) duration(e entry) (time.Duration, bool) {
	d, err := time.ParseDuration(strings.TrimSpace(e.Value))
	if err != nil || d <= 0 {
		b.reject(e, "want a positive duration such as 10s or 1m")
		return 0, false
	}
	return d, true
}
