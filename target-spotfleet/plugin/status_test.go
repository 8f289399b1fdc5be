package plugin

import (
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
)

func TestStatus(t *testing.T) {
	cases := []struct {
		name       string
		setup      func(r *rig, ids []string)
		wantReady  bool
		wantCount  int64
		wantReason string
		// fresh makes the instances young, so a missing node is still joining.
		fresh bool
	}{
		{name: "steady fleet is ready", wantReady: true, wantCount: 3},
		{
			name:      "fleet being modified is not ready",
			setup:     func(r *rig, _ []string) { r.ec2.SetFleetState(r.fleetID, types.BatchStateModifying) },
			wantCount: 3, wantReason: "fleet request is modifying",
		},
		{
			name:      "cancelled fleet is not ready",
			setup:     func(r *rig, _ []string) { r.ec2.SetFleetState(r.fleetID, types.BatchStateCancelledRunning) },
			wantCount: 3, wantReason: "fleet request is cancelled_running",
		},
		{
			name: "draining node is not ready",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[1]], func(n *api.Node) { n.DrainStrategy = &api.DrainStrategy{} })
			},
			wantCount: 3, wantReason: "is draining",
		},
		{
			name: "initializing node is not ready",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[0]], func(n *api.Node) { n.Status = api.NodeStatusInit })
			},
			wantCount: 3, wantReason: "is initializing",
		},
		{
			name: "new instance that has not joined Nomad is not ready",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[2]], func(n *api.Node) { n.Status = api.NodeStatusDown })
			},
			wantCount: 3, wantReason: "has not joined Nomad yet", fresh: true,
		},
		{
			name: "missing capacity right after a scaling event is not ready",
			setup: func(r *rig, ids []string) {
				r.ec2.NoRefill = true
				r.ec2.Kill(ids[0])
				r.plugin.recordEvent(t.Context(), r.plugin.logger, r.fleetID)
			},
			wantCount: 3, wantReason: "2 of 3 instances running",
		},
		{
			name: "missing capacity long after the last event does not freeze scaling",
			setup: func(r *rig, ids []string) {
				r.ec2.NoRefill = true
				r.ec2.Kill(ids[0])
				r.plugin.recordEvent(t.Context(), r.plugin.logger, r.fleetID)
				r.now = r.now.Add(time.Hour)
			},
			wantReady: true, wantCount: 3,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
			ids := r.ec2.Running(r.fleetID)
			sort.Strings(ids)
			// The instances were launched long ago unless a case says otherwise.
			r.now = r.now.Add(time.Hour)
			if tc.fresh {
				r.now = time.Now()
			}
			if tc.setup != nil {
				tc.setup(r, ids)
			}

			st, err := r.plugin.Status(r.config)

			require.NoError(t, err)
			require.Equal(t, tc.wantReady, st.Ready, "reasons: %s", st.Meta[metaNotReadyCause])
			require.Equal(t, tc.wantCount, st.Count)
			if tc.wantReason != "" {
				require.Contains(t, st.Meta[metaNotReadyCause], tc.wantReason)
			}
			require.Equal(t, "c5,m5", st.Meta[metaFamilies])
		})
	}
}

func TestStatusLastEventSurvivesRestart(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	require.NoError(t, r.plugin.Scale(action(3), r.config))
	r.joinNewInstances()
	scaledAt := r.now
	r.now = r.now.Add(time.Minute)

	// The process that scaled leaves the cooldown to the agent.
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.True(t, st.Ready, "reasons: %s", st.Meta[metaNotReadyCause])

	// A new plugin process (the agent restarted) reads the event time back
	// from the fleet request, and reports not ready until restart_cooldown
	// has passed since it.
	restarted := newWithClients(r.plugin.logger, r.plugin.fleet, r.nomad, nil)
	restarted.now = func() time.Time { return r.now }
	st, err = restarted.Status(r.config)
	require.NoError(t, err)
	require.Equal(t, strconv.FormatInt(scaledAt.UnixNano(), 10), st.Meta[sdk.TargetStatusMetaKeyLastEvent])
	require.False(t, st.Ready)
	require.Contains(t, st.Meta[metaNotReadyCause], "made before the agent restarted; waiting out restart_cooldown=5m0s")

	st, err = restarted.Status(r.with(configKeyRestartCooldown, "0s"))
	require.NoError(t, err)
	require.True(t, st.Ready, "restart_cooldown=0s turns the guard off")

	r.now = scaledAt.Add(5 * time.Minute)
	st, err = restarted.Status(r.config)
	require.NoError(t, err)
	require.True(t, st.Ready, "reasons: %s", st.Meta[metaNotReadyCause])
}

func TestStatusRejectsBadConfig(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	_, err := r.plugin.Status(r.with(configKeyFleetID, ""))
	require.ErrorContains(t, err, "spot_fleet_request_id is required")
	require.Empty(t, r.ec2.Calls(""), "bad config makes no AWS call")
}

func TestReconcileInterruptedScaleIn(t *testing.T) {
	cases := []struct {
		name string
		// lowered says whether the interrupted run had lowered the target.
		lowered      bool
		wantRunning  int
		wantEligible bool
	}{
		{name: "capacity already lowered: the drained instance is terminated", lowered: true, wantRunning: 2},
		{name: "capacity not lowered yet: the node goes back into service", lowered: false, wantRunning: 3, wantEligible: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
			ids := r.ec2.Running(r.fleetID)
			sort.Strings(ids)
			victim := ids[0]
			r.ec2.SetInstanceTag(victim, tagScaleIn, "2026-01-01T00:00:00Z")
			r.nomad.update(r.nodeOf[victim], func(n *api.Node) { n.SchedulingEligibility = api.NodeSchedulingIneligible })
			if tc.lowered {
				require.NoError(t, r.plugin.fleet.SetTargetCapacity(t.Context(), r.fleetID, 2))
			}

			st, err := r.plugin.Status(r.config)
			require.NoError(t, err)

			require.Len(t, r.ec2.Running(r.fleetID), tc.wantRunning)
			require.EqualValues(t, tc.wantRunning, st.Count)
			if tc.wantEligible {
				require.Equal(t, api.NodeSchedulingEligible, r.nomad.node(r.nodeOf[victim]).SchedulingEligibility)
				require.NotContains(t, r.ec2.InstanceTags(victim), tagScaleIn)
			} else {
				require.NotContains(t, r.ec2.Running(r.fleetID), victim)
			}
			// Running it again changes nothing.
			calls := len(r.ec2.Calls("TerminateInstances"))
			_, err = r.plugin.Status(r.config)
			require.NoError(t, err)
			require.Len(t, r.ec2.Calls("TerminateInstances"), calls)
		})
	}
}
