package plugin

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// Tags the plugin keeps on EC2 resources.
const (
	// tagLastEvent on the fleet request holds the time (Unix ns) of the last
	// scaling action, so cooldowns survive an agent restart.
	tagLastEvent = "nomad-autoscaler:last-event"
	// tagScaleIn on an instance records that a scale-in chose it and when;
	// it is set before the node is drained so that an interrupted scale-in
	// can be finished or undone later.
	tagScaleIn = "nomad-autoscaler:scale-in"
)

// world is one consistent reading of a fleet and its Nomad nodes.
type world struct {
	req       *fleet.Request
	families  []string
	instances []fleet.Instance          // running or pending fleet instances
	nodes     map[string]nomadnode.Node // pool nodes by instance id, fleet instances only
	unmapped  []nomadnode.Unmapped      // pool nodes without a readable instance id
	lastEvent time.Time
}

// observe reads the fleet request, its instances and the pool's nodes.
func (t *TargetPlugin) observe(ctx context.Context, cfg *policyConfig) (*world, error) {
	req, err := t.fleet.Describe(ctx, cfg.FleetID)
	if err != nil {
		return nil, err
	}
	types, err := t.fleet.InstanceTypesOf(ctx, req)
	if err != nil {
		return nil, err
	}
	all, err := t.fleet.Instances(ctx, cfg.FleetID)
	if err != nil {
		return nil, err
	}
	w := &world{req: req, families: fleet.Families(types), nodes: map[string]nomadnode.Node{}}
	for _, in := range all {
		if in.Running() {
			w.instances = append(w.instances, in)
		}
	}
	nodes, unmapped, err := nomadnode.PoolNodes(ctx, t.nodes, cfg.Pool, cfg.IDLookup)
	if err != nil {
		return nil, err
	}
	w.unmapped = unmapped
	running := w.runningIDs()
	for _, n := range nodes {
		if running[n.InstanceID] {
			w.nodes[n.InstanceID] = n
		}
	}
	tags, err := t.fleet.Tags(ctx, cfg.FleetID)
	if err != nil {
		return nil, err
	}
	if v, ok := tags[tagLastEvent]; ok {
		if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
			w.lastEvent = time.Unix(0, ns)
		}
	}
	return w, nil
}

func (w *world) runningIDs() map[string]bool {
	ids := make(map[string]bool, len(w.instances))
	for _, in := range w.instances {
		ids[in.ID] = true
	}
	return ids
}

// check refuses fleets the plugin cannot scale correctly.
func (w *world) check(cfg *policyConfig) error {
	if len(w.families) < cfg.MinFamilies {
		return fmt.Errorf("spot fleet request %s is not diversified: its launch specifications and overrides use instance families [%s], fewer than %s=%d; add launch-template overrides of another family (for example c5 and m5) or lower %s",
			cfg.FleetID, strings.Join(w.families, ", "), configKeyMinFamilies, cfg.MinFamilies, configKeyMinFamilies)
	}
	if len(w.req.Weights) > 0 {
		return fmt.Errorf("spot fleet request %s uses weighted capacity %v: this plugin counts one instance as one node and needs every WeightedCapacity to be 1", cfg.FleetID, w.req.Weights)
	}
	return nil
}

// readyNodes counts the fleet's nodes that are ready and eligible.
func (w *world) readyNodes() int {
	n := 0
	for _, node := range w.nodes {
		if node.Status == api.NodeStatusReady && node.SchedulingEligibility == api.NodeSchedulingEligible && !node.Drain {
			n++
		}
	}
	return n
}
