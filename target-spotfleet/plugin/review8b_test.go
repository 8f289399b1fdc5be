package plugin

// Second review of the spot interruption handling, after the fixes of the
// eighth review (held adoption, the fleet's ledger of replacement units,
// at-risk nodes removed with the next scale-in, immediate purge). Every test
// in this file fails on the reviewed code; each one shows a defect that would
// hurt a production fleet.

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

func r8bLedger(t *testing.T, r *rig) string {
	t.Helper()
	tags, err := r.plugin.fleet.Tags(context.Background(), r.fleetID)
	require.NoError(t, err)
	return tags[tagReplacements]
}

// --- A. An operator-cancelled rebalance drain during a shortage -------------

// rebalance_action = drain during a spot shortage: the target is raised for
// the replacement, which cannot launch yet. The operator keeps the node
// (nomad node drain -disable). tendFleet drops the departure and its
// interrupted tag, but the departure was still in stepRaised: its unit stays
// in the target for good and the fleet's ledger still lists the instance.
// When capacity returns the fleet runs one instance more than the agent
// asked for (running == target, so no surplus is ever seen). Worse, the next
// restart of the agent (deploy, crash) reads the ledger, restores a departure
// of kind spot-interruption for the running instance, drains the node the
// operator explicitly kept (90 s deadline) and terminates it after the
// "notice" ends: a healthy serving node is destroyed by a restart.
func TestAnOperatorCancelledRebalanceDrainLeavesNoReplacementUnitForARestartToAct(t *testing.T) {
	r, ids := interruptRig(t)
	r.config = r.with(configKeyRebalanceAction, rebalanceDrain)
	r.status(t)
	kept := ids[0]
	node := r.nodeOf[kept]
	r.nomad.setHold(node, true)
	r.ec2.Unavailable = true // spot shortage: the replacement does not launch yet
	require.Equal(t, interruption.Done, r8Rebalance(t, r, kept).Disposition)
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))

	// nomad node drain -disable: the operator keeps the node.
	r.nomad.update(node, func(n *api.Node) {
		n.DrainStrategy = nil
		n.LastDrain.Status = api.DrainStatusCanceled
		n.SchedulingEligibility = api.NodeSchedulingEligible
	})
	r.tend(t)
	require.Nil(t, r.plugin.state(r.fleetID).departureOf(kept))
	r.nomad.setHold(node, false)
	r.ec2.Unavailable = false
	r8Settle(t, r)

	// An hour later the agent is restarted.
	r.now = r.now.Add(time.Hour)
	drainsBefore := r.nomad.callCount("StartDrain")
	r8Restart(r)
	r8Settle(t, r)
	r.now = r.now.Add(5 * time.Minute) // past the "notice" of the restored departure
	r8Settle(t, r)

	require.Equal(t, drainsBefore, r.nomad.callCount("StartDrain"),
		"a restart drained a node: the ledger still listed the instance whose rebalance drain the operator cancelled")
	require.Contains(t, sortedRunning(r), kept, "a restart terminated the node an operator had taken back")
	require.Len(t, r.ec2.Running(r.fleetID), r.ec2.TargetCapacity(r.fleetID))
}

// --- B. A give-back whose ledger write failed: a restart lowers a healthy fleet

// The replacement unit is given back (target 4 -> 3), but the ledger write
// that follows fails (throttled in an interruption wave, a transient IAM
// error): it is only logged. Nothing writes the ledger again until the next
// raise, so it keeps listing the reclaimed instance long after its departure
// ended. A restart days later (the fleet has been healthy all along) reads
// the ledger, takes the reclaimed instance for a gone departure whose unit is
// still raised and gives back a unit that is not there: the target goes
// below the serving nodes, the surplus check drains and terminates a healthy
// node, and the agent has to scale out again.
func TestARestartLongAfterASettledInterruptionDoesNotLowerTheTarget(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[0]
	r.nomad.setHold(r.nodeOf[victim], true)
	require.Equal(t, interruption.Done, r.warn(t, victim).Disposition)
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))

	// The replacement launched: the unit is given back, the ledger write fails.
	r.ec2.FailNext("CreateTags", 1, ec2fake.APIError("UnauthorizedOperation"))
	r.tend(t)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	r.joinNewInstances()
	r.nomad.setHold(r.nodeOf[victim], false)
	r.ec2.Kill(victim)
	r8Settle(t, r)
	require.Empty(t, r.plugin.state(r.fleetID).departureList())
	require.Len(t, r.ec2.Running(r.fleetID), 3)

	// Two days of a healthy fleet, then the agent is restarted.
	r.now = r.now.Add(48 * time.Hour)
	drainsBefore := r.nomad.callCount("StartDrain")
	r8Restart(r)
	r8Settle(t, r)

	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "a restart read a stale ledger and lowered the target of a healthy fleet")
	require.Equal(t, drainsBefore, r.nomad.callCount("StartDrain"), "a restart drained a healthy node as surplus")
	require.Len(t, r.ec2.Running(r.fleetID), 3)
}

// --- C. A state change that is no longer true purges a live node ------------

