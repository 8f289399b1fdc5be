package plugin

import (
	"context"
	"fmt"
	"sort"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"
)

// reconcile finishes or undoes scale-ins that an earlier run started but did
// not complete (the agent was restarted, say). An instance marked for
// scale-in, and not being handled by this process now, is terminated when the
// fleet already runs more instances than its target capacity (the capacity
// was lowered) and its node has finished draining; otherwise its node is put
// back to eligible and the mark removed. On change, w is read again.
func (t *TargetPlugin) reconcile(ctx context.Context, log hclog.Logger, cfg *policyConfig, w *world) error {
	var marked []string
	for _, in := range w.instances {
		if _, ok := in.Tags[tagScaleIn]; ok && !t.isInFlight(in.ID) {
			marked = append(marked, in.ID)
		}
	}
	if len(marked) == 0 {
		return nil
	}
	sort.Strings(marked)
	log = log.With("action", "reconcile")
	excess := len(w.instances) - w.req.TargetCapacity
	var terminate []string
	var restore []failure
	for _, id := range marked {
		node, hasNode := w.nodes[id]
		switch {
		case hasNode && node.Drain:
			log.Info("marked instance still draining; will look again", "instance_id", id, "node_id", node.ID)
		case excess > 0 && (!hasNode || node.SchedulingEligibility == api.NodeSchedulingIneligible):
			terminate = append(terminate, id)
			excess--
		case hasNode:
			restore = append(restore, failure{node: node, err: fmt.Errorf("scale-in was interrupted before the target capacity was lowered")})
		default:
			if err := t.fleet.Untag(ctx, []string{id}, tagScaleIn); err != nil {
				return fmt.Errorf("reconciling interrupted scale-in of %s: %w", cfg.FleetID, err)
			}
		}
	}
	t.restore(ctx, log, restore)
	if len(terminate) > 0 {
		results := t.fleet.Terminate(ctx, terminate)
		for _, id := range terminate {
			if err := results[id]; err != nil {
				log.Error("could not terminate instance of an interrupted scale-in", "instance_id", id, "error", err)
				continue
			}
			log.Info("finished interrupted scale-in: terminated drained instance", "instance_id", id,
				"target_capacity", w.req.TargetCapacity, "running_before", len(w.instances))
			if node, ok := w.nodes[id]; ok && cfg.Purge {
				if err := t.nodes.Purge(ctx, node.ID); err != nil {
					log.Warn("could not purge node", "node_id", node.ID, "error", err)
				}
			}
		}
	}
	fresh, err := t.observe(ctx, cfg)
	if err != nil {
		return err
	}
	*w = *fresh
	return nil
}
