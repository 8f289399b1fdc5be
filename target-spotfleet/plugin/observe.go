package plugin

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// Tags the plugin keeps on EC2 resources.
const (
	// tagLastEvent on the fleet request holds the time (Unix ns) of the last
	// scaling action, so cooldowns survive an agent restart.
	tagLastEvent = "nomad-autoscaler:last-event"
	// tagScaleIn on an instance records that a scale-in chose it, the target
	// capacity it meant to reach and when ("to=2 at=2026-12-01T10:00:00Z");
	// it is set before the node is drained so that an interrupted scale-in
	// can be finished or undone later.
	tagScaleIn = "nomad-autoscaler:scale-in"
)

// world is one consistent reading of a fleet and its Nomad nodes.
type world struct {
	at        time.Time
	key       string // observationKey of the policy it was made for
	req       *fleet.Request
	families  []string
	instances []fleet.Instance          // running or pending fleet instances
	nodes     map[string]nomadnode.Node // pool nodes by instance id, fleet instances only
	unmapped  []nomadnode.Unmapped      // pool nodes without a (unique) instance id
	addresses map[string]bool           // addresses of every listed node, any pool
	seenReady map[string]bool           // node ids this process has seen ready
	lastEvent time.Time
	// leaving holds the running instances that are leaving the fleet
	// (departures): their capacity is already being replaced.
	leaving map[string]bool
	// raised is how many units of req.TargetCapacity are replacement units
	// of departures, read together with the target: the plugin's scaling
	// decisions are made on TargetCapacity - raised.
	raised int
}

// target is the fleet's target capacity without the replacement units.
func (w *world) target() int { return w.req.TargetCapacity - w.raised }

// observe reads the fleet request, its instances and the pool's nodes, and
// keeps the reading for the Scale that may follow.
func (t *TargetPlugin) observe(ctx context.Context, cfg *policyConfig, fs *fleetState) (*world, error) {
	fs.targetMu.Lock()
	req, err := t.fleet.Describe(ctx, cfg.FleetID)
	raised := fs.raisedUnits()
	fs.targetMu.Unlock()
	if err != nil {
		return nil, err
	}
	types, err := t.fleet.InstanceTypesOf(ctx, req)
	if err != nil {
		return nil, err
	}
	all, err := t.fleet.Instances(ctx, cfg.FleetID)
	if err != nil {
		return nil, err
	}
	w := &world{at: t.now(), key: observationKey(cfg), req: req, families: fleet.Families(types), nodes: map[string]nomadnode.Node{},
		leaving: map[string]bool{}, raised: raised}
	t.noteOwners(cfg.FleetID, all)
	for _, in := range all {
		if !in.Running() {
			continue
		}
		w.instances = append(w.instances, in)
		if v, ok := in.Tags[tagInterrupted]; ok && fs.departureOf(in.ID) == nil {
			// Recorded by an earlier process: its unit was in the
			// target before this reading.
			restored := parseDeparture(in.ID, v)
			if restored.handled.IsZero() {
				restored.at, restored.handled = w.at, w.at
			}
			if d, added := fs.addDeparture(restored); added && d.step == stepRaised {
				w.raised++
			}
		}
		if fs.leaving(in.ID) {
			w.leaving[in.ID] = true
		}
	}
	listing, err := t.mapper.PoolNodes(ctx, t.nodes, cfg.Pool, cfg.IDLookup)
	if err != nil {
		return nil, err
	}
	w.unmapped, w.addresses = listing.Unmapped, listing.Addresses
	running := w.runningIDs()
	for _, n := range listing.Nodes {
		if running[n.InstanceID] {
			w.nodes[n.InstanceID] = n
		}
	}
	w.seenReady = fs.noteReady(listing.Nodes)
	// The last-event tag is written by this plugin only: read it once per
	// process (it tells the time of an action made before a restart), then
	// keep it in memory.
	fs.mu.Lock()
	known, last := fs.eventKnown, fs.ownEvent
	if last.IsZero() {
		last = fs.restoredEvent
	}
	fs.mu.Unlock()
	if known {
		w.lastEvent = last
	} else {
		tags, err := t.fleet.Tags(ctx, cfg.FleetID)
		if err != nil {
			return nil, err
		}
		if v, ok := tags[tagLastEvent]; ok {
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				w.lastEvent = time.Unix(0, ns)
			}
		}
		// Replacement units of instances reclaimed while no process
		// ran: only the fleet's ledger still knows them.
		for _, id := range parseLedger(tags[tagReplacements]) {
			if fs.departureOf(id) != nil {
				continue
			}
			// Its instance is gone, or it runs without a departure tag
			// (an operator took it back): either way only its unit is
			// left, to be given back; nothing is drained.
			d := &departure{instanceID: id, kind: interruption.KindSpotInterruption, at: w.at, handled: w.at, step: stepRaised, gone: true}
			if _, added := fs.addDeparture(d); added {
				w.raised++
			}
		}
		fs.mu.Lock()
		fs.eventKnown, fs.restoredEvent = true, w.lastEvent
		fs.mu.Unlock()
	}
	if !cfg.DryRun && fs.claimResume() {
		// Terminate hooks an earlier process recorded: read once per
		// process, at its first observation that is not a dry-run.
		tags, err := t.fleet.Tags(ctx, cfg.FleetID)
		if err != nil {
			fs.unclaimResume()
			return nil, err
		}
		t.resumeFarewells(ctx, t.logger.With("spot_fleet_request_id", cfg.FleetID), cfg, fs, tags)
	}
	fs.mu.Lock()
	fs.last = w
	fs.mu.Unlock()
	return w, nil
}

