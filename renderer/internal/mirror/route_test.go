package mirror

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		method, url string
		kind        kind
		service     string
		key         string
	}{
		{"GET", "/v1/health/service/web?passing=1&stale=&index=7&wait=60000ms", kindService, "web", "/v1/health/service/web?passing=1&stale="},
		{"GET", "/v1/health/service/web?tag=a&filter=Service.Meta.x+%3D%3D+%221%22", kindService, "web", "/v1/health/service/web?filter=Service.Meta.x+%3D%3D+%221%22&tag=a"},
		{"GET", "/v1/catalog/service/my%20svc", kindService, "my svc", "/v1/catalog/service/my%20svc"},
		{"GET", "/v1/health/service/web?dc=other", kindPoll, "", "/v1/health/service/web?dc=other"},
		{"GET", "/v1/health/service/web?peer=p", kindPoll, "", "/v1/health/service/web?peer=p"},
		{"GET", "/v1/catalog/services?stale=", kindCatalog, "", "/v1/catalog/services?stale="},
		{"GET", "/v1/catalog/nodes", kindCatalog, "", "/v1/catalog/nodes"},
		{"GET", "/v1/catalog/node/n1?index=3", kindCatalog, "", "/v1/catalog/node/n1"},
		{"GET", "/v1/kv/app/config?recurse=", kindKV, "", "/v1/kv/app/config?recurse="},
		{"GET", "/v1/kv/app?keys=&dc=x", kindPoll, "", "/v1/kv/app?dc=x&keys="},
		{"GET", "/v1/catalog/datacenters", kindPoll, "", "/v1/catalog/datacenters"},
		{"GET", "/v1/status/leader", kindPass, "", "/v1/status/leader"},
		{http.MethodPut, "/v1/kv/lock", kindPass, "", "/v1/kv/lock"},
	} {
		rt := classify(httptest.NewRequest(tc.method, tc.url, nil))
		if rt.kind != tc.kind || rt.service != tc.service || rt.key != tc.key {
			t.Errorf("%s %s: got kind %d service %q key %q, want %d %q %q", tc.method, tc.url, rt.kind, rt.service, rt.key, tc.kind, tc.service, tc.key)
		}
	}
}

func TestDumpDiff(t *testing.T) {
	base := `[{"Node":"n1","Address":"10.0.0.1","Meta":{"a":"1"},
	  "Services":[{"ID":"web-1","Service":"web","ModifyIndex":5},{"ID":"api-1","Service":"api","ModifyIndex":6}],
	  "Checks":[{"CheckID":"serfHealth","ServiceID":"","Status":"passing","ModifyIndex":2},
	            {"CheckID":"c-web","ServiceID":"web-1","Status":"passing","ModifyIndex":7}]},
	 {"Node":"n2","Address":"10.0.0.2","Services":[{"ID":"web-2","Service":"web","ModifyIndex":8}],"Checks":[]}]`
	for _, tc := range []struct {
		name, dump string
		changed    []string
	}{
		{"same", base, nil},
		{"web check status", strings.ReplaceAll(base, `"c-web","ServiceID":"web-1","Status":"passing","ModifyIndex":7`, `"c-web","ServiceID":"web-1","Status":"critical","ModifyIndex":9`), []string{"web"}},
		{"api instance rewritten", strings.ReplaceAll(base, `"api-1","Service":"api","ModifyIndex":6`, `"api-1","Service":"api","ModifyIndex":10`), []string{"api"}},
		{"web instance removed", strings.ReplaceAll(base, `{"ID":"web-2","Service":"web","ModifyIndex":8}`, ``), []string{"web"}},
		{"node address", strings.ReplaceAll(base, `"10.0.0.1"`, `"10.0.0.9"`), []string{"api", "web"}},
		{"node check", strings.ReplaceAll(base, `"serfHealth","ServiceID":"","Status":"passing"`, `"serfHealth","ServiceID":"","Status":"critical"`), []string{"api", "web"}},
		{"node meta", strings.ReplaceAll(base, `{"a":"1"}`, `{"a":"2"}`), []string{"api", "web"}},
		{"same index, other address (agent restarted, data wiped)", strings.ReplaceAll(base, `{"ID":"web-2","Service":"web","ModifyIndex":8}`, `{"ID":"web-2","Service":"web","Address":"10.9.9.9","ModifyIndex":8}`), []string{"web"}},
	} {
		prev, err := parseDump([]byte(base), fingerprints{})
		if err != nil {
			t.Fatal(err)
		}
		// Decoded whole, and reusing the nodes whose bytes did not change.
		for _, from := range []fingerprints{{}, prev} {
			cur, err := parseDump([]byte(tc.dump), from)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			changed, _ := diff(prev, cur)
			if !slices.Equal(changed, tc.changed) {
				t.Errorf("%s (reusing %d nodes): changed %v, want %v", tc.name, len(from.nodes), changed, tc.changed)
			}
		}
	}
}

// TestSplitArray: the dump's nodes are cut out by tracking strings and
// nesting only; braces, brackets, quotes and backslashes inside strings
// must not fool it, and what is not a whole array is refused.
func TestSplitArray(t *testing.T) {
	elems := []string{`{"a":"}\"]{[","b":[1,{"c":"\\"}]}`, `{"d":{"e":"\\\\\"}"}}`, `{}`}
	for _, in := range []string{"[" + strings.Join(elems, ",") + "]", " [\n " + strings.Join(elems, " ,\n\t") + " ]\n"} {
		got, err := splitArray([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if len(got) != len(elems) {
			t.Fatalf("%q: %d elements, want %d", in, len(got), len(elems))
		}
		for i, g := range got {
			if string(g) != elems[i] {
				t.Errorf("%q: element %d is %q, want %q", in, i, g, elems[i])
			}
			var v map[string]any
			if err := json.Unmarshal(g, &v); err != nil {
				t.Errorf("element %d %q does not decode: %v", i, g, err)
			}
		}
	}
	if got, err := splitArray([]byte(" null ")); err != nil || len(got) != 0 {
		t.Errorf("null: %v, %v; want an empty list", got, err)
	}
	for _, bad := range []string{``, `{}`, `[{"a":1}`, `[{"a":"]}`, `[{}] x`} {
		if _, err := splitArray([]byte(bad)); err == nil {
			t.Errorf("%q was taken for an array", bad)
		}
	}
}
