package plugin

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// warn hands the plugin a spot interruption warning for the instance, as the
// watcher does, and returns the outcome.
func (r *rig) warn(t *testing.T, id string) interruption.Outcome {
	t.Helper()
	return r.event(t, interruption.Event{ID: "ev-" + id, Kind: interruption.KindSpotInterruption, InstanceID: id, Action: "terminate", Time: r.now})
}

func (r *rig) event(t *testing.T, ev interruption.Event) interruption.Outcome {
	t.Helper()
	return r.plugin.Handle(context.Background(), ev, interruption.Message{ID: "m-" + ev.ID, ReceiveCount: 1, FirstReceived: r.now, Sent: r.now})
}

// tend runs one follow-up of the fleet's departures.
func (r *rig) tend(t *testing.T) {
	t.Helper()
	require.NoError(t, r.plugin.tendFleet(context.Background(), r.plugin.state(r.fleetID)))
}

func (r *rig) status(t *testing.T) int64 {
	t.Helper()
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	return st.Count
}

// interruptRig is a fleet of three ready nodes whose policy the plugin has
// seen (a Status), so that events can be routed to it.
func interruptRig(t *testing.T) (*rig, []string) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.plugin.startupGrace = 0
	r.plugin.surplusSettle = 0
	require.EqualValues(t, 3, r.status(t))
	return r, sortedRunning(r)
}

func TestInterruptionWarningDrainsAtOnceAndLaunchesTheReplacementBeforeTheReclaim(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[0]
	node := r.nodeOf[victim]
	r.nomad.setHold(node, true)

	out := r.warn(t, victim)
	require.Equal(t, interruption.Done, out.Disposition, out.Why)

	n := r.nomad.node(node)
	require.NotNil(t, n.DrainStrategy, "the interrupted node must drain at once")
	require.Equal(t, 90*time.Second, n.DrainStrategy.Deadline, "default interruption_drain_deadline")
	require.Equal(t, "spot-interruption", n.LastDrain.Meta["reason"])
	require.Equal(t, "nomad-autoscaler", n.LastDrain.Meta["drained_by"])
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "target raised by one for the replacement")
	require.Len(t, r.ec2.Running(r.fleetID), 4, "the replacement launches now, not after the reclaim")
	require.Contains(t, r.ec2.InstanceTags(victim)[tagInterrupted], "step=raised")

	// The agent sees the two ready nodes, and no decision made on them
	// launches a second replacement.
	require.EqualValues(t, 2, r.status(t))
	err := r.plugin.Scale(action(3), r.config)
	require.True(t, err == nil || strings.Contains(err.Error(), "already covers"), "scale-out to 3: %v", err)
	require.Len(t, r.ec2.Running(r.fleetID), 4, "a scale-out during the interruption launched a second replacement")

	// Replacement launched: the unit is given back before the reclaim, so
	// EC2's refill after it finds nothing missing.
	r.tend(t)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	require.Contains(t, r.ec2.InstanceTags(victim)[tagInterrupted], "step=lowered")
	r.joinNewInstances()
	r.nomad.setHold(node, false)
	r.ec2.Kill(victim)
	r.tend(t)
	require.EqualValues(t, 3, r.status(t))
	require.Len(t, r.ec2.Running(r.fleetID), 3, "after the dust settles running == target")
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	require.Empty(t, r.plugin.state(r.fleetID).departureList(), "the departure is complete")
}

func TestDuplicateAndRedeliveredWarningsActOnce(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[1]
	r.nomad.setHold(r.nodeOf[victim], true)
	for i := 0; i < 3; i++ {
		out := r.warn(t, victim)
		require.Equal(t, interruption.Done, out.Disposition, out.Why)
	}
	require.Equal(t, 1, r.nomad.callCount("StartDrain"), "one drain for one interruption")
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "one replacement for one interruption")
}

