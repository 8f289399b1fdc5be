package plugin

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	strategy "github.com/nomad-spotfleet/nomad-spotfleet/strategy-cpu-target/plugin"
)

// TestUnplacedFigureComposesWithTheCount follows issue 11's unplaced signal
// through the three plugins' arithmetic: apm-node's unplaced_nodes value
// (as apm-node computes it for the situation: the nodes the waiting work
// needs, not lowered by coming nodes, plus the nodes this plugin's count
// leaves out for their warm-up; pinned in apm-node's TestCollectUnplaced),
// the real strategy-cpu-target turning it into a desired count from this
// plugin's real Status count, and this plugin's real Scale turning that
// into a target capacity. The fleet must end with exactly the nodes that
// take work (ready and warming) plus the larger of its coming capacity
// (joining, launching) and the nodes the waiting work needs.
func TestUnplacedFigureComposesWithTheCount(t *testing.T) {
	cases := []struct {
		name                               string
		ready, warming, joining, launching int
		needed                             int // new empty nodes the waiting work needs
		value                              float64
	}{
		// Issue 11's example. Before the fix apm-node said 2 (the joining
		// nodes filled first): 12 asked, 13 there, nothing done, 15 needed.
		{name: "10 ready, 3 joining, 5 nodes of work", ready: 10, joining: 3, needed: 5, value: 5},
		{name: "instances still launching count like joining nodes", ready: 10, launching: 3, needed: 5, value: 5},
		{name: "coming capacity covers the work: nothing added", ready: 10, joining: 3, needed: 2, value: 2},
		// The warming nodes serve (the scheduler has filled them) but the
		// count leaves them out: apm-node adds them to the value.
		{name: "warming nodes are added back to the count", ready: 8, warming: 2, needed: 5, value: 7},
		{name: "all at once", ready: 8, warming: 2, joining: 2, launching: 1, needed: 6, value: 8},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nodes := tc.ready + tc.warming + tc.joining + tc.launching
			r := newRig(t, ec2fake.Fleet{TargetCapacity: nodes})
			ids := sortedRunning(r)
			for i, id := range ids {
				node := r.nodeOf[id]
				switch {
				case i < tc.ready:
				case i < tc.ready+tc.warming:
					at := r.now.Add(-20 * time.Second).UTC().Format(time.RFC3339)
					r.nomad.update(node, func(n *api.Node) {
						n.Meta[nomadnode.DefaultGateKey] = nomadnode.GateAdmitted
						n.Meta[nomadnode.DefaultGateKey+nomadnode.AdmittedAtSuffix] = at
					})
				case i < tc.ready+tc.warming+tc.joining:
					r.nomad.update(node, func(n *api.Node) { n.Status = api.NodeStatusInit })
				default: // launched, no Nomad node yet
					r.nomad.mu.Lock()
					delete(r.nomad.nodes, node)
					r.nomad.mu.Unlock()
					delete(r.nodeOf, id)
				}
			}
			count := r.status(t)
			require.EqualValues(t, tc.ready, count, "Status count: ready nodes past their warm-up")

			s := strategy.NewCPUTargetPlugin(nil, strategy.WithClock(func() time.Time { return r.now }))
			eval := &sdk.ScalingCheckEvaluation{
				Check: &sdk.ScalingPolicyCheck{Name: "unplaced", Group: "pool",
					Strategy: &sdk.ScalingPolicyStrategy{Name: "strategy-cpu-target", Config: map[string]string{"signal": "unplaced"}}},
				Metrics: sdk.TimestampedMetrics{{Timestamp: r.now.Add(-5 * time.Second), Value: tc.value}},
			}
			out, err := s.Run(eval, count)
			require.NoError(t, err)
			require.EqualValues(t, sdk.ScaleDirectionUp, out.Action.Direction, out.Action.Reason)

			err = r.plugin.Scale(*out.Action, r.config)
			want := tc.ready + tc.warming + max(tc.joining+tc.launching, tc.needed)
			if want == nodes {
				require.Error(t, err, "a scale-out the coming capacity covers is a no-op")
				require.Contains(t, err.Error(), "already covers")
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, want, r.ec2.TargetCapacity(r.fleetID),
				fmt.Sprintf("strategy: %s", out.Action.Reason))
		})
	}
}
