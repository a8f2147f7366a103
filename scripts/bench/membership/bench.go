package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// bench is what every group shares: the work dir, the binaries, the
// private Consul agent, and the backends of the steady instances.
type bench struct {
	o        options
	root     string // the module root
	dir      string // this run's work dir; every process's files are in it
	renderer string // our renderer, built from the tree, copied into dir
	ct       string // consul-template's binary (scripts/setup.sh --bench)
	consul   *testenv.Consul
	cat      *catalog

	work      []*backend // the instances of workService the load reaches
	churn     *backend   // the instance membership changes add and remove
	latSteady *backend   // the instance latService always has
}

// newBench starts the agent and the backends and registers the steady
// instances. On error the caller still closes what it returns.
func newBench(o options) (*bench, error) {
	b := &bench{o: o, ct: os.Getenv("SWITCHYARD_CONSUL_TEMPLATE")}
	if b.ct == "" {
		return nil, errors.New("SWITCHYARD_CONSUL_TEMPLATE is not set: run scripts/bench.sh membership (it runs scripts/setup.sh --bench)")
	}
	var err error
	if b.root, err = testenv.ModuleRoot(); err != nil {
		return nil, err
	}
	if b.dir, err = os.MkdirTemp("", "switchyard-bench-membership-"); err != nil {
		return nil, err
	}
	if err := b.buildRenderer(); err != nil {
		return b, err
	}
	if err := b.startConsul(); err != nil {
		return b, err
	}
	return b, b.startBackends()
}

// buildRenderer builds the renderer from the tree and copies it into
// dir: every group runs the same build even if the tree changes meanwhile.
func (b *bench) buildRenderer() error {
	built, err := testenv.Build("github.com/switchyard/switchyard/renderer")
	if err != nil {
		return err
	}
	b.renderer = filepath.Join(b.dir, "bin", "renderer")
	if err := os.MkdirAll(filepath.Dir(b.renderer), 0o755); err != nil {
		return err
	}
	src, err := os.Open(built)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(b.renderer, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

func (b *bench) startConsul() error {
	bin, err := testenv.ConsulBinaryPath()
	if err != nil {
		return err
	}
	c, err := testenv.NewConsul(bin, b.dir, "bench-membership")
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		c.Stop()
		return err
	}
	b.consul = c
	b.cat, err = newCatalog(c.Addr)
	return err
}

// startBackends starts the steady instances and registers them.
func (b *bench) startBackends() error {
	for i := range 3 {
		be, err := startBackend(fmt.Sprintf("%s-%d", workService, i))
		if err != nil {
			return err
		}
		b.work = append(b.work, be)
		if err := b.cat.add(be.name, workService, be.port); err != nil {
			return err
		}
	}
	var err error
	if b.churn, err = startBackend(churnID); err != nil {
		return err
	}
	if b.latSteady, err = startBackend(latService + "-steady"); err != nil {
		return err
	}
	return b.cat.add(b.latSteady.name, latService, b.latSteady.port)
}

func (b *bench) template(k *proxyKind) string {
	return filepath.Join(b.root, "templates", k.tmpl)
}

// close stops the agent and the backends, kills anything of this run
// still alive, and removes the work dir unless -keep.
func (b *bench) close() {
	if b.consul != nil {
		b.consul.Stop()
	}
	for _, be := range append(b.work, b.churn, b.latSteady) {
		if be != nil {
			be.close()
		}
	}
	if b.dir == "" {
		return
	}
	if n := sweep(b.dir, nil); n > 0 {
		fmt.Printf("killed %d processes of this run left at exit\n", n)
	}
	if b.o.keep {
		fmt.Printf("work dir kept: %s\n", b.dir)
		return
	}
	_ = os.RemoveAll(b.dir)
}
