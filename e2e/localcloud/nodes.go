package localcloud

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"
)

// MetaInstanceID and MetaInstanceType are the client meta keys that carry a
// node's EC2 instance ID and type (the local cloud has no AWS fingerprinter);
// MetaNodeDir carries the node's own directory (Cloud.NodeDir). The cloud
// always sets all three; ClientOptions.Meta cannot override them.
const (
	MetaInstanceID   = "ec2_instance_id"
	MetaInstanceType = "ec2_instance_type"
	MetaNodeDir      = "node_dir"
)

// NomadClient returns a Nomad API client for the local server.
func (c *Cloud) NomadClient() (*api.Client, error) {
	if c.server == nil {
		return nil, errors.New("localcloud: the Nomad server is not running")
	}
	cl, err := api.NewClient(&api.Config{Address: c.NomadAddr()})
	if err != nil {
		return nil, fmt.Errorf("localcloud: create Nomad API client: %w", err)
	}
	return cl, nil
}

// WaitNodesReady waits until exactly n nodes are ready and eligible, and
// returns them (full node records, meta included).
func (c *Cloud) WaitNodesReady(ctx context.Context, n int) ([]*api.Node, error) {
	cl, err := c.NomadClient()
	if err != nil {
		return nil, err
	}
	var last int
	for {
		stubs, _, err := cl.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
		if err == nil {
			var ready []*api.NodeListStub
			for _, s := range stubs {
				if s.Status == api.NodeStatusReady && s.SchedulingEligibility == api.NodeSchedulingEligible {
					ready = append(ready, s)
				}
			}
			last = len(ready)
			if len(ready) == n {
				nodes := make([]*api.Node, 0, n)
				for _, s := range ready {
					node, _, err := cl.Nodes().Info(s.ID, (&api.QueryOptions{}).WithContext(ctx))
					if err != nil {
						return nil, fmt.Errorf("localcloud: read node %s: %w", s.ID, err)
					}
					nodes = append(nodes, node)
				}
				return nodes, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("localcloud: wait for %d ready nodes (have %d): %w", n, last, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// NodeByInstance returns the newest node whose meta.ec2_instance_id is
// instanceID.
func (c *Cloud) NodeByInstance(ctx context.Context, instanceID string) (*api.Node, error) {
	cl, err := c.NomadClient()
	if err != nil {
		return nil, err
	}
	stubs, _, err := cl.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("localcloud: list nodes: %w", err)
	}
	var best *api.Node
	for _, s := range stubs {
		if s.Name != instanceID { // node name = instance ID; confirmed by meta below
			continue
		}
		node, _, err := cl.Nodes().Info(s.ID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("localcloud: read node %s: %w", s.ID, err)
		}
		if node.Meta[MetaInstanceID] == instanceID && (best == nil || node.CreateIndex > best.CreateIndex) {
			best = node
		}
	}
	if best == nil {
		return nil, fmt.Errorf("localcloud: no node with meta.%s=%s", MetaInstanceID, instanceID)
	}
	return best, nil
}

// WaitNodeStatus waits until the node of instanceID has the given status
// ("ready", "down", ...).
func (c *Cloud) WaitNodeStatus(ctx context.Context, instanceID, status string) (*api.Node, error) {
	var lastErr error
	for {
		node, err := c.NodeByInstance(ctx, instanceID)
		if err == nil && node.Status == status {
			return node, nil
		}
		if err != nil {
			lastErr = err
		} else {
			lastErr = fmt.Errorf("node %s is %s", node.ID, node.Status)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("localcloud: wait for the node of %s to be %s: %w (%v)", instanceID, status, ctx.Err(), lastErr)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
