package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/scripts/testenv"
)

// agent is a dev agent at Consul's default limits (testenv raises them),
// on free loopback ports of its own.
type agent struct {
	addr   string
	cmd    *exec.Cmd
	client *api.Client
}

func startAgent(dir string) (*agent, error) {
	bin, err := testenv.ConsulBinaryPath()
	if err != nil {
		return nil, err
	}
	ports, err := testenv.PickPorts(4)
	if err != nil {
		return nil, err
	}
	a := &agent{addr: "127.0.0.1:" + strconv.Itoa(ports[0])}
	logf, err := os.Create(filepath.Join(dir, "consul.log"))
	if err != nil {
		return nil, err
	}
	a.cmd = exec.Command(bin, "agent", "-dev", "-node", "scale",
		"-bind", "127.0.0.1", "-client", "127.0.0.1", "-advertise", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-log-level", "warn")
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	cfg := api.DefaultConfig()
	cfg.Address = a.addr
	if a.client, err = api.NewClient(cfg); err != nil {
		a.stop()
		return nil, err
	}
	err = testenv.WaitFor(30*time.Second, func() error {
		l, err := a.client.Status().Leader()
		if err == nil && l == "" {
			err = errors.New("no leader")
		}
		return err
	})
	if err != nil {
		a.stop()
	}
	return a, err
}

func (a *agent) stop() { _ = a.cmd.Process.Kill(); _ = a.cmd.Wait() }

// register puts n services x 3 instances in the catalog: instance j of
// every service on node scale-j (three hosts), 16 calls at a time, each
// with a deadline. Through the catalog endpoint: agent registrations of
// 30,000 services on one agent take many minutes (anti-entropy), and
// services of other nodes are what a renderer sees in real life.
func (a *agent) register(n int) error {
	g := errgroup.Group{}
	g.SetLimit(16)
	for i := range n {
		for j := range 3 {
			g.Go(func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := a.client.Catalog().Register(&api.CatalogRegistration{
					Node: fmt.Sprintf("scale-%d", j), Address: fmt.Sprintf("192.0.2.%d", j+1),
					Service: &api.AgentService{ID: fmt.Sprintf("s%05d-%d", i, j), Service: fmt.Sprintf("s%05d", i),
						Address: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), Port: 8080},
				}, (&api.WriteOptions{}).WithContext(ctx))
				return err
			})
		}
	}
	return g.Wait()
}
