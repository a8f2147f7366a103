package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/switchyard/switchyard/registrar/internal/config"
	"github.com/switchyard/switchyard/registrar/internal/consul"
	"github.com/switchyard/switchyard/registrar/internal/docker"
)

// HostDrainReason is the maintenance reason `registrar drain` sets.
const HostDrainReason = "registrar drain: host maintenance"

// maintCommand is `registrar drain` or `registrar undrain`. A subcommand,
// not an endpoint on --status-addr: that address may be reachable from
// the network and has no authentication, while this acts with the
// operator's own Consul token. It takes the daemon's flags, so the same
// environment file finds the same agent and node.
func maintCommand(name, usage string, on bool, stderr io.Writer) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "[consul://host:port]",
		Flags:     flags(),
		Action: func(c *cli.Context) error {
			cfg, err := configFrom(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			if err := cfg.Validate(); err != nil {
				return cli.Exit("invalid configuration:\n"+err.Error(), 2)
			}
			n, err := hostMaintenance(c.Context, cfg, on)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintf(stderr, "registrar %s: %d services\n", name, n)
			return nil
		},
	}
}

// hostMaintenance puts every service this node's registrar owns into
// maintenance (on) or out of it, and returns how many it changed. It is a
// snapshot: containers started afterwards are not in maintenance.
func hostMaintenance(ctx context.Context, cfg config.Config, on bool) (int, error) {
	node := cfg.NodeName
	if node == "" {
		src, err := docker.New(cfg.DockerHost, nil)
		if err != nil {
			return 0, err
		}
		dctx, cancel := context.WithTimeout(ctx, cfg.IOTimeout)
		node, err = src.NodeName(dctx)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("node name (set --node-name): %w", err)
		}
	}
	cat, err := consul.Open(consulConfig(cfg), node)
	if err != nil {
		return 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.IOTimeout)
	owned, err := cat.Owned(cctx)
	cancel()
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, reg := range owned {
		cctx, cancel := context.WithTimeout(ctx, cfg.IOTimeout)
		err := cat.Maintenance(cctx, reg.ID, on, HostDrainReason)
		cancel()
		errs = append(errs, err)
	}
	return len(owned), errors.Join(errs...)
}
