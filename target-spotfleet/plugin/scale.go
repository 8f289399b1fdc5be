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

	from, to := w.req.TargetCapacity, int(action.Count)
	switch {
	case serving(w.members(cfg)) > to:
		// Fewer wanted than serve; also when more serve than the target
		// (an operator put a cordoned node back, say).
		return t.scaleIn(ctx, log, cfg, fs, w, action)
	case to > from:
		return t.scaleOut(ctx, log, cfg, fs, w, action)
	case to < from:
		return t.scaleIn(ctx, log, cfg, fs, w, action)
	case len(w.instances) < from:
		return sdk.NewTargetScalingNoOpError("spot fleet request %s: target capacity is already %d, %d instances run: waiting for spot capacity",
			cfg.FleetID, from, len(w.instances))
	default:
		log.Info("no scaling needed", "target_capacity", from, "desired", to, "reason", action.Reason)
		return nil
	}
}

// scaleOut raises the fleet's target capacity by the difference between the
// desired count and the target observed (read again just before the change,
// so a change made meanwhile is kept) and waits a short while to see the
// instances launched.
func (t *TargetPlugin) scaleOut(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, action sdk.ScalingAction) error {
	from, to := w.req.TargetCapacity, int(action.Count)
	log = log.With("action", "scale_out", "from", from, "to", to)
	if cfg.DryRun {
		log.Info("dry-run: would raise target capacity", "running", len(w.instances), "reason", action.Reason)
		return nil
	}

	// Instances beyond the target that do not serve (an operator's cordoned
	// node left after a scale-in) fill none of the new capacity: add them.
	ms := w.members(cfg)
	excess, held := max(0, len(w.instances)-from), len(w.instances)-serving(ms)
	delta := to + min(excess, max(0, held)) - from
	// noTermination keeps EC2 from ever choosing victims on its own.
	before, after, err := t.fleet.ChangeTargetCapacity(ctx, cfg.FleetID, delta)
	if err != nil {
		return fmt.Errorf("scale out of %s from %d to %d: %w", cfg.FleetID, from, to, err)
	}
	t.recordEvent(ctx, log, fs)
	fs.noteShortage(len(w.instances) < after, t.now(), time.Time{})

	running := t.waitLaunched(ctx, cfg, after)
	if running < after {
		log.Warn("scaled out: target capacity raised, capacity still launching", "target_capacity", after, "read_before_change", before,
			"running", running, "waited", min(cfg.LaunchTimeout, t.launchConfirm).String(),
			"note", fmt.Sprintf("if it does not come within %s=%s the status reports a shortage and counts only running instances", configKeyLaunchTimeout, cfg.LaunchTimeout),
			"reason", action.Reason)
		return nil
	}
	log.Info("scaled out", "target_capacity", after, "read_before_change", before, "running", running, "reason", action.Reason)
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
