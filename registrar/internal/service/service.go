// Package service turns a container and the registrar's policy into the
// Consul services it should have. It is pure: no Docker, no Consul, no
// clock, so every rule of registrator's SERVICE_* contract is a table test.
//
// A bad key never fails the whole container when it can be avoided: the
// key is rejected with an *Error naming container, key and value, and the
// rest is still registered. A check that cannot be built is left out and
// the service keeps its other checks. Only errors that would make a
// registration wrong (no usable check left of those asked for, an
// unreachable address) drop that one service.
package service

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/switchyard/switchyard/registrar/internal/container"
	"github.com/switchyard/switchyard/registrar/internal/health"
)

// Ownership meta keys: every registration carries them, and cleanup only
// ever touches services whose MetaNode equals our node name.
const (
	MetaNode        = "registrar-node"
	MetaContainerID = "container-id"
	MetaFingerprint = "registrar-hash"
)

// Consul limits (agent/structs): meta keys [A-Za-z0-9_-], at most 128
// bytes, values at most 512 bytes, 64 pairs, no "consul-" prefix.
const (
	maxMetaPairs    = 64
	maxMetaKeyLen   = 128
	maxMetaValueLen = 512
	defaultInterval = 10 * time.Second
)

var (
	metaKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	// Service names end up in DNS, proxy configs and URLs: keep to a DNS-ish
	// alphabet (registrator's defaults, image base names, always fit).
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)
)

// Policy is the registrar-wide part of the rules (the command-line flags).
type Policy struct {
	Node        string // node name: ownership meta and default IDs
	HostIP      string // --ip: address for ports published on every address
	DefaultIP   string // the host's outbound address, when HostIP is empty
	Internal    bool   // --internal: container IP and container port
	Explicit    bool   // --explicit: only containers that set a name
	IPFromLabel string // --useIpFromLabel: label holding the address
	// LabelFilter is --label-filter: only containers matching all of it
	// have services.
	LabelFilter []LabelMatch
	// ForceTags is --tags, a Go template over the inspect data; nil for none.
	ForceTags *template.Template
	// Health is the Docker HEALTHCHECK and drain policy.
	Health health.Policy
}

// Service is one registration the container should have.
type Service struct {
	ID          string
	Name        string
	Address     string
	Port        int
	Tags        []string
	Meta        map[string]string
	Check       *Check  // the first check: the lowest index (registrator's keys are index 0)
	Checks      []Check `json:",omitempty"` // the others by index; Consul's registration has this shape
	ContainerID string
}

// AllChecks is every check of the service, by index.
func (s Service) AllChecks() []Check {
	if s.Check == nil {
		return nil
	}
	return append([]Check{*s.Check}, s.Checks...)
}

// Check is one health check of a service. Fields added after registrator's
// set are omitempty, so that a service using none of them keeps its
// fingerprint (an upgrade does not re-register every service).
type Check struct {
	// Index is n of SERVICE_CHECK_<n>_*, 0 for the unindexed keys. Adding a
	// check does not change the others' index, so it can name the check.
	Index int `json:",omitempty"`
	// Docker marks the TTL check that mirrors Docker's HEALTHCHECK; the
	// reconciler refreshes it.
	Docker          bool   `json:",omitempty"`
	HTTP            string // full URL, for HTTP and HTTPS checks
	Method          string
	Header          map[string][]string `json:",omitempty"` // canonical names
	TLSSkipVerify   bool
	TCP             string // host:port
	GRPC            string // host:port[/service]
	GRPCUseTLS      bool
	Args            []string // script check, argv without a shell
	TTL             time.Duration
	Interval        time.Duration
	Timeout         time.Duration
	DeregisterAfter time.Duration
	Status          string // initial status
}

// Registration is what the catalog holds for a service we own: enough to
// decide whether it matches the desired Service.
type Registration struct {
	ID          string
	ContainerID string
	Fingerprint string
}

