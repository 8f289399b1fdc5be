package plugin

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
)

// Tags of the provisioning pipeline.
const (
	// tagLaunchHooks on an instance holds the progress of its launch
	// hooks (hooks.Record), written before each hook starts and after it
	// ends, so that a restarted plugin neither runs a hook twice nor
	// forgets one.
	tagLaunchHooks = "nomad-autoscaler:launch-hooks"
	// tagHookFailed on an instance records that a launch hook failed:
	// "<on_failure> <hook>: <why>". With on_failure terminate the instance
	// is being removed (a restart finishes the removal); with keep it stays
	// un-admitted for debugging.
	tagHookFailed = "nomad-autoscaler:hook-failed"
)

// Default pace of the provisioning scan: every provisionFast while an
// instance of the fleet waits for its node or its hooks, else every
// provisionSlow (new instances are found within that time even when no
// scale-out of this process launched them).
const (
	defaultProvisionFast = 2 * time.Second
	defaultProvisionSlow = 15 * time.Second
	// admitWait bounds the wait for the servers to show a node's new gate
	// value (the client reports dynamic metadata within about 10 s).
	defaultAdmitWait = time.Minute
)

// provisioning is the launch pipeline of one instance run by this process.
type provisioning struct {
	cancel context.CancelFunc
	// since is when the pipeline started; step is what it does now.
	since time.Time
	step  string
}

// provisionState is what fleetState keeps about the pipelines.
type provisionState struct {
	running map[string]*provisioning // instance id
	// nextScan is when the provisioning scan of the fleet is due.
	nextScan time.Time
	// ungatedWarned holds the nodes already reported as registered without
	// the admission gate.
	ungatedWarned map[string]bool
	// farewells holds the instances whose terminate hooks this process
	// has started; farewellFailures the recent failures, for the status.
	farewells        map[string]bool
	farewellFailures map[string]farewellFailure
	pendingFarewells map[string]pendingFarewell
	// farewellsResumed says the fleet request's farewell records have been
	// read by this process.
	farewellsResumed bool
	// removed holds the launch-hook failures of instances removed after
	// them (on_failure terminate), shown in the status for an hour after
	// the instance is gone.
	removed map[string]farewellFailure
	// fastUntil keeps the scan fast while instances are expected (a
	// replacement the maintain fleet launches after a removal).
	fastUntil time.Time
	// records holds launch records that could not be written to their
	// instance yet; configErrs the configuration errors that hold nodes
	// back; retryAt/retryPause space the attempts after either; hooksDone
	// is when an instance's launch hooks ended (its admission deadline
	// runs from it).
	records    map[string]hooks.Record
	configErrs map[string]string
	retryAt    map[string]time.Time
	retryPause map[string]time.Duration
	hooksDone  map[string]time.Time
}

// expectInstances keeps the provisioning scan fast for a while: new
// instances are coming that this process did not ask for by a scale-out
// (a refill after a removal, a replacement after an interruption).
func (fs *fleetState) expectInstances(now time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.prov.fastUntil = now.Add(2 * time.Minute)
	fs.prov.nextScan = time.Time{}
}

func (fs *fleetState) expectingInstances(now time.Time) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return now.Before(fs.prov.fastUntil)
}

func (fs *fleetState) noteRemoved(id, why string, at time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.removed == nil {
		fs.prov.removed = map[string]farewellFailure{}
	}
	fs.prov.removed[id] = farewellFailure{why: why, at: at}
}

// recentRemoved lists, for an hour, the instances removed after a failed
// launch hook that are gone (those still running are listed from their tag).
func (fs *fleetState) recentRemoved(now time.Time, running map[string]bool) []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []string
	for id, f := range fs.prov.removed {
		if now.Sub(f.at) > farewellFailureAge {
			delete(fs.prov.removed, id)
			continue
		}
		if !running[id] {
			out = append(out, fmt.Sprintf("%s: %s (removed at %s; the fleet replaces it)", id, f.why, f.at.UTC().Format(time.RFC3339)))
		}
	}
	return out

}

