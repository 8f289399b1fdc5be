package plugin

import (
	"errors"
	"net"
	"os"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
)

// shortRig is a fleet with target 4 of which only 2 instances run and no spot
// capacity is left.
func shortRig(t *testing.T) (*rig, []string) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 4})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	r.ec2.Unavailable = true
	r.ec2.Kill(ids[2])
	r.ec2.Kill(ids[3])
	return r, ids[:2]
}

func TestScaleInDuringShortageKeepsRunningNodes(t *testing.T) {
	r, running := shortRig(t)

	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Count, "the agent is given the two nodes that run")
	// The agent wants 3 of them: the target that never filled goes down
	// to 3; wanting the 2 that run changes nothing.
	require.NoError(t, r.plugin.Scale(action(3), r.config))
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))

	require.Empty(t, r.nomad.drainedNodes(), "no running node may be drained while no more run than desired")
	require.Equal(t, running, r.ec2.Running(r.fleetID))
	require.Empty(t, r.ec2.Calls("TerminateInstances"))

	// Below what runs, exactly the difference goes.
	require.NoError(t, r.plugin.Scale(action(1), r.config))
	require.Len(t, r.ec2.Running(r.fleetID), 1)
	require.Len(t, r.nomad.drainedNodes(), 1)
	require.Equal(t, 1, r.ec2.TargetCapacity(r.fleetID))
}

func TestShortageCountsOnlyRunningCapacity(t *testing.T) {
	// An agent whose strategy doubles whatever count it is given, as a
	// saturated fleet would make any proportional strategy do.
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	r.ec2.Unavailable = true
	evaluate := func() *sdk.TargetStatus {
		st, err := r.plugin.Status(r.config)
		require.NoError(t, err)
		if st.Ready {
			err := r.plugin.Scale(action(min(st.Count*2, 20)), r.config)
			var noop *sdk.TargetScalingNoOpError
			if !errors.As(err, &noop) {
				require.NoError(t, err)
			}
		}
		r.now = r.now.Add(5 * time.Second) // launch_timeout is 1s
		return st
	}
	var st *sdk.TargetStatus
	for range 6 {
		st = evaluate()
	}

	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "the target multiplies the 2 running instances, not requested capacity that never came")
	require.EqualValues(t, 2, st.Count)
	require.Contains(t, st.Meta[metaShortage], "2 of 4 instances running")
	require.Len(t, r.ec2.Running(r.fleetID), 2)
}

func TestScaleOutWithoutCapacityDoesNotHoldThePolicy(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	r.ec2.Unavailable = true
	r.plugin.launchConfirm = 50 * time.Millisecond // 30s in production
	cfg := r.with(configKeyLaunchTimeout, "1h")

	done := make(chan error, 1)
	go func() { done <- r.plugin.Scale(action(3), cfg) }()
	select {
	case err := <-done:
		require.NoError(t, err, "the request is raised; EC2 keeps trying")
	case <-time.After(20 * time.Second):
		t.Fatal("Scale waited for the whole launch_timeout (1h) for capacity that does not come")
	}
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))

	st, err := r.plugin.Status(cfg)
	require.NoError(t, err)
	require.True(t, st.Ready, "capacity that has not come must not freeze scaling: %s", st.Meta[metaNotReadyCause])
	require.EqualValues(t, 2, st.Count, "capacity that has not launched is not counted")
	require.Contains(t, st.Meta[metaShortage], "2 of 3 instances running", "a scale-out that saw nothing launch reports the shortage at once")
}

func TestDrainRidesOutTransientNomadErrors(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	_, err := r.plugin.Status(r.config) // the nodes are known
	require.NoError(t, err)
	// A leader election while the drain runs: the drain monitor's reads fail.
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	r.nomad.failNext("NodeInfo", errNoLeader, errNoLeader, errNoLeader, reset)

	require.NoError(t, r.plugin.Scale(action(1), r.config))

	require.Equal(t, []string{ids[1]}, r.ec2.Running(r.fleetID))
	require.Equal(t, 1, r.ec2.TargetCapacity(r.fleetID))
}

