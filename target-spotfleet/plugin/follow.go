package plugin

import (
	"context"
	"fmt"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// survivorGrace is how long after the end of its notice an interrupted
// instance may still run before the plugin terminates it itself (its node
// is drained): EC2 normally reclaims it at the end of the notice.
const survivorGrace = time.Minute

// runTend runs tend every tendInterval until ctx ends.
func (t *TargetPlugin) runTend(ctx context.Context) {
	tick := time.NewTicker(t.tendInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.tend(ctx)
		t.provision(ctx)
	}
}

// tend follows up the departures of every managed fleet (see tendFleet).
// Fleets without departures cost nothing.
func (t *TargetPlugin) tend(ctx context.Context) {
	for _, fs := range t.managed() {
		if len(fs.departureList()) == 0 {
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		if err := t.tendFleet(tctx, fs); err != nil {
			t.logger.Warn("interruption follow-up failed; retrying", "spot_fleet_request_id", fs.id, "error", err)
		}
		cancel()
	}
}

// tendFleet moves each departure of the fleet on: it gives the replacement
// units back once the replacements have launched (or the leaving instance is
// gone), drains nodes that registered after the warning, terminates a
// rebalance-drained instance once it is drained and replaced (and an
// interrupted one that outlived its notice), purges the nodes of gone
// instances (node_purge) and logs a replacement that does not come.
func (t *TargetPlugin) tendFleet(ctx context.Context, fs *fleetState) error {
	cfg := fs.config()
	if cfg.DryRun {
		return nil
	}
	log := t.logger.With("spot_fleet_request_id", fs.id, "action", "interruption")
	all, err := t.fleet.Instances(ctx, fs.id)
	if err != nil {
		return err
	}
	t.noteOwners(fs.id, all)
	running := map[string]fleet.Instance{}
	for _, in := range all {
		if in.Running() {
			running[in.ID] = in
		}
	}
	for _, d := range fs.departureList() {
		if _, ok := running[d.instanceID]; !ok && !d.gone {
			if pd := fs.departureOf(d.instanceID); pd != nil {
				fs.update(pd, func(pd *departure) { pd.gone = true })
			}
		}
	}
	if err := t.giveBackUnits(ctx, log, fs); err != nil {
		return err
	}

	now := t.now()
	for _, d := range fs.departureList() {
		pd := fs.departureOf(d.instanceID)
		if pd == nil {
			continue
		}
		dlog := log.With("instance_id", d.instanceID, "event", string(d.kind))
		if d.step == stepRaised && !d.warnedShort && now.Sub(d.handled) >= cfg.LaunchTimeout {
			fs.update(pd, func(pd *departure) { pd.warnedShort = true })
			dlog.Warn("the replacement of the interrupted instance has not launched within launch_timeout: EC2 finds no spot capacity in the fleet's pools; the status reports the shortage, EC2 keeps trying",
				"launch_timeout", cfg.LaunchTimeout.String(), "target_raised_at", d.handled.UTC().Format(time.RFC3339))
		}
		if d.gone {
			if cfg.Purge && d.nodeID != "" {
				fs.queuePurge(d.nodeID, d.instanceID)
			}
			if d.step != stepRaised {
				fs.forgetDeparture(d.instanceID)
				dlog.Info("interrupted instance is gone; its departure is complete", "replacement", string(d.step), "why", d.why)
			}
			continue
		}
		if d.kind == interruption.KindRebalance && d.drained && t.drainCancelledBySomeone(ctx, cfg, d) {
			// An operator took the node back: it serves again and is
			// counted again (a surplus it leaves is removed as any other).
			// A unit raised for its replacement goes back first.
			if d.step == stepRaised {
				if err := t.giveBackOne(ctx, fs, pd); err != nil {
					dlog.Warn("could not give back the replacement unit of a departure an operator cancelled; retrying", "error", err)
					continue
				}
			}
			if err := t.fleet.Untag(ctx, []string{d.instanceID}, tagInterrupted); err != nil {
				dlog.Warn("could not remove the departure tag from the instance", "error", err)
				continue
			}
			fs.forgetDeparture(d.instanceID)
			if err := t.writeLedger(ctx, fs); err != nil {
				dlog.Warn("could not update the ledger of replacement units; retried at the next status", "error", err)
			}
			dlog.Info("the rebalance drain was cancelled by someone else: the node serves again and the departure is dropped", "node_id", d.nodeID)
			continue
		}
		if !d.drained {
			if err := t.drainLeaving(ctx, dlog, cfg, fs, pd); err != nil {
				dlog.Warn("could not drain the node of the leaving instance; retrying", "error", err)
			}
		}
		if t.shouldTerminate(ctx, cfg, fs.snapshot(pd), now) {
			res := t.fleet.Terminate(ctx, []string{d.instanceID})
			if err := res[d.instanceID]; err != nil {
				dlog.Warn("could not terminate the drained leaving instance; retrying", "error", err)
				continue
			}
			fs.update(pd, func(pd *departure) { pd.terminated, pd.gone = true, true })
			t.farewellOf(ctx, dlog, cfg, fs, d.instanceID)
			why := "drained on a rebalance recommendation and replaced"
			if d.kind == interruption.KindSpotInterruption {
				why = fmt.Sprintf("still running %s after the end of its notice", now.Sub(d.noticeEnd()).Round(time.Second))
			}
			dlog.Info("terminated the leaving instance", "why", why)
		}
	}
	if !cfg.DryRun {
		t.purgeDown(ctx, log, fs)
	}
	return nil
}

// giveBackUnits lowers the target (noTermination) by the replacement units
// no longer needed: all of them once the instances that are not leaving
// fill the target without them (the replacements have launched), else those
// of departures whose instance is gone (EC2 would refill it otherwise, on
// top of the replacement).
func (t *TargetPlugin) giveBackUnits(ctx context.Context, log hclog.Logger, fs *fleetState) error {
	if fs.raisedUnits() == 0 {
		return nil
	}
	// Wait for a modifying fleet outside the lock (Status reads under it).
	if _, err := t.fleet.WaitModifiable(ctx, fs.id); err != nil {
		return err
	}
	fs.targetMu.Lock()
	defer fs.targetMu.Unlock()
	var raised, goneRaised []*departure
	for _, d := range fs.departureList() {
		if d.step != stepRaised {
			continue
		}
		pd := fs.departureOf(d.instanceID)
		raised = append(raised, pd)
		if d.gone {
			goneRaised = append(goneRaised, pd)
		}
	}
	if len(raised) == 0 {
		return nil
	}
	// Target and instances are read under targetMu, after the departures
	// they are compared with: a warning handled meanwhile cannot make its
	// own instance count as its replacement.
	req, err := t.fleet.Describe(ctx, fs.id)
	if err != nil {
		return err
	}
	all, err := t.fleet.Instances(ctx, fs.id)
	if err != nil {
		return err
	}
	nonLeaving := 0
	for _, in := range all {
		if _, marked := in.Tags[tagScaleIn]; in.Running() && !marked && !fs.leaving(in.ID) {
			nonLeaving++
		}
	}
	effective := req.TargetCapacity - len(raised)
	back, why := goneRaised, "the interrupted instance is gone"
	if nonLeaving >= effective {
		back, why = raised, "the replacement has launched"
	}
	if len(back) == 0 {
		return nil
	}
	from, to, err := t.fleet.ChangeTargetCapacity(ctx, fs.id, -len(back))
	if err != nil {
		return fmt.Errorf("giving back %d replacement units: %w", len(back), err)
	}
	for _, d := range back {
		fs.update(d, func(d *departure) { d.step = stepLowered })
	}
	if err := t.writeLedger(ctx, fs); err != nil {
		log.Warn("could not update the ledger of replacement units on the fleet request; retried at the next status", "error", err)
	}
	for _, d := range back {
		snap := fs.snapshot(d)
		if !snap.gone {
			if err := t.fleet.Tag(ctx, []string{snap.instanceID}, map[string]string{tagInterrupted: snap.tagValue()}); err != nil {
				log.Warn("could not record on the instance that its replacement unit was given back", "instance_id", snap.instanceID, "error", err)
			}
		}
	}
	log.Info("replacement unit given back: target capacity lowered (noTermination), so EC2's refill of the leaving instance adds nothing",
		"why", why, "instances", departureIDs(back), "target_capacity", to, "read_before_change", from, "not_leaving", nonLeaving)
	return nil
}

func departureIDs(ds []*departure) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.instanceID)
	}
	return out
}

