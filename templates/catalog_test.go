package templates_test

import (
	"os"
	"testing"

	"github.com/hashicorp/consul-template/config"
	dep "github.com/hashicorp/consul-template/dependency"
	"github.com/hashicorp/consul-template/template"
)

// catalog is what the shipped templates read from Consul: the services in
// catalog order (Consul sorts them by name), each with its passing
// instances.
type catalog []catService

type catService struct {
	name      string
	tags      []string
	instances []*dep.HealthService
}

// brainFor seeds consul-template's Brain the way its own template tests
// do: the catalog query and one health query per service.
func brainFor(t testing.TB, c catalog) *template.Brain {
	t.Helper()
	b := template.NewBrain()
	d, err := dep.NewCatalogServicesQuery("")
	if err != nil {
		t.Fatal(err)
	}
	snippets := make([]*dep.CatalogSnippet, 0, len(c))
	for _, s := range c {
		snippets = append(snippets, &dep.CatalogSnippet{Name: s.name, Tags: s.tags})
		hq, err := dep.NewHealthServiceQuery(s.name)
		if err != nil {
			// consul-template cannot ask for such a name: the template
			// must not try (the render would fail).
			continue
		}
		b.Remember(hq, s.instances)
	}
	b.Remember(d, snippets)
	return b
}

// renderCatalog renders the template file src on c with the renderer's
// function denylist. A template that asks for data c lacks fails the test.
func renderCatalog(t testing.TB, src string, c catalog, env []string) []byte {
	t.Helper()
	tmpl, err := template.NewTemplate(&template.NewTemplateInput{
		Source:           src,
		FunctionDenylist: []string{"plugin", "writeToFile"},
		ReaderFunc:       os.ReadFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := tmpl.Execute(&template.ExecuteInput{Brain: brainFor(t, c), Env: env, Config: config.TestConfig(nil)})
	if err != nil {
		t.Fatalf("execute %s: %v", src, err)
	}
	if res.Missing.Len() > 0 {
		t.Fatalf("%s asked for data the catalog lacks: %v", src, res.Missing.List())
	}
	return res.Output
}
