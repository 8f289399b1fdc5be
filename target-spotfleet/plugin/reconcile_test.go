package plugin

import (
	"sort"
	"testing"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
)

// drainedByUs puts a node in the state a completed drain of this plugin leaves.
func drainedByUs(r *rig, nodeID string, status api.DrainStatus) {
	r.nomad.update(nodeID, func(n *api.Node) {
		n.SchedulingEligibility = api.NodeSchedulingIneligible
		n.LastDrain = &api.DrainMetadata{Status: status, Meta: drainMeta(r.fleetID)}
		if status == api.DrainStatusDraining {
			n.DrainStrategy = &api.DrainStrategy{}
		}
	})
	if status == api.DrainStatusComplete {
		r.nomad.mu.Lock()
		for _, a := range r.nomad.allocs[nodeID] {
			a.ClientStatus = api.AllocClientStatusComplete
		}
		r.nomad.mu.Unlock()
	}
}

func TestReconcileInterruptedScaleIn(t *testing.T) {
	cases := []struct {
		name string
		// setup leaves the victim (ids[0], marked "to=2") in some state.
		setup        func(r *rig, victim string)
		wantRunning  int
		wantTarget   int
		wantEligible bool // the victim's node ends eligible
		wantMarked   bool // the victim keeps its mark
		wantNotReady string
	}{
		{
			name: "drained by us and capacity lowered: the instance is terminated",
			setup: func(r *rig, v string) {
				drainedByUs(r, r.nodeOf[v], api.DrainStatusComplete)
				require.NoError(t, r.plugin.fleet.SetTargetCapacity(t.Context(), r.fleetID, 2))
			},
			wantRunning: 2, wantTarget: 2,
		},
		{
			name:        "drained by us, capacity not lowered yet: it is lowered, then the instance terminated",
			setup:       func(r *rig, v string) { drainedByUs(r, r.nodeOf[v], api.DrainStatusComplete) },
			wantRunning: 2, wantTarget: 2,
		},
		{
			name: "drained by us but allocations still run: nothing is terminated yet",
			setup: func(r *rig, v string) {
				drainedByUs(r, r.nodeOf[v], api.DrainStatusComplete)
				r.nomad.mu.Lock()
				r.nomad.allocs[r.nodeOf[v]][0].ClientStatus = api.AllocClientStatusRunning
				r.nomad.mu.Unlock()
			},
			wantRunning: 3, wantTarget: 3, wantMarked: true, wantNotReady: "still runs 1 allocations",
		},
		{
			name: "our drain still runs: pending, nothing terminated",
			setup: func(r *rig, v string) {
				drainedByUs(r, r.nodeOf[v], api.DrainStatusDraining)
				r.nomad.setHold(r.nodeOf[v], true)
			},
			wantRunning: 3, wantTarget: 3, wantMarked: true, wantNotReady: "still draining",
		},
		{
			name: "an operator's cordon is not a drain: the mark goes, the node stays cordoned",
			setup: func(r *rig, v string) {
				r.nomad.update(r.nodeOf[v], func(n *api.Node) { n.SchedulingEligibility = api.NodeSchedulingIneligible })
				require.NoError(t, r.plugin.fleet.SetTargetCapacity(t.Context(), r.fleetID, 2))
			},
			wantRunning: 3, wantTarget: 2, wantEligible: false,
		},
		{
			name: "an operator's completed drain is not ours: nothing terminated",
			setup: func(r *rig, v string) {
				r.nomad.update(r.nodeOf[v], func(n *api.Node) {
					n.SchedulingEligibility = api.NodeSchedulingIneligible
					n.LastDrain = &api.DrainMetadata{Status: api.DrainStatusComplete, Meta: map[string]string{"message": "kernel upgrade"}}
				})
			},
			wantRunning: 3, wantTarget: 3, wantEligible: false,
		},
		{
			name:        "marked before the drain started: the mark goes, the node stays in service",
			setup:       func(r *rig, v string) {},
			wantRunning: 3, wantTarget: 3, wantEligible: true,
		},
		{
			name: "an abandoned removal: the drain is cancelled and the node eligible again",
			setup: func(r *rig, v string) {
				drainedByUs(r, r.nodeOf[v], api.DrainStatusComplete)
				r.ec2.SetInstanceTag(v, tagScaleIn, "abandoned at=2026-01-01T00:00:00Z")
			},
			wantRunning: 3, wantTarget: 3, wantEligible: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
			ids := r.ec2.Running(r.fleetID)
			sort.Strings(ids)
			victim := ids[0]
			r.ec2.SetInstanceTag(victim, tagScaleIn, markValue(2, r.now))
			tc.setup(r, victim)

			st, err := r.plugin.Status(r.config)
			require.NoError(t, err)

			require.Len(t, r.ec2.Running(r.fleetID), tc.wantRunning)
			require.Equal(t, tc.wantTarget, r.ec2.TargetCapacity(r.fleetID))
			if tc.wantRunning == 2 {
				require.NotContains(t, r.ec2.Running(r.fleetID), victim)
			} else {
				n := r.nomad.node(r.nodeOf[victim])
				require.Equal(t, tc.wantEligible, n.SchedulingEligibility == api.NodeSchedulingEligible, "eligibility of the victim's node")
				_, marked := r.ec2.InstanceTags(victim)[tagScaleIn]
				require.Equal(t, tc.wantMarked, marked, "victim's mark")
			}
			if tc.wantNotReady != "" {
				require.False(t, st.Ready)
				require.Contains(t, st.Meta[metaNotReadyCause], tc.wantNotReady)
			}
			// Running it again changes nothing.
			terms, mods := len(r.ec2.Calls("TerminateInstances")), len(r.ec2.Calls("ModifySpotFleetRequest"))
			_, err = r.plugin.Status(r.config)
			require.NoError(t, err)
			require.Len(t, r.ec2.Calls("TerminateInstances"), terms)
			require.Len(t, r.ec2.Calls("ModifySpotFleetRequest"), mods)
		})
	}
}

