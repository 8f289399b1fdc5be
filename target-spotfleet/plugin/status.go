package plugin

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"
)

// Meta keys the plugin adds to its status, beside the SDK's last-event key.
const (
	metaState         = "spot_fleet.state"
	metaTarget        = "spot_fleet.target_capacity"
	metaRunning       = "spot_fleet.running_instances"
	metaReadyNodes    = "spot_fleet.ready_nodes"
	metaPhases        = "spot_fleet.phases"
	metaFamilies      = "spot_fleet.instance_families"
	metaShortage      = "spot_fleet.shortage"
	metaNotJoined     = "spot_fleet.not_joined"
	metaUnmapped      = "spot_fleet.unmapped_nodes"
	metaRemovalPaused = "spot_fleet.scale_in_paused"
	metaHeld          = "spot_fleet.not_serving"
	metaNotReadyCause = "spot_fleet.not_ready_because"
	metaLeaving       = "spot_fleet.leaving"
	// Provisioning: nodes waiting for their launch hooks, instances whose
	// launch hook failed, nodes registered without the admission gate
	// while launch hooks are configured, failed terminate hooks.
	metaAdmitting      = "spot_fleet.admitting"
	metaHookFailed     = "spot_fleet.hook_failed"
	metaUngated        = "spot_fleet.ungated"
	metaTerminateHooks = "spot_fleet.terminate_hook_failed"
)

func (t *TargetPlugin) status(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState) (*sdk.TargetStatus, error) {
	w, err := t.observe(ctx, cfg, fs)
	if err != nil {
		return nil, err
	}
	if err := w.check(cfg); err != nil {
		return nil, err
	}
	var pending []string
	if w.req.Modifiable() {
		if w, pending, err = t.reconcile(ctx, log, cfg, fs, w); err != nil {
			return nil, err
		}
	}
	if !cfg.DryRun {
		t.purgeDown(ctx, log, fs)
	}
	if len(pending) == 0 {
		t.checkSurplus(log, cfg, fs, w, t.capacityOf(cfg, fs, w, w.members(cfg)))
	}
	if !cfg.DryRun {
		t.tidyMarks(ctx, log, fs, w)
	}
	st := t.statusOf(log, cfg, fs, w, pending)
	fs.mu.Lock()
	fs.lastStatus = st
	fs.mu.Unlock()
	return st, nil
}

