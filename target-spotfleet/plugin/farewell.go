package plugin

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
)

// Terminate hooks ("farewells") run once for every instance that leaves
// after it had a node or ran a launch hook. Two records keep them:
//   - tagFarewell on the instance says its terminate hooks were claimed
//     (written while the instance still runs, before the plugin terminates
//     it or as soon as an interruption warning comes): a later event about
//     the instance, in this process or another, never runs them again;
//   - a farewellTagPrefix+<instance id> tag on the fleet request holds the
//     instance's details and the hooks' progress while they run, so that a
//     restarted plugin finishes them even when the instance is gone. It is
//     removed when they end.
const (
	tagFarewell       = "nomad-autoscaler:farewell"
	farewellTagPrefix = "nomad-autoscaler:farewell:"
)

// farewellTagBudget is how many tags the fleet request may carry before a
// farewell is no longer recorded there (EC2 allows 50 per resource; the
// fleet's owners and this plugin's own tags need the rest). An unrecorded
// farewell still runs; only a restart before it ends would lose it, which is
// logged.
const farewellTagBudget = 40

// farewellFailureAge is how long a failed terminate hook stays in the status.
const farewellFailureAge = time.Hour

// farewellRetry paces the attempts of terminate hooks whose record could not
// be written; after farewellUnrecordedAfter attempts they run unrecorded.
const (
	farewellRetry           = 10 * time.Second
	farewellUnrecordedAfter = 3
)

// needsFarewell reports whether the instance's terminate hooks must run: some
// are configured, no process claimed them yet, and the instance had a node or
// ran a launch hook (an instance that never joined left nothing to undo).
func needsFarewell(cfg *policyConfig, in fleet.Instance, n *nomadnode.Node) bool {
	if len(cfg.Hooks.Terminate) == 0 {
		return false
	}
	if _, claimed := in.Tags[tagFarewell]; claimed {
		return false
	}
	_, ran := in.Tags[tagLaunchHooks]
	return n != nil || ran
}

// farewellEscape escapes only what would break the encoding (space and
// percent): EC2 takes any other character in a tag value, and the hooks'
// records use none of them, so a record is stored at its own length.
func farewellEscape(s string) string {
	return strings.NewReplacer("%", "%25", " ", "%20").Replace(s)
}

func farewellUnescape(s string) string {
	return strings.NewReplacer("%20", " ", "%25", "%").Replace(s)
}

// encodeFarewell writes the instance's details and the hooks' record in at
// most 256 characters; the node name, the DNS name, the zone and the type
// are left out, in that order, when they do not fit (the record, the
// address and the node id are kept).
func encodeFarewell(h hooks.Instance, rec hooks.Record) string {
	e := farewellEscape
	must := []string{"r=" + e(rec.String()), "ip=" + e(h.PrivateIP), "n=" + e(h.NodeID)}
	optional := []string{"t=" + e(h.Type), "z=" + e(h.Zone), "dns=" + e(h.PrivateDNS), "nn=" + e(h.NodeName)}
	for keep := len(optional); keep >= 0; keep-- {
		v := strings.Join(append(append([]string{}, must...), optional[:keep]...), " ")
		if len(v) <= 256 {
			return v
		}
	}
	return truncateTag(strings.Join(must, " "))
}

// decodeFarewell reads what encodeFarewell wrote.
func decodeFarewell(instanceID, fleetID, v string) (hooks.Instance, hooks.Record, error) {
	h := hooks.Instance{ID: instanceID, FleetID: fleetID}
	var rec hooks.Record
	for _, f := range strings.Fields(v) {
		k, raw, _ := strings.Cut(f, "=")
		val := farewellUnescape(raw)
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
			var err error
			if rec, err = hooks.ParseRecord(val); err != nil {
				return h, rec, err
			}
		}
	}
	return h, rec, nil
}

// farewellJob is one instance's terminate hooks, claimed by this process.
type farewellJob struct {
	h        hooks.Instance
	rec      hooks.Record
	recorded bool // its progress is written to the fleet request
	// written says a record was written once: it is removed at the end
	// even when later writes failed.
	written  bool
	attempts int
}

// startFarewellOnce claims the instance's terminate hooks for this process.
func (fs *fleetState) startFarewellOnce(id string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return firstTime(&fs.prov.farewells, id)
}