// gone() acts on the state the message carries and never asks EC2 whether it
// still holds. Messages arrive late and out of order (SQS redelivery after a
// failed handling retries every 3 s; EventBridge delivery is at-least-once),
// and a "stopped" instance is started again: by EC2 itself for spot
// instances with interruption behavior stop once capacity returns, by an
// operator, or by the fleet. The "stopped" message handled after the
// instance runs again purges (node_purge) the live node at once: Nomad marks
// every allocation on it lost and reschedules them all, and the client is
// left to re-register. Without node_purge, a late "stopping" force-drains
// (deadline -1) the healthy node, killing its allocations at once.
func TestAStateChangeForAnInstanceThatRunsAgainLeavesItsNodeAlone(t *testing.T) {
	for _, state := range []string{"stopped", "stopping"} {
		t.Run(state, func(t *testing.T) {
			r, ids := interruptRig(t)
			r.config = r.with(configKeyNodePurge, "true")
			r.status(t)
			back := ids[1] // stopped minutes ago, running again now (EC2 lists it running)
			ev := interruption.Event{ID: "sc-" + state, Kind: interruption.KindStateChange, InstanceID: back, State: state, Time: r.now.Add(-10 * time.Minute)}
			out := r.event(t, ev)
			require.NotEqual(t, interruption.Retry, out.Disposition, out.Why)
			require.NotContains(t, r.nomad.purged, r.nodeOf[back], "the node of a running instance was purged on a stale %q message", state)
			require.Zero(t, r.nomad.callCount("StartDrain"), "the node of a running instance was force-drained on a stale %q message", state)
		})
	}
}

// --- D. The rebalance tag outlives the plugin's cordon ----------------------

// rebalance_action = cordon tags the instance (nomad-autoscaler:rebalance)
// and cordons its node. The documented way back is an operator making the
// node eligible, but the tag is never removed. Weeks later the operator
// cordons that node for their own reasons (debugging, a batch job that must
// finish there): it is ineligible and carries the tag, so it counts as
// at-risk, and the next scale-in drains it with node_drain_deadline and
// terminates it, on top of the nodes the agent asked to remove. The plugin
// destroys a node the operator holds.
func TestANodeAnOperatorCordonsAfterTakingBackAnAtRiskNodeIsNotRemovedByAScaleIn(t *testing.T) {
	r, ids := interruptRig(t)
	r.config = r.with(configKeyRebalanceAction, rebalanceCordon)
	r.status(t)
	atRisk := ids[2]
	node := r.nodeOf[atRisk]
	require.Equal(t, interruption.Done, r8Rebalance(t, r, atRisk).Disposition)
	require.EqualValues(t, 2, r.status(t))

	// No interruption comes; the operator makes the node eligible again.
	r.now = r.now.Add(time.Hour)
	r.nomad.update(node, func(n *api.Node) { n.SchedulingEligibility = api.NodeSchedulingEligible })
	require.EqualValues(t, 3, r.status(t))

	// Weeks later the operator cordons it for maintenance of their own.
	r.now = r.now.Add(21 * 24 * time.Hour)
	r.nomad.update(node, func(n *api.Node) { n.SchedulingEligibility = api.NodeSchedulingIneligible })
	require.EqualValues(t, 2, r.status(t))

	// The load falls: the agent asks for one ready node.
	require.NoError(t, r.plugin.Scale(action(1), r.config))
	require.Contains(t, sortedRunning(r), atRisk, "a scale-in terminated the node an operator had cordoned")
	require.NotContains(t, r.nomad.drainedNodes(), node, "a scale-in drained the node an operator had cordoned")
}

// --- E. Held adoption gives back a unit the target never held ---------------

// A held (cordoned) node adopts "its unit of the target" when it is warned,
// and that unit is given back. But a scale-in does not keep a unit for the
// nodes that do not serve: newTarget = max(to, serving - removed). A fleet of
// 4 with an operator-cordoned node B, scaled in to 2 by the agent, ends with
// target 2 and 3 instances (2 serving + B). When EC2 warns of B, the held
// adoption gives back a unit the target never held: target 1 while 2 nodes
// serve. Once B is reclaimed the surplus check drains and terminates one of
// the two healthy nodes, and the agent, which asked for 2, sees 1 and scales
// out again: an interruption of a node that served nothing costs a serving
// node.
func TestAWarningForAHeldNodeNeverLowersTheTargetBelowTheServingNodes(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 4})
	r.plugin.startupGrace, r.plugin.surplusSettle = 0, 0
	require.EqualValues(t, 4, r.status(t))
	ids := sortedRunning(r)
	held := ids[3]
	r.nomad.update(r.nodeOf[held], func(n *api.Node) { n.SchedulingEligibility = api.NodeSchedulingIneligible }) // an operator's cordon
	require.EqualValues(t, 3, r.status(t))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	r8Settle(t, r)
	require.EqualValues(t, 2, r.status(t))
	drainsBefore := len(r.nomad.drainedNodes())

	require.Equal(t, interruption.Done, r.warn(t, held).Disposition)
	r.tend(t)
	require.GreaterOrEqual(t, r.ec2.TargetCapacity(r.fleetID), 2, "the target went below the 2 serving nodes")
	r.ec2.Kill(held)
	r8Settle(t, r)

	require.EqualValues(t, 2, r.status(t), "the agent asked for 2 ready nodes; a held node's interruption cost a serving one")
	require.Len(t, r.ec2.Running(r.fleetID), 2)
	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID))
	require.Equal(t, drainsBefore+1, len(r.nomad.drainedNodes()), "only the interrupted node may be drained")
}
