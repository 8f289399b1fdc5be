package plugin

import (
	"sort"
	"strconv"
	"strings"
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
		wantMeta   map[string]string
		// fresh makes the instances young, so a missing node is still joining.
		fresh bool
	}{
		{name: "steady fleet is ready", wantReady: true, wantCount: 3, wantMeta: map[string]string{metaPhases: "ready=3"}},
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
			name: "an operator's drain does not freeze scaling; the node does not count",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[1]], func(n *api.Node) {
					n.DrainStrategy = &api.DrainStrategy{}
					n.SchedulingEligibility = api.NodeSchedulingIneligible
				})
			},
			wantReady: true, wantCount: 2, wantMeta: map[string]string{metaPhases: "draining=1,ready=2", metaReadyNodes: "2", metaHeld: "1"},
		},
		{
			name: "an initializing node does not freeze scaling and is not counted",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[0]], func(n *api.Node) { n.Status = api.NodeStatusInit })
			},
			wantReady: true, wantCount: 2, fresh: true, wantMeta: map[string]string{metaPhases: "joining=1,ready=2"},
		},
		{
			name: "a new instance that has not joined Nomad yet is coming: not counted, no freeze",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[2]], func(n *api.Node) { n.Status = api.NodeStatusDown })
			},
			wantReady: true, wantCount: 2, fresh: true, wantMeta: map[string]string{metaPhases: "joining=1,ready=2"},
		},
		{
			name: "an instance that never joined is reported",
			setup: func(r *rig, ids []string) {
				r.nomad.update(r.nodeOf[ids[2]], func(n *api.Node) { n.Status = api.NodeStatusDown })
			},
			wantReady: true, wantCount: 2, wantMeta: map[string]string{metaPhases: "not_joined=1,ready=2", metaNotJoined: "$2"},
		},
		{
			name: "missing capacity within launch_timeout does not freeze scaling and is not counted",
			setup: func(r *rig, ids []string) {
				r.ec2.NoRefill = true
				r.ec2.Kill(ids[0])
			},
			wantReady: true, wantCount: 2,
		},
		{
			name: "missing capacity beyond launch_timeout is a shortage: only running instances count",
			setup: func(r *rig, ids []string) {
				r.ec2.NoRefill = true
				r.ec2.Kill(ids[0])
				_, err := r.plugin.Status(r.config)
				require.NoError(t, err)
				r.now = r.now.Add(2 * time.Second) // launch_timeout is 1s
			},
			wantReady: true, wantCount: 2, wantMeta: map[string]string{metaShortage: "2 of 3 instances running for 2s (more than launch_timeout=1s): counting the 2 running"},
		},
		{
			name: "two nodes claiming one instance are reported and left alone",
			setup: func(r *rig, ids []string) {
				r.nomad.addNode(ids[0]+"-twin", "spot")
				r.nomad.update("node-"+ids[0]+"-twin", func(n *api.Node) { n.Meta["ec2_instance_id"] = ids[0] })
			},
			wantReady: true, wantCount: 2, wantMeta: map[string]string{metaReadyNodes: "2", metaPhases: "ready=2,unknown=1", metaHeld: "1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
			ids := r.ec2.Running(r.fleetID)
			sort.Strings(ids)
			// The instances were launched long ago unless a case says otherwise.
			if !tc.fresh {
				r.now = r.now.Add(time.Hour)
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
			for k, v := range tc.wantMeta {
				if strings.HasPrefix(v, "$") { // an instance, by index
					i, _ := strconv.Atoi(v[1:])
					v = ids[i]
				}
				require.Equal(t, v, st.Meta[k], "meta %s", k)
			}
			require.Equal(t, "c5,m5", st.Meta[metaFamilies])
		})
	}
}

func TestStatusRefusesRequestTypeFleet(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2, Type: types.FleetTypeRequest})

	_, err := r.plugin.Status(r.config)

	require.ErrorContains(t, err, `is of type "request": EC2 changes the target capacity of maintain fleets only`)
	require.Empty(t, r.ec2.Calls("ModifySpotFleetRequest"))
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
