package plugin

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
)

func action(count int64) sdk.ScalingAction {
	return sdk.ScalingAction{Count: count, Reason: "test", Direction: sdk.ScaleDirectionNone}
}

func TestScaleOutRaisesCapacityWithoutTermination(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})

	require.NoError(t, r.plugin.Scale(action(4), r.config))

	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))
	require.Len(t, r.ec2.Running(r.fleetID), 4)
	mods := r.ec2.Calls("ModifySpotFleetRequest")
	require.Len(t, mods, 1)
	require.Equal(t, types.ExcessCapacityTerminationPolicyNoTermination, mods[0].Input.(*ec2.ModifySpotFleetRequestInput).ExcessCapacityTerminationPolicy)

	// The event time is kept on the fleet request for cooldowns after a restart.
	r.joinNewInstances()
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.Equal(t, formatEventTime(r.now), st.Meta[sdk.TargetStatusMetaKeyLastEvent])
}

func TestScaleIn(t *testing.T) {
	terminateRefused := ec2fake.APIError("UnauthorizedOperation")
	cases := []struct {
		name  string
		setup func(r *rig, ids []string)
		from  int
		to    int64
		// wantRemoved are indexes (launch order) of the instances that must be gone.
		wantRemoved    []int
		wantTarget     int
		wantErr        string
		wantEligibleOf []int // instances whose nodes must be eligible at the end
	}{
		{
			name: "drains then terminates exactly the chosen nodes",
			from: 4, to: 2, wantRemoved: []int{0, 1}, wantTarget: 2, wantEligibleOf: []int{2, 3},
		},
		{
			name: "a failed drain keeps that node and puts it back to eligible",
			setup: func(r *rig, ids []string) {
				r.nomad.drainErr[r.nodeOf[ids[0]]] = errors.New("drain deadline monitor failed")
			},
			from: 4, to: 2, wantRemoved: []int{1}, wantTarget: 3, wantErr: "1 of 2 instances removed", wantEligibleOf: []int{0, 2, 3},
		},
		{
			name: "a refused termination restores capacity and eligibility",
			setup: func(r *rig, ids []string) {
				// After the dry run: the batch call fails, then the
				// first single call fails too.
				r.nomad.onDrain = func(string) { r.ec2.FailNext("TerminateInstances", 2, terminateRefused) }
			},
			from: 4, to: 2, wantRemoved: []int{1}, wantTarget: 3, wantErr: "UnauthorizedOperation", wantEligibleOf: []int{0, 2, 3},
		},
		{
			name: "throttled capacity change is retried",
			setup: func(r *rig, ids []string) {
				r.ec2.FailNext("ModifySpotFleetRequest", 2, ec2fake.APIError("RequestLimitExceeded"))
			},
			from: 3, to: 2, wantRemoved: []int{0}, wantTarget: 2, wantEligibleOf: []int{1, 2},
		},
		{
			name: "a failed capacity change drains nothing away",
			setup: func(r *rig, ids []string) {
				r.ec2.FailNext("ModifySpotFleetRequest", 10, ec2fake.APIError("UnauthorizedOperation"))
			},
			from: 3, to: 1, wantRemoved: nil, wantTarget: 3, wantErr: "not draining anything", wantEligibleOf: []int{0, 1, 2},
		},
		{
			name: "nodes of other fleets in the same pool are never chosen",
			setup: func(r *rig, ids []string) {
				r.nomad.addNode("i-otherfleet", "spot")
				// Make the stranger the oldest so the selector would pick it first.
				r.nomad.update("node-i-otherfleet", func(n *api.Node) { n.CreateIndex = 0 })
			},
			from: 3, to: 2, wantRemoved: []int{0}, wantTarget: 2, wantEligibleOf: []int{1, 2},
		},
		{
			name: "more removals than nodes removes what there is",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[1]], func(n *api.Node) { n.Status = api.NodeStatusDown })
			},
			from: 2, to: 0, wantRemoved: []int{0}, wantTarget: 1, wantEligibleOf: nil,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, ec2fake.Fleet{TargetCapacity: tc.from})
			ids := r.ec2.Running(r.fleetID)
			sort.Strings(ids)
			if tc.setup != nil {
				tc.setup(r, ids)
			}

			err := r.plugin.Scale(action(tc.to), r.config)

			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
			}
			var wantRunning, wantGone []string
			removed := map[int]bool{}
			for _, i := range tc.wantRemoved {
				removed[i] = true
			}
			for i, id := range ids {
				if removed[i] {
					wantGone = append(wantGone, id)
				} else {
					wantRunning = append(wantRunning, id)
				}
			}
			require.Equal(t, wantRunning, r.ec2.Running(r.fleetID), "running instances (a maintain fleet must not refill)")
			require.Equal(t, tc.wantTarget, r.ec2.TargetCapacity(r.fleetID))
			// Every terminated instance's node was drained first.
			var wantDrained []string
			for _, id := range wantGone {
				wantDrained = append(wantDrained, r.nodeOf[id])
			}
			for _, d := range wantDrained {
				require.Contains(t, r.nomad.drainedNodes(), d)
			}
			for _, i := range tc.wantEligibleOf {
				n := r.nomad.node(r.nodeOf[ids[i]])
				require.Equal(t, api.NodeSchedulingEligible, n.SchedulingEligibility, "node of instance %d", i)
				require.NotContains(t, r.ec2.InstanceTags(ids[i]), tagScaleIn, "instance %d keeps no scale-in mark", i)
			}
			for _, id := range wantGone {
				require.Contains(t, r.ec2.InstanceTags(id), tagScaleIn, "intent was recorded on %s", id)
			}
		})
	}
}