// Bounds of the pause before a launch pipeline is tried again after a
// configuration error or a record that could not be written.
const (
	hookRetryMin = 5 * time.Second
	hookRetryMax = 5 * time.Minute
)

func (fs *fleetState) provInit() {
	if fs.prov.records == nil {
		fs.prov.records, fs.prov.configErrs = map[string]hooks.Record{}, map[string]string{}
		fs.prov.retryAt, fs.prov.retryPause = map[string]time.Time{}, map[string]time.Duration{}
		fs.prov.hooksDone = map[string]time.Time{}
	}
}

func (fs *fleetState) memRecord(id string) (hooks.Record, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	r, ok := fs.prov.records[id]
	return r, ok
}

func (fs *fleetState) keepMemRecord(id string, r hooks.Record) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	fs.prov.records[id] = r
}

func (fs *fleetState) dropMemRecord(id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	delete(fs.prov.records, id)
}

// retryLater holds the instance's pipeline back for a growing pause and
// returns it.
func (fs *fleetState) retryLater(id string, now time.Time) time.Duration {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	pause := min(max(2*fs.prov.retryPause[id], hookRetryMin), hookRetryMax)
	fs.prov.retryPause[id], fs.prov.retryAt[id] = pause, now.Add(pause)
	return pause
}

// mayTry reports whether the instance's pipeline may start now.
func (fs *fleetState) mayTry(id string, now time.Time) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	return !now.Before(fs.prov.retryAt[id])
}

// noteConfigError records the error; it reports whether it is new or changed.
func (fs *fleetState) noteConfigError(id, what string, _ time.Time) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	changed := fs.prov.configErrs[id] != what
	fs.prov.configErrs[id] = what
	return changed
}

func (fs *fleetState) clearConfigError(id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	delete(fs.prov.configErrs, id)
}

func (fs *fleetState) configErrors() map[string]string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	out := make(map[string]string, len(fs.prov.configErrs))
	for k, v := range fs.prov.configErrs {
		out[k] = v
	}
	return out
}

// hooksDoneAt returns when the instance's launch hooks first ended OK in
// this process (now, the first time).
func (fs *fleetState) hooksDoneAt(id string, now time.Time) time.Time {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	if at, ok := fs.prov.hooksDone[id]; ok {
		return at
	}
	fs.prov.hooksDone[id] = now
	return now
}

// restartAdmissionClock makes the admission deadline run from the next
// success of the instance's launch hooks.
func (fs *fleetState) restartAdmissionClock(id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	delete(fs.prov.hooksDone, id)
}

// forgetAttempts drops what the pipelines kept about an admitted instance.
func (fs *fleetState) forgetAttempts(id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.provInit()
	delete(fs.prov.records, id)
	delete(fs.prov.configErrs, id)
	delete(fs.prov.retryAt, id)
	delete(fs.prov.retryPause, id)
	delete(fs.prov.hooksDone, id)
}

// removalDue reports whether an attempt to remove an instance whose launch
// hook failed may start now, and if so spaces the next one (the pause of
// retryLater: EC2 or Nomad may keep refusing).
func (fs *fleetState) removalDue(id string, now time.Time) bool {
	if !fs.mayTry(id, now) {
		return false
	}
	fs.retryLater(id, now)
	return true
}

// provisionDue reports whether the fleet's provisioning scan is due.
func (fs *fleetState) provisionDue(now time.Time) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return !now.Before(fs.prov.nextScan)
}

func (fs *fleetState) scheduleScan(at time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.prov.nextScan = at
}

// startProvisioning records a pipeline; false when one runs already.
func (fs *fleetState) startProvisioning(id string, p *provisioning) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.running == nil {
		fs.prov.running = map[string]*provisioning{}
	}
	if _, ok := fs.prov.running[id]; ok {
		return false
	}
	fs.prov.running[id] = p
	return true
}