func TestAbandonedRemovalCancelsDrainAndMarksEligibleInOneCall(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	// EC2 refuses the termination (after allowing the dry run): the removal
	// is abandoned after the drain.
	r.nomad.onDrain = func(string) { r.ec2.FailNext("TerminateInstances", 2, ec2fake.APIError("UnauthorizedOperation")) }

	err := r.plugin.Scale(action(1), r.config)
	require.ErrorContains(t, err, "UnauthorizedOperation")

	n := r.nomad.node(r.nodeOf[ids[0]])
	require.Equal(t, api.NodeSchedulingEligible, n.SchedulingEligibility)
	require.Nil(t, n.DrainStrategy)
	require.Equal(t, 1, r.nomad.callCount("CancelDrain"))
	require.Zero(t, r.nomad.callCount("SetEligibility"), "eligibility is restored by cancelling the drain, in one call")
	require.NotContains(t, r.ec2.InstanceTags(ids[0]), tagScaleIn)
	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID), "the capacity goes back to the target")
}

func TestFakeNomadRefusesEligibleWhileDraining(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 1})
	id := r.nodeOf[r.ec2.Running(r.fleetID)[0]]
	r.nomad.setHold(id, true)
	require.NoError(t, r.nomad.StartDrain(t.Context(), id, &api.DrainSpec{}, nil))
	require.ErrorContains(t, r.nomad.SetEligibility(t.Context(), id, true), "while it is draining")
}

func TestMarkStaysUntilTheNodeIsBackInService(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	r.nomad.onDrain = func(string) { r.ec2.FailNext("TerminateInstances", 2, ec2fake.APIError("UnauthorizedOperation")) }
	r.nomad.failNext("CancelDrain", errNoLeader)

	require.Error(t, r.plugin.Scale(action(1), r.config))

	require.Contains(t, r.ec2.InstanceTags(ids[0])[tagScaleIn], abandonedPrefix, "the node could not be put back: the mark stays")
	require.Equal(t, api.NodeSchedulingIneligible, r.nomad.node(r.nodeOf[ids[0]]).SchedulingEligibility)

	// The next status retries, then removes the mark; nothing is terminated.
	_, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.Equal(t, api.NodeSchedulingEligible, r.nomad.node(r.nodeOf[ids[0]]).SchedulingEligibility)
	require.NotContains(t, r.ec2.InstanceTags(ids[0]), tagScaleIn)
	require.Len(t, r.ec2.Running(r.fleetID), 2)
}

func TestNoDrainWhenTheFleetCannotBeChanged(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.ec2.FailNext("ModifySpotFleetRequest", 100, ec2fake.APIError("UnauthorizedOperation"))

	err := r.plugin.Scale(action(1), r.config)

	require.ErrorContains(t, err, "not draining anything")
	require.Empty(t, r.nomad.drainedNodes())
	require.Len(t, r.ec2.Running(r.fleetID), 3)
}

func TestCapacityChangeFailingAfterDrainNeverDrainsAgain(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	// The permission check passes; then the network breaks during the drain.
	r.nomad.onDrain = func(string) {
		r.ec2.FailNext("ModifySpotFleetRequest", 1000, ec2fake.ConnReset())
	}

	err := r.plugin.Scale(action(2), r.config)
	require.ErrorContains(t, err, "the nodes stay drained")
	r.nomad.onDrain = nil
	victim := ids[0]
	require.Equal(t, []string{r.nodeOf[victim]}, r.nomad.drainedNodes())
	require.Equal(t, api.NodeSchedulingIneligible, r.nomad.node(r.nodeOf[victim]).SchedulingEligibility, "the drained node stays cordoned")
	require.Contains(t, r.ec2.InstanceTags(victim), tagScaleIn)

	// Further evaluations while EC2 is unreachable: not ready, no new drain.
	for range 3 {
		st, err := r.plugin.Status(r.config)
		require.NoError(t, err)
		require.False(t, st.Ready)
		require.Contains(t, st.Meta[metaNotReadyCause], "finishing scale-in")
		_ = r.plugin.Scale(action(2), r.config)
	}
	require.Len(t, r.nomad.drainedNodes(), 1, "no node is drained again")

	// EC2 answers again: the next status finishes the scale-in.
	r.ec2.FailNext("ModifySpotFleetRequest", 0, nil)
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.True(t, st.Ready, st.Meta[metaNotReadyCause])
	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID))
	require.NotContains(t, r.ec2.Running(r.fleetID), victim)
	require.Len(t, r.ec2.Running(r.fleetID), 2)
	require.Len(t, r.nomad.drainedNodes(), 1)
}

