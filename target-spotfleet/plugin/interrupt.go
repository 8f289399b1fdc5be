package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// fleetTag is the tag EC2 puts on every instance a Spot Fleet launches.
const fleetTag = "aws:ec2spot:fleet-request-id"

// Timing of the routing of events to fleets.
const (
	// ownerMemory is how long an instance seen in a managed fleet is
	// remembered (a state change arrives after the fleet stops listing it).
	ownerMemory = 2 * time.Hour
	// ownerRefresh is how often, at most, the fleets' instance lists are
	// read again to route an event for an instance not seen yet.
	ownerRefresh = 5 * time.Second
	// retryUnknown is when a message for an instance not known yet is
	// received again.
	retryUnknown = 5 * time.Second
	// retryFailed is when a message whose handling failed (Nomad or EC2 did
	// not answer) is received again.
	retryFailed = 3 * time.Second
	// drainMargin is the part of the notice left after the drain deadline
	// for the allocations to stop and the node to report it.
	drainMargin = 15 * time.Second
)

// ownerEntry says which managed fleet an instance belongs to.
type ownerEntry struct {
	fleetID string
	seen    time.Time
	// inst is the instance as last described while it ran: EC2 describes
	// a terminated instance without its addresses, which its terminate
	// hooks still need.
	inst fleet.Instance
}

// noteOwners remembers the fleet of each listed instance.
func (t *TargetPlugin) noteOwners(fleetID string, instances []fleet.Instance) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.owners == nil {
		t.owners = map[string]ownerEntry{}
	}
	for _, in := range instances {
		e := ownerEntry{fleetID: fleetID, seen: now, inst: in}
		if old, ok := t.owners[in.ID]; ok && (!in.Described || in.PrivateIP == "") {
			e.inst = old.inst // keep the details of a fuller description
		}
		t.owners[in.ID] = e
	}
	for id, e := range t.owners {
		if now.Sub(e.seen) > ownerMemory {
			delete(t.owners, id)
		}
	}
}

// managed returns the fleets the agent has asked about, with their configs.
func (t *TargetPlugin) managed() map[string]*fleetState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]*fleetState{}
	for id, fs := range t.fleets {
		if fs.config() != nil {
			out[id] = fs
		}
	}
	return out
}

// owner finds the managed fleet of an instance: from the instances seen
// before, else from the fleets' instance lists read again, else from the
// instance's own fleet tag. known is false when the instance cannot be
// placed yet (EC2 does not list it, or the agent has not asked about its
// fleet since the plugin started); foreign is true when it belongs to no
// managed fleet.
func (t *TargetPlugin) owner(ctx context.Context, id string) (fs *fleetState, known bool, err error) {
	fleets := t.managed()
	lookup := func() *fleetState {
		t.mu.Lock()
		e, ok := t.owners[id]
		t.mu.Unlock()
		if !ok {
			return nil
		}
		return fleets[e.fleetID]
	}
	if fs := lookup(); fs != nil {
		return fs, true, nil
	}
	if len(fleets) == 0 {
		return nil, false, nil
	}
	fresh := true
	for fid := range fleets {
		if !t.refreshDue(fid) {
			fresh = false
			continue
		}
		all, err := t.fleet.Instances(ctx, fid)
		if err != nil {
			return nil, false, err
		}
		t.noteOwners(fid, all)
	}
	if fs := lookup(); fs != nil {
		return fs, true, nil
	}
	found, err := t.fleet.DescribeInstances(ctx, []string{id})
	if err != nil {
		return nil, false, err
	}
	if len(found) == 0 {
		return nil, false, nil // not listed by EC2 (yet)
	}
	if fs := fleets[found[0].Tags[fleetTag]]; fs != nil {
		return fs, true, nil
	}
	if !fresh && found[0].Tags[fleetTag] == "" {
		// EC2 lists it but a fleet's list was read too recently to be
		// read again: it may be a fleet's newest instance.
		return nil, false, nil
	}
	return nil, true, nil
}