func (fs *fleetState) endProvisioning(id string, p *provisioning) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.running[id] == p {
		delete(fs.prov.running, id)
	}
}

func (fs *fleetState) setStep(p *provisioning, step string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	p.step = step
}

// stopProvisioning cancels the pipeline of an instance that leaves (a
// scale-in chose it, it is interrupted): its hooks' progress stays recorded.
func (fs *fleetState) stopProvisioning(id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if p := fs.prov.running[id]; p != nil {
		p.cancel()
	}
}

// provisioningNow describes the running pipelines, for the status.
func (fs *fleetState) provisioningNow(now time.Time) map[string]string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := map[string]string{}
	for id, p := range fs.prov.running {
		out[id] = fmt.Sprintf("%s for %s", p.step, now.Sub(p.since).Round(time.Second))
	}
	return out
}

// hookRunner returns the runner of the hooks (one per plugin, so that AWX
// template names are resolved once).
func (t *TargetPlugin) hookRunner() *hooks.Runner {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.runner == nil {
		t.runner = &hooks.Runner{Agent: t.hookAgent, Nomad: t.nodes, Logger: t.logger.Named("hooks"), Now: t.now,
			Poll: t.hookPoll, Redact: t.secrets}
	}
	return t.runner
}

// provision runs the provisioning scan of every managed fleet that is due.
func (t *TargetPlugin) provision(ctx context.Context) {
	for _, fs := range t.managed() {
		cfg := fs.config()
		if cfg == nil || cfg.DryRun {
			continue
		}
		t.retryFarewells(fs)
		if !fs.provisionDue(t.now()) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		busy, err := t.provisionFleet(sctx, ctx, cfg, fs)
		cancel()
		next := t.provisionSlow
		if busy || err != nil {
			next = t.provisionFast
		}
		fs.scheduleScan(t.now().Add(next))
		if err != nil && ctx.Err() == nil {
			t.logger.Warn("provisioning scan failed; retrying", "spot_fleet_request_id", fs.id, "error", err)
		}
	}
}

// provisionFleet looks at the fleet's running instances and starts the
// launch pipeline of every gated node that is not admitted yet, resumes the
// removal of instances whose launch hook failed, and reports nodes that
// registered without the gate. It returns whether an instance still waits
// (for its node or its hooks), so that the next scan comes soon. bg is the
// context the pipelines run under (the plugin's background).
func (t *TargetPlugin) provisionFleet(ctx, bg context.Context, cfg *policyConfig, fs *fleetState) (bool, error) {
	all, err := t.fleet.Instances(ctx, cfg.FleetID)
	if err != nil {
		return false, err
	}
	t.noteOwners(cfg.FleetID, all)
	listing, err := t.mapper.PoolNodes(ctx, t.nodes, cfg.Pool, cfg.IDLookup)
	if err != nil {
		return false, err
	}
	nodes := map[string]nomadnode.Node{}
	for _, n := range listing.Nodes {
		nodes[n.InstanceID] = n
	}
	log := t.logger.With("spot_fleet_request_id", cfg.FleetID, "action", "provision")
	busy := fs.expectingInstances(t.now())
	for _, in := range all {
		if !in.Running() || fs.leaving(in.ID) || fs.isInFlight(in.ID) {
			continue
		}
		if _, marked := in.Tags[tagScaleIn]; marked {
			continue
		}
		if v, failed := in.Tags[tagHookFailed]; failed {
			if strings.HasPrefix(v, hooks.FailTerminate+" ") {
				busy = true
				if fs.removalDue(in.ID, t.now()) {
					t.startRemoval(bg, log, cfg, fs, in, nodes, v)
				}
			}
			continue
		}
		n, ok := nodes[in.ID]
		if !ok {
			// No node yet: booting (node_join_timeout covers one that
			// never comes).
			if !in.Described || t.now().Sub(in.LaunchTime) < cfg.JoinTimeout {
				busy = true
			}
			continue
		}
		if n.Status == api.NodeStatusDown {
			continue
		}
		gated, value := cfg.Gate.State(n.Meta)
		switch {
		case !gated:
			if len(cfg.Hooks.Launch) > 0 && fs.warnUngated(n.ID) {
				log.Warn("node registered without the admission gate: it took work at once, so its launch hooks are not run; set the client meta key in the launch template's user-data (see docs/hooks.md)",
					"instance_id", in.ID, "node_id", n.ID, "meta_key", cfg.Gate.MetaKey(), "launch_hooks", cfg.Hooks.String())
			}
			continue
		case value == nomadnode.GateAdmitted || value == nomadnode.GateFailed:
			continue
		}
		busy = true
		if fs.mayTry(in.ID, t.now()) {
			t.startLaunch(bg, log, cfg, fs, in, n)
		}
	}
	return busy, nil
}

