package docker

import (
	"cmp"
	"slices"

	"github.com/switchyard/switchyard/registrar/internal/container"
)

func sortNetworks(ns []container.Network) {
	slices.SortFunc(ns, func(a, b container.Network) int { return cmp.Compare(a.Name, b.Name) })
}

func sortPorts(ps []container.Port) {
	slices.SortFunc(ps, func(a, b container.Port) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
	})
	for _, p := range ps {
		slices.SortFunc(p.Bindings, func(a, b container.Binding) int {
			return cmp.Or(cmp.Compare(a.HostIP, b.HostIP), cmp.Compare(a.HostPort, b.HostPort))
		})
	}
}