// refreshDue reports whether the fleet's instance list may be read again to
// route an event, and notes the read.
func (t *TargetPlugin) refreshDue(fleetID string) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refreshed == nil {
		t.refreshed = map[string]time.Time{}
	}
	if now.Sub(t.refreshed[fleetID]) < ownerRefresh {
		return false
	}
	t.refreshed[fleetID] = now
	return true
}

// Handle implements interruption.Handler: it acts on an EC2 event for an
// instance of a managed fleet. Handling is idempotent: a redelivered or
// duplicated event finds its departure recorded and repeats only what has
// not succeeded yet.
func (t *TargetPlugin) Handle(ctx context.Context, ev interruption.Event, msg interruption.Message) interruption.Outcome {
	fs, known, err := t.owner(ctx, ev.InstanceID)
	switch {
	case err != nil:
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed,
			Why: fmt.Sprintf("cannot tell the fleet of instance %s: %v", ev.InstanceID, err)}
	case fs == nil && t.stillLearning(msg, known):
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryUnknown,
			Why: fmt.Sprintf("instance %s is not known yet (not listed by EC2, or its fleet's policy not evaluated since the plugin started)", ev.InstanceID)}
	case fs == nil && known:
		return interruption.Outcome{Disposition: interruption.Drop,
			Why: fmt.Sprintf("instance %s belongs to no spot fleet request this plugin scales", ev.InstanceID)}
	case fs == nil:
		return interruption.Outcome{Disposition: interruption.Drop,
			Why: fmt.Sprintf("instance %s was never listed in a spot fleet request this plugin scales within %s", ev.InstanceID, unknownMaxAge)}
	}
	cfg := fs.config()
	log := t.logger.With("spot_fleet_request_id", fs.id, "instance_id", ev.InstanceID, "event", string(ev.Kind), "event_id", ev.ID)
	if cfg.DryRun {
		log.Info("dry-run: would act on the event", "detail_type", ev.DetailType, "state", ev.State, "action", ev.Action)
		return interruption.Outcome{Disposition: interruption.Done}
	}
	switch ev.Kind {
	case interruption.KindSpotInterruption:
		return t.depart(ctx, log, cfg, fs, ev)
	case interruption.KindRebalance:
		switch cfg.RebalanceAction {
		case rebalanceDrain:
			return t.depart(ctx, log, cfg, fs, ev)
		case rebalanceCordon:
			return t.cordonAtRisk(ctx, log, cfg, fs, ev)
		default:
			return interruption.Outcome{Disposition: interruption.Drop,
				Why: fmt.Sprintf("%s=%s for instance %s of %s", configKeyRebalanceAction, rebalanceIgnore, ev.InstanceID, fs.id)}
		}
	case interruption.KindStateChange:
		switch ev.State {
		case "stopping", "stopped", "shutting-down", "terminated":
			return t.gone(ctx, log, cfg, fs, ev)
		}
		return interruption.Outcome{Disposition: interruption.Drop,
			Why: fmt.Sprintf("instance %s of %s is %s: nothing to do", ev.InstanceID, fs.id, ev.State)}
	}
	return interruption.Outcome{Disposition: interruption.Drop, Why: "unhandled event kind " + string(ev.Kind)}
}

// unknownMaxAge is how long a message for an instance that no managed fleet
// lists is retried before it is dropped.
const unknownMaxAge = 10 * time.Minute

// stillLearning reports whether an event for an instance of no known fleet
// should be retried rather than dropped: shortly after the plugin started
// (the agent may not have evaluated every policy yet), and, for an instance
// EC2 does not list (yet), while the message is younger than unknownMaxAge.
func (t *TargetPlugin) stillLearning(msg interruption.Message, listed bool) bool {
	now := t.now()
	t.mu.Lock()
	started := t.configuredAt
	t.mu.Unlock()
	if now.Sub(started) < t.startupGrace {
		return true
	}
	if listed {
		return false
	}
	first := msg.FirstReceived
	if first.IsZero() {
		first = msg.Sent
	}
	if first.IsZero() {
		return msg.ReceiveCount < int(unknownMaxAge/retryUnknown)
	}
	return now.Sub(first) < unknownMaxAge
}

