package plugin

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/require"
)

func TestRunSaturatedAndUnplaced(t *testing.T) {
	unplaced := map[string]string{"signal": "unplaced"}
	rising := series(testNow, append(flat(54, 60), 70, 80, 90, 100, 100, 100)...)
	climbing := series(testNow, append(flat(53, 60), 81, 84, 87, 90, 93, 96, 99)...)
	cases := []struct {
		name       string
		cfg        map[string]string
		count      int64
		metrics    sdk.TimestampedMetrics
		wantDir    sdk.ScaleDirection
		wantCount  int64
		wantReason []string
	}{
		// Saturated CPU: the trend may step past the proportional formula,
		// but only while the CPU is still rising now, never past 100%, and
		// by at most twice the proportional step's increase.
		{
			name:    "a saturated pool still rising takes the projected step",
			count:   4,
			metrics: climbing,
			wantDir: sdk.ScaleDirectionUp,
			// +0.3 %/s over the last 60 s and over the last 30 s; recent mean
			// 96%: 96 + 0.3 × 90 = 123; ceil(4 × 123/75) = 7, where the
			// proportional step gives ceil(4 × 96/75) = 6.
			wantCount: 7,
			wantReason: []string{"scale out 4 -> 7", "ceil(4 × 96.0/75) = 6", "saturated (recent 96.0% >= saturation 95%)",
				"still rising: +0.300%/s over 6 points in 1m0s and +0.300%/s over the recent 3 points; the smaller projects 123.0% in 1m30s: ceil(4 × 123.0/75) = 7, taken"},
		},
		{
			// The rise ended 30 s ago: the 60 s fit still spans it, the
			// recent part is flat at 100%.
			name:       "a pool flat at 100% after a rise has no trend: the proportional step",
			count:      4,
			metrics:    rising,
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  6, // ceil(4 × 100/75)
			wantReason: []string{"scale out 4 -> 6", "ceil(4 × 100.0/75) = 6", "no trend: the rise over 1m0s (+0.629%/s) has stopped, the recent part is not rising (slope +0.000%/s over 3 points in scale_out_window=30s)"},
		},
		{
			name:       "a pool saturated for long has no rise to project: the proportional step",
			count:      9,
			metrics:    series(testNow, flat(60, 100)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  12,
			wantReason: []string{"ceil(9 × 100.0/75) = 12", "no rise to project (slope +0.000%/s over 6 points in 1m0s)"},
		},
		{
			// workload_cpu reads past 100%: the proportional step sees the
			// whole load, a trend would count the rise a second time.
			name:       "a recent mean above 100% has no trend: the metric is not clamped",
			count:      1,
			metrics:    series(testNow, append(flat(54, 43), 43, 90, 171, 171, 171, 171)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  3, // ceil(1 × 171/75)
			wantReason: []string{"scale out 1 -> 3", "ceil(1 × 171.0/75) = 3", "no trend: recent 171.0% is above 100%"},
		},
		{
			name:       "trend_lead 0s keeps the proportional step",
			cfg:        map[string]string{"trend_lead": "0s"},
			count:      4,
			metrics:    climbing,
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  6,
			wantReason: []string{"trend off (trend_lead 0s)"},
		},
		{
			name:       "below saturation a rise does not add to the step",
			count:      4,
			metrics:    series(testNow, append(flat(54, 60), 70, 80, 85, 90, 90, 90)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  5, // ceil(4 × 90/75)
			wantReason: []string{"ceil(4 × 90.0/75) = 5"},
		},
		{
			// +0.5 %/s: 90 + 45 = 135, ceil(4 × 135/75) = 8, but the
			// proportional step adds 1 node (5), so the trend adds at most 2.
			name:       "a lower saturation setting lets the trend act earlier, bounded by twice the proportional step",
			cfg:        map[string]string{"saturation": "85"},
			count:      4,
			metrics:    series(testNow, append(flat(54, 60), 70, 75, 80, 85, 90, 95)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  6,
			wantReason: []string{"saturated (recent 90.0% >= saturation 85%)", "ceil(4 × 135.0/75) = 8", "at most twice the proportional step's 1 more node(s): 6, taken"},
		},
		{
			name:       "max_scale_up caps the trended step too",
			cfg:        map[string]string{"max_scale_up": "2"},
			count:      4,
			metrics:    climbing,
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  6,
			wantReason: []string{"= 7, taken", "capped by max_scale_up=2 to 6"},
		},
		{
			name:       "a falling trend does not deepen a scale-in: the window peak decides",
			count:      10,
			metrics:    series(testNow, append(flat(54, 60), 50, 40, 30, 20, 10, 10)...),
			wantDir:    sdk.ScaleDirectionDown,
			wantCount:  8,
			wantReason: []string{"scale in 10 -> 8", "ceil(10 × 60.0/75) = 8"},
		},

		// Unplaced work.
		{
			name:       "unplaced work adds the nodes it needs whatever the CPU reads",
			cfg:        unplaced,
			count:      2,
			metrics:    series(testNow, 0, 2, 3),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  5,
			wantReason: []string{"scale out 2 -> 5", "unplaced work needs 3 more node(s)", "2 + 3 = 5"},
		},
		{
			name:       "the newest datapoint counts, not the window's peak",
			cfg:        unplaced,
			count:      5,
			metrics:    series(testNow, 3, 3, 0),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  5,
			wantReason: []string{"hold 5: nothing waits unplaced", "never scales in"},
		},
		{
			name:       "nothing waiting never scales in, even from a large pool",
			cfg:        unplaced,
			count:      20,
			metrics:    series(testNow, flat(30, 0)...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  20,
			wantReason: []string{"hold 20"},
		},
		{
			name:       "max_scale_up caps what unplaced work adds",
			cfg:        map[string]string{"signal": "unplaced", "max_scale_up": "2"},
			count:      1,
			metrics:    series(testNow, 6),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  3,
			wantReason: []string{"1 + 6 = 7, capped by max_scale_up=2 to 3"},
		},
		{
			name:       "unplaced work brings an empty pool back",
			cfg:        unplaced,
			count:      0,
			metrics:    series(testNow, 2),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  2,
			wantReason: []string{"scale out 0 -> 2"},
		},
		{
			name:       "stale unplaced figures do nothing",
			cfg:        unplaced,
			count:      2,
			metrics:    series(testNow.Add(-3*time.Minute), 4),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  2,
			wantReason: []string{"hold 2: no action", "older than max_data_age=2m0s (metrics stale)"},
		},
		{
			name:       "an invalid unplaced figure does nothing",
			cfg:        unplaced,
			count:      2,
			metrics:    series(testNow, 1, math.NaN()),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  2,
			wantReason: []string{"is NaN, not a number of nodes (metrics invalid)"},
		},
		{
			name:       "a negative unplaced figure does nothing",
			cfg:        unplaced,
			count:      2,
			metrics:    series(testNow, -1),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  2,
			wantReason: []string{"is -1, not a number of nodes"},
		},
		{
			name:       "no unplaced datapoints do nothing",
			cfg:        unplaced,
			count:      2,
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  2,
			wantReason: []string{"no datapoints in the query window"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
			got, err := s.Run(newEval(tc.cfg, tc.metrics), tc.count)
			require.NoError(t, err)
			require.Equal(t, tc.wantDir, got.Action.Direction, got.Action.Reason)
			require.Equal(t, tc.wantCount, got.Action.Count, got.Action.Reason)
			for _, w := range tc.wantReason {
				require.Contains(t, got.Action.Reason, w)
			}
		})
	}
}

func TestUnplacedDecisionIsOneLogLineWithItsNumbers(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug})
	s := NewCPUTargetPlugin(log, WithClock(func() time.Time { return testNow }))

	_, err := s.Run(newEval(map[string]string{"signal": "unplaced", "dry-run": "true"}, series(testNow, 2)), 3)
	require.NoError(t, err)

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, buf.String())
	require.Contains(t, lines[0], "[INFO]")
	require.Contains(t, lines[0], "dry-run, not applied: scale out 3 -> 5: unplaced work needs 2 more node(s)")
	require.Contains(t, lines[0], "signal=unplaced")
}

func TestAbsurdFiguresDoNotOverflowTheCount(t *testing.T) {
	s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
	got, err := s.Run(newEval(map[string]string{"signal": "unplaced"}, series(testNow, 1e300)), 3)
	require.NoError(t, err)
	require.Equal(t, sdk.ScaleDirection(sdk.ScaleDirectionUp), got.Action.Direction)
	require.Equal(t, int64(3+1e6), got.Action.Count)

	got, err = s.Run(newEval(nil, series(testNow, append(flat(57, 60), 1e300, 1e300, 1e300)...)), 3)
	require.NoError(t, err)
	require.Equal(t, sdk.ScaleDirection(sdk.ScaleDirectionUp), got.Action.Direction)
	require.Equal(t, int64(1e6), got.Action.Count)
}
