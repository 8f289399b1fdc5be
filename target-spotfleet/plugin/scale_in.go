package plugin

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad-autoscaler/sdk/helper/scaleutils/nodeselector"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/awsretry"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// drainStopMargin is how long after the drain deadline the allocations a
// forced drain stops get to end (their kill_timeout).
const drainStopMargin = 5 * time.Minute

// drainMeta marks the drains this plugin starts for a fleet: the SDK's
// drained_by plus the fleet, so that an operator's drain (or another
// autoscaler's) is never taken for ours.
func drainMeta(fleetID string) map[string]string {
	return map[string]string{"drained_by": "nomad-autoscaler", "spot_fleet_request_id": fleetID}
}

// cancelMeta is the drain meta of the plugin's own cancel: drainMeta plus
// cancelled_by, so that a drain of ours cancelled by someone else (no meta:
// Nomad keeps ours) can be told from one the plugin gave up.
func cancelMeta(fleetID string) map[string]string {
	m := drainMeta(fleetID)
	m[cancelledByKey] = PluginName
	return m
}

const cancelledByKey = "cancelled_by"

// cancelledBySomeoneElse reports whether the node's last drain is one of
// this plugin's that someone else cancelled (nomad node drain -disable): an
// operator's decision to keep the node, which scale-in respects.
func cancelledBySomeoneElse(n *nomadnode.Node, fleetID string) bool {
	d := n.LastDrain
	return nomadnode.DrainedBy(d, drainMeta(fleetID)) && d.Status == api.DrainStatusCanceled && d.Meta[cancelledByKey] == ""
}

// markValue is the scale-in mark: the target capacity the scale-in means to
// reach and when it began.
func markValue(target int, at time.Time) string {
	return fmt.Sprintf("to=%d at=%s", target, at.UTC().Format(time.RFC3339))
}

// abandonedPrefix starts the mark of a removal that was given up: the node
// goes back into service and the mark is removed once that succeeded.
const abandonedPrefix = "abandoned"

// markTarget reads the target capacity a mark records, or -1.
func markTarget(v string) int {
	for _, f := range strings.Fields(v) {
		if s, ok := strings.CutPrefix(f, "to="); ok {
			if n, err := strconv.Atoi(s); err == nil {
				return n
			}
		}
	}
	return -1
}

