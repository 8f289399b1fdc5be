package plugin

import (
	"context"
	"fmt"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// maxTargetCapacity is the largest target capacity EC2 accepts for a Spot
// Fleet request.
const maxTargetCapacity = 10000

// scale brings the fleet to action.Count ready nodes (see capacity and
// scaleOut for how the target follows). Scale-in removes only instances that run: max(0, running -
// desired) of them; when no more run than desired (a capacity shortage), it
// only lowers the target.
func (t *TargetPlugin) scale(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, action sdk.ScalingAction) error {
	w := fs.recent(t.now(), cfg)
	if w == nil {
		var err error
		if w, err = t.observe(ctx, cfg, fs); err != nil {
			return err
		}
	}
	if err := w.check(cfg); err != nil {
		return err
	}
	if !w.req.Modifiable() {
		return sdk.NewTargetScalingNoOpError("spot fleet request %s is %s, not active: not scaling now", cfg.FleetID, w.req.State)
	}
	w, pending, err := t.reconcile(ctx, log, cfg, fs, w)
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		return sdk.NewTargetScalingNoOpError("spot fleet request %s: not scaling while an earlier scale-in is unfinished: %v", cfg.FleetID, pending)
	}

	c := t.capacityOf(cfg, fs, w, w.members(cfg))
	to := int(action.Count)
	switch {
	case to > c.count:
		return t.scaleOut(ctx, log, cfg, fs, w, c, action)
	case to < c.count:
		return t.scaleIn(ctx, log, cfg, fs, w, action)
	default:
		log.Info("no scaling needed", "count", c.count, "target_capacity", w.req.TargetCapacity, "desired", to, "reason", action.Reason)
		return nil
	}
}

// scaleOut asks for more ready nodes. The target becomes the desired count
// plus the instances that take up target without serving (capacity.held),
// but in this direction never less than the instances that exist: capacity
// that is joining already counts toward the desired nodes, and requested
// capacity that never launched (a shortage) may be asked for again at the
// new, lower figure. The change is a difference to the target read again just
// before it (a change made meanwhile is kept). Broken instances (never
// joined) are terminated first, without a drain (they run nothing), for the
// maintain fleet to replace. Then it waits a short while to see the
// instances launched; if none does, the shortage is reported at once.
func (t *TargetPlugin) scaleOut(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, c capacity, action sdk.ScalingAction) error {
	// Replacement units of interrupted instances (w.raised) stay in the
	// target on top of what is decided here; the change is a difference.
	from, to := w.target(), int(action.Count)
	goal := min(max(to+c.held, len(w.instances)-c.marked-c.notJoined-c.leaving), max(from, to+c.held))
	log = log.With("action", "scale_out", "from", c.count, "to", to, "target_capacity_before", from)
	if cfg.DryRun {
		log.Info("dry-run: would set target capacity", "target_capacity", goal, "running", len(w.instances), "reason", action.Reason)
		return nil
	}
	t.replaceBroken(ctx, log, cfg, w)
	if goal == from {
		return sdk.NewTargetScalingNoOpError("spot fleet request %s: target capacity %d already covers %d ready nodes (%d ready, %d serving or joining, %d instances): waiting for them",
			cfg.FleetID, from, to, c.count, c.serving, len(w.instances))
	}

	// noTermination keeps EC2 from ever choosing victims on its own.
	before, after, err := t.changeTarget(ctx, fs, goal-from)
	if err != nil {
		return fmt.Errorf("scale out of %s from %d to %d: %w", cfg.FleetID, c.count, to, err)
	}
	t.recordEvent(ctx, log, fs)
	fs.expectInstances(t.now()) // new instances: look for their nodes soon
	fs.noteShortage(len(w.instances) < after, t.now(), time.Time{})
	if after < before {
		log.Info("scaled out: lowered a target that capacity never filled", "target_capacity", after, "read_before_change", before,
			"running", len(w.instances), "not_serving", c.held, "reason", action.Reason)
		return nil
	}

	running := t.waitLaunched(ctx, cfg, after)
	if running < after {
		fs.confirmShortage()
		log.Warn("scaled out: target capacity raised, capacity did not launch yet (reported as a shortage until it does)", "target_capacity", after,
			"read_before_change", before, "running", running, "not_serving", c.held, "waited", min(cfg.LaunchTimeout, t.launchConfirm).String(),
			"reason", action.Reason)
		return nil
	}
	log.Info("scaled out", "target_capacity", after, "read_before_change", before, "running", running, "not_serving", c.held, "reason", action.Reason)
	return nil
}