// depart handles a spot interruption warning (or, with rebalance_action =
// drain, a rebalance recommendation): the node is drained at once with a
// deadline that ends before the notice, the instance is tagged as leaving,
// and the target is raised by one so that the replacement launches now
// rather than after the reclaim. The follow-up (tend) gives the unit back
// once the replacement has launched or the instance is gone.
func (t *TargetPlugin) depart(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, ev interruption.Event) interruption.Outcome {
	at := ev.Time
	if at.IsZero() || at.After(t.now()) {
		at = t.now()
	}
	d, fresh := fs.addDeparture(&departure{instanceID: ev.InstanceID, kind: ev.Kind, at: at, handled: t.now(), step: stepPending})
	// The instance leaves: its launch pipeline (if one runs) stops, and an
	// interrupted one says farewell now (EC2 reclaims it at the notice's
	// end whatever happens; a rebalance drain does so when terminated).
	fs.stopProvisioning(ev.InstanceID)
	fs.expectInstances(t.now()) // its replacement: provision it soon
	if ev.Kind == interruption.KindSpotInterruption && !cfg.DryRun {
		t.farewellOf(ctx, log, cfg, fs, ev.InstanceID)
	}
	if !fresh && d.kind == interruption.KindRebalance && ev.Kind == interruption.KindSpotInterruption {
		// Drained on a rebalance recommendation, now warned: the drain
		// gets the interruption's deadline.
		fs.update(d, func(d *departure) { d.kind, d.at, d.drained = ev.Kind, at, false })
	}
	// A node that did not serve when the warning came (cordoned, drained
	// by someone else, down) holds a unit of the target already: it is
	// given back when the instance goes, and no replacement is raised (the
	// count never had it, so a scale-out has added capacity for it if the
	// load asked for it).
	held := false
	if fs.snapshot(d).step == stepPending {
		if node, err := t.nodeOf(ctx, cfg, d.instanceID); err == nil && node != nil {
			p, _ := nomadnode.PhaseOfNode(*node, cfg.Gate)
			// A drain of ours for a departure (an earlier process handled
			// this warning up to its drain) is not a reason to hold.
			ours := nomadnode.DrainedBy(node.LastDrain, drainMeta(cfg.FleetID)) && node.LastDrain.Meta["reason"] != ""
			held = p != nomadnode.PhaseReady && p != nomadnode.PhaseJoining && p != nomadnode.PhaseAdmitting && !ours
		}
	}
	var failures []error
	if err := t.drainLeaving(ctx, log, cfg, fs, d); err != nil {
		failures = append(failures, err)
	}
	// The departure is recorded on the instance before the target changes,
	// so that a restart in between never raises a second time.
	if snap := fs.snapshot(d); snap.step == stepPending {
		if err := t.fleet.Tag(ctx, []string{d.instanceID}, map[string]string{tagInterrupted: snap.tagValue()}); err != nil {
			failures = append(failures, fmt.Errorf("recording the interruption on instance %s before raising its replacement: %w", d.instanceID, err))
			return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: errors.Join(failures...).Error()}
		}
	}
	// A held node has a unit of its own only if the target holds more than
	// the serving instances (a scale-out counted it); a scale-in does not.
	room := false
	if held {
		if w, err := t.observe(ctx, cfg, fs); err == nil {
			c := t.capacityOf(cfg, fs, w, w.members(cfg))
			room = w.target() > c.serving
		} else {
			failures = append(failures, err)
			return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: errors.Join(failures...).Error()}
		}
	}
	if err := t.raiseForReplacement(ctx, log, cfg, fs, d, held, room); err != nil {
		failures = append(failures, err)
	}
	snap := fs.snapshot(d)
	if err := t.fleet.Tag(ctx, []string{d.instanceID}, map[string]string{tagInterrupted: snap.tagValue()}); err != nil {
		// Recorded as pending, which a restart reads as raised.
		log.Warn("could not record the replacement step on the interrupted instance", "error", err)
	}
	if len(failures) > 0 {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: errors.Join(failures...).Error()}
	}
	return interruption.Outcome{Disposition: interruption.Done}
}

