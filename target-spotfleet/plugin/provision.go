package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

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
	// removalNext and removalPause space the attempts to remove an
	// instance whose launch hook failed (EC2 or Nomad may keep refusing).
	removalNext  map[string]time.Time
	removalPause map[string]time.Duration
}

// Bounds of the pause between attempts to remove an instance whose launch
// hook failed.
const (
	refusedRetryMin = 5 * time.Second
	refusedRetryMax = 5 * time.Minute
)

// removalDue reports whether an attempt to remove the instance may start
// now, and if so spaces the next one (doubling the pause).
func (fs *fleetState) removalDue(id string, now time.Time) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.removalNext == nil {
		fs.prov.removalNext, fs.prov.removalPause = map[string]time.Time{}, map[string]time.Duration{}
	}
	if now.Before(fs.prov.removalNext[id]) {
		return false
	}
	pause := min(max(2*fs.prov.removalPause[id], refusedRetryMin), refusedRetryMax)
	fs.prov.removalPause[id], fs.prov.removalNext[id] = pause, now.Add(pause)
	return true
}

// provisionDue reports whether the fleet's scan is due, and makes the next
// one due at once when now is zero (after a scale-out).
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
		if cfg == nil || cfg.DryRun || !fs.provisionDue(t.now()) {
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
	busy := false
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
		t.startLaunch(bg, log, cfg, fs, in, n)
	}
	return busy, nil
}

// warnUngated reports whether the node has not been reported as ungated yet.
func (fs *fleetState) warnUngated(nodeID string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.ungatedWarned == nil {
		fs.prov.ungatedWarned = map[string]bool{}
	}
	if fs.prov.ungatedWarned[nodeID] {
		return false
	}
	fs.prov.ungatedWarned[nodeID] = true
	return true
}

// hookInstance is what the hooks know about an instance and its node.
func hookInstance(fleetID string, in fleet.Instance, n *nomadnode.Node) hooks.Instance {
	h := hooks.Instance{ID: in.ID, Type: in.Type, Zone: in.Zone, PrivateIP: in.PrivateIP, PrivateDNS: in.PrivateDNS, FleetID: fleetID}
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
	rec, err := hooks.ParseRecord(in.Tags[tagLaunchHooks])
	if err != nil {
		// Never run a hook again on a guess: a record that cannot be read
		// is a failure of the pipeline.
		t.hookFailed(ctx, log, cfg, fs, p, in, n, firstHook(cfg.Hooks.Launch), fmt.Errorf("the progress recorded in tag %s cannot be read (%v): not running hooks on a guess", tagLaunchHooks, err))
		return
	}
	if len(cfg.Hooks.Launch) > 0 && !rec.Done(cfg.Hooks.Launch) {
		fs.setStep(p, "running launch hooks "+cfg.Hooks.String())
		log.Info("node registered: running its launch hooks", "launch_hooks", hookNames(cfg.Hooks.Launch), "resumed", len(rec.Steps) > 0)
	}
	save := func(ctx context.Context, r hooks.Record) error {
		return t.fleet.Tag(ctx, []string{in.ID}, map[string]string{tagLaunchHooks: r.String()})
	}
	out := t.hookRunner().Launch(ctx, cfg.Hooks.Launch, hookInstance(cfg.FleetID, in, &n), rec, save)
	if ctx.Err() != nil || errors.Is(out.Err, context.Canceled) {
		log.Info("launch pipeline stopped (the plugin stops, or the instance leaves); its progress is recorded and resumed by the next scan", "error", out.Err)
		return
	}
	if !out.OK {
		t.hookFailed(ctx, log, cfg, fs, p, in, n, out.Hook, out.Err)
		return
	}
	hooksDone := t.now()
	fs.setStep(p, "admitting")
	if err := t.admit(ctx, log, cfg, n.ID); err != nil {
		log.Warn("launch hooks succeeded but the node could not be admitted; retried at the next scan", "error", err)
		return
	}
	log.Info("node admitted: it takes work now", "launch_hooks", hookNames(cfg.Hooks.Launch),
		"hooks_took", hooksDone.Sub(start).Round(time.Millisecond).String(),
		"admission_took", t.now().Sub(hooksDone).Round(time.Millisecond).String(),
		"registered_to_admitted", t.now().Sub(start).Round(time.Millisecond).String())
}

