package service

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/textproto"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

// checkKey is one SERVICE_CHECK_* key, named without SERVICE_CHECK_ or
// SERVICE_CHECK_<n>_. The table below is the whole check contract.
type checkKey struct {
	name string
	role role
	// set parses the value (trimmed, never empty) into the draft's check.
	// A warning is reported and the value kept; another error is reported
	// and fails the check. Nil: the key is read by another row.
	set func(d *draft, v string) error
	// only limits an option to the checks it means something for.
	only func(c *Check) bool
}

type role int

const (
	option   role = iota
	kind          // what the check probes; the first one set wins
	prefixed      // an option whose name continues: http_header_<Name>
)

// checkKeys apply in this order: the kinds, in registrator's precedence,
// then the options that tune the chosen kind. A new key is one row.
var checkKeys = []checkKey{
	{"http", kind, setURL("http"), nil},
	{"https", kind, setURL("https"), nil},
	{"script", kind, setScript, nil},
	{"ttl", kind, setDuration(func(c *Check) *time.Duration { return &c.TTL }), nil},
	{"tcp", kind, setTCP, nil},
	{"grpc", kind, setGRPC, nil},
	{"port", option, nil, nil}, // read by draft.target, for the kinds that probe an address
	{"interval", option, setDuration(func(c *Check) *time.Duration { return &c.Interval }), notTTL},
	{"timeout", option, setDuration(func(c *Check) *time.Duration { return &c.Timeout }), nil},
	{"deregister_after", option, setDuration(func(c *Check) *time.Duration { return &c.DeregisterAfter }), nil},
	{"initial_status", option, setStatus, nil},
	{"http_method", option, setMethod, isHTTP},
	{"http_header_", prefixed, setHeader, isHTTP},
	{"tls_skip_verify", option, setBool(func(c *Check) *bool { return &c.TLSSkipVerify }), nil},
	{"grpc_use_tls", option, setBool(func(c *Check) *bool { return &c.GRPCUseTLS }), isGRPC},
}

// maxCheckIndex bounds SERVICE_CHECK_<n>_: two digits are plenty, and a
// typo such as SERVICE_CHECK_8080_HTTP is caught instead of becoming check
// 8080.
const maxCheckIndex = 99

// warning is a refusal that keeps the value (registrator's leniency).
type warning string

func (w warning) Error() string { return string(w) }

// keyError blames another key than the one being set (SERVICE_CHECK_PORT,
// read while setting a kind).
type keyError struct {
	e      entry
	reason string
}

func (k *keyError) Error() string { return k.reason }

// draft is one check being built from its keys.
type draft struct {
	b    *builder
	m    map[string]entry // the service's keys, for the address rules
	keys map[string]entry // this check's keys, by table name
	addr string           // the service's address and port
	port int
	key  string // the key being set
	c    Check
}

// checks builds the service's checks from check_* keys, by index: check 0
// from registrator's keys, check n from SERVICE_CHECK_<n>_*. A check with a
// refused key is left out and the others are kept; a service that asked
// for checks and kept none is not registered (ok false), since without
// them it would look healthy to every proxy.
func (b *builder) checks(m map[string]entry, addr string, port int) ([]Check, bool) {
	byIndex := map[int]map[string]entry{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		rest, ok := strings.CutPrefix(k, "check_")
		if !ok {
			continue
		}
		e := m[k]
		n, name, reason := splitCheckKey(rest)
		switch {
		case reason != "":
			b.reject(e, reason)
		case name == "cmd":
			b.reject(e, "check_cmd needs registrator's own image; use SERVICE_CHECK_SCRIPT; ignored")
		case lookupCheckKey(name) == nil:
			b.reject(e, "unknown check key; ignored")
		default:
			if byIndex[n] == nil {
				byIndex[n] = map[string]entry{}
			}
			byIndex[n][name] = e
		}
	}
	var out []Check
	failed := false
	for _, n := range slices.Sorted(maps.Keys(byIndex)) {
		d := draft{b: b, m: m, keys: byIndex[n], addr: addr, port: port, c: Check{Index: n}}
		switch c, ok := d.build(); {
		case !ok:
			failed = true
		case c != nil:
			out = append(out, *c)
		}
	}
	return out, !failed || len(out) > 0
}

