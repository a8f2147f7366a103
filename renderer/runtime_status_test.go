package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/scripts/testenv"

	"github.com/switchyard/switchyard/renderer/statusdoc"
)

// runtimeProxyStatus is one proxy's entry of /status.
type runtimeProxyStatus = statusdoc.Proxy

// proxyStatus reads the /status entry of the proxy whose key is kind or
// starts with "kind:" from a renderer's --status-addr.
func proxyStatus(t testing.TB, addr, kind string) runtimeProxyStatus {
	t.Helper()
	code, body, err := httpGet("http://" + addr + "/status")
	if err != nil || code != 200 {
		t.Fatalf("/status: %d %v", code, err)
	}
	var doc statusdoc.Doc
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("/status: %v", err)
	}
	for _, p := range doc.Proxies {
		if p.Name == kind || strings.HasPrefix(p.Name, kind+":") {
			return p
		}
	}
	t.Fatalf("/status has no %s: %s", kind, body)
	return runtimeProxyStatus{}
}

// settledStatus waits until the supervised proxy kind is up with every
// render loaded, and returns its /status entry.
func settledStatus(t *testing.T, addr, kind string) runtimeProxyStatus {
	t.Helper()
	var st runtimeProxyStatus
	testenv.Eventually(t, 15*time.Second, func() error {
		if st = proxyStatus(t, addr, kind); !st.Up || st.ReloadPending {
			return fmt.Errorf("%s not settled: %+v", kind, st)
		}
		return nil
	})
	return st
}