func (w *world) runningIDs() map[string]bool {
	ids := make(map[string]bool, len(w.instances))
	for _, in := range w.instances {
		ids[in.ID] = true
	}
	return ids
}

// check refuses fleets the plugin cannot scale correctly.
func (w *world) check(cfg *policyConfig) error {
	if w.req.Type != types.FleetTypeMaintain {
		return fmt.Errorf("spot fleet request %s is of type %q: EC2 changes the target capacity of maintain fleets only, so this plugin cannot scale it; create the fleet with Type=maintain",
			cfg.FleetID, w.req.Type)
	}
	if len(w.families) < cfg.MinFamilies {
		return fmt.Errorf("spot fleet request %s is not diversified: its launch specifications and overrides use instance families [%s], fewer than %s=%d; add launch-template overrides of another family (for example c5 and m5) or lower %s",
			cfg.FleetID, strings.Join(w.families, ", "), configKeyMinFamilies, cfg.MinFamilies, configKeyMinFamilies)
	}
	if len(w.req.Weights) > 0 {
		return fmt.Errorf("spot fleet request %s uses weighted capacity %v: this plugin counts one instance as one node and needs every WeightedCapacity to be 1", cfg.FleetID, w.req.Weights)
	}
	return nil
}

// member is one running fleet instance with its node and phase.
type member struct {
	inst fleet.Instance
	// node is the instance's Nomad node; nil when none has registered.
	node *nomadnode.Node
	// phase is the node's phase; PhaseJoining when there is no node yet.
	phase nomadnode.Phase
	// marked says a scale-in chose the instance (tagScaleIn).
	marked bool
	// notJoined says the instance has run for longer than node_join_timeout
	// without a Nomad node: a broken instance (bad AMI, user-data).
	notJoined bool
	// unknown says no pool node maps to the instance but one may run on it
	// (see mayHaveNode): it is neither counted as serving nor removed.
	unknown bool
	// leaving says the instance is leaving the fleet (an interruption):
	// it is not counted, not removed, and its replacement is underway.
	leaving bool
	// warming says the node was admitted less than node_warmup ago: it
	// serves, but apm-node leaves it out of its figure until its warm-up
	// ends, so it is capacity coming rather than part of the count.
	warming bool
	// atRisk says this plugin cordoned the node on a rebalance
	// recommendation and it is still cordoned (not draining): a node that
	// does not serve, removed by the next scale-in.
	atRisk bool
}