// scaleIn lowers the target capacity to action.Count and removes
// max(0, serving - desired) instances (see serving: draining, cordoned and
// down nodes are not counted), the safe way: instances that never
// joined Nomad first (nothing to drain), then nodes chosen by the policy's
// selector among this fleet's ready nodes. Before anything is drained it
// checks that the fleet can be changed; it records the intent on the
// instances, drains, lowers the target by the difference (read again just
// before the change, retried with backoff; drained nodes stay cordoned if it
// keeps failing, for reconciliation to finish), then terminates exactly those
// instances. A node whose drain fails goes back into service.
func (t *TargetPlugin) scaleIn(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, action sdk.ScalingAction) error {
	to := int(action.Count)
	log = log.With("action", "scale_in", "to", to, "running", len(w.instances))
	c := t.capacityOf(cfg, fs, w, w.members(cfg))
	n := max(0, c.serving-to)
	if n == 0 {
		return t.lowerTargetOnly(ctx, log, cfg, fs, w, c, action)
	}

	// A removal that failed after its drain began (EC2 refused the
	// termination or the capacity change, someone cancelled the drain) is
	// not retried at once: every retry would drain a node again.
	if until, why := fs.removalBlocked(t.now()); why != "" {
		return sdk.NewTargetScalingNoOpError("scale in of %s: not draining again before %s after a failed removal: %s",
			cfg.FleetID, until.UTC().Format(time.RFC3339), why)
	}
	// A provisional choice: when nothing can be removed, say so without
	// touching the fleet.
	victims, err := t.chooseVictims(log, cfg, w, n, to)
	if err != nil {
		return err
	}
	if cfg.DryRun {
		log.Info("dry-run: would drain and terminate", "instances", memberIDs(victims), "reason", action.Reason)
		return nil
	}

	// Step 1: can the fleet be changed at all? Checked before any drain, so
	// that a refusal (IAM, fleet type or state) never drains a node.
	if _, err := t.fleet.CheckModifiable(ctx, cfg.FleetID); err != nil {
		return fmt.Errorf("scale in of %s: not draining anything: %w", cfg.FleetID, err)
	}

	// Step 2: choose again on the pool's nodes read again now: the check may
	// have waited for the fleet, and another node may have begun to drain
	// since the observation. (The instances are those observed: capacity
	// that appears meanwhile is not counted on.)
	if w, err = t.refreshNodes(ctx, cfg, fs, w); err != nil {
		return err
	}
	c = t.capacityOf(cfg, fs, w, w.members(cfg))
	from, live := w.target(), c.serving
	if n = max(0, live-to); n == 0 {
		return t.lowerTargetOnly(ctx, log, cfg, fs, w, c, action)
	}
	if victims, err = t.chooseVictims(log, cfg, w, n, to); err != nil {
		return err
	}
	// Nodes this plugin cordoned on a rebalance recommendation go with
	// the first scale-in: they serve nothing new, and without it they would
	// outlive every scale-in. They are not serving, so they do not count
	// against the nodes removed.
	servingVictims := len(victims)
	victims = append(victims, atRisk(w.members(cfg))...)
	log = log.With("from", c.count)
	ids := memberIDs(victims)
	plannedTarget := max(to, live-servingVictims)
	if err := t.fleet.CheckTerminate(ctx, ids); err != nil {
		return fmt.Errorf("scale in of %s: not draining anything: %w", cfg.FleetID, err)
	}

	fs.setInFlight(ids, true)
	defer fs.setInFlight(ids, false)
	for _, id := range ids {
		fs.stopProvisioning(id)
	}

	// Step 3: record the intent on the instances before touching the nodes.
	if err := t.fleet.Tag(ctx, ids, map[string]string{tagScaleIn: markValue(plannedTarget, t.now())}); err != nil {
		return fmt.Errorf("scale in of %s: recording intent before draining: %w", cfg.FleetID, err)
	}

	// Step 4: drain. Nodes whose drain fails go back into service.
	removable, failed := t.drainAll(ctx, log, cfg, victims)
	t.abandon(ctx, log, cfg, failed)
	for _, f := range failed {
		if f.started {
			// A drain that ended without completing (cancelled by
			// someone, the node went down) is not started again at the
			// next evaluation.
			fs.removalFailed(t.now(), f.err)
			break
		}
	}
	if len(removable) == 0 {
		return fmt.Errorf("scale in of %s: no node could be drained: %w", cfg.FleetID, joinFailures(failed))
	}

	// Step 5: lower the target by the difference, read again just before.
	servingRemoved := 0
	for _, m := range removable {
		if !m.atRisk {
			servingRemoved++
		}
	}
	newTarget := max(to, live-servingRemoved)
	if err := t.changeCapacityPatiently(ctx, log, cfg, fs, newTarget-from); err != nil {
		fs.removalFailed(t.now(), err)
		log.Error("scale in: capacity change keeps failing after the drain; drained nodes stay cordoned and marked, the next status finishes the scale-in",
			"instances", memberIDs(removable), "error", err)
		return fmt.Errorf("scale in of %s: lowering target capacity by %d after draining %v (the nodes stay drained; reconciliation retries): %w",
			cfg.FleetID, from-newTarget, memberIDs(removable), err)
	}
	t.recordEvent(ctx, log, fs)

	// Step 6: terminate exactly those instances; purge their nodes.
	terminated, notTerminated := t.terminate(ctx, log, cfg, fs, removable)

	switch {
	case len(notTerminated) > 0:
		fs.removalFailed(t.now(), joinFailures(notTerminated))
	case len(failed) == 0:
		fs.removalSucceeded()
	}
	log.Info("scaled in", "target_capacity", newTarget, "selector", cfg.Selector, "terminated", memberIDs(terminated),
		"drain_failed", failureIDs(failed), "terminate_failed", failureIDs(notTerminated), "reason", action.Reason)
	if all := append(failed, notTerminated...); len(all) > 0 {
		return fmt.Errorf("scale in of %s: %d of %d instances removed: %w", cfg.FleetID, len(terminated), len(victims), joinFailures(all))
	}
	return nil
}