func TestScaleInRecordsIntentBeforeDraining(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	r.nomad.drainErr[r.nodeOf[ids[0]]] = errors.New("stop here")

	err := r.plugin.Scale(action(1), r.config)

	require.ErrorContains(t, err, "no node could be drained")
	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID), "the capacity is not changed")
	for _, c := range r.ec2.Calls("ModifySpotFleetRequest") {
		require.EqualValues(t, 2, *c.Input.(*ec2.ModifySpotFleetRequestInput).TargetCapacity, "only the no-op permission check")
	}
	tags := r.ec2.Calls("CreateTags")
	require.NotEmpty(t, tags)
	first := tags[0].Input.(*ec2.CreateTagsInput)
	require.Equal(t, []string{ids[0]}, first.Resources)
	require.Equal(t, tagScaleIn, *first.Tags[0].Key)
	require.NotContains(t, r.ec2.InstanceTags(ids[0]), tagScaleIn, "the mark is removed when the node is kept")
}

func TestScaleDoesNothing(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(r *rig) map[string]string
		count   int64
		wantErr string
		noOp    bool
	}{
		{name: "dry-run count from the agent", count: -1, mutate: func(r *rig) map[string]string { return r.config }},
		{name: "dry-run in the policy, scale in", count: 1, mutate: func(r *rig) map[string]string { return r.with("dry-run", "true") }},
		{name: "dry-run in the policy, scale out", count: 5, mutate: func(r *rig) map[string]string { return r.with("dry-run", "true") }},
		{name: "same count", count: 3, mutate: func(r *rig) map[string]string { return r.config }},
		{name: "fleet being modified", count: 1, noOp: true, mutate: func(r *rig) map[string]string {
			r.ec2.SetFleetState(r.fleetID, types.BatchStateModifying)
			return r.config
		}},
		{name: "missing fleet id", count: 1, wantErr: "spot_fleet_request_id is required", mutate: func(r *rig) map[string]string {
			return r.with(configKeyFleetID, "")
		}},
		{name: "bad drain deadline", count: 1, wantErr: `invalid node_drain_deadline "soon"`, mutate: func(r *rig) map[string]string {
			return r.with(configKeyDrainDeadline, "soon")
		}},
		{name: "unknown fleet", count: 1, wantErr: "sfr-nope", mutate: func(r *rig) map[string]string {
			return r.with(configKeyFleetID, "sfr-nope")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
			before := r.ec2.Running(r.fleetID)

			err := r.plugin.Scale(action(tc.count), tc.mutate(r))

			switch {
			case tc.wantErr != "":
				require.ErrorContains(t, err, tc.wantErr)
			case tc.noOp:
				var noop *sdk.TargetScalingNoOpError
				require.ErrorAs(t, err, &noop)
			default:
				require.NoError(t, err)
			}
			require.Empty(t, r.ec2.Calls("ModifySpotFleetRequest"))
			require.Empty(t, r.ec2.Calls("TerminateInstances"))
			require.Empty(t, r.nomad.drainedNodes())
			require.Equal(t, before, r.ec2.Running(r.fleetID))
		})
	}
}

func TestScaleRefusesUndiversifiedFleet(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large", "c5.xlarge"}})

	err := r.plugin.Scale(action(3), r.config)
	require.ErrorContains(t, err, "not diversified")
	require.ErrorContains(t, err, "[c5]")
	_, err = r.plugin.Status(r.config)
	require.ErrorContains(t, err, "not diversified")
	require.Empty(t, r.ec2.Calls("ModifySpotFleetRequest"))

	// An operator can accept a single family explicitly.
	require.NoError(t, r.plugin.Scale(action(3), r.with(configKeyMinFamilies, "1")))
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
}

func TestScaleInStepsHappenInOrder(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	// At each drain: how many EC2 calls had been made, and was the instance
	// still running and marked.
	type drainSeen struct {
		calls   int
		running bool
		marked  bool
	}
	var seen []drainSeen
	r.nomad.onDrain = func(nodeID string) {
		inst := strings.TrimPrefix(nodeID, "node-")
		_, marked := r.ec2.InstanceTags(inst)[tagScaleIn]
		seen = append(seen, drainSeen{calls: len(r.ec2.Calls("")), running: slices.Contains(r.ec2.Running(r.fleetID), inst), marked: marked})
	}

	require.NoError(t, r.plugin.Scale(action(2), r.config))

	require.Len(t, seen, 1)
	require.True(t, seen[0].running, "the node is drained while its instance still runs")
	require.True(t, seen[0].marked, "the intent is recorded before the drain")
	calls := r.ec2.Calls("")
	// The last modify is the capacity change (the first checks permission).
	modify := -1
	for i, c := range calls {
		if c.Op == "ModifySpotFleetRequest" {
			modify = i
		}
	}
	terminate := slices.IndexFunc(calls, func(c ec2fake.Call) bool {
		return c.Op == "TerminateInstances" && !aws.ToBool(c.Input.(*ec2.TerminateInstancesInput).DryRun)
	})
	require.Greater(t, modify, seen[0].calls-1, "the capacity is lowered after the drain")
	require.Greater(t, terminate, modify, "instances are terminated after the capacity is lowered")
	require.Equal(t, []string{ids[0]}, calls[terminate].Input.(*ec2.TerminateInstancesInput).InstanceIds)
}
