package plugin

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad-autoscaler/sdk/helper/scaleutils/nodeselector"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// drainedByMeta marks drains this plugin started, as the SDK does.
var drainedByMeta = map[string]string{"drained_by": "nomad-autoscaler"}

// scaleIn removes nodes the safe way: choose them among this fleet's nodes,
// record the intent on their instances, drain them, lower the target capacity
// without letting EC2 terminate anything, then terminate exactly those
// instances. Nodes whose drain or termination fails go back to eligible.
func (t *TargetPlugin) scaleIn(ctx context.Context, log hclog.Logger, cfg *policyConfig, w *world, action sdk.ScalingAction) error {
	from, to := w.req.TargetCapacity, int(action.Count)
	log = log.With("action", "scale_in", "from", from, "to", to)

	// Step 1: choose the nodes.
	victims, err := t.chooseVictims(log, cfg, w, from-to)
	if err != nil {
		return err
	}
	ids := instanceIDs(victims)
	if cfg.DryRun {
		log.Info("dry-run: would drain and terminate", "instances", ids, "reason", action.Reason)
		return nil
	}
	t.setInFlight(ids, true)
	defer t.setInFlight(ids, false)

	// Step 2: record the intent on the instances before touching the nodes.
	intent := map[string]string{tagScaleIn: t.now().UTC().Format(time.RFC3339)}
	if err := t.fleet.Tag(ctx, ids, intent); err != nil {
		return fmt.Errorf("scale in of %s: recording intent before draining: %w", cfg.FleetID, err)
	}

	// Step 3: drain. Nodes whose drain fails are put back and kept.
	drained, failed := t.drainAll(ctx, log, cfg, victims)
	t.restore(ctx, log, failed)
	if len(drained) == 0 {
		return fmt.Errorf("scale in of %s: no node could be drained: %w", cfg.FleetID, joinFailures(failed))
	}

	// Step 4: lower the target capacity by exactly the drained nodes.
	newTarget := from - len(drained)
	if err := t.fleet.SetTargetCapacity(ctx, cfg.FleetID, newTarget); err != nil {
		t.restore(ctx, log, failAll(drained, err))
		return fmt.Errorf("scale in of %s: lowering target capacity to %d (drained nodes put back to eligible): %w", cfg.FleetID, newTarget, err)
	}
	t.recordEvent(ctx, log, cfg.FleetID)

	// Step 5: terminate exactly the drained instances.
	results := t.fleet.Terminate(ctx, instanceIDs(drained))
	var terminated []nomadnode.Node
	var notTerminated []failure
	for _, v := range drained {
		if err := results[v.InstanceID]; err != nil {
			notTerminated = append(notTerminated, failure{node: v, err: err})
		} else {
			terminated = append(terminated, v)
		}
	}
	if len(notTerminated) > 0 {
		// The instances still run: give their capacity back to the target
		// and their nodes back to the scheduler.
		if err := t.fleet.SetTargetCapacity(ctx, cfg.FleetID, newTarget+len(notTerminated)); err != nil {
			log.Error("could not restore target capacity after failed terminations", "target_capacity", newTarget, "error", err)
		}
		t.restore(ctx, log, notTerminated)
	}

	// Step 6: purge the terminated nodes if asked.
	if cfg.Purge {
		for _, v := range terminated {
			if err := t.nodes.Purge(ctx, v.ID); err != nil {
				log.Warn("could not purge node", "node_id", v.ID, "instance_id", v.InstanceID, "error", err)
			}
		}
	}

	log.Info("scaled in", "target_capacity", from-len(terminated), "selector", cfg.Selector, "terminated", instanceIDs(terminated),
		"drain_failed", failureIDs(failed), "terminate_failed", failureIDs(notTerminated), "reason", action.Reason)
	if all := append(failed, notTerminated...); len(all) > 0 {
		return fmt.Errorf("scale in of %s: %d of %d nodes removed: %w", cfg.FleetID, len(terminated), len(victims), joinFailures(all))
	}
	return nil
}