func firstHook(hs []*hooks.Hook) *hooks.Hook {
	if len(hs) > 0 {
		return hs[0]
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
	t.farewell(ctx, log, cfg, fs, in, n)
	if err := t.fleet.Terminate(ctx, []string{in.ID})[in.ID]; err != nil {
		log.Warn("could not terminate the instance whose launch hook failed; retried at the next scan", "error", err)
		return
	}
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
	return s[:253] + "..."
}

// hookStatus describes the fleet's provisioning for the status meta: the
// instances whose node is admitting (with the pipeline's step), those whose
// hook failed, and nodes that registered without the gate while launch hooks
// are configured.
func hookStatus(cfg *policyConfig, fs *fleetState, ms []member, now time.Time) (admitting, failed, ungated []string) {
	running := fs.provisioningNow(now)
	for _, m := range ms {
		id := m.inst.ID
		if v, ok := m.inst.Tags[tagHookFailed]; ok {
			failed = append(failed, id+": "+v)
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

// farewellTagPrefix starts the tags on the fleet request that record the
// terminate hooks of an instance that leaves: the instance's details and the
// hooks' progress, so that a restarted plugin finishes them (the instance
// itself may be gone, and its tags with it).
const farewellTagPrefix = "nomad-autoscaler:farewell:"

// farewellFailureAge is how long a failed terminate hook stays in the status.
const farewellFailureAge = time.Hour

// needsFarewell reports whether the instance's terminate hooks must run: some
// are configured and the instance had a node or ran a launch hook (an
// instance that never joined left nothing to undo).
func needsFarewell(cfg *policyConfig, in fleet.Instance, n *nomadnode.Node) bool {
	if len(cfg.Hooks.Terminate) == 0 {
		return false
	}
	_, ran := in.Tags[tagLaunchHooks]
	return n != nil || ran
}

// encodeFarewell writes the instance's details and the hooks' record in at
// most 256 characters (the node name, then the DNS name, are left out when
// they do not fit).
func encodeFarewell(h hooks.Instance, rec hooks.Record) string {
	q := func(s string) string { return url.QueryEscape(s) }
	fields := []string{"t=" + q(h.Type), "z=" + q(h.Zone), "ip=" + q(h.PrivateIP), "n=" + q(h.NodeID), "r=" + q(rec.String())}
	for _, extra := range [][]string{{"dns=" + q(h.PrivateDNS), "nn=" + q(h.NodeName)}, {"dns=" + q(h.PrivateDNS)}, nil} {
		v := strings.Join(append(append([]string{}, fields...), extra...), " ")
		if len(v) <= 256 {
			return v
		}
	}
	return truncateTag(strings.Join(fields, " "))
}

// decodeFarewell reads what encodeFarewell wrote.
func decodeFarewell(instanceID, fleetID, v string) (hooks.Instance, hooks.Record, error) {
	h := hooks.Instance{ID: instanceID, FleetID: fleetID}
	var rec hooks.Record
	for _, f := range strings.Fields(v) {
		k, raw, _ := strings.Cut(f, "=")
		val, err := url.QueryUnescape(raw)
		if err != nil {
			return h, rec, fmt.Errorf("field %s: %w", k, err)
		}
		switch k {
		case "t":
			h.Type = val
		case "z":
			h.Zone = val
		case "ip":
			h.PrivateIP = val
		case "dns":
			h.PrivateDNS = val
		case "n":
			h.NodeID = val
		case "nn":
			h.NodeName = val
		case "r":
			if rec, err = hooks.ParseRecord(val); err != nil {
				return h, rec, err
			}
		}
	}
	return h, rec, nil
}

// startFarewellOnce claims the instance's terminate hooks for this process.
func (fs *fleetState) startFarewellOnce(id string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.farewells == nil {
		fs.prov.farewells = map[string]bool{}
	}
	if fs.prov.farewells[id] {
		return false
	}
	fs.prov.farewells[id] = true
	return true
}

func (fs *fleetState) farewellFailed(id, why string, at time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.farewellFailures == nil {
		fs.prov.farewellFailures = map[string]farewellFailure{}
	}
	fs.prov.farewellFailures[id] = farewellFailure{why: why, at: at}
}

// recentFarewellFailures lists the terminate hooks that failed within
// farewellFailureAge.
func (fs *fleetState) recentFarewellFailures(now time.Time) []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []string
	for id, f := range fs.prov.farewellFailures {
		if now.Sub(f.at) > farewellFailureAge {
			delete(fs.prov.farewellFailures, id)
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s (%s ago)", id, f.why, now.Sub(f.at).Round(time.Second)))
	}
	sort.Strings(out)
	return out
}

type farewellFailure struct {
	why string
	at  time.Time
}

// farewell records and starts the terminate hooks of an instance that is
// going now (an interruption, a removal this plugin has just made). It
// returns at once; the hooks run in the background.
func (t *TargetPlugin) farewell(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, in fleet.Instance, n *nomadnode.Node) {
	if !needsFarewell(cfg, in, n) || !fs.startFarewellOnce(in.ID) {
		return
	}
	h := hookInstance(cfg.FleetID, in, n)
	if err := t.fleet.Tag(ctx, []string{fs.id}, map[string]string{farewellTagPrefix + in.ID: encodeFarewell(h, hooks.Record{})}); err != nil {
		log.Warn("could not record the terminate hooks on the fleet request (they run now; a restart before they end would not resume them)", "instance_id", in.ID, "error", err)
	}
	t.runFarewell(log, cfg, fs, h, hooks.Record{})
}

// farewellOf starts the terminate hooks of a fleet instance known by id
// only (an interruption): its details come from the last observation or EC2.
func (t *TargetPlugin) farewellOf(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, id string) {
	if len(cfg.Hooks.Terminate) == 0 {
		return
	}
	in, _ := t.instanceInfo(ctx, fs, id)
	n, err := t.nodeOf(ctx, cfg, id)
	if err != nil {
		n = nil
	}
	t.farewell(ctx, log, cfg, fs, in, n)
}

// runFarewell runs the terminate hooks of one instance in the background
// (the caller has claimed them with startFarewellOnce) and removes their record from the fleet request when
// they have ended (failures are logged and shown in the status; they never
// stop a removal).
func (t *TargetPlugin) runFarewell(log hclog.Logger, cfg *policyConfig, fs *fleetState, h hooks.Instance, rec hooks.Record) {
	log = log.With("instance_id", h.ID, "node_id", h.NodeID)
	t.pipelines.Add(1)
	go func() {
		defer t.pipelines.Done()
		ctx, cancel := context.WithCancel(t.background())
		defer cancel()
		key := farewellTagPrefix + h.ID
		save := func(ctx context.Context, r hooks.Record) error {
			return t.fleet.Tag(ctx, []string{fs.id}, map[string]string{key: encodeFarewell(h, r)})
		}
		log.Info("instance leaves: running its terminate hooks", "terminate_hooks", hookNames(cfg.Hooks.Terminate))
		out := t.hookRunner().Terminate(ctx, cfg.Hooks.Terminate, h, rec, save)
		if ctx.Err() != nil {
			log.Info("terminate hooks stopped with the plugin; the next process resumes them", "error", out.Err)
			return
		}
		if !out.OK {
			name := "?"
			if out.Hook != nil {
				name = out.Hook.Name
			}
			fs.farewellFailed(h.ID, fmt.Sprintf("terminate hook %s failed: %v", name, out.Err), t.now())
			log.Warn("terminate hook failed: the instance is gone anyway; clean up by hand what the hook would have (for example the AWX inventory host)", "hook", name, "why", out.Err)
		} else {
			log.Info("terminate hooks done", "terminate_hooks", hookNames(cfg.Hooks.Terminate))
		}
		uctx, ucancel := context.WithTimeout(ctx, 30*time.Second)
		defer ucancel()
		if err := t.fleet.Untag(uctx, []string{fs.id}, key); err != nil {
			log.Warn("could not remove the record of the finished terminate hooks from the fleet request", "error", err)
		}
	}()
}

// resumeFarewells starts the terminate hooks recorded on the fleet request
// by an earlier process.
func (t *TargetPlugin) resumeFarewells(log hclog.Logger, cfg *policyConfig, fs *fleetState, tags map[string]string) {
	for k, v := range tags {
		id, ok := strings.CutPrefix(k, farewellTagPrefix)
		if !ok {
			continue
		}
		h, rec, err := decodeFarewell(id, cfg.FleetID, v)
		if err != nil {
			log.Warn("cannot read the recorded terminate hooks of an instance; not running them on a guess", "instance_id", id, "tag", k, "error", err)
			continue
		}
		if len(cfg.Hooks.Terminate) == 0 || !fs.startFarewellOnce(id) {
			continue
		}
		t.runFarewell(log, cfg, fs, h, rec)
	}
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
	found, err := t.fleet.DescribeInstances(ctx, []string{id})
	if err != nil || len(found) != 1 {
		return fleet.Instance{ID: id}, false
	}
	return found[0], true
}