// statusOf turns an observation into the agent's status.
//
// Count is the fleet's TargetCapacity (capacity coming counts), except
// during a capacity shortage: when fewer instances run than the target for
// longer than launch_timeout, only the running instances count, so the
// strategy multiplies only capacity that exists. Instances that do not serve
// (see capacity) are left out either way. Nodes that join, drain or are cordoned never make the
// fleet not ready; it is not ready only while the request cannot be changed
// (not active), while a scale-in of an earlier run is unfinished, and during
// the restart cooldown.
func (t *TargetPlugin) statusOf(log hclog.Logger, cfg *policyConfig, fs *fleetState, w *world, pending []string) *sdk.TargetStatus {
	now := t.now()
	ms := w.members(cfg)
	var reasons []string
	if !w.req.Modifiable() {
		reasons = append(reasons, fmt.Sprintf("fleet request is %s", w.req.State))
	}
	reasons = append(reasons, pending...)
	if why := t.restartCooldown(cfg, fs, w, now); why != "" {
		reasons = append(reasons, why)
	}

	running, target := len(w.instances), w.req.TargetCapacity
	c := t.capacityOf(cfg, fs, w, ms)
	count := c.count
	meta := map[string]string{
		metaState:      string(w.req.State),
		metaTarget:     strconv.Itoa(target),
		metaRunning:    strconv.Itoa(running),
		metaReadyNodes: strconv.Itoa(readyNodes(ms)),
		metaPhases:     phases(ms),
		metaFamilies:   strings.Join(w.families, ","),
	}
	// notes are logged; stable is what they say without durations, so that
	// an unchanged state is logged once.
	var notes, stable []string
	if !c.shortSince.IsZero() {
		meta[metaShortage] = fmt.Sprintf("%d of %d instances running for %s (more than %s=%s): counting the %d running",
			running, target, now.Sub(c.shortSince).Round(time.Second), configKeyLaunchTimeout, cfg.LaunchTimeout, running)
		notes = append(notes, "capacity shortage: "+meta[metaShortage])
		stable = append(stable, fmt.Sprintf("shortage %d/%d", running, target))
	}
	if c.held > 0 {
		meta[metaHeld] = strconv.Itoa(c.held)
	}
	if ds := fs.departureList(); len(ds) > 0 {
		var parts, keys []string
		for _, d := range ds {
			parts = append(parts, fmt.Sprintf("%s (%s %s ago, replacement %s)", d.instanceID, d.kind, now.Sub(d.handled).Round(time.Second), d.step))
			keys = append(keys, d.instanceID+" "+string(d.step))
		}
		meta[metaLeaving] = strings.Join(parts, "; ")
		notes = append(notes, "leaving: "+meta[metaLeaving])
		stable = append(stable, "leaving "+strings.Join(keys, ","))
	}
	if until, why := fs.removalBlocked(now); why != "" {
		meta[metaRemovalPaused] = fmt.Sprintf("until %s after a failed removal: %s", until.UTC().Format(time.RFC3339), why)
		notes = append(notes, "scale-in paused "+meta[metaRemovalPaused])
		stable = append(stable, "removal paused "+why)
	}
	var notJoined []string
	for _, m := range ms {
		if m.notJoined {
			notJoined = append(notJoined, m.inst.ID)
		}
	}
	if len(notJoined) > 0 {
		meta[metaNotJoined] = strings.Join(notJoined, ",")
		notes = append(notes, fmt.Sprintf("instances running for more than %s=%s without a Nomad node (removed first on scale-in): %s",
			configKeyJoinTimeout, cfg.JoinTimeout, meta[metaNotJoined]))
		stable = append(stable, "not joined "+meta[metaNotJoined])
	}
	admitting, hookFailed, ungated := hookStatus(cfg, fs, ms, now)
	if len(admitting) > 0 {
		// Capacity that is coming: reported, never a reason to be not ready.
		meta[metaAdmitting] = strings.Join(admitting, "; ")
	}
	if len(hookFailed) > 0 {
		meta[metaHookFailed] = strings.Join(hookFailed, "; ")
		notes = append(notes, "launch hook failed: "+meta[metaHookFailed])
		stable = append(stable, "hook failed "+meta[metaHookFailed])
	}
	if len(ungated) > 0 {
		meta[metaUngated] = strings.Join(ungated, ",")
		notes = append(notes, fmt.Sprintf("nodes registered without the admission gate meta %s (their launch hooks are not run): %s", cfg.Gate.MetaKey(), meta[metaUngated]))
		stable = append(stable, "ungated "+meta[metaUngated])
	}
	if ff := fs.recentFarewellFailures(now); len(ff) > 0 {
		meta[metaTerminateHooks] = strings.Join(ff, "; ")
		notes = append(notes, "terminate hook failed: "+meta[metaTerminateHooks])
		for _, f := range ff {
			id, _, _ := strings.Cut(f, ":")
			stable = append(stable, "terminate hook failed "+id)
		}
	}
	if len(w.unmapped) > 0 {
		var parts []string
		for _, u := range w.unmapped {
			parts = append(parts, fmt.Sprintf("%s: %v", u.NodeID, u.Err))
		}
		meta[metaUnmapped] = strings.Join(parts, "; ")
		notes = append(notes, "pool nodes left alone: "+meta[metaUnmapped])
		stable = append(stable, "unmapped "+meta[metaUnmapped])
	}
	st := &sdk.TargetStatus{Ready: len(reasons) == 0, Count: int64(count), Meta: meta}
	if !w.lastEvent.IsZero() {
		meta[sdk.TargetStatusMetaKeyLastEvent] = formatEventTime(w.lastEvent)
	}
	if len(reasons) > 0 {
		meta[metaNotReadyCause] = strings.Join(reasons, "; ")
		notes = append(notes, "not ready: "+meta[metaNotReadyCause])
		for _, r := range reasons {
			if !strings.Contains(r, " ago ") { // the restart cooldown's age changes every time
				stable = append(stable, r)
			}
		}
	}

	// One line per change of state, at info (warning for problems);
	// unchanged states are logged at debug only.
	args := []any{"count", count, "target_capacity", target, "running", running, "ready_nodes", readyNodes(ms), "phases", meta[metaPhases]}
	note, key := strings.Join(notes, "; "), strings.Join(stable, "; ")
	fs.mu.Lock()
	changed := key != fs.lastNote || (note == "") != (fs.lastNoteEmpty)
	fs.lastNote, fs.lastNoteEmpty = key, note == ""
	fs.mu.Unlock()
	switch {
	case note != "" && changed:
		log.Warn("fleet status: "+note, args...)
	case note == "" && changed:
		log.Info("fleet status: ready", args...)
	default:
		log.Debug("fleet status", append(args, "notes", note)...)
	}
	return st
}

// restartCooldown keeps the fleet not ready for restart_cooldown after a
// scaling action that an earlier plugin process made. The agent (v0.5.0) reads
// nomad_autoscaler.last_event after a restart but leaves that cooldown at its
// first evaluation (policy/handler.go sets the cooldown state without its end
// time), so without this guard a restarted agent would scale again at once.
func (t *TargetPlugin) restartCooldown(cfg *policyConfig, fs *fleetState, w *world, now time.Time) string {
	if cfg.RestartCooldown <= 0 || w.lastEvent.IsZero() || fs.isOwnEvent(w.lastEvent) {
		return ""
	}
	if age := now.Sub(w.lastEvent); age < cfg.RestartCooldown {
		return fmt.Sprintf("last scaling action %s ago was made before the agent restarted; waiting out %s=%s",
			age.Round(time.Second), configKeyRestartCooldown, cfg.RestartCooldown)
	}
	return ""
}

// tidyMarks writes the ledger of replacement units again after a failed
// write, and removes the rebalance mark of nodes that serve again (an
// operator made them eligible): a later cordon of theirs is not ours.
func (t *TargetPlugin) tidyMarks(ctx context.Context, log hclog.Logger, fs *fleetState, w *world) {
	fs.mu.Lock()
	dirty := fs.ledgerDirty
	fs.mu.Unlock()
	if dirty {
		if err := t.writeLedger(ctx, fs); err != nil {
			log.Warn("could not write the ledger of replacement units on the fleet request; retrying at the next status", "error", err)
		}
	}
	for _, in := range w.instances {
		if _, ok := in.Tags[tagRebalance]; !ok {
			continue
		}
		if n, ok := w.nodes[in.ID]; ok && n.SchedulingEligibility == api.NodeSchedulingEligible {
			if err := t.fleet.Untag(ctx, []string{in.ID}, tagRebalance); err != nil {
				log.Warn("could not remove the rebalance mark of a node that serves again", "instance_id", in.ID, "error", err)
				continue
			}
			log.Info("node cordoned on a rebalance recommendation is eligible again: its mark is removed", "instance_id", in.ID, "node_id", n.ID)
		}
	}
}