// warnUngated reports whether the node has not been reported as ungated yet.
func (fs *fleetState) warnUngated(nodeID string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return firstTime(&fs.prov.ungatedWarned, nodeID)
}

// firstTime adds id to the set and reports whether it was not there yet;
// the caller holds fs.mu.
func firstTime(set *map[string]bool, id string) bool {
	if *set == nil {
		*set = map[string]bool{}
	}
	if (*set)[id] {
		return false
	}
	(*set)[id] = true
	return true
}

// hookInstance is what the hooks know about an instance and its node.
func hookInstance(fleetID string, in fleet.Instance, n *nomadnode.Node) hooks.Instance {
	h := hooks.Instance{ID: in.ID, Type: in.Type, Zone: in.Zone, PrivateIP: in.PrivateIP, PrivateDNS: in.PrivateDNS, FleetID: fleetID, LaunchTime: in.LaunchTime}
	if n != nil {
		h.NodeID, h.NodeName, h.NodeMeta = n.ID, n.Name, n.Meta
	}
	return h
}

// startLaunch starts the launch pipeline of the instance unless one runs.
func (t *TargetPlugin) startLaunch(bg context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, in fleet.Instance, n nomadnode.Node) {
	ctx, cancel := context.WithCancel(bg)
	p := &provisioning{cancel: cancel, since: t.now(), step: "starting"}
	if !fs.startProvisioning(in.ID, p) {
		cancel()
		return
	}
	t.pipelines.Add(1)
	go func() {
		defer t.pipelines.Done()
		defer cancel()
		defer fs.endProvisioning(in.ID, p)
		t.launch(ctx, log.With("instance_id", in.ID, "node_id", n.ID), cfg, fs, p, in, n)
	}()
}

