// Package nomadnode holds the Nomad node operations the plugins need: listing
// the nodes of a pool, mapping them to their cloud instances, a node's phase,
// draining, eligibility and purging. Everything goes through the small API
// interface so that the target's scale paths can be tested without a Nomad
// cluster.
package nomadnode

import (
	"context"
	"fmt"

	"github.com/hashicorp/nomad/api"
)

// API is the part of the Nomad HTTP API the plugins use. Every method is one
// HTTP call; callers decide about retries.
type API interface {
	// ListNodes returns every node the cluster knows, with its last drain.
	ListNodes(ctx context.Context) ([]*api.NodeListStub, error)
	// NodeInfo returns one node with its attributes and meta.
	NodeInfo(ctx context.Context, id string) (*api.Node, error)
	// StartDrain marks the node ineligible and starts draining it; meta is
	// kept in the node's LastDrain so the drain can be told apart later.
	StartDrain(ctx context.Context, id string, spec *api.DrainSpec, meta map[string]string) error
	// CancelDrain cancels any drain of the node and marks it eligible, in
	// one call (Nomad refuses to mark a draining node eligible).
	CancelDrain(ctx context.Context, id string, meta map[string]string) error
	// SetEligibility marks the node eligible or ineligible for scheduling.
	SetEligibility(ctx context.Context, id string, eligible bool) error
	// NodeAllocations returns the allocations placed on the node.
	NodeAllocations(ctx context.Context, id string) ([]*api.Allocation, error)
	// Purge removes the node from the cluster state.
	Purge(ctx context.Context, id string) error
	// ApplyMeta sets (or, for nil values, removes) dynamic node metadata
	// (POST /v1/client/metadata, Nomad 1.5 and later). The server forwards
	// it to the node's client, which must be connected; the client reports
	// the merged meta back to the servers within about 5 to 10 seconds.
	ApplyMeta(ctx context.Context, id string, meta map[string]*string) error
}

// Client implements API with the official Nomad API client.
type Client struct {
	c *api.Client
}

var _ API = (*Client)(nil)

// NewClient returns a Client for the given configuration. It does not dial.
func NewClient(cfg *api.Config) (*Client, error) {
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating Nomad API client: %w", err)
	}
	return &Client{c: c}, nil
}

// Raw returns the underlying Nomad API client (the SDK's node selectors need it).
func (c *Client) Raw() *api.Client { return c.c }

// ListNodes implements API.
func (c *Client) ListNodes(ctx context.Context) ([]*api.NodeListStub, error) {
	nodes, _, err := c.c.Nodes().List((&api.QueryOptions{Params: map[string]string{"resources": "true"}}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing Nomad nodes: %w", err)
	}
	return nodes, nil
}

// NodeInfo implements API.
func (c *Client) NodeInfo(ctx context.Context, id string) (*api.Node, error) {
	n, _, err := c.c.Nodes().Info(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reading Nomad node %s: %w", id, err)
	}
	return n, nil
}

// StartDrain implements API.
func (c *Client) StartDrain(ctx context.Context, id string, spec *api.DrainSpec, meta map[string]string) error {
	if _, err := c.c.Nodes().UpdateDrainOpts(id, &api.DrainOptions{DrainSpec: spec, Meta: meta}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("starting drain of Nomad node %s: %w", id, err)
	}
	return nil
}

// CancelDrain implements API.
func (c *Client) CancelDrain(ctx context.Context, id string, meta map[string]string) error {
	if _, err := c.c.Nodes().UpdateDrainOpts(id, &api.DrainOptions{MarkEligible: true, Meta: meta}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("cancelling drain of Nomad node %s and marking it eligible: %w", id, err)
	}
	return nil
}

// SetEligibility implements API.
func (c *Client) SetEligibility(ctx context.Context, id string, eligible bool) error {
	if _, err := c.c.Nodes().ToggleEligibility(id, eligible, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("setting eligibility of Nomad node %s to %t: %w", id, eligible, err)
	}
	return nil
}

// NodeAllocations implements API.
func (c *Client) NodeAllocations(ctx context.Context, id string) ([]*api.Allocation, error) {
	allocs, _, err := c.c.Nodes().Allocations(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing allocations of Nomad node %s: %w", id, err)
	}
	return allocs, nil
}

// Purge implements API.
func (c *Client) Purge(ctx context.Context, id string) error {
	if _, _, err := c.c.Nodes().Purge(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("purging Nomad node %s: %w", id, err)
	}
	return nil
}

// ApplyMeta implements API.
func (c *Client) ApplyMeta(ctx context.Context, id string, meta map[string]*string) error {
	if _, err := c.c.Nodes().Meta().Apply(&api.NodeMetaApplyRequest{NodeID: id, Meta: meta}, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("setting dynamic metadata of Nomad node %s: %w", id, err)
	}
	return nil
}
