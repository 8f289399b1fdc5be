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

// scale brings the fleet to action.Count, which becomes the new target
// capacity. Scale-in removes only instances that run: max(0, running -
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

// scaleOut sets the target to the desired count plus the instances that
// take up target capacity without serving (capacity.held), as a difference
// to the target read again just before the change (so a change made
// meanwhile is kept), and waits a short while to see the instances launched.
// In a shortage the new target may be lower than the old one.
func (t *TargetPlugin) scaleOut(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, c capacity, action sdk.ScalingAction) error {
	from, to := w.req.TargetCapacity, int(action.Count)
	goal := to + c.held
	log = log.With("action", "scale_out", "from", c.count, "to", to, "target_capacity_before", from)
	if goal == from {
		return sdk.NewTargetScalingNoOpError("spot fleet request %s: target capacity is already %d (%d instances run, %d serve): waiting for spot capacity",
			cfg.FleetID, from, len(w.instances), c.serving)
	}
	if cfg.DryRun {
		log.Info("dry-run: would set target capacity", "target_capacity", goal, "running", len(w.instances), "reason", action.Reason)
		return nil
	}

	// noTermination keeps EC2 from ever choosing victims on its own.
	before, after, err := t.fleet.ChangeTargetCapacity(ctx, cfg.FleetID, goal-from)
	if err != nil {
		return fmt.Errorf("scale out of %s from %d to %d: %w", cfg.FleetID, c.count, to, err)
	}
	t.recordEvent(ctx, log, fs)
	fs.noteShortage(len(w.instances) < after, t.now(), time.Time{})

	running := t.waitLaunched(ctx, cfg, after)
	if running < after {
		log.Warn("scaled out: target capacity raised, capacity still launching", "target_capacity", after, "read_before_change", before,
			"running", running, "not_serving", c.held, "waited", min(cfg.LaunchTimeout, t.launchConfirm).String(),
			"note", fmt.Sprintf("if it does not come within %s=%s the status reports a shortage and counts only running instances", configKeyLaunchTimeout, cfg.LaunchTimeout),
			"reason", action.Reason)
		return nil
	}
	log.Info("scaled out", "target_capacity", after, "read_before_change", before, "running", running, "not_serving", c.held, "reason", action.Reason)
	return nil
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