// launch runs the instance's launch hooks, then admits its node, or applies
// the failed hook's failure policy.
func (t *TargetPlugin) launch(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, p *provisioning, in fleet.Instance, n nomadnode.Node) {
	start := t.now()
	save := func(ctx context.Context, r hooks.Record) error {
		return t.fleet.Tag(ctx, []string{in.ID}, map[string]string{tagLaunchHooks: r.String()})
	}
	rec, inMemory := fs.memRecord(in.ID)
	if inMemory {
		// An earlier attempt could not record its progress: record it now
		// (the hooks it lists as done are not run again either way).
		if err := save(ctx, rec); err == nil {
			fs.dropMemRecord(in.ID)
		}
	} else {
		var err error
		if rec, err = hooks.ParseRecord(in.Tags[tagLaunchHooks]); err != nil {
			// Never run a hook again on a guess: a record that cannot be
			// read is a failure of the pipeline.
			t.hookFailed(ctx, log, cfg, fs, p, in, n, lastHook(cfg.Hooks.Launch), fmt.Errorf("the progress recorded in tag %s cannot be read (%v): not running hooks on a guess", tagLaunchHooks, err))
			return
		}
	}
	if len(cfg.Hooks.Launch) > 0 && !rec.Done(cfg.Hooks.Launch) {
		fs.setStep(p, "running launch hooks "+hookNames(cfg.Hooks.Launch))
		log.Info("node registered: running its launch hooks", "launch_hooks", hookNames(cfg.Hooks.Launch), "resumed", len(rec.Steps) > 0)
	}
	h := hookInstance(cfg.FleetID, in, &n)
	out := t.hookRunner().Launch(ctx, cfg.Hooks.Launch, h, rec, save)
	switch {
	case ctx.Err() != nil || errors.Is(out.Err, context.Canceled):
		log.Info("launch pipeline stopped (the plugin stops, or the instance leaves); its progress is recorded and resumed by the next scan", "error", out.Err)
		return
	case errors.Is(out.Err, hooks.ErrNotRecorded):
		// Not the hook's failure: EC2 refused the tag write. What ran is
		// kept here, so nothing runs twice; the record is written later.
		fs.keepMemRecord(in.ID, out.Record)
		pause := fs.retryLater(in.ID, t.now())
		log.Warn("could not record the progress of the launch hooks on the instance; retried later (no hook runs twice)", "in", pause.String(), "error", out.Err)
		return
	case !out.OK && hooks.IsConfigError(out.Err):
		t.configError(log, fs, in.ID, hookName(out.Hook), out.Err)
		return
	case !out.OK:
		t.hookFailed(ctx, log, cfg, fs, p, in, n, out.Hook, out.Err)
		return
	}
	hooksDone := t.now()
	since := fs.hooksDoneAt(in.ID, hooksDone)
	fs.setStep(p, "admitting")
	if err := t.admit(ctx, log, cfg, n.ID); err != nil {
		switch {
		case ctx.Err() != nil:
		case nomadnode.IsRefused(err):
			t.configError(log, fs, in.ID, "admission", fmt.Errorf("Nomad refused the dynamic node metadata (the agent's Nomad token needs node:write): %w", err))
		case t.now().Sub(since) >= cfg.JoinTimeout:
			t.hookFailed(ctx, log, cfg, fs, p, in, n, admissionHook(cfg),
				fmt.Errorf("the node was not admitted within %s=%s after its launch hooks succeeded: %w", configKeyJoinTimeout, cfg.JoinTimeout, err))
		default:
			log.Warn("launch hooks succeeded but the node could not be admitted yet; retried at the next scan", "error", err,
				"gives_up_in", (cfg.JoinTimeout - t.now().Sub(since)).Round(time.Second).String())
		}
		return
	}
	fs.forgetAttempts(in.ID)
	log.Info("node admitted: it takes work now", "launch_hooks", hookNames(cfg.Hooks.Launch),
		"hooks_took", hooksDone.Sub(start).Round(time.Millisecond).String(),
		"admission_took", t.now().Sub(hooksDone).Round(time.Millisecond).String(),
		"pipeline_to_admitted", t.now().Sub(start).Round(time.Millisecond).String())
}

// configError reports a hook that cannot run because of the configuration
// or a service that refuses the plugin (AWX refuses the token, a template is
// missing, Nomad refuses the metadata): nothing about the instance is wrong,
// so no failure policy applies (terminating instances would only churn them
// while every replacement meets the same refusal). The node waits
// un-admitted, the status reports it, and the hook is tried again with a
// growing pause.
func (t *TargetPlugin) configError(log hclog.Logger, fs *fleetState, instanceID, hook string, err error) {
	pause := fs.retryLater(instanceID, t.now())
	fs.restartAdmissionClock(instanceID) // time spent refused is not the node's
	if fs.noteConfigError(instanceID, fmt.Sprintf("%s: %v", hook, err), t.now()) {
		log.Error("launch hook cannot run: a configuration or credentials problem, not the instance's; the node waits un-admitted and no instance is terminated for it; fix the setting the error names",
			"hook", hook, "error", err, "retry_in", pause.String())
	} else {
		log.Debug("launch hook still refused", "hook", hook, "error", err, "retry_in", pause.String())
	}
}