// splitCheckKey splits "1_http" into 1 and "http"; "http" is check 0.
func splitCheckKey(rest string) (n int, name, reason string) {
	head, tail, ok := strings.Cut(rest, "_")
	if !ok || !isDigits(head) {
		return 0, rest, ""
	}
	n, err := strconv.Atoi(head)
	switch {
	case err != nil || n < 1 || n > maxCheckIndex || head[0] == '0':
		return 0, "", fmt.Sprintf("check index %q: want 1 to %d (the unindexed keys are check 0; per-port keys are SERVICE_<port>_CHECK_...)", head, maxCheckIndex)
	case tail == "":
		return 0, "", "no key after the check index"
	}
	return n, tail, ""
}

func lookupCheckKey(name string) *checkKey {
	for i, k := range checkKeys {
		if name == k.name || k.role == prefixed && strings.HasPrefix(name, k.name) {
			return &checkKeys[i]
		}
	}
	return nil
}

// build applies the table to the draft's keys. It returns nil, true when
// no kind is set (or the kind is switched off), and false when a key was
// refused.
func (d *draft) build() (*Check, bool) {
	var winner entry
	failed := false
	for i := range checkKeys {
		k := &checkKeys[i]
		for _, name := range slices.Sorted(maps.Keys(d.keys)) {
			if lookupCheckKey(name) != k {
				continue
			}
			e := d.keys[name]
			v := strings.TrimSpace(e.Value)
			switch {
			case v == "" || k.set == nil:
				continue
			case k.role == kind && winner.Raw != "":
				d.b.reject(e, fmt.Sprintf("one probe per check; %s wins (SERVICE_CHECK_<n>_* adds checks)", winner.Raw))
				continue
			case k.role != kind && (!d.c.probes() || k.only != nil && !k.only(&d.c)):
				continue // an option of no check, or of another kind
			}
			d.key = name
			if err := k.set(d, v); err != nil {
				blame := e
				var ke *keyError
				if errors.As(err, &ke) {
					blame = ke.e
				}
				d.b.reject(blame, err.Error())
				var w warning
				failed = failed || !errors.As(err, &w)
			}
			if k.role == kind && winner.Raw == "" && d.c.probes() {
				winner = e
			}
		}
	}
	if failed {
		return nil, false
	}
	if !d.c.probes() {
		return nil, true
	}
	if d.c.TTL == 0 && d.c.Interval == 0 {
		d.c.Interval = defaultInterval
	}
	return &d.c, true
}

func (c *Check) probes() bool {
	return c.HTTP != "" || c.TCP != "" || c.GRPC != "" || len(c.Args) > 0 || c.TTL > 0
}

func isHTTP(c *Check) bool { return c.HTTP != "" }
func isGRPC(c *Check) bool { return c.GRPC != "" }
func notTTL(c *Check) bool { return c.TTL == 0 }

// target is where an HTTP, TCP or gRPC check probes: the service's address,
// or with SERVICE_CHECK_PORT that container port's address under the same
// rules (published binding, or container IP when unpublished or -internal).
func (d *draft) target() (string, error) {
	e, ok := d.keys["port"]
	if !ok || strings.TrimSpace(e.Value) == "" {
		return net.JoinHostPort(d.addr, strconv.Itoa(d.port)), nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(e.Value))
	if err != nil || n < 1 || n > 65535 {
		return "", &keyError{e, "want a container port, 1-65535"}
	}
	port := container.Port{Port: n, Proto: "tcp"}
	if i := slices.IndexFunc(d.b.c.Ports, func(p container.Port) bool { return p.Port == n && p.Proto == "tcp" }); i >= 0 {
		port = d.b.c.Ports[i]
	}
	addr, hostPort, ok := d.b.address(d.m, port)
	if !ok {
		return "", &keyError{e, fmt.Sprintf("container port %d/tcp has no address to check", n)}
	}
	return net.JoinHostPort(addr, strconv.Itoa(hostPort)), nil
}

