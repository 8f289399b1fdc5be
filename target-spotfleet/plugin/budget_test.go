package plugin

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
)

// callsOf counts EC2 calls by operation since a mark.
func callsOf(r *rig, since int) (int, string) {
	calls := r.ec2.Calls("")[since:]
	byOp := map[string]int{}
	for _, c := range calls {
		byOp[c.Op]++
	}
	ops := make([]string, 0, len(byOp))
	for op, n := range byOp {
		ops = append(ops, fmt.Sprintf("%s=%d", op, n))
	}
	sort.Strings(ops)
	return len(calls), strings.Join(ops, " ")
}

func nomadCalls(r *rig) map[string]int {
	r.nomad.mu.Lock()
	defer r.nomad.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.nomad.calls {
		out[k] = v
	}
	return out
}

func diff(after, before map[string]int) (int, string) {
	total := 0
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			total += d
			parts = append(parts, fmt.Sprintf("%s=%d", k, d))
		}
	}
	sort.Strings(parts)
	return total, strings.Join(parts, " ")
}

// TestAPICallsPerEvaluation measures the API calls of an evaluation in
// steady state (a Status), of one that scales (Status then Scale, sharing one
// observation), and of a scale-out that waits for capacity that does not
// come; it fails if the budget is exceeded.
func TestAPICallsPerEvaluation(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3, TemplateTypes: []string{"c5.large", "m5.large"}})
	r.now = r.now.Add(time.Hour)
	_, err := r.plugin.Status(r.config) // the first reads node ids and templates once
	require.NoError(t, err)

	mark, nb := len(r.ec2.Calls("")), nomadCalls(r)
	for range 10 {
		_, err := r.plugin.Status(r.config)
		require.NoError(t, err)
	}
	ec2n, ec2ops := callsOf(r, mark)
	nn, nops := diff(nomadCalls(r), nb)
	t.Logf("steady state, per evaluation: %.1f EC2 calls (%s over 10), %.1f Nomad calls (%s over 10)", float64(ec2n)/10, ec2ops, float64(nn)/10, nops)
	require.LessOrEqual(t, ec2n, 30, "at most 3 EC2 calls per steady evaluation")
	require.LessOrEqual(t, nn, 10, "one Nomad node list per steady evaluation")

	mark, nb = len(r.ec2.Calls("")), nomadCalls(r)
	_, err = r.plugin.Status(r.config)
	require.NoError(t, err)
	require.NoError(t, r.plugin.Scale(action(4), r.config))
	ec2n, ec2ops = callsOf(r, mark)
	nn, nops = diff(nomadCalls(r), nb)
	t.Logf("evaluation that scales out (status + scale): %d EC2 calls (%s), %d Nomad calls (%s)", ec2n, ec2ops, nn, nops)
	require.LessOrEqual(t, ec2n, 9)
	r.joinNewInstances()

	r.ec2.Unavailable = true
	r.plugin.pollInterval, r.plugin.launchConfirm = 100*time.Millisecond, 3*time.Second // 1s and 30s in production
	mark = len(r.ec2.Calls(""))
	cfg := r.with(configKeyLaunchTimeout, "5m")
	_, err = r.plugin.Status(cfg)
	require.NoError(t, err)
	err = r.plugin.Scale(action(6), cfg)
	var noop *sdk.TargetScalingNoOpError
	require.False(t, errors.As(err, &noop))
	require.NoError(t, err)
	ec2n, ec2ops = callsOf(r, mark)
	t.Logf("scale-out whose capacity does not come (polling from 100ms, doubling; stops after %s): %d EC2 calls (%s)", r.plugin.launchConfirm, ec2n, ec2ops)
	require.LessOrEqual(t, ec2n, 25)
}

func TestStatusToleratesAnInstanceEC2DoesNotListYet(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	r.ec2.DescribeLag = 1000 // new instances stay unknown to DescribeInstances

	require.NoError(t, r.plugin.Scale(action(3), r.config))
	st, err := r.plugin.Status(r.config)

	require.NoError(t, err)
	require.EqualValues(t, 2, st.Count, "only ready nodes count")
	require.Equal(t, "3", st.Meta[metaRunning], "the fleet lists it: it counts as pending")
	require.Equal(t, "joining=1,ready=2", st.Meta[metaPhases])
}

func TestScaleWaitsForAFleetStillModifying(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.ec2.ModifyingFor = 2 // every change leaves the fleet modifying for a while

	require.NoError(t, r.plugin.Scale(action(2), r.config))

	require.Equal(t, 2, r.ec2.TargetCapacity(r.fleetID))
	require.Len(t, r.ec2.Running(r.fleetID), 2)
}