// lowerTargetOnly is the scale-in of a fleet where no more instances serve
// than desired (capacity still coming, or a shortage): only the target goes
// down, to the desired count plus the instances that do not serve; every
// running node stays.
func (t *TargetPlugin) lowerTargetOnly(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, c capacity, action sdk.ScalingAction) error {
	from, to := w.target(), int(action.Count)
	goal := min(from, to+c.held)
	if goal == from {
		log.Info("no scaling needed", "count", c.count, "target_capacity", from, "serving", c.serving, "desired", to, "reason", action.Reason)
		return nil
	}
	if cfg.DryRun {
		log.Info("dry-run: would lower target capacity only", "target_capacity", goal, "reason", action.Reason)
		return nil
	}
	_, after, err := t.changeTarget(ctx, fs, goal-from)
	if err != nil {
		return fmt.Errorf("scale in of %s from %d to %d: %w", cfg.FleetID, c.count, to, err)
	}
	t.recordEvent(ctx, log, fs)
	log.Info("scaled in: lowered target capacity only; no running node removed", "from", c.count,
		"target_capacity", after, "why", fmt.Sprintf("%d instances serve, not more than the %d desired", c.serving, to), "reason", action.Reason)
	return nil
}

// refreshNodes returns a copy of w with the pool's nodes read again.
func (t *TargetPlugin) refreshNodes(ctx context.Context, cfg *policyConfig, fs *fleetState, w *world) (*world, error) {
	listing, err := t.mapper.PoolNodes(ctx, t.nodes, cfg.Pool, cfg.IDLookup)
	if err != nil {
		return nil, err
	}
	fresh := *w
	fresh.at = t.now()
	fresh.unmapped, fresh.addresses = listing.Unmapped, listing.Addresses
	fresh.nodes = map[string]nomadnode.Node{}
	running := w.runningIDs()
	for _, n := range listing.Nodes {
		if running[n.InstanceID] {
			fresh.nodes[n.InstanceID] = n
		}
	}
	fresh.seenReady = fs.noteReady(listing.Nodes)
	fs.mu.Lock()
	fs.last = &fresh
	fs.mu.Unlock()
	return &fresh, nil
}