func hookName(h *hooks.Hook) string {
	if h == nil {
		return "?"
	}
	return h.Name
}

// admissionHook stands for the admission step in a failure: it takes the
// failure policy of the last launch hook (terminate without hooks).
func admissionHook(cfg *policyConfig) *hooks.Hook {
	h := &hooks.Hook{Name: "admission", OnFailure: hooks.FailTerminate}
	if l := lastHook(cfg.Hooks.Launch); len(cfg.Hooks.Launch) > 0 {
		h.OnFailure = l.OnFailure
	}
	return h
}

func lastHook(hs []*hooks.Hook) *hooks.Hook {
	if len(hs) > 0 {
		return hs[len(hs)-1]
	}
	return &hooks.Hook{Name: "pipeline", OnFailure: hooks.FailKeep}
}

func hookNames(hs []*hooks.Hook) string {
	names := make([]string, len(hs))
	for i, h := range hs {
		names[i] = h.Name
	}
	return strings.Join(names, ",")
}

// admit sets the node's gate to admitted (and the admission time) through
// dynamic node metadata and waits until the servers show it, so that the
// node is counted as capacity only once the scheduler may place work there.
func (t *TargetPlugin) admit(ctx context.Context, log hclog.Logger, cfg *policyConfig, nodeID string) error {
	admitted, at := nomadnode.GateAdmitted, t.now().UTC().Format(time.RFC3339)
	meta := map[string]*string{cfg.Gate.MetaKey(): &admitted, cfg.Gate.AdmittedAtKey(): &at}
	if err := t.withNomadRetry(ctx, log, "admitting the node", func() error { return t.nodes.ApplyMeta(ctx, nodeID, meta) }); err != nil {
		return err
	}
	return t.waitGate(ctx, cfg, nodeID, nomadnode.GateAdmitted)
}

