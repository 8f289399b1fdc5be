package plugin

// Review of issue 11 (adversarial, SRE view): reproduces a suspected defect
// of rise_window. It failed on the code under review, which measured the
// rise sample to sample; the rise is now that of the rolling
// scale_out_window mean (largestRise), and the noisy pool scales in as far
// as it does with rise_window = 0s.

import (
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/require"
)

// A steady pool whose CPU samples alternate 35% / 55% (mean 45%, ±10 points
// of sampling noise, nothing trending) at 10 nodes, target 75: the load is
// 4.5 nodes' worth, 6 nodes at target. The largest "rise" within 90 s is the
// noise itself (35 -> 55 = +20), and it is added to a peak that already
// holds the upward half of that noise: ceil(10 × (55+20)/78.75) = 10, so the
// default rise_window forbids every scale-in and the pool stays at 60% of
// its target for as long as the noise lasts. With rise_window = 0s the same
// data scales in to ceil(10 × 55/75) = 8.
func TestReview11NoiseAloneForbidsEveryScaleIn(t *testing.T) {
	values := make([]float64, 61) // 10 minutes, 10 s apart
	for i := range values {
		values[i] = 35
		if i%2 == 1 {
			values[i] = 55
		}
	}
	ms := series(testNow, values...)
	run := func(cfg map[string]string) *sdk.ScalingCheckEvaluation {
		s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
		got, err := s.Run(newEval(cfg, ms), 10)
		require.NoError(t, err)
		return got
	}
	off := run(map[string]string{"rise_window": "0s"})
	require.Equal(t, sdk.ScaleDirection(sdk.ScaleDirectionDown), off.Action.Direction, off.Action.Reason)
	require.Equal(t, int64(8), off.Action.Count, off.Action.Reason)

	def := run(nil)
	require.Equal(t, sdk.ScaleDirection(sdk.ScaleDirectionDown), def.Action.Direction,
		"a flat but noisy 45%% pool at 10 nodes (target 75) must be able to scale in; got: %s", def.Action.Reason)
	// The 3-sample means alternate 41.7/48.3: ceil(10 × (55+6.7)/78.75) = 8.
	require.Equal(t, int64(8), def.Action.Count, def.Action.Reason)
}