// changeCapacityPatiently changes the target capacity by delta from the
// target read just before, retrying errors worth retrying (throttling,
// faults, network, a fleet still modifying) with backoff for up to
// capacityRetry. Retries set the same absolute target, so a change EC2
// applied but whose answer was lost is not applied twice.
func (t *TargetPlugin) changeCapacityPatiently(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, delta int) error {
	if delta == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.capacityRetry)
	defer cancel()
	pause := t.pollInterval
	goal := -1
	// A departure's replacement unit (raised or given back meanwhile)
	// moves the goal with it.
	var raisedAtGoal int
	attempt := func() error {
		// Wait for a modifying fleet outside the lock (Status reads under it).
		if _, err := t.fleet.WaitModifiable(ctx, cfg.FleetID); err != nil {
			return err
		}
		fs.targetMu.Lock()
		defer fs.targetMu.Unlock()
		if goal < 0 {
			req, err := t.fleet.WaitModifiable(ctx, cfg.FleetID)
			if err != nil {
				return err
			}
			goal, raisedAtGoal = max(0, req.TargetCapacity+delta), fs.raisedUnits()
		}
		return t.fleet.SetTargetCapacity(ctx, cfg.FleetID, max(0, goal+fs.raisedUnits()-raisedAtGoal))
	}
	for {
		err := attempt()
		if err == nil {
			return nil
		}
		if !awsretry.IsRetryable(err) && !errors.Is(err, fleet.ErrStillModifying) {
			return err
		}
		if awsretry.IsThrottling(err) || errors.Is(err, fleet.ErrStillModifying) || fleet.ErrorCode(err) == fleet.CodeFleetNotInModifiableState {
			goal = -1 // certainly not applied: read the target again, keep changes made meanwhile
		}
		log.Warn("capacity change failed; retrying", "delta", delta, "target_capacity", goal, "in", pause.String(), "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up after %s)", err, t.capacityRetry)
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// terminate terminates exactly the given instances and purges their nodes.
// Instances EC2 refuses to terminate get their capacity back on the target
// and their nodes back into service.
func (t *TargetPlugin) terminate(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, ms []member) ([]member, []failure) {
	// Terminate hooks are claimed and recorded while the instances still
	// run, so that a restart right after the termination finishes them.
	jobs := map[string]*farewellJob{}
	for _, m := range ms {
		jobs[m.inst.ID] = t.claimFarewell(ctx, log, cfg, fs, m.inst, m.node)
	}
	results := t.fleet.Terminate(ctx, memberIDs(ms))
	var terminated []member
	var notTerminated []failure
	for _, m := range ms {
		if err := results[m.inst.ID]; err != nil {
			notTerminated = append(notTerminated, failure{m: m, err: err, started: m.node != nil})
			t.dropFarewell(ctx, log, fs, jobs[m.inst.ID])
		} else {
			terminated = append(terminated, m)
			if job := jobs[m.inst.ID]; job != nil {
				t.runFarewell(log, cfg, fs, job)
			}
		}
	}
	if len(notTerminated) > 0 {
		if _, _, err := t.changeTarget(ctx, fs, len(notTerminated)); err != nil {
			log.Error("could not give the capacity of instances EC2 did not terminate back to the target", "instances", failureIDs(notTerminated), "error", err)
		}
		t.abandon(ctx, log, cfg, notTerminated)
	}
	if cfg.Purge {
		// Purged while its client still runs (the instance takes a while
		// to shut down), a node would register again, eligible: it is
		// purged once Nomad has marked it down.
		for _, m := range terminated {
			if m.node != nil {
				fs.queuePurge(m.node.ID, m.inst.ID)
			}
		}
		t.purgeDown(ctx, log, fs)
	}
	return terminated, notTerminated
}

// purgeDown purges the queued nodes of terminated instances that Nomad has
// marked down (or already forgotten).
func (t *TargetPlugin) purgeDown(ctx context.Context, log hclog.Logger, fs *fleetState) {
	for nodeID, instanceID := range fs.purgeQueue() {
		n, err := t.nodes.NodeInfo(ctx, nodeID)
		switch {
		case err != nil && !nomadnode.IsTransient(err) && ctx.Err() == nil:
			fs.purged(nodeID) // gone already
		case err != nil || n.Status != api.NodeStatusDown:
			// Not down yet: next time.
		default:
			if err := t.nodes.Purge(ctx, nodeID); err != nil {
				log.Warn("could not purge node", "node_id", nodeID, "instance_id", instanceID, "error", err)
				continue
			}
			fs.purged(nodeID)
			log.Info("purged the node of a terminated instance", "node_id", nodeID, "instance_id", instanceID)
		}
	}
}

// chooseVictims picks n instances: first those that never joined Nomad
// within node_join_timeout, then nodes chosen by the policy's SDK node
// selector among this fleet's ready nodes. Nodes that join, drain, are
// cordoned (an operator's choice, never undone here) or that another node
// claims the instance of are never chosen.
//
// At most max(0, ready - desired) ready nodes are chosen, so that nodes still
// joining never count as the capacity that replaces the ready ones removed.
func (t *TargetPlugin) chooseVictims(log hclog.Logger, cfg *policyConfig, w *world, n, desired int) ([]member, error) {
	var out []member
	var candidates []*api.NodeListStub
	byNode := map[string]member{}
	ms := w.members(cfg)
	for _, m := range ms {
		switch {
		case m.marked, m.leaving:
		case m.notJoined:
			if len(out) < n {
				out = append(out, m)
			}
		case m.phase == nomadnode.PhaseReady && cancelledBySomeoneElse(m.node, cfg.FleetID):
			log.Info("node not chosen: someone cancelled this plugin's drain of it", "node_id", m.node.ID, "instance_id", m.inst.ID)
		case m.phase == nomadnode.PhaseReady:
			candidates = append(candidates, m.node.NodeListStub)
			byNode[m.node.ID] = m
		}
	}
	for _, u := range w.unmapped {
		log.Warn("pool node left out of scale-in", "node_id", u.NodeID, "error", u.Err)
	}
	ready := 0 // every ready node, kept ones included: none stands in for another
	for _, m := range ms {
		if !m.marked && !m.leaving && m.phase == nomadnode.PhaseReady {
			ready++
		}
	}
	if rest := min(n-len(out), ready-desired, len(candidates)); rest > 0 {
		// Newest first: the SDK's create-index selectors assume this order.
		sort.Slice(candidates, func(i, j int) bool {
			if candidates[i].CreateIndex != candidates[j].CreateIndex {
				return candidates[i].CreateIndex > candidates[j].CreateIndex
			}
			return candidates[i].ID < candidates[j].ID
		})
		selector, err := nodeselector.NewSelector(map[string]string{configKeySelectorStrategy: cfg.Selector}, t.nomadAPI, log)
		if err != nil {
			return nil, fmt.Errorf("scale in of %s: %w", cfg.FleetID, err)
		}
		for _, c := range selector.Select(candidates, rest) {
			out = append(out, byNode[c.ID])
		}
	}
	if len(out) < n {
		log.Warn("fewer removable instances than requested", "requested", n, "removable", len(out), "ready_nodes", len(candidates), "desired", desired)
	}
	if len(out) == 0 {
		return nil, sdk.NewTargetScalingNoOpError("scale in of %s: no removable instance: %d ready nodes of the pool (%s) among the fleet's %d instances, %d desired",
			cfg.FleetID, len(candidates), cfg.Pool, len(w.instances), desired)
	}
	return out, nil
}

// failure is an instance whose removal stopped at some step.
type failure struct {
	m   member
	err error
	// started says this removal started a drain on the node: only then is
	// the node put back into service (never a node it did not touch).
	started bool
}

// drainAll drains the victims that have a node, concurrently, and splits
// them by outcome; victims without a node need no drain. A drain rides out
// transient Nomad errors until the drain deadline (plus time for the
// allocations to stop) has passed.
func (t *TargetPlugin) drainAll(ctx context.Context, log hclog.Logger, cfg *policyConfig, victims []member) ([]member, []failure) {
	spec := &api.DrainSpec{Deadline: cfg.DrainDeadline, IgnoreSystemJobs: cfg.IgnoreSystemJobs}
	marks := drainMeta(cfg.FleetID)
	ctx, cancel := context.WithTimeout(ctx, cfg.DrainDeadline+drainStopMargin)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var done []member
	var failed []failure
	for _, v := range victims {
		if v.node == nil || (v.notJoined && !t.hasWork(ctx, cfg, v)) {
			log.Info("removing instance that never joined Nomad; nothing to drain", "instance_id", v.inst.ID, "launched", v.inst.LaunchTime)
			done = append(done, v)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			started, err := t.drain(ctx, log, cfg, v, spec, marks)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, failure{m: v, err: err, started: started})
				return
			}
			done = append(done, v)
		}()
	}
	wg.Wait()
	sort.Slice(done, func(i, j int) bool { return done[i].inst.ID < done[j].inst.ID })
	return done, failed
}