// chooseVictims picks n nodes with the policy's SDK node selector among the
// ready nodes that run on this fleet's instances.
func (t *TargetPlugin) chooseVictims(log hclog.Logger, cfg *policyConfig, w *world, n int) ([]nomadnode.Node, error) {
	var candidates []*api.NodeListStub
	byID := map[string]nomadnode.Node{}
	for _, node := range w.nodes {
		if node.Status != api.NodeStatusReady || node.Drain {
			continue
		}
		candidates = append(candidates, node.NodeListStub)
		byID[node.ID] = node
	}
	// Newest first: the SDK's create-index selectors assume this order.
	sort.Slice(candidates, func(i, j int) bool {
		if candidates[i].CreateIndex != candidates[j].CreateIndex {
			return candidates[i].CreateIndex > candidates[j].CreateIndex
		}
		return candidates[i].ID < candidates[j].ID
	})
	for _, u := range w.unmapped {
		log.Warn("pool node left out of scale-in: its instance id is unknown", "node_id", u.NodeID, "error", u.Err)
	}
	if len(candidates) == 0 {
		return nil, sdk.NewTargetScalingNoOpError("scale in of %s: no ready node of the pool (%s) runs on the fleet's %d instances",
			cfg.FleetID, cfg.Pool, len(w.instances))
	}
	if n > len(candidates) {
		log.Warn("fewer removable nodes than requested", "requested", n, "available", len(candidates))
		n = len(candidates)
	}
	selector, err := nodeselector.NewSelector(map[string]string{configKeySelectorStrategy: cfg.Selector}, t.nomadAPI, log)
	if err != nil {
		return nil, fmt.Errorf("scale in of %s: %w", cfg.FleetID, err)
	}
	chosen := selector.Select(candidates, n)
	if len(chosen) == 0 {
		return nil, sdk.NewTargetScalingNoOpError("scale in of %s: node selector %s chose no node among %d", cfg.FleetID, cfg.Selector, len(candidates))
	}
	out := make([]nomadnode.Node, 0, len(chosen))
	for _, c := range chosen {
		out = append(out, byID[c.ID])
	}
	return out, nil
}

// failure is a node whose removal stopped at some step.
type failure struct {
	node nomadnode.Node
	err  error
}

func failAll(nodes []nomadnode.Node, err error) []failure {
	out := make([]failure, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, failure{node: n, err: err})
	}
	return out
}

// drainAll drains the nodes concurrently and splits them by outcome.
func (t *TargetPlugin) drainAll(ctx context.Context, log hclog.Logger, cfg *policyConfig, nodes []nomadnode.Node) ([]nomadnode.Node, []failure) {
	spec := &api.DrainSpec{Deadline: cfg.DrainDeadline, IgnoreSystemJobs: cfg.IgnoreSystemJobs}
	// Leave time after a forced drain for the allocations to stop.
	ctx, cancel := context.WithTimeout(ctx, cfg.DrainDeadline+2*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var drained []nomadnode.Node
	var failed []failure
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.Info("draining node", "node_id", n.ID, "instance_id", n.InstanceID, "deadline", cfg.DrainDeadline.String())
			err := t.nodes.Drain(ctx, n.ID, spec, drainedByMeta)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, failure{node: n, err: err})
				return
			}
			drained = append(drained, n)
		}()
	}
	wg.Wait()
	sort.Slice(drained, func(i, j int) bool { return drained[i].InstanceID < drained[j].InstanceID })
	return drained, failed
}

// restore puts nodes back into service after a failed removal: eligible for
// scheduling again, and their instance no longer marked for scale-in.
func (t *TargetPlugin) restore(ctx context.Context, log hclog.Logger, failed []failure) {
	for _, f := range failed {
		log.Warn("node kept after failed removal; marking it eligible", "node_id", f.node.ID, "instance_id", f.node.InstanceID, "error", f.err)
		if err := t.nodes.SetEligibility(ctx, f.node.ID, true); err != nil {
			log.Error("could not mark node eligible again", "node_id", f.node.ID, "error", err)
		}
		if err := t.fleet.Untag(ctx, []string{f.node.InstanceID}, tagScaleIn); err != nil {
			log.Error("could not remove the scale-in mark from the instance", "instance_id", f.node.InstanceID, "error", err)
		}
	}
}

func instanceIDs(nodes []nomadnode.Node) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.InstanceID)
	}
	return out
}

func failureIDs(fs []failure) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.node.InstanceID)
	}
	return out
}

func joinFailures(fs []failure) error {
	errs := make([]error, 0, len(fs))
	for _, f := range fs {
		errs = append(errs, fmt.Errorf("node %s (instance %s): %w", f.node.ID, f.node.InstanceID, f.err))
	}
	return errors.Join(errs...)
}