// nodeOf returns the pool node of the instance, nil when none has
// registered.
func (t *TargetPlugin) nodeOf(ctx context.Context, cfg *policyConfig, instanceID string) (*nomadnode.Node, error) {
	listing, err := t.mapper.PoolNodes(ctx, t.nodes, cfg.Pool, cfg.IDLookup)
	if err != nil {
		return nil, err
	}
	for _, n := range listing.Nodes {
		if n.InstanceID == instanceID {
			return &n, nil
		}
	}
	return nil, nil
}

// departureDeadline is the drain deadline of a departure: for an
// interruption, interruption_drain_deadline, cut so that it ends drainMargin
// before the notice does (a warning handled late gets less); for a rebalance
// drain, the policy's node_drain_deadline.
func (t *TargetPlugin) departureDeadline(cfg *policyConfig, d departure) time.Duration {
	if d.kind != interruption.KindSpotInterruption {
		return cfg.DrainDeadline
	}
	left := d.noticeEnd().Add(-drainMargin).Sub(t.now())
	return max(time.Second, min(cfg.InterruptionDrain, left))
}

// drainLeaving drains the node of a leaving instance with the departure's
// deadline, unless this process did so already. A drain of anyone's that
// ends later is replaced: the instance goes at the end of the notice either
// way, and what is still on it then is lost.
func (t *TargetPlugin) drainLeaving(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, d *departure) error {
	snap := fs.snapshot(d)
	if snap.drained || snap.gone {
		return nil
	}
	node, err := t.nodeOf(ctx, cfg, snap.instanceID)
	if err != nil {
		return fmt.Errorf("finding the node of interrupted instance %s: %w", snap.instanceID, err)
	}
	if node == nil {
		if !snap.noNodeLogged {
			fs.update(d, func(d *departure) { d.noNodeLogged = true })
			log.Info("interrupted instance has no Nomad node yet: nothing to drain; its node is drained if it registers")
		}
		return nil
	}
	fs.update(d, func(d *departure) { d.nodeID = node.ID })
	var n *api.Node
	if err := t.withNomadRetry(ctx, log, "reading the interrupted node", func() error {
		var err error
		n, err = t.nodes.NodeInfo(ctx, node.ID)
		return err
	}); err != nil {
		return fmt.Errorf("reading node %s of interrupted instance %s: %w", node.ID, snap.instanceID, err)
	}
	if n.Status == api.NodeStatusDown {
		log.Info("node of the interrupted instance is down already: nothing to drain", "node_id", node.ID)
		fs.update(d, func(d *departure) { d.drained = true })
		return nil
	}
	deadline := t.departureDeadline(cfg, snap)
	if n.DrainStrategy != nil && !n.DrainStrategy.ForceDeadline.IsZero() && !n.DrainStrategy.ForceDeadline.After(t.now().Add(deadline)) {
		log.Info("node of the interrupted instance drains already, with a deadline inside the notice", "node_id", node.ID,
			"force_deadline", n.DrainStrategy.ForceDeadline.UTC().Format(time.RFC3339))
		fs.update(d, func(d *departure) { d.drained = true })
		return nil
	}
	meta := drainMeta(cfg.FleetID)
	meta["reason"] = string(snap.kind)
	spec := &api.DrainSpec{Deadline: deadline, IgnoreSystemJobs: cfg.IgnoreSystemJobs}
	if err := t.withNomadRetry(ctx, log, "draining the interrupted node", func() error {
		return t.nodes.StartDrain(ctx, node.ID, spec, meta)
	}); err != nil {
		return fmt.Errorf("draining node %s of interrupted instance %s: %w", node.ID, snap.instanceID, err)
	}
	fs.update(d, func(d *departure) { d.drained = true })
	notice := ""
	if snap.kind == interruption.KindSpotInterruption {
		notice = snap.noticeEnd().Sub(t.now()).Round(time.Second).String()
	}
	log.Info("draining the node of a leaving instance", "node_id", node.ID, "deadline", deadline.String(), "notice_left", notice,
		"allocations_move", "now", "took_over_drain", n.DrainStrategy != nil)
	return nil
}