// drain drains one victim; started says whether a drain was asked for
// (StartDrain may have taken effect even when its answer was lost).
func (t *TargetPlugin) drain(ctx context.Context, log hclog.Logger, cfg *policyConfig, v member, spec *api.DrainSpec, marks map[string]string) (started bool, err error) {
	log = log.With("node_id", v.node.ID, "instance_id", v.inst.ID)
	// The choice was made on an observation that may be seconds old: an
	// operator (or an interruption) may have drained or cordoned the node
	// since. Never take over someone else's drain.
	var n *api.Node
	err = t.withNomadRetry(ctx, log, "reading the node before its drain", func() error {
		var err error
		n, err = t.nodes.NodeInfo(ctx, v.node.ID)
		return err
	})
	if err != nil {
		return false, err
	}
	cordonedByUs := v.atRisk && n.SchedulingEligibility == api.NodeSchedulingIneligible
	if n.Status != api.NodeStatusReady || n.DrainStrategy != nil || (n.SchedulingEligibility != api.NodeSchedulingEligible && !cordonedByUs) {
		return false, fmt.Errorf("node changed since it was chosen (status %s, eligibility %s, draining %t): left alone",
			n.Status, n.SchedulingEligibility, n.DrainStrategy != nil)
	}
	log.Info("draining node", "deadline", cfg.DrainDeadline.String())
	if err := t.withNomadRetry(ctx, log, "starting the drain", func() error {
		return t.nodes.StartDrain(ctx, v.node.ID, spec, marks)
	}); err != nil {
		return true, err
	}
	return true, nomadnode.WaitDrained(ctx, t.nodes, v.node.ID, nomadnode.WaitOptions{
		Marks: marks, IgnoreSystemJobs: cfg.IgnoreSystemJobs, Poll: t.drainPoll,
		OnTransient: func(err error) {
			log.Warn("drain monitor: Nomad did not answer; still waiting for the drain", "error", err)
		},
	})
}