func TestAFailedDrainIsRetriedWithoutASecondRaise(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[0]
	r.nomad.setHold(r.nodeOf[victim], true)
	r.nomad.failNext("StartDrain", nomadError{code: 403, msg: "Permission denied"})
	out := r.warn(t, victim)
	require.Equal(t, interruption.Retry, out.Disposition, "a drain that failed must be retried")
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))
	out = r.warn(t, victim)
	require.Equal(t, interruption.Done, out.Disposition, out.Why)
	require.NotNil(t, r.nomad.node(r.nodeOf[victim]).DrainStrategy)
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "the redelivery raised again")
}

func TestLateWarningGetsADrainThatEndsBeforeTheNotice(t *testing.T) {
	r, ids := interruptRig(t)
	r.nomad.setHold(r.nodeOf[ids[0]], true)
	ev := interruption.Event{ID: "late", Kind: interruption.KindSpotInterruption, InstanceID: ids[0], Action: "terminate", Time: r.now.Add(-100 * time.Second)}
	require.Equal(t, interruption.Done, r.event(t, ev).Disposition)
	require.Equal(t, 5*time.Second, r.nomad.node(r.nodeOf[ids[0]]).DrainStrategy.Deadline, "120s notice - 100s late - 15s margin")
}

func TestReclaimBeforeTheReplacementLaunchedGivesTheUnitBackAndLeavesNoSurplus(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[2]
	r.ec2.Unavailable = true // no spot capacity: the replacement does not launch
	require.Equal(t, interruption.Done, r.warn(t, victim).Disposition)
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))
	require.Len(t, r.ec2.Running(r.fleetID), 3)

	r.ec2.Kill(victim)
	r.tend(t)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "the unit of a gone instance is given back")

	// Capacity comes back: the maintain fleet refills to its target, no more.
	r.ec2.Unavailable = false
	r.status(t)
	r.joinNewInstances()
	r.status(t)
	require.Len(t, r.ec2.Running(r.fleetID), 3)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
}

func TestRefillThatWinsTheRaceIsDrainedAndTerminatedAsSurplus(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[2]
	r.ec2.Unavailable = true
	require.Equal(t, interruption.Done, r.warn(t, victim).Disposition)
	r.ec2.Kill(victim)
	// EC2 refills to the raised target (4) before the plugin gives the unit back.
	r.ec2.Unavailable = false
	r.status(t)
	require.Len(t, r.ec2.Running(r.fleetID), 4)
	r.tend(t)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	r.joinNewInstances()

	// The surplus is found by the status and removed in the background
	// (a removal started before the unit was given back finds nothing).
	for range 3 {
		r.status(t)
		r.plugin.removals.Wait()
	}
	require.Len(t, r.ec2.Running(r.fleetID), 3, "a surplus instance was left running")
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	require.Len(t, r.nomad.drainedNodes(), 2, "the surplus node is drained before its termination (and the interrupted one)")
}

func TestScaleInDuringAnInterruptionEndsAtItsTarget(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 4})
	r.plugin.startupGrace, r.plugin.surplusSettle = 0, 0
	require.EqualValues(t, 4, r.status(t))
	ids := sortedRunning(r)
	r.ec2.Unavailable = true
	victim := ids[0]
	r.nomad.setHold(r.nodeOf[victim], true)
	require.Equal(t, interruption.Done, r.warn(t, victim).Disposition)
	require.Equal(t, 5, r.ec2.TargetCapacity(r.fleetID))

	// The load falls: the agent scales to 2 ready nodes.
	require.EqualValues(t, 3, r.status(t))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	r.nomad.setHold(r.nodeOf[victim], false)
	r.ec2.Kill(victim)
	r.tend(t)
	r.ec2.Unavailable = false
	r.status(t)
	r.joinNewInstances()
	require.EqualValues(t, 2, r.status(t))
	require.Len(t, r.ec2.Running(r.fleetID), 2)
	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID))
}

