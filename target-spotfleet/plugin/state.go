package plugin

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// observationMaxAge is how long an observation made by Status may be reused by
// the Scale that follows it in the same evaluation.
const observationMaxAge = 15 * time.Second

// fleetState is everything the plugin keeps about one fleet between calls.
type fleetState struct {
	id string

	// op serialises the actions on the fleet: Scale, and the reconciliation
	// that Status runs. Status never waits for it: while a Scale holds it,
	// Status answers "scale action in progress" at once.
	op sync.Mutex

	mu sync.Mutex
	// action describes the Scale in progress, "" when none.
	action      string
	actionSince time.Time
	// inFlight holds the instances the Scale in progress is removing.
	inFlight map[string]bool
	// ownEvent is the time of the last scaling action this process made;
	// older events were made before an agent restart.
	ownEvent time.Time
	// restoredEvent is the last-event time read from the fleet request's tag
	// at the first observation (eventKnown), made by an earlier process.
	restoredEvent time.Time
	eventKnown    bool
	// shortSince is when the fleet was first seen running fewer instances
	// than its target capacity, zero while it is not short; shortConfirmed
	// says a scale-out saw its capacity not launch.
	shortSince     time.Time
	shortConfirmed bool
	// last is the latest observation, reused by a Scale right after Status.
	last *world
	// lastStatus is the latest status, returned (not ready) during a Scale.
	lastStatus *sdk.TargetStatus
	// lastNote is the last status summary logged at info level, so that an
	// unchanged state is not logged again at every evaluation.
	lastNote      string
	lastNoteEmpty bool
	// observed says the fleet has been observed by this process before.
	observed bool
	// noRemovalUntil holds scale-ins back after a removal failed past its
	// drain; removalPause doubles with each failure in a row.
	noRemovalUntil time.Time
	removalPause   time.Duration
	removalErr     string
	// readySeen holds the pool nodes this process has seen ready (a node
	// that initializes again after a client restart is not a broken one).
	readySeen map[string]bool
	// toPurge holds nodes (id -> instance id) of terminated instances that
	// node_purge removes once they are down.
	toPurge map[string]string

	// cfg is the policy config of the latest Status or Scale: the
	// interruption handler acts on the fleet with it.
	cfg *policyConfig
	// targetMu orders the replacement units (departure steps raised and
	// lowered, with their target changes) against the reading of the
	// target, so that an observation's target and its raised units agree.
	targetMu sync.Mutex
	// departures are the instances leaving the fleet (interruptions).
	departures map[string]*departure
	// surplusSince is when more instances were first seen serving than the
	// target holds; surplusBusy says a surplus removal runs.
	surplusSince time.Time
	surplusBusy  bool
	// ledgerDirty says the last write of the ledger of replacement units
	// failed: the next status writes it again.
	ledgerDirty bool
	// prov is the state of the provisioning pipelines (hooks, admission).
	prov provisionState
}

// setConfig records the policy config the agent last used for the fleet.
func (fs *fleetState) setConfig(cfg *policyConfig) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.cfg = cfg
	if cfg.DryRun {
		// Dry-run is the brake: the launch pipelines that run stop before
		// their next step (their progress is recorded and resumed later).
		for _, p := range fs.prov.running {
			p.cancel()
		}
	}
}

// config returns the policy config the agent last used, or nil.
func (fs *fleetState) config() *policyConfig {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.cfg
}

func (fs *fleetState) queuePurge(nodeID, instanceID string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.toPurge == nil {
		fs.toPurge = map[string]string{}
	}
	fs.toPurge[nodeID] = instanceID
}

// purgeQueue returns a copy of the nodes waiting to be purged.
func (fs *fleetState) purgeQueue() map[string]string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make(map[string]string, len(fs.toPurge))
	for k, v := range fs.toPurge {
		out[k] = v
	}
	return out
}

func (fs *fleetState) purged(nodeID string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	delete(fs.toPurge, nodeID)
}

// Bounds of the pause after a failed removal.
const (
	removalPauseMin = time.Minute
	removalPauseMax = 30 * time.Minute
)

// removalFailed starts (or doubles) the pause before the next scale-in.
func (fs *fleetState) removalFailed(now time.Time, err error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.removalPause = min(max(2*fs.removalPause, removalPauseMin), removalPauseMax)
	fs.noRemovalUntil = now.Add(fs.removalPause)
	fs.removalErr = err.Error()
}

// removalSucceeded ends the pause.
func (fs *fleetState) removalSucceeded() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.removalPause, fs.noRemovalUntil, fs.removalErr = 0, time.Time{}, ""
}