// Fingerprint is a stable digest of everything we register. It is stored in
// the service meta, so that a pass compares one string instead of
// re-reading checks, and re-registers only what changed.
func (s Service) Fingerprint() string {
	c := s
	c.Meta = maps.Clone(s.Meta)
	delete(c.Meta, MetaFingerprint)
	b, _ := json.Marshal(c) // maps marshal with sorted keys: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Error is a rejected piece of a container's configuration. It names the
// container, the key (label, variable or flag) and the value.
type Error struct {
	Container   string
	ContainerID string
	Key         string
	Value       string
	Reason      string
}

func (e *Error) Error() string {
	if e.Container == "" {
		return fmt.Sprintf("%s=%q: %s", e.Key, e.Value, e.Reason)
	}
	return fmt.Sprintf("container %s: %s=%q: %s", e.Container, e.Key, e.Value, e.Reason)
}

// ParseForceTags compiles the --tags flag.
func ParseForceTags(s string) (*template.Template, error) {
	if s == "" {
		return nil, nil
	}
	return template.New("tags").Option("missingkey=error").Parse(s)
}

// known are the keys that are not service meta.
var known = map[string]bool{
	"name": true, "id": true, "tags": true, "ignore": true, "ip": true, "network": true,
	"drain": true, "health_starting": true, "wait_healthy": true,
}

// FromContainer returns the services c should have under p, sorted by ID,
// and every rejection met on the way. A container that is not running has
// no services.
func FromContainer(c container.Container, p Policy) ([]Service, []error) {
	if !c.State.Running || !selected(c.Labels, p.LabelFilter) {
		return nil, nil
	}
	b := builder{c: c, p: p}
	md, errs := ParseMetadata(c.Env, c.Labels)
	b.errs = errs

	forced, err := b.forceTags()
	if err != nil {
		return nil, b.fail(&Error{Key: "--tags", Value: templateText(p.ForceTags), Reason: err.Error()})
	}

	ports := b.candidates()
	group := len(ports) > 1
	var out []Service
	seen := map[string]int{}
	for _, port := range ports {
		s, ok := b.service(md, port, group, forced)
		if !ok {
			continue
		}
		if other, dup := seen[s.ID]; dup {
			b.errs = append(b.errs, b.errf("SERVICE_ID", s.ID, fmt.Sprintf("port %d/%s has the same service ID as port %d; only the first is registered", port.Port, port.Proto, other)))
			continue
		}
		seen[s.ID] = port.Port
		out = append(out, s)
	}
	b.virtualUnplaced(ports)
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.ID, b.ID) })
	return out, uniqueErrors(b.errs)
}

// uniqueErrors drops repeats: a bad generic key is met once per port.
func uniqueErrors(errs []error) []error {
	seen := map[string]bool{}
	out := errs[:0]
	for _, err := range errs {
		if msg := err.Error(); !seen[msg] {
			seen[msg] = true
			out = append(out, err)
		}
	}
	return out
}

type builder struct {
	c    container.Container
	p    Policy
	errs []error
}

func (b *builder) errf(key, value, reason string) *Error {
	return &Error{Container: b.c.Name, ContainerID: b.c.ID, Key: key, Value: value, Reason: reason}
}

func (b *builder) fail(e *Error) []error {
	e.Container, e.ContainerID = b.c.Name, b.c.ID
	return append(b.errs, e)
}

// reject records a bad key of an entry.
func (b *builder) reject(e entry, reason string) {
	b.errs = append(b.errs, b.errf(e.Raw, e.Value, reason))
}