func TestInterruptedInstanceIsNeverChosenByAScaleIn(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[0]
	r.nomad.setHold(r.nodeOf[victim], true)
	require.Equal(t, interruption.Done, r.warn(t, victim).Disposition)
	r.tend(t)
	r.joinNewInstances()
	require.EqualValues(t, 3, r.status(t))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	running := sortedRunning(r)
	require.Contains(t, running, victim, "the interrupted instance is EC2's to reclaim")
	require.Len(t, running, 3, "one serving instance removed, the leaving one left to EC2")
	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID))
	r.ec2.Kill(victim)
	r.tend(t)
	require.Len(t, r.ec2.Running(r.fleetID), 2)
	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID))
}

func TestAWarningForAnInstanceAScaleInRemovesAsksForNoReplacement(t *testing.T) {
	r, ids := interruptRig(t)
	r.ec2.SetInstanceTag(ids[0], tagScaleIn, markValue(2, r.now))
	require.Equal(t, interruption.Done, r.warn(t, ids[0]).Disposition)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
}

func TestStateChangeWithoutWarningMovesTheAllocationsAtOnceAndPurges(t *testing.T) {
	r, ids := interruptRig(t)
	r.config = r.with(configKeyNodePurge, "true")
	r.status(t)
	gone := ids[1]
	node := r.nodeOf[gone]
	r.nomad.setHold(node, true)
	r.ec2.Kill(gone)
	out := r.event(t, interruption.Event{ID: "sc1", Kind: interruption.KindStateChange, InstanceID: gone, State: "shutting-down", Time: r.now})
	require.Equal(t, interruption.Done, out.Disposition, out.Why)
	n := r.nomad.node(node)
	require.NotNil(t, n.DrainStrategy, "the allocations of a dying node are placed elsewhere now, not after the heartbeat")
	require.Equal(t, time.Duration(-1), n.DrainStrategy.Deadline, "forced")
	out = r.event(t, interruption.Event{ID: "sc2", Kind: interruption.KindStateChange, InstanceID: gone, State: "shutting-down", Time: r.now})
	require.Equal(t, interruption.Done, out.Disposition, out.Why)
	require.Equal(t, 1, r.nomad.callCount("StartDrain"), "one forced drain per dying node")

	// Terminated: Nomad starts the replacements only once the old
	// allocations are terminal; a purge makes them so at once.
	out = r.event(t, interruption.Event{ID: "sc3", Kind: interruption.KindStateChange, InstanceID: gone, State: "terminated", Time: r.now})
	require.Equal(t, interruption.Done, out.Disposition, out.Why)
	require.Contains(t, r.nomad.purged, node, "the node of a terminated instance is purged at once with node_purge")
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "a loss without warning is refilled by the fleet")
}

func TestStateChangeWithoutNodePurgeLeavesTheNodeToNomad(t *testing.T) {
	r, ids := interruptRig(t)
	gone := ids[1]
	r.ec2.Kill(gone)
	out := r.event(t, interruption.Event{ID: "sc", Kind: interruption.KindStateChange, InstanceID: gone, State: "terminated", Time: r.now})
	require.Equal(t, interruption.Done, out.Disposition, out.Why)
	require.Empty(t, r.nomad.purged, "purged without node_purge")
	require.Equal(t, 1, r.nomad.callCount("StartDrain"), "the replacements are placed at once by a forced drain")
}