func TestNeverJoinedInstancesAreRemovedFirstWithoutDrain(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	broken := ids[2]
	r.nomad.update(r.nodeOf[broken], func(n *api.Node) { n.Status = api.NodeStatusDown })
	r.now = r.now.Add(time.Hour) // past node_join_timeout

	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.Equal(t, broken, st.Meta[metaNotJoined])

	require.EqualValues(t, 2, st.Count)

	require.NoError(t, r.plugin.Scale(action(1), r.config))

	require.NotContains(t, r.ec2.Running(r.fleetID), broken, "the broken instance goes first")
	require.Len(t, r.ec2.Running(r.fleetID), 1)
	require.Len(t, r.nomad.drainedNodes(), 1, "only the one healthy node that had to go was drained")
	require.Equal(t, 1, r.ec2.TargetCapacity(r.fleetID))
}

func TestScaleOutReplacesInstancesThatNeverJoined(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	broken := ids[2]
	r.nomad.update(r.nodeOf[broken], func(n *api.Node) { n.Status = api.NodeStatusInit }) // stuck initializing
	r.nomad.mu.Lock()
	r.nomad.allocs[r.nodeOf[broken]] = nil // it never took work
	r.nomad.mu.Unlock()
	r.now = r.now.Add(time.Hour) // past node_join_timeout

	_ = r.plugin.Scale(action(3), r.config)

	require.NotContains(t, r.ec2.Running(r.fleetID), broken, "terminated without a drain")
	_, err := r.plugin.Status(r.config) // the maintain fleet refills in the meantime
	require.NoError(t, err)
	require.Len(t, r.ec2.Running(r.fleetID), 3, "replaced by the maintain fleet")
	require.Empty(t, r.nomad.drainedNodes())
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
}

func TestOperatorCordonedNodesAreNeverChosen(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	// The selector picks the oldest; the operator has cordoned it.
	r.nomad.update(r.nodeOf[ids[0]], func(n *api.Node) { n.SchedulingEligibility = api.NodeSchedulingIneligible })

	// Two nodes serve: desiring 2 removes none of them.
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	require.Len(t, r.ec2.Running(r.fleetID), 3)
	require.Empty(t, r.nomad.drainedNodes())

	require.NoError(t, r.plugin.Scale(action(1), r.config))
	require.Equal(t, []string{ids[0], ids[2]}, r.ec2.Running(r.fleetID), "one serving node goes, the cordoned one is not chosen")
	require.Equal(t, api.NodeSchedulingIneligible, r.nomad.node(r.nodeOf[ids[0]]).SchedulingEligibility, "the operator's cordon stays")
	require.Equal(t, api.NodeSchedulingEligible, r.nomad.node(r.nodeOf[ids[2]]).SchedulingEligibility, "one node still serves")
}

func TestStatusAnswersWhileScaleRuns(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	r.nomad.setHold(r.nodeOf[ids[0]], true)
	drained := make(chan struct{})
	r.nomad.onDrain = func(string) { close(drained) }
	done := make(chan error)
	go func() { done <- r.plugin.Scale(action(2), r.config) }()
	<-drained

	type answer struct {
		st  *sdk.TargetStatus
		err error
	}
	answered := make(chan answer)
	go func() {
		st, err := r.plugin.Status(r.config)
		answered <- answer{st, err}
	}()
	select {
	case a := <-answered:
		require.NoError(t, a.err)
		st := a.st
		require.False(t, st.Ready)
		require.Contains(t, st.Meta[metaNotReadyCause], "scale action in progress")
		require.EqualValues(t, 3, st.Count)
	case <-time.After(10 * time.Second):
		t.Fatal("Status waited for the Scale in progress")
	}

	r.nomad.setHold(r.nodeOf[ids[0]], false)
	require.NoError(t, <-done)
	require.Len(t, r.ec2.Running(r.fleetID), 2)
}