func (b *builder) forceTags() ([]string, error) {
	if b.p.ForceTags == nil {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := b.p.ForceTags.Execute(&buf, b.c.Inspect); err != nil {
		return nil, err
	}
	return SplitTags(buf.String()), nil
}

func templateText(t *template.Template) string {
	if t == nil || t.Tree == nil || t.Tree.Root == nil {
		return ""
	}
	return t.Tree.Root.String()
}

// candidates are the ports that may become services. registrator's rule:
// published ports; with -internal (or when sharing another container's or
// the host's network stack) every exposed port.
func (b *builder) candidates() []container.Port {
	var out []container.Port
	for _, port := range b.c.Ports {
		if port.Published() || b.p.Internal || b.c.HostNetwork || b.sharedNS() {
			out = append(out, port)
		}
	}
	return out
}

// sharedNS reports a "container:<id>" network mode on a non-host target:
// the container has no bindings of its own, only the target's IP.
func (b *builder) sharedNS() bool {
	return strings.HasPrefix(b.c.NetworkMode, "container:") && !b.c.HostNetwork
}

func (b *builder) service(md Metadata, port container.Port, group bool, forced []string) (Service, bool) {
	m := md.For(port.Port, port.Proto)
	if b.ignored(m) {
		return Service{}, false
	}
	name, ok := b.name(m, port, group)
	if !ok {
		return Service{}, false
	}
	id, ok := b.id(m, port, group)
	if !ok {
		return Service{}, false
	}
	addr, svcPort, ok := b.address(m, port)
	if !ok {
		return Service{}, false
	}
	s := Service{ID: id, Name: name, Address: addr, Port: svcPort, ContainerID: b.c.ID,
		Tags: b.tags(m, forced), Meta: b.meta(m, b.route(m, port))}
	checks, ok := b.allChecks(m, addr, svcPort)
	if !ok {
		return Service{}, false
	}
	if len(checks) > 0 {
		s.Check = &checks[0]
	}
	if len(checks) > 1 {
		s.Checks = checks[1:]
	}
	return s, true
}

// ignored applies SERVICE_IGNORE.
func (b *builder) ignored(m map[string]entry) bool {
	e, ok := m["ignore"]
	if !ok {
		return false
	}
	v, valid := ParseBool(e.Value)
	if !valid {
		// registrator ignores on any non-empty value; keep that for
		// spellings we do not know, but say so.
		b.reject(e, "not a boolean; treated as true like registrator")
		v = true
	}
	return v
}

// name is the service name: SERVICE_NAME or the image's base name, with
// -<port> for a container of several ports; false when -explicit wants a
// name and there is none, or the name is not valid.
func (b *builder) name(m map[string]entry, port container.Port, group bool) (string, bool) {
	nameEntry, hasName := m["name"]
	if b.p.Explicit && !hasName {
		return "", false
	}
	name := container.BaseImageName(b.c.Image)
	if hasName {
		name = strings.TrimSpace(nameEntry.Value)
	}
	if group && (!hasName || nameEntry.Level == levelGeneric) {
		name += "-" + strconv.Itoa(port.Port)
	}
	if !nameRE.MatchString(name) {
		key, value := "image", b.c.Image
		if hasName {
			key, value = nameEntry.Raw, nameEntry.Value
		}
		b.errs = append(b.errs, b.errf(key, value, fmt.Sprintf("service name %q: want letters, digits, '.', '_' or '-'", name)))
		return "", false
	}
	return name, true
}

// id is the service ID: SERVICE_ID or <node>:<container>:<port>, with
// :<proto> for other protocols than TCP.
func (b *builder) id(m map[string]entry, port container.Port, group bool) (string, bool) {
	id := b.p.Node + ":" + b.c.Name + ":" + strconv.Itoa(port.Port)
	if e, ok := m["id"]; ok && strings.TrimSpace(e.Value) != "" {
		id = strings.TrimSpace(e.Value)
		// A container-wide ID on several ports would collide.
		if group && e.Level == levelGeneric {
			id += ":" + strconv.Itoa(port.Port)
		}
	}
	if port.Proto != "tcp" && port.Proto != "" {
		id += ":" + port.Proto
	}
	if reason := badID(id); reason != "" {
		key, value := "SERVICE_ID", id
		if e, ok := m["id"]; ok {
			key, value = e.Raw, e.Value
		}
		b.errs = append(b.errs, b.errf(key, value, reason))
		return "", false
	}
	return id, true
}

// tags are SERVICE_TAGS plus -tags, deduplicated; a tag with control
// characters is dropped and reported.
func (b *builder) tags(m map[string]entry, forced []string) []string {
	var tags []string
	if e, ok := m["tags"]; ok {
		tags = SplitTags(e.Value)
	}
	tags = dedupe(append(tags, forced...))
	for _, t := range tags {
		if hasControl(t) {
			b.errs = append(b.errs, b.errf("SERVICE_TAGS", t, "tag has control characters; dropped"))
		}
	}
	return slices.DeleteFunc(tags, hasControl)
}

// allChecks are the label checks plus the Docker HEALTHCHECK's; false
// when the service must not be registered (a bad check, or a container
// that is to register only once healthy and is not yet).
func (b *builder) allChecks(m map[string]entry, addr string, port int) ([]Check, bool) {
	checks, ok := b.checks(m, addr, port)
	if !ok {
		return nil, false
	}
	d, errs := health.Decide(b.c.State.Health, b.p.Health, healthKeys(m))
	for _, err := range errs {
		b.errs = append(b.errs, b.errf("SERVICE_*", b.c.State.Health, err.Error()))
	}
	if !d.Register {
		return nil, false
	}
	if d.Check {
		checks = append(checks, b.dockerCheck(d.Status))
	}
	return checks, true
}

// dockerCheck mirrors the container's Docker HEALTHCHECK: a TTL check the
// reconciler keeps refreshed with Status, so it turns critical (and the
// services are eventually reaped) when no registrar refreshes it.
func (b *builder) dockerCheck(status string) Check {
	ttl := b.p.Health.TTL
	if ttl <= 0 {
		ttl = DefaultHealthTTL
	}
	return Check{Docker: true, TTL: ttl, Status: status, DeregisterAfter: b.p.Health.DeregisterAfter}
}

// DefaultHealthTTL is the TTL of a Docker health check when the policy
// sets none.
const DefaultHealthTTL = 30 * time.Second

func healthKeys(m map[string]entry) health.Keys {
	return health.Keys{Starting: m["health_starting"].Value, WaitHealthy: m["wait_healthy"].Value, Drain: m["drain"].Value}
}

// Drain reports whether c's services go into maintenance when it is told
// to stop (SERVICE_DRAIN, else the policy). Pure, like FromContainer.
func Drain(c container.Container, p Policy) bool {
	md, _ := ParseMetadata(c.Env, c.Labels)
	on, _ := health.Drain(p.Health, healthKeys(md.generic))
	return on
}

// DockerCheck returns the check of s that mirrors Docker's HEALTHCHECK.
func (s Service) DockerCheck() (Check, bool) {
	for _, c := range s.AllChecks() {
		if c.Docker {
			return c, true
		}
	}
	return Check{}, false
}

// badID explains why Consul could not take id in a URL path (the agent's
// deregister endpoint puts it there unescaped), or returns "".
func badID(id string) string {
	switch {
	case id == "":
		return "empty service ID"
	case len(id) > 512:
		return "service ID longer than 512 bytes"
	case strings.ContainsAny(id, "/?#% \t") || hasControl(id):
		return "service ID must not contain '/', '?', '#', '%', spaces or control characters"
	}
	return ""
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

func dedupe(tags []string) []string {
	seen := make(map[string]bool, len(tags))
	out := tags[:0]
	for _, t := range tags {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// meta turns the keys that are neither known nor checks into service meta,
// rejecting what Consul would refuse, so one bad key does not fail the
// whole registration. Ownership keys are always ours. The routing meta,
// checked already, goes first: the 64-key limit must never cut a route
// in half (a route without its host would be wider than asked).
func (b *builder) meta(m map[string]entry, route map[string]string) map[string]string {
	meta := map[string]string{
		MetaNode:        b.p.Node,
		MetaContainerID: b.c.ID,
	}
	maps.Copy(meta, route)
	room := maxMetaPairs - len(meta) - 1 // one for the fingerprint
	for _, k := range slices.Sorted(maps.Keys(m)) {
		e := m[k]
		if known[k] || strings.HasPrefix(k, "check_") || strings.HasPrefix(k, routePrefix) {
			continue
		}
		switch {
		case k == MetaNode || k == MetaContainerID || k == MetaFingerprint:
			b.reject(e, "meta key is reserved for registrar's ownership marks")
		case !metaKeyRE.MatchString(k):
			b.reject(e, fmt.Sprintf("meta key %q: Consul accepts only letters, digits, '_' and '-'", k))
		case len(k) > maxMetaKeyLen:
			b.reject(e, fmt.Sprintf("meta key longer than %d bytes", maxMetaKeyLen))
		case strings.HasPrefix(k, "consul-"):
			b.reject(e, "meta keys starting with consul- are reserved by Consul")
		case len(e.Value) > maxMetaValueLen:
			b.reject(e, fmt.Sprintf("meta value longer than %d bytes", maxMetaValueLen))
		case room == 0:
			b.reject(e, fmt.Sprintf("more than %d meta keys", maxMetaPairs))
		default:
			meta[k] = e.Value
			room--
		}
	}
	return meta
}