func TestEventsForOtherInstancesAreDroppedAndUnknownOnesRetried(t *testing.T) {
	r, _ := interruptRig(t)
	// An instance EC2 does not list (yet): retried while young.
	out := r.warn(t, "i-0123456789abcdef0")
	require.Equal(t, interruption.Retry, out.Disposition, out.Why)
	old := interruption.Event{ID: "old", Kind: interruption.KindSpotInterruption, InstanceID: "i-0123456789abcdef0", Time: r.now}
	out = r.plugin.Handle(context.Background(), old, interruption.Message{ReceiveCount: 200, FirstReceived: r.now.Add(-time.Hour)})
	require.Equal(t, interruption.Drop, out.Disposition, out.Why)

	// An instance of a fleet this plugin does not scale.
	other := r.ec2.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large", "m5.large"}})
	foreign := r.ec2.Running(other)[0]
	out = r.warn(t, foreign)
	require.Equal(t, interruption.Retry, out.Disposition, "a fleet list read moments ago may not show a fresh instance yet: %s", out.Why)
	r.now = r.now.Add(ownerRefresh)
	out = r.warn(t, foreign)
	require.Equal(t, interruption.Drop, out.Disposition, out.Why)
	require.Equal(t, 1, r.ec2.TargetCapacity(other))
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	require.Zero(t, r.nomad.callCount("StartDrain"))
}

func TestARestartedPluginGivesBackTheUnitRecordedOnTheInstance(t *testing.T) {
	r, ids := interruptRig(t)
	r.ec2.Unavailable = true
	r.nomad.setHold(r.nodeOf[ids[0]], true)
	require.Equal(t, interruption.Done, r.warn(t, ids[0]).Disposition)
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))

	// A new plugin process: the departure is known from the tag only.
	fresh := newWithClients(r.plugin.logger, r.plugin.fleet, r.nomad, nil)
	fresh.now, fresh.pollInterval, fresh.drainPoll, fresh.startupGrace = r.plugin.now, r.plugin.pollInterval, r.plugin.drainPoll, 0
	r.plugin = fresh
	require.EqualValues(t, 2, r.status(t), "the leaving node is not counted after a restart either")
	r.ec2.Unavailable = false
	r.status(t)
	require.Len(t, r.ec2.Running(r.fleetID), 4)
	r.tend(t)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "the restored unit is given back once")
	r.tend(t)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
}

func TestRebalanceRecommendation(t *testing.T) {
	rebalance := func(r *rig, id string) interruption.Outcome {
		return r.event(t, interruption.Event{ID: "rb-" + id, Kind: interruption.KindRebalance, InstanceID: id, Time: r.now})
	}
	t.Run("ignore by default", func(t *testing.T) {
		r, ids := interruptRig(t)
		require.Equal(t, interruption.Drop, rebalance(r, ids[0]).Disposition)
		require.Zero(t, r.nomad.callCount("StartDrain")+r.nomad.callCount("SetEligibility"))
		require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	})
	t.Run("cordon", func(t *testing.T) {
		r, ids := interruptRig(t)
		r.config = r.with(configKeyRebalanceAction, "cordon")
		r.status(t)
		require.Equal(t, interruption.Done, rebalance(r, ids[0]).Disposition)
		n := r.nomad.node(r.nodeOf[ids[0]])
		require.Equal(t, api.NodeSchedulingIneligible, n.SchedulingEligibility)
		require.Nil(t, n.DrainStrategy, "cordon keeps the allocations")
		require.EqualValues(t, 2, r.status(t))
	})
	t.Run("drain replaces, then terminates", func(t *testing.T) {
		r, ids := interruptRig(t)
		r.config = r.with(configKeyRebalanceAction, "drain")
		r.status(t)
		require.Equal(t, interruption.Done, rebalance(r, ids[0]).Disposition)
		require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))
		require.Equal(t, defaultDrainDeadline, r.nomad.node(r.nodeOf[ids[0]]).DrainStrategy.Deadline, "a rebalance drain uses node_drain_deadline")
		r.tend(t) // replacement launched: unit back
		r.tend(t) // drained: terminated by the plugin
		running := sortedRunning(r)
		sort.Strings(running)
		require.NotContains(t, running, ids[0])
		require.Len(t, running, 3)
		require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	})
}