// shouldTerminate reports whether the plugin terminates a leaving instance
// itself: a rebalance-drained one once its node is drained and its
// replacement unit was given back (EC2 will not reclaim it), and an
// interrupted one still running survivorGrace after its notice ended.
func (t *TargetPlugin) shouldTerminate(ctx context.Context, cfg *policyConfig, d departure, now time.Time) bool {
	if d.terminated || d.gone || cfg.DryRun {
		return false
	}
	if d.kind == interruption.KindSpotInterruption {
		return now.After(d.noticeEnd().Add(survivorGrace)) && t.drainedOrDown(ctx, cfg, d)
	}
	return d.step != stepRaised && d.step != stepPending && t.drainedOrDown(ctx, cfg, d)
}

// drainedOrDown reports whether the departure's node finished our drain
// and runs nothing, or is down, or never registered.
func (t *TargetPlugin) drainedOrDown(ctx context.Context, cfg *policyConfig, d departure) bool {
	if d.nodeID == "" {
		return true // no pool node registered for it: nothing runs there
	}
	if !d.drained {
		return false
	}
	n, err := t.nodes.NodeInfo(ctx, d.nodeID)
	if err != nil {
		return false
	}
	if n.Status == api.NodeStatusDown {
		return true
	}
	if n.DrainStrategy != nil || !nomadnode.DrainedBy(n.LastDrain, drainMeta(cfg.FleetID)) || n.LastDrain.Status != api.DrainStatusComplete {
		return false
	}
	busy, err := nomadnode.RunningAllocations(ctx, t.nodes, d.nodeID, cfg.IgnoreSystemJobs)
	return err == nil && busy == 0
}