// members returns the fleet's running instances with their nodes, sorted by
// instance id.
func (w *world) members(cfg *policyConfig) []member {
	out := make([]member, 0, len(w.instances))
	for _, in := range w.instances {
		m := member{inst: in, phase: nomadnode.PhaseJoining, leaving: w.leaving[in.ID]}
		_, m.marked = in.Tags[tagScaleIn]
		if n, ok := w.nodes[in.ID]; ok {
			m.node = &n
			m.phase, _ = nomadnode.PhaseOfNode(n, cfg.Gate)
			// A node still initializing long after its instance started,
			// and never seen ready (a client that restarts initializes
			// again, with its allocations), is as broken as none.
			m.notJoined = m.phase == nomadnode.PhaseJoining && !w.seenReady[n.ID] && in.Described && w.at.Sub(in.LaunchTime) >= cfg.JoinTimeout
			m.warming = warming(cfg, n, w.at)
		} else if w.isUnmapped(in.ID) {
			m.unknown = true
		} else if in.Described && w.at.Sub(in.LaunchTime) >= cfg.JoinTimeout {
			m.unknown = w.mayHaveNode(in)
			m.notJoined = !m.unknown
		}
		_, cordoned := in.Tags[tagRebalance]
		m.atRisk = cordoned && !m.marked && !m.leaving && m.phase == nomadnode.PhaseIneligible
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].inst.ID < out[j].inst.ID })
	return out
}

// isUnmapped reports whether an unmapped pool node names this instance (two
// nodes claiming it): such an instance has a node, just not a unique one.
func (w *world) isUnmapped(instanceID string) bool {
	for _, u := range w.unmapped {
		if u.InstanceID == instanceID {
			return true
		}
	}
	return false
}

// mayHaveNode reports whether the instance, though no pool node maps to it,
// may still run a Nomad node: two nodes claim it, a pool node's id cannot be
// read (it may be this one), or a node of the cluster (of any class) has its
// address. Such an instance is never removed as "never joined".
func (w *world) mayHaveNode(in fleet.Instance) bool {
	if w.isUnmapped(in.ID) || (in.PrivateIP != "" && w.addresses[in.PrivateIP]) {
		return true
	}
	for _, u := range w.unmapped {
		if u.InstanceID == "" {
			return true
		}
	}
	return false
}

// refused reports whether a launch hook of the instance failed and the
// instance is kept un-admitted for debugging (on_failure keep): it holds a
// unit without serving. One being removed after a failed hook (on_failure
// terminate) is not refused: the maintain fleet replaces it, so it counts as
// capacity that is coming, like an instance that never joined.
func (m member) refused() bool {
	// A kept node an operator admitted by hand serves like any other.
	return (m.hookFailed() && !m.replacing() && m.phase != nomadnode.PhaseReady) || m.phase == nomadnode.PhaseRefused
}

func (m member) hookFailed() bool {
	_, failed := m.inst.Tags[tagHookFailed]
	return failed
}

// replacing reports whether the instance is being removed after a failed
// launch hook (on_failure terminate) with the target unchanged: the maintain
// fleet replaces it, so whatever its node's phase (draining what system jobs
// put there, say) it stands for capacity that is coming.
func (m member) replacing() bool {
	return strings.HasPrefix(m.inst.Tags[tagHookFailed], hooks.FailTerminate+" ")
}

// serves reports whether the member serves or is about to (see serving).
func (m member) serves() bool {
	if m.marked || m.leaving || m.unknown || m.refused() {
		return false
	}
	return m.replacing() || m.notJoined || m.phase == nomadnode.PhaseReady || m.phase == nomadnode.PhaseJoining || m.phase == nomadnode.PhaseAdmitting
}

