// Package statusdoc is the JSON document the renderer serves on
// /status: the types the status server encodes, for clients (probes,
// tests, dashboards) to decode. Field names are an interface: add, never
// rename.
package statusdoc

import "time"

// Doc is the whole document. Times are RFC 3339 in UTC, null when it
// never happened.
type Doc struct {
	Ready     bool       `json:"ready"`
	Reason    string     `json:"reason"`
	Templates []Template `json:"templates"`
	Proxies   []Proxy    `json:"proxies"`
	Runner    Runner     `json:"runner"`
}

// Template is one template's entry.
type Template struct {
	Source             string     `json:"source"`
	Dest               string     `json:"dest"`
	Proxy              string     `json:"proxy"`
	Accepted           bool       `json:"accepted"`
	Swaps              int64      `json:"swaps"`
	LastSwap           *time.Time `json:"last_swap"`
	LastError          string     `json:"last_error"`
	LastErrorKind      string     `json:"last_error_kind"` // "" or one of validation, write, execute, rollback
	Rejected           int64      `json:"rejected"`
	WriteErrors        int64      `json:"write_errors"`
	ExecErrors         int64      `json:"exec_errors"`
	ParseError         string     `json:"parse_error"`
	Held               bool       `json:"held"`
	HeldSince          *time.Time `json:"held_since"`
	HeldBackendsBefore int        `json:"held_backends_before"`
	HeldBackendsAfter  int        `json:"held_backends_after"`
	HeldEmptied        []string   `json:"held_emptied"`
	Holds              int64      `json:"holds"`
}

// Proxy is one proxy's entry.
type Proxy struct {
	Name           string `json:"name"`
	Reloads        int64  `json:"reloads"`
	ReloadFailures int64  `json:"reload_failures"`
	Rollbacks      int64  `json:"rollbacks"`
	// Membership changes applied at runtime, without a reload.
	RuntimeApplies   int64      `json:"runtime_applies"`
	RuntimeFailures  int64      `json:"runtime_apply_failures"`
	RuntimeFallbacks int64      `json:"runtime_fallbacks"`
	LastRuntimeApply *time.Time `json:"last_runtime_apply"`
	LastRuntimeError string     `json:"last_runtime_apply_error"`
	LastReload       *time.Time `json:"last_reload"`
	LastReloadError  string     `json:"last_reload_error"`
	ReloadPending    bool       `json:"reload_pending"`
	// Up, Deaths and Restarts mean something only when Supervised; they
	// are there (false, 0) for the others so every entry has one shape.
	Supervised bool  `json:"supervised"`
	Up         bool  `json:"up"`
	Deaths     int64 `json:"deaths"`
	Restarts   int64 `json:"restarts"`
}

// Runner is the consul-template runner's entry.
type Runner struct {
	Rebuilds        int64      `json:"rebuilds"`
	OutageRebuilds  int64      `json:"outage_rebuilds"`
	ConsulErrors    int64      `json:"consul_errors"`
	LastConsulError string     `json:"last_consul_error"`
	ConsulDownSince *time.Time `json:"consul_down_since"` // null: Consul answers
	// Consul answers but refuses the runner (429, resets): counts by
	// reason, the last refusal, since when (null: not now), and the
	// dependencies still without data.
	ConsulThrottled      map[string]int64 `json:"consul_throttled"`
	LastConsulThrottle   string           `json:"last_consul_throttle"`
	ConsulThrottledSince *time.Time       `json:"consul_throttled_since"`
	MissingDependencies  int              `json:"missing_dependencies"`
}