func TestPolicyKeysOfInterruptions(t *testing.T) {
	r, _ := interruptRig(t)
	_, err := parsePolicyConfig(r.with(configKeyInterruptionDrain, "2m"))
	require.ErrorContains(t, err, `invalid interruption_drain_deadline "2m": want a positive duration shorter than the 2m spot interruption notice`)
	_, err = parsePolicyConfig(r.with(configKeyRebalanceAction, "evict"))
	require.ErrorContains(t, err, `invalid rebalance_action "evict": accepted values are ignore (default), cordon and drain`)
	p, err := parsePolicyConfig(r.with(configKeyInterruptionDrain, "30s", configKeyRebalanceAction, "drain"))
	require.NoError(t, err)
	require.Equal(t, 30*time.Second, p.InterruptionDrain)
	require.Equal(t, rebalanceDrain, p.RebalanceAction)
}

func TestARebalanceDrainAnOperatorCancelsEndsTheDeparture(t *testing.T) {
	r, ids := interruptRig(t)
	r.config = r.with(configKeyRebalanceAction, "drain")
	r.status(t)
	atRisk := ids[0]
	node := r.nodeOf[atRisk]
	r.nomad.setHold(node, true)
	require.Equal(t, interruption.Done, r.event(t, interruption.Event{ID: "rb", Kind: interruption.KindRebalance, InstanceID: atRisk, Time: r.now}).Disposition)
	require.EqualValues(t, 2, r.status(t))
	// nomad node drain -disable: Nomad keeps the drain's meta.
	r.nomad.update(node, func(n *api.Node) {
		n.DrainStrategy = nil
		n.LastDrain.Status = api.DrainStatusCanceled
		n.SchedulingEligibility = api.NodeSchedulingEligible
	})
	r.tend(t)
	require.Nil(t, r.plugin.state(r.fleetID).departureOf(atRisk), "the departure outlived the operator's cancel")
	require.NotContains(t, r.ec2.InstanceTags(atRisk), tagInterrupted)
	require.Contains(t, sortedRunning(r), atRisk, "an instance the operator kept was terminated")
	r.joinNewInstances()
	require.EqualValues(t, 4, r.status(t), "the node the operator kept counts again")
}

// A scale-out counts a cordoned node into the target (desired + held); when
// that node's instance goes without a warning, the maintain fleet would
// refill it, one instance nobody asked for, which the strategy then drains.
func TestAHeldNodeLostWithoutWarningIsNotRefilled(t *testing.T) {
	r, ids := interruptRig(t)
	held := ids[0]
	r.nomad.update(r.nodeOf[held], func(n *api.Node) { n.SchedulingEligibility = api.NodeSchedulingIneligible }) // an operator's cordon
	require.EqualValues(t, 2, r.status(t))
	require.NoError(t, r.plugin.Scale(action(3), r.config))
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "3 ready wanted + the held node")
	r.joinNewInstances()
	require.EqualValues(t, 3, r.status(t))

	r.ec2.NoRefill = true // EC2's refill comes after the message
	r.ec2.Kill(held)
	out := r.event(t, interruption.Event{ID: "held-gone", Kind: interruption.KindStateChange, InstanceID: held, State: "terminated", Time: r.now})
	require.Equal(t, interruption.Done, out.Disposition, out.Why)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "the unit the held node took is given back")
	r.ec2.NoRefill = false
	require.EqualValues(t, 3, r.status(t))
	require.Len(t, r.ec2.Running(r.fleetID), 3, "a surplus instance was launched for a node that did not serve")

	// A serving node lost without warning is refilled as before.
	gone := sortedRunning(r)[0]
	r.ec2.NoRefill = true
	r.ec2.Kill(gone)
	require.Equal(t, interruption.Done, r.event(t, interruption.Event{ID: "serving-gone", Kind: interruption.KindStateChange, InstanceID: gone, State: "terminated", Time: r.now}).Disposition)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "the target of a serving node lost without warning stays for EC2 to refill")
}