// replaceBroken terminates the instances that never joined Nomad (no node,
// or one still initializing, after node_join_timeout): they run nothing, and
// the maintain fleet replaces them. A failure is logged.
func (t *TargetPlugin) replaceBroken(ctx context.Context, log hclog.Logger, cfg *policyConfig, w *world) {
	fs := t.state(cfg.FleetID)
	var ids []string
	jobs := map[string]*farewellJob{}
	for _, m := range w.members(cfg) {
		if m.notJoined && !m.marked && !m.leaving && !fs.isInFlight(m.inst.ID) && !t.hasWork(ctx, cfg, m) {
			ids = append(ids, m.inst.ID)
			fs.stopProvisioning(m.inst.ID) // its hooks would run against a gone host
			jobs[m.inst.ID] = t.claimFarewell(ctx, log, cfg, fs, m.inst, m.node)
		}
	}
	if len(ids) == 0 {
		return
	}
	fs.setInFlight(ids, true)
	defer fs.setInFlight(ids, false)
	for id, err := range t.fleet.Terminate(ctx, ids) {
		if err != nil {
			log.Error("could not terminate an instance that never joined Nomad", "instance_id", id, "error", err)
			t.dropFarewell(ctx, log, fs, jobs[id])
			continue
		}
		if job := jobs[id]; job != nil {
			t.runFarewell(log, cfg, fs, job)
		}
		log.Warn("terminated an instance that never joined Nomad; the fleet replaces it", "instance_id", id, "join_timeout", cfg.JoinTimeout.String())
	}
}

// waitLaunched polls the fleet, with a doubling pause, until at least want
// instances are pending or running, or min(launch_timeout, launchConfirm)
// has passed. It returns the last count seen.
func (t *TargetPlugin) waitLaunched(ctx context.Context, cfg *policyConfig, want int) int {
	ctx, cancel := context.WithTimeout(ctx, min(cfg.LaunchTimeout, t.launchConfirm))
	defer cancel()
	running := 0
	pause := t.pollInterval
	for {
		if instances, err := t.fleet.Instances(ctx, cfg.FleetID); err == nil {
			running = 0
			for _, in := range instances {
				if in.Running() {
					running++
				}
			}
			if running >= want {
				return running
			}
		}
		select {
		case <-ctx.Done():
			return running
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}

// recordEvent stores the time of a scaling action on the fleet request. A
// failure is logged, not returned: the action itself has happened.
func (t *TargetPlugin) recordEvent(ctx context.Context, log hclog.Logger, fs *fleetState) {
	now := t.now()
	fs.mu.Lock()
	fs.ownEvent = now
	fs.mu.Unlock()
	if err := t.fleet.Tag(ctx, []string{fs.id}, map[string]string{tagLastEvent: formatEventTime(now)}); err != nil {
		log.Warn("could not record the scaling event time on the fleet request; cooldown will not survive an agent restart", "error", err)
	}
}

// changeTarget changes the fleet's target capacity by delta from the target
// read just before, under the fleet's targetMu (see departure).
func (t *TargetPlugin) changeTarget(ctx context.Context, fs *fleetState, delta int) (from, to int, err error) {
	// Wait for a modifying fleet outside the lock (Status reads under it).
	if _, err := t.fleet.WaitModifiable(ctx, fs.id); err != nil {
		return 0, 0, fmt.Errorf("changing target capacity of spot fleet request %s by %+d: %w", fs.id, delta, err)
	}
	fs.targetMu.Lock()
	defer fs.targetMu.Unlock()
	return t.fleet.ChangeTargetCapacity(ctx, fs.id, delta)
}
