package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// routeMeta is the route_* part of a registered service's meta.
func routeMeta(s *api.AgentService) map[string]string {
	out := map[string]string{}
	for k, v := range s.Meta {
		if strings.HasPrefix(k, "route_") {
			out[k] = v
		}
	}
	return out
}

// wantRoute is a waitService check: the service carries exactly this
// routing meta.
func wantRoute(want map[string]string) func(*api.AgentService) error {
	return func(s *api.AgentService) error {
		if got := routeMeta(s); !maps.Equal(got, want) {
			return fmt.Errorf("%s: routing meta %v, want %v", s.ID, got, want)
		}
		return nil
	}
}

// servicesOnStatus reads the number of services /status says we own.
func servicesOnStatus(addr string) (int, error) {
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		Services int `json:"services"`
	}
	return st.Services, json.NewDecoder(resp.Body).Decode(&st)
}

// nginx-proxy's VIRTUAL_*, fabio's urlprefix- tags and a bad route label
// against a real engine and agent: every container registers, the
// translations land on the right service, the bad key alone is missing.
func TestRoutingMeta(t *testing.T) {
	r := newRig(t)
	status := statusAddr(t)
	r.start("--status-addr", status)
	waitReady(t, status, true, "")

	virtual := testenv.RandomName("sy-it-vhost")
	r.run(testenv.RunOptions{
		Name: virtual, Ports: []string{"8080", "9090"},
		Env: map[string]string{"VIRTUAL_HOST": "Api.Example.com, www.example.com", "VIRTUAL_PORT": "9090",
			"VIRTUAL_PATH": "/api/", "VIRTUAL_DEST": "/"},
	})
	fabio := testenv.RandomName("sy-it-fabio")
	tags := []string{"web", "urlprefix-shop.example.com/shop strip=/shop", "urlprefix-/admin"}
	r.run(testenv.RunOptions{
		Name: fabio, Ports: []string{"8080"},
		Labels: map[string]string{"SERVICE_TAGS": strings.Join(tags, ",")},
	})
	bad := testenv.RandomName("sy-it-badroute")
	r.run(testenv.RunOptions{
		Name: bad, Ports: []string{"8080"},
		Labels: map[string]string{"SERVICE_ROUTE_PROTO": "tcp", "SERVICE_ROUTE_PORT": "99999",
			"SERVICE_ROUTE_WEIGHT": "7", "SERVICE_ROUTE_HOTS": "typo.example.com", "SERVICE_VERSION": "2"},
	})

	// Only the port nginx-proxy would use carries the route.
	r.waitService(r.node+":"+virtual+":9090", wantRoute(map[string]string{
		"route_host": "api.example.com,www.example.com", "route_path": "/api/", "route_strip": "true"}))
	r.waitService(r.node+":"+virtual+":8080", wantRoute(map[string]string{}))
	// The first urlprefix- tag is the route; every tag is kept.
	r.waitService(r.node+":"+fabio+":8080", func(s *api.AgentService) error {
		if !slices.Equal(s.Tags, tags) {
			return fmt.Errorf("tags %q, want %q", s.Tags, tags)
		}
		return wantRoute(map[string]string{"route_host": "shop.example.com", "route_path": "/shop", "route_strip": "true"})(s)
	})
	// The bad port and the unknown key are dropped, the rest registered.
	r.waitService(r.node+":"+bad+":8080", func(s *api.AgentService) error {
		if s.Meta["version"] != "2" {
			return fmt.Errorf("meta %v lost version=2", s.Meta)
		}
		return wantRoute(map[string]string{"route_proto": "tcp", "route_weight": "7"})(s)
	})

	testenv.Eventually(t, 10*time.Second, func() error {
		n, err := servicesOnStatus(status)
		if err != nil || n != 4 {
			return fmt.Errorf("/status services %d, %v; want 4", n, err)
		}
		return nil
	})
	waitReady(t, status, true, "")
}