// raiseForReplacement raises the target by one for the leaving instance's
// replacement, once. No replacement is asked for when a scale-in removes the
// instance anyway, or when the fleet cannot be resized (type request).
func (t *TargetPlugin) raiseForReplacement(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, d *departure, held, room bool) error {
	if fs.snapshot(d).step != stepPending {
		return nil
	}
	// Wait for a modifying fleet outside the lock: Status reads the target
	// under it and must answer in seconds.
	if _, err := t.fleet.WaitModifiable(ctx, cfg.FleetID); err != nil && !errors.Is(err, fleet.ErrNotModifiable) {
		return fmt.Errorf("raising the target of %s for the replacement of %s: %w", cfg.FleetID, d.instanceID, err)
	}
	fs.targetMu.Lock()
	defer fs.targetMu.Unlock()
	snap := fs.snapshot(d)
	if snap.step != stepPending { // another delivery of the event got here first
		return nil
	}

	found, err := t.fleet.DescribeInstances(ctx, []string{snap.instanceID})
	if err != nil {
		return fmt.Errorf("reading interrupted instance %s: %w", snap.instanceID, err)
	}
	if len(found) == 1 {
		if _, marked := found[0].Tags[tagScaleIn]; marked {
			fs.update(d, func(d *departure) { d.step, d.why = stepNone, "a scale-in removes it" })
			log.Info("interrupted instance is being removed by a scale-in: no replacement")
			return nil
		}
		if !found[0].Running() {
			// Warned late: the fleet refills it on its own.
			fs.update(d, func(d *departure) {
				d.gone, d.step, d.why = true, stepNone, "the instance was gone when the warning was handled"
			})
			log.Info("interrupted instance is gone already: no replacement raise (the maintain fleet refills it)", "state", string(found[0].State))
			return nil
		}
	}
	if held && !room {
		fs.update(d, func(d *departure) {
			d.step, d.why = stepNone, "it did not serve and the target holds no unit for it"
		})
		log.Info("interrupted instance did not serve and the target holds no unit for it: no replacement, nothing to give back")
		return nil
	}
	if held {
		fs.update(d, func(d *departure) { d.step = stepRaised })
		if err := t.writeLedger(ctx, fs); err != nil {
			log.Warn("could not update the ledger of replacement units on the fleet request; retried at the next status", "error", err)
		}
		log.Info("interrupted instance did not serve (its node was cordoned, drained or down): no replacement raised; its unit of the target is given back when it goes")
		return nil
	}
	if err := t.writeLedger(ctx, fs, snap.instanceID); err != nil {
		return fmt.Errorf("recording the replacement of %s in the ledger of %s before raising the target: %w", snap.instanceID, cfg.FleetID, err)
	}
	from, to, err := t.fleet.ChangeTargetCapacity(ctx, cfg.FleetID, +1)
	if err != nil {
		// Not raised (as far as the answer says): the ledger follows.
		if lerr := t.writeLedger(ctx, fs); lerr != nil {
			log.Warn("could not update the ledger of replacement units on the fleet request; retried at the next status", "error", lerr)
		}
	}
	switch {
	case errors.Is(err, fleet.ErrNotModifiable):
		fs.update(d, func(d *departure) { d.step, d.why = stepNone, err.Error() })
		log.Warn("no replacement launched for the interrupted instance: the fleet cannot be resized", "error", err)
		return nil
	case err != nil:
		return fmt.Errorf("raising the target of %s for the replacement of %s: %w", cfg.FleetID, snap.instanceID, err)
	}
	fs.update(d, func(d *departure) { d.step = stepRaised })
	log.Info("replacement requested: target capacity raised by one for the interrupted instance; given back once the replacement has launched or the instance is gone",
		"target_capacity", to, "read_before_change", from)
	return nil
}