// hasWork reports whether the member's node runs allocations (or cannot be
// read): a node that initializes again after a client restart keeps its
// allocations, and is never terminated without a drain.
func (t *TargetPlugin) hasWork(ctx context.Context, cfg *policyConfig, m member) bool {
	if m.node == nil {
		return false
	}
	busy, err := nomadnode.RunningAllocations(ctx, t.nodes, m.node.ID, cfg.IgnoreSystemJobs)
	return err != nil || busy > 0
}

// withNomadRetry runs fn up to 5 times while it fails with a transient Nomad
// error (a leader election, a reset connection), pausing with backoff.
func (t *TargetPlugin) withNomadRetry(ctx context.Context, log hclog.Logger, what string, fn func() error) error {
	pause := t.drainPoll.Base
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = fn(); err == nil || !nomadnode.IsTransient(err) {
			return err
		}
		log.Warn(what+" failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (%w)", what, err, ctx.Err())
		case <-time.After(pause):
		}
		pause = min(2*pause, t.drainPoll.Max)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// abandon puts nodes back into service after a removal was given up. The
// mark is first changed to "abandoned" (so a restart never finishes the
// removal), then the plugin's drain is cancelled and the node marked eligible
// in one call, and only then is the mark removed. A node drained or
// cordoned by someone else is left as it is.
func (t *TargetPlugin) abandon(ctx context.Context, log hclog.Logger, cfg *policyConfig, failed []failure) {
	for _, f := range failed {
		id := f.m.inst.ID
		if !f.started {
			// Never touched: only the mark goes.
			log.Warn("removal abandoned before its drain; the node is left as it is", "instance_id", id, "error", f.err)
			if err := t.fleet.Untag(ctx, []string{id}, tagScaleIn); err != nil {
				log.Error("could not remove the scale-in mark from the instance", "instance_id", id, "error", err)
			}
			continue
		}
		log.Warn("removal abandoned; putting the node back into service", "instance_id", id, "error", f.err)
		if err := t.fleet.Tag(ctx, []string{id}, map[string]string{tagScaleIn: abandonedPrefix + " at=" + t.now().UTC().Format(time.RFC3339)}); err != nil {
			log.Error("could not mark the removal abandoned on the instance", "instance_id", id, "error", err)
			continue
		}
		if err := t.release(ctx, cfg, f.m); err != nil {
			log.Error("could not put the node back into service; will retry", "instance_id", id, "error", err)
			continue
		}
		if err := t.fleet.Untag(ctx, []string{id}, tagScaleIn); err != nil {
			log.Error("could not remove the scale-in mark from the instance", "instance_id", id, "error", err)
		}
	}
}

// release cancels the plugin's drain of the member's node and marks it
// eligible in one call, unless the node's drain or cordon is someone else's.
func (t *TargetPlugin) release(ctx context.Context, cfg *policyConfig, m member) error {
	if m.node == nil {
		return nil
	}
	n, err := t.nodes.NodeInfo(ctx, m.node.ID)
	if err != nil {
		return err
	}
	if !nomadnode.DrainedBy(n.LastDrain, drainMeta(cfg.FleetID)) {
		return nil // never drained by us: eligible already, or someone else's cordon
	}
	if n.DrainStrategy == nil && n.SchedulingEligibility == api.NodeSchedulingEligible {
		return nil
	}
	if n.DrainStrategy == nil && n.LastDrain.Status == api.DrainStatusCanceled {
		// Cancelled already: by the plugin (then it is eligible), or by
		// someone else, who chose the node's eligibility (-keep-ineligible).
		return nil
	}
	return t.nodes.CancelDrain(ctx, m.node.ID, cancelMeta(cfg.FleetID))
}

func memberIDs(ms []member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.inst.ID)
	}
	return out
}

func failureIDs(fs []failure) []string {
	out := make([]string, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.m.inst.ID)
	}
	return out
}

func joinFailures(fs []failure) error {
	errs := make([]error, 0, len(fs))
	for _, f := range fs {
		node := "no node"
		if f.m.node != nil {
			node = "node " + f.m.node.ID
		}
		errs = append(errs, fmt.Errorf("instance %s (%s): %w", f.m.inst.ID, node, f.err))
	}
	return errors.Join(errs...)
}

// atRisk returns the members whose node this plugin cordoned on a rebalance
// recommendation (rebalance_action = cordon) and that nothing else holds:
// still cordoned, not draining, not leaving, not chosen already.
func atRisk(ms []member) []member {
	var out []member
	for _, m := range ms {
		if m.atRisk {
			out = append(out, m)
		}
	}
	return out
}