// surplusSettle is how long more instances must serve than the target holds
// before the surplus is removed: EC2's lists settle after a change.
const defaultSurplusSettle = 30 * time.Second

// checkSurplus notes whether more instances serve than the target (without
// replacement units) holds, and once that has lasted surplusSettle, removes
// the surplus in the background: drained and terminated like a scale-in
// that keeps the target. A surplus comes from a race of EC2's refill with a
// replacement, or from a target lowered by someone with noTermination.
func (t *TargetPlugin) checkSurplus(log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, c capacity) {
	surplus := c.serving - w.target()
	now := t.now()
	fs.mu.Lock()
	if surplus <= 0 || cfg.DryRun || !w.req.Modifiable() {
		fs.surplusSince = time.Time{}
		fs.mu.Unlock()
		return
	}
	if fs.surplusSince.IsZero() {
		fs.surplusSince = now
	}
	start := !fs.surplusBusy && now.Sub(fs.surplusSince) >= t.surplusSettle
	if start {
		fs.surplusBusy = true
	}
	fs.mu.Unlock()
	if !start {
		return
	}
	t.removals.Add(1)
	go func() {
		defer t.removals.Done()
		defer func() {
			fs.mu.Lock()
			fs.surplusBusy, fs.surplusSince = false, time.Time{}
			fs.mu.Unlock()
		}()
		t.removeSurplus(log, cfg, fs)
	}()
}

// removeSurplus re-reads the fleet under the fleet's op lock and removes the
// instances that serve beyond the target.
func (t *TargetPlugin) removeSurplus(log hclog.Logger, cfg *policyConfig, fs *fleetState) {
	fs.op.Lock()
	defer fs.op.Unlock()
	fs.begin("removing surplus instances", t.now())
	defer fs.end()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainDeadline+t.capacityRetry+5*time.Minute)
	defer cancel()
	w, err := t.observe(ctx, cfg, fs)
	if err != nil {
		log.Warn("surplus check: could not read the fleet", "error", err)
		return
	}
	c := t.capacityOf(cfg, fs, w, w.members(cfg))
	surplus := c.serving - w.target()
	if surplus <= 0 {
		return
	}
	reason := fmt.Sprintf("surplus: %d instances serve or join for a target capacity of %d (%d raised for replacements): the extra %d are drained and terminated, the target stays",
		c.serving, w.target(), w.raised, surplus)
	log.Warn(reason)
	if err := t.scaleIn(ctx, log, cfg, fs, w, sdk.ScalingAction{Count: int64(w.target()), Reason: reason}); err != nil {
		log.Warn("surplus removal did not complete; retried at a later status", "error", err)
	}
}

// drainCancelledBySomeone reports whether the departure's drain (ours) was
// cancelled by someone else and the node takes work again.
func (t *TargetPlugin) drainCancelledBySomeone(ctx context.Context, cfg *policyConfig, d departure) bool {
	if d.nodeID == "" {
		return false
	}
	n, err := t.nodes.NodeInfo(ctx, d.nodeID)
	if err != nil || n.DrainStrategy != nil || n.SchedulingEligibility != api.NodeSchedulingEligible || n.Status != api.NodeStatusReady {
		return false
	}
	last := n.LastDrain
	return nomadnode.DrainedBy(last, drainMeta(cfg.FleetID)) && last.Status == api.DrainStatusCanceled && last.Meta[cancelledByKey] == ""
}

// giveBackOne lowers the target by the unit of one departure.
func (t *TargetPlugin) giveBackOne(ctx context.Context, fs *fleetState, d *departure) error {
	if _, err := t.fleet.WaitModifiable(ctx, fs.id); err != nil {
		return err
	}
	fs.targetMu.Lock()
	defer fs.targetMu.Unlock()
	if fs.snapshot(d).step != stepRaised {
		return nil
	}
	if _, _, err := t.fleet.ChangeTargetCapacity(ctx, fs.id, -1); err != nil {
		return err
	}
	fs.update(d, func(d *departure) { d.step = stepLowered })
	return nil
}