// cordonAtRisk marks the node of an instance with a rebalance
// recommendation ineligible (rebalance_action = cordon): it keeps its
// allocations, takes no new ones and no longer counts as ready, so a
// scale-out the load asks for adds capacity in its place (it counts as not
// serving). It stays cordoned until EC2 interrupts the instance (then it is
// drained and replaced like any other) or an operator makes it eligible.
func (t *TargetPlugin) cordonAtRisk(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, ev interruption.Event) interruption.Outcome {
	node, err := t.nodeOf(ctx, cfg, ev.InstanceID)
	if err != nil {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
	}
	if node == nil {
		return interruption.Outcome{Disposition: interruption.Drop, Why: fmt.Sprintf("instance %s has no Nomad node to cordon", ev.InstanceID)}
	}
	if p, _ := nomadnode.PhaseOf(node.NodeListStub); p != nomadnode.PhaseReady {
		return interruption.Outcome{Disposition: interruption.Drop, Why: fmt.Sprintf("node %s of instance %s is %s: left as it is", node.ID, ev.InstanceID, p)}
	}
	if err := t.fleet.Tag(ctx, []string{ev.InstanceID}, map[string]string{tagRebalance: "cordoned at=" + t.now().UTC().Format(time.RFC3339)}); err != nil {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
	}
	if err := t.withNomadRetry(ctx, log, "cordoning the at-risk node", func() error {
		return t.nodes.SetEligibility(ctx, node.ID, false)
	}); err != nil {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
	}
	log.Info("rebalance recommendation: node cordoned (keeps its allocations, takes no new ones, no longer counted as ready)", "node_id", node.ID)
	return interruption.Outcome{Disposition: interruption.Done}
}