// removalBlocked returns until when, and why, scale-ins are held back.
func (fs *fleetState) removalBlocked(now time.Time) (time.Time, string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if now.Before(fs.noRemovalUntil) {
		return fs.noRemovalUntil, fs.removalErr
	}
	return time.Time{}, ""
}

// state returns the fleet's state, creating it on first use.
func (t *TargetPlugin) state(id string) *fleetState {
	t.mu.Lock()
	defer t.mu.Unlock()
	fs, ok := t.fleets[id]
	if !ok {
		fs = &fleetState{id: id, inFlight: map[string]bool{}}
		t.fleets[id] = fs
	}
	return fs
}

// begin records the Scale that now holds op.
func (fs *fleetState) begin(what string, now time.Time) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.action, fs.actionSince = what, now
}

// end clears the Scale in progress and the observation it may have outdated.
func (fs *fleetState) end() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.action = ""
	fs.last = nil
}

// busyStatus is the answer to Status while a Scale runs: the last count, not
// ready, and what is in progress.
func (fs *fleetState) busyStatus(now time.Time) *sdk.TargetStatus {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	st := &sdk.TargetStatus{Ready: false, Meta: map[string]string{}}
	switch {
	case fs.lastStatus != nil:
		st.Count = fs.lastStatus.Count
		for k, v := range fs.lastStatus.Meta {
			st.Meta[k] = v
		}
	case fs.last != nil:
		st.Count = int64(fs.last.req.TargetCapacity)
	}
	what := fs.action
	if what == "" {
		what = "reconciliation"
	}
	st.Meta[metaNotReadyCause] = fmt.Sprintf("scale action in progress: %s for %s", what, now.Sub(fs.actionSince).Round(time.Second))
	return st
}

// recent returns the last observation if it is younger than
// observationMaxAge and was made for the same pool and id lookup (two
// policies may name one fleet).
func (fs *fleetState) recent(now time.Time, cfg *policyConfig) *world {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.last != nil && now.Sub(fs.last.at) < observationMaxAge && fs.last.key == observationKey(cfg) {
		return fs.last
	}
	return nil
}

func (fs *fleetState) setInFlight(ids []string, on bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, id := range ids {
		if on {
			fs.inFlight[id] = true
		} else {
			delete(fs.inFlight, id)
		}
	}
}

func (fs *fleetState) isInFlight(id string) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.inFlight[id]
}

// isOwnEvent reports whether this process made the fleet's last scaling event.
func (fs *fleetState) isOwnEvent(at time.Time) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return !fs.ownEvent.IsZero() && !at.After(fs.ownEvent)
}

// noteShortage tracks since when the fleet runs fewer instances than its
// target and returns that time (zero when it is not short). At the first
// observation of a process (after a restart) a shortage is taken to have
// begun at the last scaling action, known from the fleet's tag: the
// capacity cannot have been requested later than that.
func (fs *fleetState) noteShortage(short bool, now, lastEvent time.Time) time.Time {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	first := !fs.observed
	fs.observed = true
	switch {
	case !short:
		fs.shortSince, fs.shortConfirmed = time.Time{}, false
	case fs.shortSince.IsZero() && first && !lastEvent.IsZero() && lastEvent.Before(now):
		fs.shortSince = lastEvent
	case fs.shortSince.IsZero():
		fs.shortSince = now
	}
	return fs.shortSince
}

// observationKey says which policy settings an observation depends on.
func observationKey(cfg *policyConfig) string {
	return cfg.Pool.String() + " " + cfg.IDLookup.String()
}

// confirmShortage records that a scale-out saw its capacity not launch.
func (fs *fleetState) confirmShortage() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.shortConfirmed = true
}

func (fs *fleetState) shortageConfirmed() bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.shortConfirmed
}

// noteReady records the listed nodes that are ready, forgets nodes no longer
// listed, and returns a copy of the set.
func (fs *fleetState) noteReady(nodes []nomadnode.Node) map[string]bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	listed := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		listed[n.ID] = true
		if p, _ := nomadnode.PhaseOf(n.NodeListStub); p == nomadnode.PhaseReady || fs.readySeen[n.ID] {
			listed[n.ID] = true
			if fs.readySeen == nil {
				fs.readySeen = map[string]bool{}
			}
			fs.readySeen[n.ID] = true
		}
	}
	out := make(map[string]bool, len(fs.readySeen))
	for id := range fs.readySeen {
		if !listed[id] {
			delete(fs.readySeen, id)
			continue
		}
		out[id] = true
	}
	return out
}