func (fs *fleetState) releaseFarewell(id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	delete(fs.prov.farewells, id)
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

// pendingFarewell is a farewell waiting for another attempt.
type pendingFarewell struct {
	job *farewellJob
	due time.Time
}

func (fs *fleetState) deferFarewell(job *farewellJob, due time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.pendingFarewells == nil {
		fs.prov.pendingFarewells = map[string]pendingFarewell{}
	}
	fs.prov.pendingFarewells[job.h.ID] = pendingFarewell{job: job, due: due}
}

// dueFarewells takes the deferred farewells whose time has come.
func (fs *fleetState) dueFarewells(now time.Time) []*farewellJob {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []*farewellJob
	for id, p := range fs.prov.pendingFarewells {
		if !now.Before(p.due) {
			out = append(out, p.job)
			delete(fs.prov.pendingFarewells, id)
		}
	}
	return out
}

// claimFarewell claims and records the terminate hooks of an instance that
// is about to go (or going): the mark on the instance, then the record on
// the fleet request. It returns nil when none must run (none configured, an
// instance that never joined, or claimed before).
func (t *TargetPlugin) claimFarewell(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, in fleet.Instance, n *nomadnode.Node) *farewellJob {
	if cfg.DryRun || !needsFarewell(cfg, in, n) || !fs.startFarewellOnce(in.ID) {
		return nil
	}
	job := &farewellJob{h: hookInstance(cfg.FleetID, in, n)}
	if err := t.fleet.Tag(ctx, []string{in.ID}, map[string]string{tagFarewell: "claimed at=" + t.now().UTC().Format(time.RFC3339)}); err != nil {
		log.Warn("could not mark the instance's terminate hooks as claimed (a late event about it may run them again in another process)", "instance_id", in.ID, "error", err)
	}
	job.recorded = t.recordFarewell(ctx, log, fs, job)
	job.written = job.recorded
	return job
}

// recordFarewell writes the farewell's record on the fleet request, unless
// the request carries too many tags already.
func (t *TargetPlugin) recordFarewell(ctx context.Context, log hclog.Logger, fs *fleetState, job *farewellJob) bool {
	tags, err := t.fleet.Tags(ctx, fs.id)
	if err == nil && len(tags) >= farewellTagBudget {
		log.Warn("the fleet request carries too many tags to record the instance's terminate hooks (EC2 allows 50): they run now, but a restart before they end would not resume them",
			"instance_id", job.h.ID, "fleet_tags", len(tags))
		return false
	}
	if err == nil {
		err = t.fleet.Tag(ctx, []string{fs.id}, map[string]string{farewellTagPrefix + job.h.ID: encodeFarewell(job.h, job.rec)})
	}
	if err != nil {
		log.Warn("could not record the instance's terminate hooks on the fleet request; retried before they run", "instance_id", job.h.ID, "error", err)
		return false
	}
	return true
}

// dropFarewell gives up a claim (the instance was not removed after all).
func (t *TargetPlugin) dropFarewell(ctx context.Context, log hclog.Logger, fs *fleetState, job *farewellJob) {
	if job == nil {
		return
	}
	if job.written {
		if err := t.fleet.Untag(ctx, []string{fs.id}, farewellTagPrefix+job.h.ID); err != nil {
			log.Warn("could not remove the record of terminate hooks that are not needed", "instance_id", job.h.ID, "error", err)
		}
	}
	if err := t.fleet.Untag(ctx, []string{job.h.ID}, tagFarewell); err != nil {
		log.Warn("could not remove the terminate-hooks mark of an instance that stays", "instance_id", job.h.ID, "error", err)
	}
	fs.releaseFarewell(job.h.ID)
}

// farewell claims and starts the terminate hooks of an instance that is
// going now (an interruption, a removal this plugin has just made).
func (t *TargetPlugin) farewell(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, in fleet.Instance, n *nomadnode.Node) {
	if job := t.claimFarewell(ctx, log, cfg, fs, in, n); job != nil {
		t.runFarewell(log, cfg, fs, job)
	}
}

// farewellOf starts the terminate hooks of a fleet instance known by id
// only (an interruption, a state change): its details and tags come from the
// last observation or EC2; an instance neither knows is left alone.
func (t *TargetPlugin) farewellOf(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, id string) {
	if len(cfg.Hooks.Terminate) == 0 || cfg.DryRun {
		return
	}
	in, ok := t.instanceInfo(ctx, fs, id)
	if !ok {
		log.Debug("terminate hooks not started: the instance cannot be described", "instance_id", id)
		return
	}
	n, err := t.nodeOf(ctx, cfg, id)
	if err != nil {
		n = nil
	}
	t.farewell(ctx, log, cfg, fs, in, n)
}

// runFarewell runs claimed terminate hooks in the background and removes
// their record when they have ended. A failure is logged and shown in the
// status; it never stops a removal. Hooks whose progress cannot be recorded
// are tried again later, and run unrecorded after a few attempts rather than
// not at all.
func (t *TargetPlugin) runFarewell(log hclog.Logger, cfg *policyConfig, fs *fleetState, job *farewellJob) {
	log = log.With("instance_id", job.h.ID, "node_id", job.h.NodeID)
	t.pipelines.Add(1)
	go func() {
		defer t.pipelines.Done()
		ctx, cancel := context.WithCancel(t.background())
		defer cancel()
		key := farewellTagPrefix + job.h.ID
		job.attempts++
		if !job.recorded && job.attempts <= farewellUnrecordedAfter {
			job.recorded = t.recordFarewell(ctx, log, fs, job)
			job.written = job.written || job.recorded
		}
		save := func(ctx context.Context, r hooks.Record) error {
			if !job.recorded {
				return nil
			}
			return t.fleet.Tag(ctx, []string{fs.id}, map[string]string{key: encodeFarewell(job.h, r)})
		}
		if job.attempts == 1 {
			log.Info("instance leaves: running its terminate hooks", "terminate_hooks", hookNames(cfg.Hooks.Terminate), "recorded", job.recorded)
		}
		out := t.hookRunner().Terminate(ctx, cfg.Hooks.Terminate, job.h, job.rec, save)
		job.rec = out.Record
		switch {
		case ctx.Err() != nil:
			// The background stopped: the process ends (the next one
			// resumes recorded hooks), or it restarts on a reload (then
			// this process takes them up again).
			fs.deferFarewell(job, t.now())
			log.Info("terminate hooks stopped with the plugin's background; resumed when it runs again", "recorded", job.recorded, "error", out.Err)
			return
		case errors.Is(out.Err, hooks.ErrNotRecorded):
			if job.attempts >= farewellUnrecordedAfter {
				job.recorded = false // run them unrecorded rather than never
			}
			fs.deferFarewell(job, t.now().Add(farewellRetry))
			log.Warn("could not record the progress of the terminate hooks; retried", "in", farewellRetry.String(), "error", out.Err)
			return
		case !out.OK:
			fs.farewellFailed(job.h.ID, fmt.Sprintf("terminate hook %s failed: %v", hookName(out.Hook), out.Err), t.now())
			log.Warn("terminate hook failed: the instance is gone anyway; clean up by hand what the hook would have (for example the AWX inventory host)",
				"hook", hookName(out.Hook), "why", out.Err)
		default:
			log.Info("terminate hooks done", "terminate_hooks", hookNames(cfg.Hooks.Terminate))
		}
		if job.written {
			uctx, ucancel := context.WithTimeout(ctx, 30*time.Second)
			defer ucancel()
			if err := t.fleet.Untag(uctx, []string{fs.id}, key); err != nil {
				log.Warn("could not remove the record of the finished terminate hooks from the fleet request", "error", err)
			}
		}
	}()
}

// retryFarewells starts the deferred farewells that are due.
func (t *TargetPlugin) retryFarewells(fs *fleetState) {
	cfg := fs.config()
	if cfg == nil || cfg.DryRun {
		return
	}
	for _, job := range fs.dueFarewells(t.now()) {
		t.runFarewell(t.logger.With("spot_fleet_request_id", fs.id), cfg, fs, job)
	}
}

// resumeFarewells starts the terminate hooks recorded on the fleet request
// by an earlier process (once per process, at its first observation that is
// not a dry-run). Records left while the policy has no terminate hooks any
// more are removed.
func (t *TargetPlugin) resumeFarewells(ctx context.Context, log hclog.Logger, cfg *policyConfig, fs *fleetState, tags map[string]string) {
	for k, v := range tags {
		id, ok := strings.CutPrefix(k, farewellTagPrefix)
		if !ok {
			continue
		}
		if len(cfg.Hooks.Terminate) == 0 {
			if err := t.fleet.Untag(ctx, []string{fs.id}, k); err == nil {
				log.Warn("removed the record of terminate hooks an earlier process started: the policy has no terminate hooks any more", "instance_id", id)
			}
			continue
		}
		h, rec, err := decodeFarewell(id, cfg.FleetID, v)
		if err != nil {
			log.Warn("cannot read the recorded terminate hooks of an instance; not running them on a guess", "instance_id", id, "tag", k, "error", err)
			continue
		}
		if !fs.startFarewellOnce(id) {
			continue
		}
		job := &farewellJob{h: h, rec: rec, recorded: true, written: true}
		found, err := t.fleet.DescribeInstances(ctx, []string{id})
		if err != nil {
			fs.releaseFarewell(id)
			fs.unclaimResume() // read again at the next observation
			log.Warn("cannot tell whether an instance with recorded terminate hooks is gone; retried at the next status", "instance_id", id, "error", err)
			continue
		}
		if len(found) == 1 && found[0].Running() && !going(found[0]) {
			// Claimed for a removal that did not happen (the process
			// died before the termination, or EC2 refused it): the
			// instance serves; its terminate hooks are for its real
			// departure.
			t.dropFarewell(ctx, log, fs, job)
			log.Info("dropped the recorded terminate hooks of an instance that still serves (its removal did not happen)", "instance_id", id)
			continue
		}
		t.runFarewell(log, cfg, fs, job)
	}
}

// claimResume reports whether this call is the first to resume the fleet's
// recorded farewells in this process.
func (fs *fleetState) claimResume() bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.prov.farewellsResumed {
		return false
	}
	fs.prov.farewellsResumed = true
	return true
}

func (fs *fleetState) unclaimResume() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.prov.farewellsResumed = false
}

// going reports whether a running instance is on its way out: chosen by a
// scale-in, interrupted, or being removed after a failed launch hook.
func going(in fleet.Instance) bool {
	_, marked := in.Tags[tagScaleIn]
	_, interrupted := in.Tags[tagInterrupted]
	v := in.Tags[tagHookFailed]
	return marked || interrupted || strings.HasPrefix(v, hooks.FailTerminate+" ")
}
