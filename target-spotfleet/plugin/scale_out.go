package plugin

import (
	"context"
	"fmt"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// scaleOut raises the fleet's target capacity and waits until EC2 reports
// that many instances running.
func (t *TargetPlugin) scaleOut(ctx context.Context, log hclog.Logger, cfg *policyConfig, w *world, action sdk.ScalingAction) error {
	from, to := w.req.TargetCapacity, int(action.Count)
	log = log.With("action", "scale_out", "from", from, "to", to)
	if cfg.DryRun {
		log.Info("dry-run: would raise target capacity", "running", len(w.instances), "reason", action.Reason)
		return nil
	}

	// Step 1: raise the target capacity; noTermination keeps EC2 from ever
	// choosing victims on its own.
	if err := t.fleet.SetTargetCapacity(ctx, cfg.FleetID, to); err != nil {
		return fmt.Errorf("scale out of %s from %d to %d: %w", cfg.FleetID, from, to, err)
	}
	t.recordEvent(ctx, log, cfg.FleetID)

	// Step 2: confirm the instances are launched.
	running, err := t.waitRunning(ctx, cfg, to)
	if err != nil {
		log.Warn("scale out: capacity did not arrive", "running", running, "error", err)
		return fmt.Errorf("scale out of %s from %d to %d: %d of %d instances running after %s (capacity may be unavailable in the fleet's pools): %w",
			cfg.FleetID, from, to, running, to, cfg.LaunchTimeout, err)
	}
	log.Info("scaled out", "running", running, "reason", action.Reason)
	return nil
}

// waitRunning polls the fleet until at least want instances run, or the
// launch timeout passes. It returns the last count seen.
func (t *TargetPlugin) waitRunning(ctx context.Context, cfg *policyConfig, want int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.LaunchTimeout)
	defer cancel()
	running := 0
	for {
		instances, err := t.fleet.Instances(ctx, cfg.FleetID)
		if err == nil {
			running = 0
			for _, in := range instances {
				if in.Running() {
					running++
				}
			}
			if running >= want {
				return running, nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return running, err
			}
			return running, ctx.Err()
		case <-time.After(t.pollInterval):
		}
	}
}

// recordEvent stores the time of a scaling action on the fleet request. A
// failure is logged, not returned: the action itself has happened.
func (t *TargetPlugin) recordEvent(ctx context.Context, log hclog.Logger, fleetID string) {
	now := t.now()
	t.mu.Lock()
	t.ownEvents[fleetID] = now
	t.mu.Unlock()
	if err := t.fleet.Tag(ctx, []string{fleetID}, map[string]string{tagLastEvent: formatEventTime(now)}); err != nil {
		log.Warn("could not record the scaling event time on the fleet request; cooldown will not survive an agent restart", "error", err)
	}
}