func TestReconcileInShortageEndsAtTheRecordedTarget(t *testing.T) {
	// Target 4, 3 running; a scale-in to 1 drained two nodes and died before
	// lowering the target. Finishing it ends where the uninterrupted
	// scale-in would: the recorded 1, the node that serves.
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 4})
	r.ec2.NoRefill = true
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	r.ec2.Kill(ids[3])
	for _, v := range ids[:2] {
		r.ec2.SetInstanceTag(v, tagScaleIn, markValue(1, r.now))
		drainedByUs(r, r.nodeOf[v], api.DrainStatusComplete)
	}

	_, err := r.plugin.Status(r.config)
	require.NoError(t, err)

	require.Equal(t, []string{ids[2]}, r.ec2.Running(r.fleetID))
	require.Equal(t, 1, r.ec2.TargetCapacity(r.fleetID))
}

func TestDryRunReconcileChangesNothing(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	ids := r.ec2.Running(r.fleetID)
	sort.Strings(ids)
	r.ec2.SetInstanceTag(ids[0], tagScaleIn, markValue(2, r.now))
	drainedByUs(r, r.nodeOf[ids[0]], api.DrainStatusComplete)
	r.ec2.SetInstanceTag(ids[1], tagScaleIn, "abandoned at=2026-01-01T00:00:00Z")
	drainedByUs(r, r.nodeOf[ids[1]], api.DrainStatusComplete)
	cfg := r.with(configKeyDryRun, "true")

	_, err := r.plugin.Status(cfg)
	require.NoError(t, err)
	require.NoError(t, r.plugin.Scale(action(1), cfg))

	require.Len(t, r.ec2.Running(r.fleetID), 3)
	require.Empty(t, r.ec2.Calls("TerminateInstances"))
	require.Empty(t, r.ec2.Calls("ModifySpotFleetRequest"))
	require.Empty(t, r.ec2.Calls("CreateTags"))
	require.Empty(t, r.ec2.Calls("DeleteTags"))
	require.Zero(t, r.nomad.callCount("StartDrain")+r.nomad.callCount("CancelDrain")+r.nomad.callCount("SetEligibility")+r.nomad.callCount("Purge"))
}