func setURL(scheme string) func(d *draft, v string) error {
	return func(d *draft, v string) error {
		if hasControl(v) || strings.ContainsAny(v, " \t") {
			return errors.New("check path has spaces or control characters")
		}
		at, err := d.target()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(v, "/") {
			v = "/" + v
		}
		d.c.HTTP = scheme + "://" + at + v
		return nil
	}
}

// setScript splits the command into argv; $SERVICE_IP and $SERVICE_PORT
// stay the service's, whatever SERVICE_CHECK_PORT says.
func setScript(d *draft, v string) error {
	v = strings.NewReplacer("$SERVICE_IP", d.addr, "$SERVICE_PORT", strconv.Itoa(d.port)).Replace(v)
	args, err := SplitArgs(v)
	if err == nil && len(args) == 0 {
		err = errors.New("empty command")
	}
	if err != nil {
		return fmt.Errorf("check script: %w", err)
	}
	d.c.Args = args
	return nil
}

func setTCP(d *draft, v string) error {
	on, valid := ParseBool(v)
	if valid && !on {
		return nil
	}
	at, err := d.target()
	if err != nil {
		return err
	}
	d.c.TCP = at
	if !valid {
		return warning("not a boolean; treated as true like registrator")
	}
	return nil
}

// setGRPC takes a boolean, or a gRPC service name (Consul's
// "host:port/service").
func setGRPC(d *draft, v string) error {
	on, valid := ParseBool(v)
	if valid && !on {
		return nil
	}
	at, err := d.target()
	if err != nil {
		return err
	}
	d.c.GRPC = at
	if !valid {
		d.c.GRPC += "/" + v
	}
	return nil
}

// setDuration parses a positive Go duration ("10s", "1m30s").
func setDuration(field func(*Check) *time.Duration) func(d *draft, v string) error {
	return func(d *draft, v string) error {
		t, err := time.ParseDuration(v)
		if err != nil || t <= 0 {
			return errors.New("want a positive duration such as 10s or 1m")
		}
		*field(&d.c) = t
		return nil
	}
}

func setBool(field func(*Check) *bool) func(d *draft, v string) error {
	return func(d *draft, v string) error {
		b, ok := ParseBool(v)
		if !ok {
			return errors.New("not a boolean")
		}
		*field(&d.c) = b
		return nil
	}
}

func setStatus(d *draft, v string) error {
	switch s := strings.ToLower(v); s {
	case "passing", "warning", "critical":
		d.c.Status = s
		return nil
	}
	return errors.New("want passing, warning or critical")
}

var methodRE = regexp.MustCompile(`^[A-Z]{1,16}$`)

func setMethod(d *draft, v string) error {
	m := strings.ToUpper(v)
	if !methodRE.MatchString(m) {
		return errors.New("not an HTTP method")
	}
	d.c.Method = m
	return nil
}

// headerNameRE is RFC 9110's token: what may name a header.
var headerNameRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

// setHeader sets one header of an HTTP check. Keys arrive lower-cased, so
// the name is canonicalised (x-api-key -> X-Api-Key); header names are
// case-insensitive. Several values: one comma-separated value.
func setHeader(d *draft, v string) error {
	name := strings.TrimPrefix(d.key, "http_header_")
	if !headerNameRE.MatchString(name) {
		return fmt.Errorf("header name %q: want letters, digits and !#$%%&'*+-.^_`|~", name)
	}
	if hasControl(v) {
		return errors.New("header value has control characters")
	}
	if d.c.Header == nil {
		d.c.Header = map[string][]string{}
	}
	d.c.Header[textproto.CanonicalMIMEHeaderKey(name)] = []string{v}
	return nil
}
