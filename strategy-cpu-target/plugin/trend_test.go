package plugin

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/require"
)

// stepSeries returns 90 s of datapoints 2 s apart ending at testNow, in
// which the CPU steps from before to after stepAgo before the newest, over
// two samples (40% and 75% of the way), as a node's CPU does when load
// lands on it.
func stepSeries(stepAgo time.Duration, before, after float64) sdk.TimestampedMetrics {
	var ms sdk.TimestampedMetrics
	for ago := 90 * time.Second; ago >= 0; ago -= 2 * time.Second {
		v := before
		if since := stepAgo - ago; since >= 4*time.Second {
			v = after
		} else if since >= 2*time.Second {
			v = before + 0.75*(after-before)
		} else if since >= 0 {
			v = before + 0.4*(after-before)
		}
		ms = append(ms, sdk.TimestampedMetric{Timestamp: testNow.Add(-ago), Value: v})
	}
	return ms
}

// TestRunStepIsNotProjected is the demo's case: the load on one node steps
// from 43% to 171% (3 nodes at 75%) or to 100%, and the count stays 1 while
// the new nodes boot, so the strategy is asked again and again with the step
// inside its trend window. The step has ended; only the proportional step
// (and, while the recent part still climbs, at most twice its increase) may
// be asked.
func TestRunStepIsNotProjected(t *testing.T) {
	cfg := map[string]string{"target": "75", "scale_out_window": "10s", "max_data_age": "20s"}
	cases := []struct {
		after     float64
		most      int64 // the largest count ever asked
		settled   int64 // the count asked once the recent part is past the step
		settledAt time.Duration
	}{
		{after: 171, most: 3, settled: 3, settledAt: 10 * time.Second}, // ceil(171/75)
		{after: 100, most: 3, settled: 2, settledAt: 14 * time.Second}, // ceil(100/75)
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("43%% to %.0f%%", tc.after), func(t *testing.T) {
			s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
			for ago := time.Second; ago <= 60*time.Second; ago += time.Second {
				eval := newEval(cfg, stepSeries(ago, 43, tc.after))
				eval.Check.QueryWindow = 5 * time.Minute
				got, err := s.Run(eval, 1)
				require.NoError(t, err)
				require.LessOrEqual(t, got.Action.Count, tc.most, "%s after the step: %s", ago, got.Action.Reason)
				if ago >= tc.settledAt {
					require.Equal(t, tc.settled, got.Action.Count, "%s after the step: %s", ago, got.Action.Reason)
					require.Contains(t, got.Action.Reason, "no trend", "%s after the step", ago)
				}
			}
		})
	}
}
