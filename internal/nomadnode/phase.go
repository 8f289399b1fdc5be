package nomadnode

import "github.com/hashicorp/nomad/api"

// Phase is where a Nomad node is in its life, as the plugins see it. Only
// PhaseReady counts as capacity that can take work now; the target counts the
// other phases as capacity that is coming (joining) or going (draining, down)
// and never freezes scaling because of them.
type Phase string

// The phases of a node.
const (
	// PhaseJoining: registered but not ready yet (initializing).
	PhaseJoining Phase = "joining"
	// PhaseReady: ready, eligible and not draining: it takes work.
	PhaseReady Phase = "ready"
	// PhaseDraining: a drain is in progress (this plugin's, an operator's, or
	// one for a spot interruption).
	PhaseDraining Phase = "draining"
	// PhaseIneligible: up and not draining but ineligible for scheduling: a
	// cordon by an operator, or a node whose drain has completed.
	PhaseIneligible Phase = "ineligible"
	// PhaseDown: the node missed its heartbeats (or its status is unknown).
	PhaseDown Phase = "down"
)

// PhaseOf returns the node's phase and, for every phase but ready, a short
// reason for logs ("status is initializing", "draining", ...).
func PhaseOf(n *api.NodeListStub) (Phase, string) {
	switch {
	case n.Status == api.NodeStatusInit:
		return PhaseJoining, "status is " + n.Status
	case n.Status != api.NodeStatusReady:
		return PhaseDown, "status is " + n.Status
	case n.Drain:
		return PhaseDraining, "draining"
	case n.SchedulingEligibility != api.NodeSchedulingEligible:
		return PhaseIneligible, "ineligible for scheduling"
	}
	return PhaseReady, ""
}