// serving counts the instances that serve or are about to: not chosen by a
// scale-in, and ready, joining, admitting (waiting for their launch hooks),
// or never joined (those are removed first); not those whose hook failed.
// Nodes that drain, are cordoned or are down (an operator's maintenance, an
// interruption) are capacity that is going: they are not counted, so a
// scale-in never leaves fewer serving nodes than desired because of them.
func serving(ms []member) int {
	n := 0
	for _, m := range ms {
		if m.serves() {
			n++
		}
	}
	return n
}

// capacity is the fleet in the agent's units.
type capacity struct {
	// count is what Status reports and what the agent's desired count is
	// compared with: the nodes that take work now (ready, eligible, not
	// draining). Only they carry the load the APM measures, so only they are
	// multiplied by the strategy; capacity still joining or launching, and
	// instances that do not serve, are left out.
	count int
	// serving counts the instances that serve or are about to (serving).
	serving int
	// held counts the running instances that do not serve and that no
	// scale-in chose: draining (someone else's drain), cordoned, down, or
	// unknown. They take up target capacity without giving any.
	held int
	// marked counts the instances a scale-in chose.
	marked int
	// leaving counts the instances leaving the fleet that no scale-in chose
	// (interrupted): their replacement is underway, so they are neither
	// held nor serving.
	leaving int
	// notJoined counts the broken instances (no node, or a node still
	// initializing, after node_join_timeout).
	notJoined int
	// shortSince is when the shortage began, zero when there is none.
	shortSince time.Time
}

// capacityOf reads the fleet's capacity from an observation. A shortage
// (fewer instances than the target for longer than launch_timeout, or a
// scale-out that saw nothing launch) is reported, not counted: the count
// holds ready nodes only.
func (t *TargetPlugin) capacityOf(cfg *policyConfig, fs *fleetState, w *world, ms []member) capacity {
	now := t.now()
	c := capacity{serving: serving(ms)}
	for _, m := range ms {
		switch {
		case m.marked:
			c.marked++
		case m.leaving:
			c.leaving++
		case m.notJoined:
			c.notJoined++
		case m.phase == nomadnode.PhaseReady && !m.warming:
			c.count++
		}
	}
	c.held = len(w.instances) - c.serving - c.marked - c.leaving
	if since := fs.noteShortage(len(w.instances) < w.req.TargetCapacity, now, w.lastEvent); !since.IsZero() &&
		(now.Sub(since) >= cfg.LaunchTimeout || fs.shortageConfirmed()) {
		c.shortSince = since
	}
	return c
}

// phases counts the fleet's instances per phase, for the status meta.
func phases(ms []member) string {
	counts := map[string]int{}
	for _, m := range ms {
		p := string(m.phase)
		switch {
		case m.notJoined:
			p = "not_joined"
		case m.unknown:
			p = "unknown"
		case m.warming && m.phase == nomadnode.PhaseReady:
			p = "warming"
		}
		counts[p]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, ",")
}

// readyNodes counts the fleet's nodes that take work.
func readyNodes(ms []member) int {
	n := 0
	for _, m := range ms {
		if m.phase == nomadnode.PhaseReady {
			n++
		}
	}
	return n
}

// warming reports whether a gated node was admitted less than node_warmup
// ago (meta <gate>_at, which target-spotfleet stamps and apm-node's warm-up
// counts from): the APM does not measure it yet, so the strategy must not
// multiply it. Nodes without the stamp are not warming here.
func warming(cfg *policyConfig, n nomadnode.Node, now time.Time) bool {
	if cfg.NodeWarmup <= 0 {
		return false
	}
	if gated, v := cfg.Gate.State(n.Meta); !gated || v != nomadnode.GateAdmitted {
		return false
	}
	at, err := time.Parse(time.RFC3339, n.Meta[cfg.Gate.AdmittedAtKey()])
	if err != nil || at.After(now.Add(time.Minute)) {
		return false // no stamp, or one from a clock far ahead: not held back by it
	}
	return now.Sub(at) < cfg.NodeWarmup
}
