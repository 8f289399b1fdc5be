package plugin

import (
	"context"
	"fmt"
	"strings"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// reconcile finishes or undoes scale-ins that an earlier run started but did
// not complete (the agent was restarted, a capacity change kept failing). For
// each instance marked for scale-in and not being handled by this process:
//
//   - its node has no drain of ours, or ours was cancelled: the mark is
//     removed and the node left as it is (an operator's cordon is never read
//     as "drained" and never undone);
//   - our drain still runs: the scale-in is pending (the fleet is not ready);
//   - our drain completed and the node runs no allocation (or its client is
//     gone since), or the instance never joined: the target is lowered if
//     that had not happened yet (never below the target the mark records)
//     and exactly those instances are terminated;
//   - the instance has no node we can see for sure (two nodes claim it, a
//     pool node's id cannot be read, a node of another class has its
//     address), or its node is only disconnected: the mark is removed;
//   - the removal was abandoned: the node goes back into service.
//
// It returns the (re-read, on change) world and the reasons a scale-in is
// still pending. In dry-run it only logs what it would do.
func (t *TargetPlugin) reconcile(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world) (*world, []string, error) {
	log = log.With("action", "reconcile")
	marks := drainMeta(cfg.FleetID)
	var pending []string
	var finish []member
	var abandoned []failure
	var unmark []string
	for _, m := range w.members(cfg) {
		if !m.marked || fs.isInFlight(m.inst.ID) {
			continue
		}
		value := m.inst.Tags[tagScaleIn]
		isAbandoned := strings.HasPrefix(value, abandonedPrefix)
		var last *api.DrainMetadata
		if m.node != nil {
			last = m.node.LastDrain
		}
		ours := nomadnode.DrainedBy(last, marks)
		switch {
		case m.node == nil && (isAbandoned || w.mayHaveNode(m.inst)):
			// Nothing to put back, or a node we cannot see for sure
			// (two nodes claim it, an id that cannot be read): never
			// terminate it undrained.
			unmark = append(unmark, m.inst.ID)
		case m.node == nil:
			finish = append(finish, m) // it never joined: nothing to drain
		case isAbandoned:
			abandoned = append(abandoned, failure{m: m, err: fmt.Errorf("removal abandoned earlier"), started: true})
		case m.phase == nomadnode.PhaseReady:
			// It serves: whatever drain its node once had, this scale-in
			// did not drain it (or an operator put it back). Leave it.
			unmark = append(unmark, m.inst.ID)
		case !ours:
			// Marked before the drain began, or someone else drained or
			// cordoned the node since: not ours to finish. A node that is
			// only disconnected or down is not "drained" either.
			unmark = append(unmark, m.inst.ID)
		case m.phase == nomadnode.PhaseDraining:
			pending = append(pending, fmt.Sprintf("scale-in of instance %s still draining node %s", m.inst.ID, m.node.ID))
		case last.Status == api.DrainStatusCanceled:
			unmark = append(unmark, m.inst.ID)
		case last.Status == api.DrainStatusComplete && m.phase == nomadnode.PhaseDown:
			finish = append(finish, m) // drained, then its client went away
		case last.Status == api.DrainStatusComplete:
			busy, err := nomadnode.RunningAllocations(ctx, t.nodes, m.node.ID, cfg.IgnoreSystemJobs)
			switch {
			case err != nil:
				pending = append(pending, fmt.Sprintf("scale-in of instance %s: cannot read the allocations of node %s: %v", m.inst.ID, m.node.ID, err))
			case busy > 0:
				pending = append(pending, fmt.Sprintf("scale-in of instance %s: drained node %s still runs %d allocations", m.inst.ID, m.node.ID, busy))
			default:
				finish = append(finish, m)
			}
		default:
			pending = append(pending, fmt.Sprintf("scale-in of instance %s: drain of node %s is %s", m.inst.ID, m.node.ID, last.Status))
		}
	}
	if len(finish)+len(abandoned)+len(unmark) == 0 {
		return w, pending, nil
	}
	if cfg.DryRun {
		log.Info("dry-run: would finish or undo an interrupted scale-in", "terminate", memberIDs(finish),
			"put_back", failureIDs(abandoned), "unmark", unmark)
		return w, pending, nil
	}

	for _, id := range unmark {
		if err := t.fleet.Untag(ctx, []string{id}, tagScaleIn); err != nil {
			return nil, nil, fmt.Errorf("reconciling interrupted scale-in of %s: %w", cfg.FleetID, err)
		}
		log.Info("scale-in mark removed: the node was not drained by this plugin", "instance_id", id)
	}
	t.abandon(ctx, log, cfg, abandoned)
	if len(finish) > 0 {
		if why := t.finish(ctx, log, cfg, fs, w, finish); why != "" {
			pending = append(pending, why)
		}
	}
	fresh, err := t.observe(ctx, cfg, fs)
	if err != nil {
		return nil, nil, err
	}
	return fresh, pending, nil
}

// finish completes the removal of drained (or node-less) marked instances:
// lower the target if it was not lowered yet, then terminate exactly them.
// It returns why the scale-in is still pending, or "".
func (t *TargetPlugin) finish(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, ms []member) string {
	target := w.target()
	// Instances beyond the target that do not serve (an operator's cordoned
	// node) and leaving ones are not the room a lowered target leaves.
	c := t.capacityOf(cfg, fs, w, w.members(cfg))
	surplus := len(w.instances) - c.held - c.leaving - target
	if surplus < len(ms) {
		// Lower by the instances not yet given up by the target, but never
		// below the target the scale-in meant to reach (a raise made since
		// is kept).
		// What the uninterrupted scale-in sets: the nodes that still serve,
		// never below the mark's target, never above the target less
		// these instances.
		planned := 0
		for _, m := range ms {
			planned = max(planned, markTarget(m.inst.Tags[tagScaleIn]))
		}
		newTarget := max(0, min(target-(len(ms)-max(0, surplus)), max(planned, c.serving)))
		// One attempt (the client retries transient errors briefly): a
		// status must answer in seconds, and the next one tries again.
		if _, _, err := t.changeTarget(ctx, fs, newTarget-target); err != nil {
			log.Error("could not lower target capacity to finish an interrupted scale-in; the drained nodes stay cordoned", "instances", memberIDs(ms), "error", err)
			return fmt.Sprintf("finishing scale-in of %v: lowering target capacity to %d failed: %v", memberIDs(ms), newTarget, err)
		}
		t.recordEvent(ctx, log, fs)
		target = newTarget
	}
	terminated, failed := t.terminate(ctx, log, cfg, fs, ms)
	log.Info("finished interrupted scale-in", "terminated", memberIDs(terminated), "terminate_failed", failureIDs(failed),
		"target_capacity", target, "running_before", len(w.instances))
	return ""
}