// gone handles an instance of the fleet that stops or terminates (with or
// without a warning): its node's allocations are moved at once by a forced
// drain rather than after Nomad's heartbeat misses, a terminated instance's
// node is purged (node_purge), and a departure learns that the instance is
// gone, so that its replacement unit is given back.
func (t *TargetPlugin) gone(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, ev interruption.Event) interruption.Outcome {
	// Messages come late and more than once, and a stopped instance may be
	// started again: act only on what EC2 says now.
	found, err := t.fleet.DescribeInstances(ctx, []string{ev.InstanceID})
	if err != nil {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
	}
	if len(found) == 1 && found[0].Running() {
		return interruption.Outcome{Disposition: interruption.Drop,
			Why: fmt.Sprintf("instance %s of %s is %s again: the %s message is out of date", ev.InstanceID, fs.id, found[0].State, ev.State)}
	}
	d := fs.departureOf(ev.InstanceID)
	if d != nil {
		fs.update(d, func(d *departure) { d.gone = true })
	} else if ev.State != "stopping" {
		t.forgetHeldUnit(ctx, log, cfg, fs, ev.InstanceID)
	}
	fs.stopProvisioning(ev.InstanceID)
	if ev.State == "terminated" && !cfg.DryRun {
		// Gone without a warning (or after one): AWX forgets it.
		t.farewellOf(ctx, log, cfg, fs, ev.InstanceID)
	}
	node, err := t.nodeOf(ctx, cfg, ev.InstanceID)
	if err != nil {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
	}
	if node == nil {
		return interruption.Outcome{Disposition: interruption.Done}
	}
	n, err := t.nodes.NodeInfo(ctx, node.ID)
	if err != nil {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
	}
	busy, err := nomadnode.RunningAllocations(ctx, t.nodes, node.ID, true)
	if err != nil {
		return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
	}
	dead := ev.State == "terminated" || ev.State == "stopped"
	if cfg.Purge && dead && n.Status != api.NodeStatusDown {
		// The instance is gone: its client can no longer say that its
		// allocations stopped, and Nomad (v1.6) starts their replacements
		// only once they are terminal, that is once the node is down. A
		// purge makes them lost now, so they are replaced at once.
		if err := t.withNomadRetry(ctx, log, "purging the node of a gone instance", func() error {
			return t.nodes.Purge(ctx, node.ID)
		}); err != nil {
			return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
		}
		fs.purged(node.ID)
		log.Warn("instance is gone: its node purged at once (node_purge), so that its allocations are replaced now, not after Nomad's heartbeat misses",
			"state", ev.State, "node_id", node.ID, "running_allocations", busy, "warned_before", d != nil)
		return interruption.Outcome{Disposition: interruption.Done}
	}
	alreadyForced := n.DrainStrategy != nil && n.DrainStrategy.Deadline < 0
	if n.Status != api.NodeStatusDown && busy > 0 && !alreadyForced {
		meta := drainMeta(cfg.FleetID)
		meta["reason"] = "instance-" + ev.State
		if err := t.withNomadRetry(ctx, log, "force-draining the node of a stopped instance", func() error {
			return t.nodes.StartDrain(ctx, node.ID, &api.DrainSpec{Deadline: -1, IgnoreSystemJobs: true}, meta)
		}); err != nil {
			return interruption.Outcome{Disposition: interruption.Retry, RetryAfter: retryFailed, Why: err.Error()}
		}
		log.Warn("instance is going: node force-drained so that its allocations are placed elsewhere now (they start once the node is down or purged)",
			"state", ev.State, "node_id", node.ID, "running_allocations", busy, "warned_before", d != nil)
	}
	if cfg.Purge && ev.State != "stopping" {
		fs.queuePurge(node.ID, ev.InstanceID)
		t.purgeDown(ctx, log, fs)
	}
	return interruption.Outcome{Disposition: interruption.Done}
}

// forgetHeldUnit lowers the target by one when an instance that did not
// serve (cordoned, drained by someone else) goes without a warning and the
// target held a unit for it (a scale-out counted it as held): otherwise the
// maintain fleet would refill capacity nobody asked for, and the strategy
// would have to drain a node to undo it. The strategy scales out if the load
// needs more.
func (t *TargetPlugin) forgetHeldUnit(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, instanceID string) {
	fs.mu.Lock()
	last := fs.last
	fs.mu.Unlock()
	if last == nil {
		return
	}
	wasHeld := false
	for _, m := range last.members(cfg) {
		if m.inst.ID == instanceID {
			// Capacity that was coming (joining, admitting, replaced
			// after a failed hook) is not held: EC2 refills it.
			wasHeld = !m.marked && !m.leaving && !m.unknown && !m.notJoined && m.node != nil && !m.serves()
		}
	}
	if !wasHeld {
		return
	}
	if _, err := t.fleet.WaitModifiable(ctx, fs.id); err != nil {
		log.Warn("could not lower the target for a gone instance that did not serve", "error", err)
		return
	}
	w, err := t.observe(ctx, cfg, fs)
	if err != nil {
		log.Warn("could not lower the target for a gone instance that did not serve", "error", err)
		return
	}
	c := t.capacityOf(cfg, fs, w, w.members(cfg))
	if w.target() <= c.serving+c.held {
		return // the target holds no unit for it (or EC2 refilled it already)
	}
	from, to, err := t.changeTarget(ctx, fs, -1)
	if err != nil {
		log.Warn("could not lower the target for a gone instance that did not serve", "error", err)
		return
	}
	log.Info("an instance that did not serve is gone: target lowered by one (noTermination) so that EC2 does not refill capacity nobody asked for",
		"target_capacity", to, "read_before_change", from, "serving", c.serving)
}
