package mirror

import (
	"encoding/json"
	"fmt"
	"testing"
)

// BenchmarkParseDump decodes and hashes a node dump shaped like the
// bench's: 3 nodes, each with one instance of every service; whole (the
// first read), and after one instance changed (only its node decoded).
func BenchmarkParseDump(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		b.Run(fmt.Sprint(services), func(b *testing.B) {
			var nodes []map[string]any
			for j := range 3 {
				var svcs []map[string]any
				for i := range services {
					svcs = append(svcs, map[string]any{"Kind": "", "ID": fmt.Sprintf("s%05d-%d", i, j), "Service": fmt.Sprintf("s%05d", i),
						"Tags": []string{}, "Address": fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), "Meta": map[string]string{},
						"Port": 8080, "Weights": map[string]int{"Passing": 1, "Warning": 1}, "EnableTagOverride": false,
						"Proxy":   map[string]any{"Mode": "", "MeshGateway": map[string]any{}, "Expose": map[string]any{}},
						"Connect": map[string]any{}, "PeerName": "", "CreateIndex": 100 + i, "ModifyIndex": 100 + i})
				}
				nodes = append(nodes, map[string]any{"ID": "", "Node": fmt.Sprintf("scale-%d", j), "Address": "192.0.2.1",
					"Datacenter": "dc1", "TaggedAddresses": map[string]string{}, "Meta": map[string]string{}, "Services": svcs, "Checks": []any{}})
			}
			raw, err := json.Marshal(nodes)
			if err != nil {
				b.Fatal(err)
			}
			prev, err := parseDump(raw, fingerprints{})
			if err != nil {
				b.Fatal(err)
			}
			// One instance changed: one node of three to decode again.
			nodes[0]["Services"].([]map[string]any)[0]["ModifyIndex"] = 1
			changed, err := json.Marshal(nodes)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("whole", func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
				for b.Loop() {
					if _, err := parseDump(raw, fingerprints{}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("one-node-changed", func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
				for b.Loop() {
					if _, err := parseDump(changed, prev); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