// waitGate waits until the servers show the node's gate at value.
func (t *TargetPlugin) waitGate(ctx context.Context, cfg *policyConfig, nodeID, value string) error {
	ctx, cancel := context.WithTimeout(ctx, t.admitWait)
	defer cancel()
	pause := 250 * time.Millisecond
	for {
		n, err := t.nodes.NodeInfo(ctx, nodeID)
		if err == nil {
			if _, v := cfg.Gate.State(n.Meta); v == value {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("node %s: the servers do not show %s=%s yet: %w", nodeID, cfg.Gate.MetaKey(), value, err)
			}
			return fmt.Errorf("node %s: the servers do not show %s=%s within %s", nodeID, cfg.Gate.MetaKey(), value, t.admitWait)
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// hookFailed applies the failure policy of the hook that failed: keep
// leaves the node un-admitted (gate failed) and reports it; terminate
// records the failure on the instance and removes it (the fleet replaces it).
func (t *TargetPlugin) hookFailed(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, p *provisioning, in fleet.Instance, n nomadnode.Node, h *hooks.Hook, why error) {
	policy := h.OnFailure
	if policy == "" {
		policy = hooks.FailTerminate
	}
	value := truncateTag(fmt.Sprintf("%s %s: %v", policy, h.Name, why))
	if err := t.fleet.Tag(ctx, []string{in.ID}, map[string]string{tagHookFailed: value}); err != nil {
		log.Warn("launch hook failed, and the failure could not be recorded on the instance; retried at the next scan", "hook", h.Name, "why", why, "error", err)
		return
	}
	if policy == hooks.FailKeep {
		fs.setStep(p, "keeping")
		failed := nomadnode.GateFailed
		if err := t.withNomadRetry(ctx, log, "marking the node's gate failed", func() error {
			return t.nodes.ApplyMeta(ctx, n.ID, map[string]*string{cfg.Gate.MetaKey(): &failed})
		}); err != nil {
			log.Warn("could not set the node's gate to failed (it stays pending: it takes no work either way)", "error", err)
		}
		log.Warn("launch hook failed: the node is kept un-admitted for debugging (on_failure=keep); it takes no work and is not counted; terminate the instance when done",
			"hook", h.Name, "why", why)
		return
	}
	log.Warn("launch hook failed: the instance is removed and the fleet replaces it (on_failure=terminate)", "hook", h.Name, "why", why)
	fs.setStep(p, "removing after a failed hook")
	fs.removalDue(in.ID, t.now())
	t.removeRefused(ctx, log, cfg, fs, in, &n, value)
}

// startRemoval resumes the removal of an instance whose launch hook failed
// (recorded by an earlier process, or retried after an error).
func (t *TargetPlugin) startRemoval(bg context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, in fleet.Instance, nodes map[string]nomadnode.Node, why string) {
	ctx, cancel := context.WithCancel(bg)
	p := &provisioning{cancel: cancel, since: t.now(), step: "removing after a failed hook"}
	if !fs.startProvisioning(in.ID, p) {
		cancel()
		return
	}
	var node *nomadnode.Node
	if n, ok := nodes[in.ID]; ok {
		node = &n
	}
	t.pipelines.Add(1)
	go func() {
		defer t.pipelines.Done()
		defer cancel()
		defer fs.endProvisioning(in.ID, p)
		t.removeRefused(ctx, log.With("instance_id", in.ID), cfg, fs, in, node, why)
	}()
}

// removeRefused removes an instance whose launch hook failed: its node is
// drained if anything runs there (system jobs, or work placed before a gate
// existed), its terminate hooks are started, and the instance is terminated
// with the target unchanged, so the maintain fleet replaces it.
func (t *TargetPlugin) removeRefused(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, in fleet.Instance, n *nomadnode.Node, why string) {
	if fs.leaving(in.ID) || fs.isInFlight(in.ID) {
		return // an interruption or a scale-in has it
	}
	if n != nil && n.Status != api.NodeStatusDown {
		busy, err := nomadnode.RunningAllocations(ctx, t.nodes, n.ID, cfg.IgnoreSystemJobs)
		if err != nil {
			log.Warn("could not read the allocations of the node whose launch hook failed; retried at the next scan", "error", err)
			return
		}
		if busy > 0 {
			meta := drainMeta(cfg.FleetID)
			meta["reason"] = "launch-hook-failed"
			spec := &api.DrainSpec{Deadline: cfg.DrainDeadline, IgnoreSystemJobs: cfg.IgnoreSystemJobs}
			if err := t.withNomadRetry(ctx, log, "draining the node whose launch hook failed", func() error {
				return t.nodes.StartDrain(ctx, n.ID, spec, meta)
			}); err != nil {
				log.Warn("could not drain the node whose launch hook failed; retried at the next scan", "error", err)
				return
			}
			wctx, cancel := context.WithTimeout(ctx, cfg.DrainDeadline+drainStopMargin)
			err := nomadnode.WaitDrained(wctx, t.nodes, n.ID, nomadnode.WaitOptions{Marks: meta, IgnoreSystemJobs: cfg.IgnoreSystemJobs, Poll: t.drainPoll})
			cancel()
			if err != nil {
				log.Warn("drain of the node whose launch hook failed did not complete; retried at the next scan", "error", err)
				return
			}
		}
	}
	// The world may have changed while it drained: terminate only an
	// instance that still runs and that nothing else is removing.
	found, err := t.fleet.DescribeInstances(ctx, []string{in.ID})
	if err != nil {
		log.Warn("could not read the instance whose launch hook failed before terminating it; retried later", "error", err)
		return
	}
	if len(found) != 1 || !found[0].Running() {
		return // gone already
	}
	if fs.leaving(in.ID) || fs.isInFlight(in.ID) {
		return
	}
	fs.setInFlight([]string{in.ID}, true)
	defer fs.setInFlight([]string{in.ID}, false)
	job := t.claimFarewell(ctx, log, cfg, fs, in, n)
	if err := t.fleet.Terminate(ctx, []string{in.ID})[in.ID]; err != nil {
		t.dropFarewell(ctx, log, fs, job)
		log.Warn("could not terminate the instance whose launch hook failed; retried later", "error", err)
		return
	}
	if job != nil {
		t.runFarewell(log, cfg, fs, job)
	}
	fs.noteRemoved(in.ID, why, t.now())
	fs.expectInstances(t.now())
	if cfg.Purge && n != nil {
		fs.queuePurge(n.ID, in.ID)
	}
	log.Warn("terminated the instance whose launch hook failed; the fleet launches a replacement", "why", why)
}

// truncateTag cuts a tag value to EC2's 256 characters.
func truncateTag(s string) string {
	if len(s) <= 256 {
		return s
	}
	cut := 253
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut-- // never split a character: EC2 refuses invalid UTF-8
	}
	return s[:cut] + "..."
}

// hookStatus describes the fleet's provisioning for the status meta: the
// instances whose node is admitting (with the pipeline's step), those whose
// hook failed, and nodes that registered without the gate while launch hooks
// are configured.
func hookStatus(cfg *policyConfig, fs *fleetState, ms []member, now time.Time) (admitting, failed, ungated []string) {
	running := fs.provisioningNow(now)
	configErrs := fs.configErrors()
	members := map[string]bool{}
	for _, m := range ms {
		members[m.inst.ID] = true
	}
	failed = append(failed, fs.recentRemoved(now, members)...)
	for _, m := range ms {
		id := m.inst.ID
		if v, ok := m.inst.Tags[tagHookFailed]; ok {
			failed = append(failed, id+": "+v)
			continue
		}
		if v, ok := configErrs[id]; ok && m.phase == nomadnode.PhaseAdmitting {
			failed = append(failed, id+": waiting, configuration error (retried; no failure policy applies): "+v)
			continue
		}
		switch {
		case m.phase == nomadnode.PhaseAdmitting:
			what := running[id]
			if what == "" {
				what = "waiting for the provisioning scan"
			}
			admitting = append(admitting, id+" ("+what+")")
		case m.node != nil && len(cfg.Hooks.Launch) > 0 && m.phase == nomadnode.PhaseReady:
			if gated, _ := cfg.Gate.State(m.node.Meta); !gated {
				ungated = append(ungated, id)
			}
		}
	}
	sort.Strings(admitting)
	sort.Strings(failed)
	sort.Strings(ungated)
	return admitting, failed, ungated
}

// background is the context the plugin's background work runs under.
func (t *TargetPlugin) background() context.Context {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bgCtx == nil {
		return context.Background()
	}
	return t.bgCtx
}

// instanceInfo returns the fleet instance with this id as last observed, or
// as EC2 describes it now.
func (t *TargetPlugin) instanceInfo(ctx context.Context, fs *fleetState, id string) (fleet.Instance, bool) {
	fs.mu.Lock()
	w := fs.last
	fs.mu.Unlock()
	if w != nil {
		for _, in := range w.instances {
			if in.ID == id {
				return in, true
			}
		}
	}
	t.mu.Lock()
	known, seen := t.owners[id]
	t.mu.Unlock()
	found, err := t.fleet.DescribeInstances(ctx, []string{id})
	if err != nil || len(found) != 1 {
		if seen && known.inst.ID == id {
			return known.inst, true
		}
		return fleet.Instance{ID: id}, false
	}
	in := found[0]
	if seen && known.inst.ID == id {
		// EC2 describes a terminated instance without its addresses.
		if in.PrivateIP == "" {
			in.PrivateIP = known.inst.PrivateIP
		}
		if in.PrivateDNS == "" {
			in.PrivateDNS = known.inst.PrivateDNS
		}
		if in.Zone == "" {
			in.Zone = known.inst.Zone
		}
	}
	return in, true
}