func TestScaleOutWhileAnotherNodeDrains(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	// An operator's maintenance drain that goes on for a long time.
	r.nomad.update(r.nodeOf[ids[0]], func(n *api.Node) {
		n.DrainStrategy = &api.DrainStrategy{}
		n.SchedulingEligibility = api.NodeSchedulingIneligible
		n.LastDrain = &api.DrainMetadata{Status: api.DrainStatusDraining, Meta: map[string]string{"message": "maintenance"}}
	})
	r.nomad.setHold(r.nodeOf[ids[0]], true)

	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.True(t, st.Ready, st.Meta[metaNotReadyCause])
	require.EqualValues(t, 1, st.Count, "the draining node is capacity that is going")
	require.NoError(t, r.plugin.Scale(action(3), r.config))
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "3 that serve, and the one that drains")
	r.joinNewInstances()
	st, err = r.plugin.Status(r.config)
	require.NoError(t, err)
	require.EqualValues(t, 3, st.Count)

	// And in: the draining node is not chosen and does not count as
	// serving, so desiring one node keeps one that serves.
	require.NoError(t, r.plugin.Scale(action(1), r.config))
	running := r.ec2.Running(r.fleetID)
	require.Contains(t, running, ids[0])
	require.Len(t, running, 2)
	require.Len(t, r.nomad.drainedNodes(), 2)
	st, err = r.plugin.Status(r.config)
	require.NoError(t, err)
	require.Equal(t, "1", st.Meta[metaReadyNodes])
}

func TestScaleInKeepsACapacityChangeMadeDuringTheDrain(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	// While the drain runs, someone (an operator, the interruption handler)
	// raises the target by one.
	r.nomad.onDrain = func(string) {
		_, err := r.ec2.ModifySpotFleetRequest(t.Context(), &ec2.ModifySpotFleetRequestInput{
			SpotFleetRequestId: &r.fleetID, TargetCapacity: ptr(int32(4)), ExcessCapacityTerminationPolicy: "noTermination"})
		require.NoError(t, err)
	}

	require.NoError(t, r.plugin.Scale(action(2), r.config))

	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "4 (changed meanwhile) minus the one removed")
}

func ptr[T any](v T) *T { return &v }

func TestDuplicateInstanceClaimsAreLeftAlone(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	twin := r.nomad.addNode(ids[0]+"-twin", "spot")
	r.nomad.update(twin, func(n *api.Node) { n.Meta["ec2_instance_id"] = ids[0]; n.CreateIndex = 0 })

	require.NoError(t, r.plugin.Scale(action(1), r.config))

	require.Contains(t, r.ec2.Running(r.fleetID), ids[0], "an instance two nodes claim is not removed")
	require.NotContains(t, r.nomad.drainedNodes(), twin)
	require.NotContains(t, r.nomad.drainedNodes(), r.nodeOf[ids[0]])
}

func TestPurgeWaitsUntilTheNodeIsDown(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	cfg := r.with(configKeyNodePurge, "true")

	require.NoError(t, r.plugin.Scale(action(1), cfg))

	// The instance shuts down; its client still heartbeats: no purge yet,
	// or the client would register again as a fresh, eligible node.
	require.Zero(t, r.nomad.callCount("Purge"))
	_, err := r.plugin.Status(cfg)
	require.NoError(t, err)
	require.Zero(t, r.nomad.callCount("Purge"))

	r.nomad.update(r.nodeOf[ids[0]], func(n *api.Node) { n.Status = api.NodeStatusDown })
	_, err = r.plugin.Status(cfg)
	require.NoError(t, err)
	require.Equal(t, []string{r.nodeOf[ids[0]]}, r.nomad.purged)
	_, err = r.plugin.Status(cfg)
	require.NoError(t, err)
	require.Equal(t, 1, r.nomad.callCount("Purge"), "purged once")
}

func TestAFailedDrainPausesScaleInEvenWhenOthersWereRemoved(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	wg := operatorCancelsDrainOf(r, r.nodeOf[ids[0]], true)

	err := r.plugin.Scale(action(1), r.config) // ids[0] and ids[1] chosen
	wg.Wait()
	require.ErrorContains(t, err, "1 of 2 instances removed")
	require.NotContains(t, r.ec2.Running(r.fleetID), ids[1], "the other node was removed")

	err = r.plugin.Scale(action(1), r.config)
	var noop *sdk.TargetScalingNoOpError
	require.ErrorAs(t, err, &noop)
	require.ErrorContains(t, err, "after a failed removal")
}
