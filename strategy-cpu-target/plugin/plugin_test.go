package plugin

import (
	"math"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/require"
)

var testNow = time.Date(2024, 3, 5, 12, 0, 0, 0, time.UTC)

// series returns datapoints 10 s apart, the last one at end.
func series(end time.Time, values ...float64) sdk.TimestampedMetrics {
	ms := make(sdk.TimestampedMetrics, len(values))
	for i, v := range values {
		ms[i] = sdk.TimestampedMetric{Timestamp: end.Add(-time.Duration(len(values)-1-i) * 10 * time.Second), Value: v}
	}
	return ms
}

// flat returns n datapoints of value v, 10 s apart, ending at testNow.
func flat(n int, v float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

// with returns values with the ones at the given index (negative: from the
// end) replaced.
func with(values []float64, at map[int]float64) []float64 {
	out := append([]float64(nil), values...)
	for i, v := range at {
		if i < 0 {
			i += len(out)
		}
		out[i] = v
	}
	return out
}

func newEval(cfg map[string]string, ms sdk.TimestampedMetrics) *sdk.ScalingCheckEvaluation {
	return &sdk.ScalingCheckEvaluation{
		Check: &sdk.ScalingPolicyCheck{
			Name:        "cpu",
			QueryWindow: 10 * time.Minute,
			Strategy:    &sdk.ScalingPolicyStrategy{Name: PluginName, Config: cfg},
		},
		Action:  &sdk.ScalingAction{},
		Metrics: ms,
	}
}

func TestRun(t *testing.T) {
	cases := []struct {
		name       string
		cfg        map[string]string
		count      int64
		metrics    sdk.TimestampedMetrics
		wantDir    sdk.ScaleDirection
		wantCount  int64
		wantReason []string
	}{
		// Scale-out: proportional to the recent load, fast.
		{
			name:       "recent load above target scales out proportionally",
			count:      4,
			metrics:    series(testNow, append(flat(57, 60), 90, 90, 90)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  5, // ceil(4 × 90/75) = ceil(4.8)
			wantReason: []string{"scale out 4 -> 5", "recent mean CPU 90.0%", "ceil(4 × 90.0/75) = 5"},
		},
		{
			name:      "saturated pool scales out by a third at once",
			count:     9,
			metrics:   series(testNow, flat(60, 100)...),
			wantDir:   sdk.ScaleDirectionUp,
			wantCount: 12,
		},
		{
			name:      "scale-out reacts to the last 30 s, not to the window's older low load",
			count:     10,
			metrics:   series(testNow, append(flat(57, 20), 85, 85, 85)...),
			wantDir:   sdk.ScaleDirectionUp,
			wantCount: 12, // ceil(10 × 85/75) = ceil(11.33)
		},
		{
			name:       "one noisy sample does not scale out",
			count:      10,
			metrics:    series(testNow, append(flat(58, 70), 70, 95)...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"hold 10", "recent mean CPU 78.3%"},
		},
		{
			name:       "max_scale_up caps the step",
			cfg:        map[string]string{"max_scale_up": "2"},
			count:      9,
			metrics:    series(testNow, flat(60, 100)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  11,
			wantReason: []string{"capped by max_scale_up=2 to 11"},
		},
		{
			name:       "a load just above target with no tolerance still adds a node",
			cfg:        map[string]string{"tolerance": "0"},
			count:      4,
			metrics:    series(testNow, flat(60, 75.0000000001)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  5,
			wantReason: []string{"at least one more node"},
		},
		{
			name:      "target is configurable",
			cfg:       map[string]string{"target": "50"},
			count:     4,
			metrics:   series(testNow, flat(60, 75)...),
			wantDir:   sdk.ScaleDirectionUp,
			wantCount: 6,
		},
		// Tolerance band.
		{
			name:       "load inside the tolerance band above target does nothing",
			count:      8,
			metrics:    series(testNow, flat(60, 78)...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  8,
			wantReason: []string{"hold 8", "not below 71.25%"},
		},
		{
			name:      "load inside the tolerance band below target does nothing",
			count:     8,
			metrics:   series(testNow, flat(60, 72)...),
			wantDir:   sdk.ScaleDirectionNone,
			wantCount: 8,
		},
		// Scale-in: conservative, from the whole window.
		{
			name:       "scale-in goes only as far as the window's peak allows",
			cfg:        map[string]string{"rise_window": "0s"},
			count:      10,
			metrics:    series(testNow, with(flat(60, 40), map[int]float64{10: 50})...),
			wantDir:    sdk.ScaleDirectionDown,
			wantCount:  7, // ceil(10 × 50/75) = ceil(6.67)
			wantReason: []string{"scale in 10 -> 7", "window peak CPU 50.0%", "ceil(10 × 50.0/75) = 7 keeps that peak at or below target"},
		},
		{
			// The load stepped up 10 points for 30 s (a whole
			// scale_out_window), then fell back: its rolling mean rose the
			// whole step within 30 s, and a repeat from the peak must stay
			// at or below the scale-out threshold (78.75%).
			name:      "scale-in keeps headroom for a real step rise that has fallen back",
			count:     10,
			metrics:   series(testNow, with(flat(60, 40), map[int]float64{10: 50, 11: 50, 12: 50})...),
			wantDir:   sdk.ScaleDirectionDown,
			wantCount: 8, // ceil(10 × (50+10)/78.75) = ceil(7.62)
			wantReason: []string{"scale in 10 -> 8", "ceil(10 × 50.0/75) = 7 keeps that peak at or below target",
				"largest rise +10.0 points of the scale_out_window=30s mean within rise_window=1m30s", "ceil(10 × (50.0+10.0)/78.75) = 8, kept"},
		},
		{
			// One 10 s sample of a 30 s scale_out_window moves its mean a
			// third of the way: the peak holds the sample, the rise only
			// the third, so it is not counted twice.
			name:      "a one-sample spike counts in the peak, a third of it in the rise",
			count:     10,
			metrics:   series(testNow, with(flat(60, 40), map[int]float64{10: 50})...),
			wantDir:   sdk.ScaleDirectionDown,
			wantCount: 7, // max(ceil(10 × 50/75), ceil(10 × (50+3.3)/78.75)) = 7
			wantReason: []string{"scale in 10 -> 7", "largest rise +3.3 points of the scale_out_window=30s mean",
				"ceil(10 × (50.0+3.3)/78.75) = 7"},
		},
		{
			// 10 points, but over 5 minutes: slower than rise_window, a
			// scale-out keeps up with it.
			name:       "a slow climb is no rise",
			count:      10,
			metrics:    series(testNow, ramp(60, 40, 50)...),
			wantDir:    sdk.ScaleDirectionDown,
			wantCount:  7,
			wantReason: []string{"scale in 10 -> 7", "ceil(10 × (50.0+1.5)/78.75) = 7"},
		},
		{
			name:       "a rise can leave no node to spare",
			count:      4,
			metrics:    series(testNow, with(flat(60, 20), map[int]float64{40: 50, 41: 50, 42: 50})...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  4,
			wantReason: []string{"ceil(4 × 50.0/75) = 3", "ceil(4 × (50.0+30.0)/78.75) = 5, kept", "no node to spare"},
		},
		{
			name:       "an old peak inside the window blocks scale-in although load is low now",
			count:      10,
			metrics:    series(testNow, with(flat(60, 30), map[int]float64{0: 80})...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"window peak CPU 80.0%", "not below 71.25%"},
		},
		{
			name:       "no scale-in when one node fewer would push the peak above target",
			count:      3,
			metrics:    series(testNow, flat(60, 55)...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  3,
			wantReason: []string{"ceil(3 × 55.0/75) = 3", "no node to spare"},
		},
		{
			name:       "max_scale_down caps the step",
			cfg:        map[string]string{"max_scale_down": "1"},
			count:      10,
			metrics:    series(testNow, flat(60, 30)...),
			wantDir:    sdk.ScaleDirectionDown,
			wantCount:  9,
			wantReason: []string{"capped by max_scale_down=1 to 9"},
		},
		{
			name:       "a window cut short by missing history does not scale in",
			count:      10,
			metrics:    series(testNow, flat(18, 30)...), // 2m50s of a 10m window
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"no scale-in", "span 2m50s", "scale_in_min_coverage=0.8"},
		},
		// Missing, stale or non-finite data: no action, never a scale-in.
		{
			name:       "no datapoints is no action",
			count:      5,
			metrics:    nil,
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  5,
			wantReason: []string{"no action", "metrics missing"},
		},
		{
			name:       "stale datapoints are no action even when they ask for a scale-in",
			count:      10,
			metrics:    series(testNow.Add(-5*time.Minute), flat(60, 10)...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"no action", "5m0s old", "max_data_age=2m0s", "stale"},
		},
		{
			name:       "stale datapoints are no action even when they ask for a scale-out",
			count:      10,
			metrics:    series(testNow.Add(-5*time.Minute), flat(60, 100)...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"stale"},
		},
		{
			name:       "NaN among the recent datapoints is no action",
			count:      10,
			metrics:    series(testNow, with(flat(60, 95), map[int]float64{-1: math.NaN()})...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"no action", "is NaN", "metrics invalid"},
		},
		{
			name:       "infinite recent datapoint is no action",
			count:      10,
			metrics:    series(testNow, with(flat(60, 10), map[int]float64{-2: math.Inf(1)})...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"+Inf", "metrics invalid"},
		},
		{
			name:       "negative recent datapoint is no action",
			count:      10,
			metrics:    series(testNow, with(flat(60, 10), map[int]float64{-1: -3})...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"is -3", "metrics invalid"},
		},
		{
			name:       "an invalid older datapoint blocks scale-in",
			count:      10,
			metrics:    series(testNow, with(flat(60, 10), map[int]float64{5: math.NaN()})...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  10,
			wantReason: []string{"no scale-in", "is NaN", "peak is unknown"},
		},
		{
			name:      "an invalid older datapoint does not block a scale-out on clean recent data",
			count:     10,
			metrics:   series(testNow, append(with(flat(57, 60), map[int]float64{5: math.NaN()}), 90, 90, 90)...),
			wantDir:   sdk.ScaleDirectionUp,
			wantCount: 12,
		},
		// Count 0.
		{
			name:       "count 0 with load brings one node back",
			count:      0,
			metrics:    series(testNow, flat(6, 40)...),
			wantDir:    sdk.ScaleDirectionUp,
			wantCount:  1,
			wantReason: []string{"scale out 0 -> 1"},
		},
		{
			name:       "count 0 without load stays at 0",
			count:      0,
			metrics:    series(testNow, flat(6, 0)...),
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  0,
			wantReason: []string{"hold 0"},
		},
		{
			name:       "count 0 without datapoints is no action",
			count:      0,
			metrics:    nil,
			wantDir:    sdk.ScaleDirectionNone,
			wantCount:  0,
			wantReason: []string{"metrics missing"},
		},
		// Input handling.
		{
			name:  "unsorted datapoints are read in time order",
			count: 4,
			metrics: func() sdk.TimestampedMetrics {
				ms := series(testNow, append(flat(57, 60), 90, 90, 90)...)
				ms[0], ms[len(ms)-1] = ms[len(ms)-1], ms[0]
				return ms
			}(),
			wantDir:   sdk.ScaleDirectionUp,
			wantCount: 5,
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
			got, err := s.Run(newEval(tc.cfg, tc.metrics), tc.count)
			require.NoError(t, err)
			require.NotNil(t, got)
			require.Equal(t, tc.wantDir, got.Action.Direction, got.Action.Reason)
			require.Equal(t, tc.wantCount, got.Action.Count, got.Action.Reason)
			require.NotEmpty(t, got.Action.Reason)
			for _, s := range tc.wantReason {
				require.Contains(t, got.Action.Reason, s)
			}
		})
	}
}

func TestRunNeverScalesInPastThePeak(t *testing.T) {
	// For any window, the chosen count must carry the window's peak load
	// (count × peak) at or below target.
	cases := []struct {
		name  string
		count int64
		peak  float64
	}{
		{name: "20 nodes, peak 10%", count: 20, peak: 10},
		{name: "20 nodes, peak 70%", count: 20, peak: 70},
		{name: "7 nodes, peak 64.3%", count: 7, peak: 64.3},
		{name: "2 nodes, peak 37.5%", count: 2, peak: 37.5},
		{name: "13 nodes, peak 0%", count: 13, peak: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
			ms := series(testNow, with(flat(60, tc.peak/2), map[int]float64{30: tc.peak})...)
			got, err := s.Run(newEval(nil, ms), tc.count)
			require.NoError(t, err)
			require.LessOrEqual(t, float64(tc.count)*tc.peak, float64(got.Action.Count)*75+1e-9, got.Action.Reason)
			require.LessOrEqual(t, got.Action.Count, tc.count)
		})
	}
}

func TestRunIsStatelessAndDoesNotFlap(t *testing.T) {
	// A steady load with noise inside the band, evaluated every 10 s by one
	// instance and by a fresh instance each time (an agent restart), never
	// moves the count.
	cases := []struct {
		name  string
		noise []float64
	}{
		{name: "noise of ±2 points around 74%", noise: []float64{74, 76, 72, 75, 73, 76, 74}},
		{name: "noise of ±3 points around 75%", noise: []float64{72.5, 77.5, 75, 78, 74, 72, 76}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			shared := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
			for shift := 0; shift < 20; shift++ {
				values := make([]float64, 60)
				for i := range values {
					values[i] = tc.noise[(i+shift)%len(tc.noise)]
				}
				for _, s := range []*StrategyPlugin{shared, NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))} {
					got, err := s.Run(newEval(nil, series(testNow, values...)), 8)
					require.NoError(t, err)
					require.Equal(t, sdk.ScaleDirection(sdk.ScaleDirectionNone), got.Action.Direction, got.Action.Reason)
				}
			}
		})
	}
}

func TestRunDryRun(t *testing.T) {
	cases := []struct {
		name      string
		metrics   sdk.TimestampedMetrics
		wantCount int64 // the count the strategy would have asked for
	}{
		{name: "dry-run scale-out is reported, not applied", metrics: series(testNow, flat(60, 100)...), wantCount: 12},
		{name: "dry-run scale-in is reported, not applied", metrics: series(testNow, flat(60, 30)...), wantCount: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
			got, err := s.Run(newEval(map[string]string{"dry-run": "true"}, tc.metrics), 9)
			require.NoError(t, err)
			require.Equal(t, int64(sdk.StrategyActionMetaValueDryRunCount), got.Action.Count)
			require.Equal(t, sdk.ScaleDirection(sdk.ScaleDirectionNone), got.Action.Direction)
			require.Equal(t, tc.wantCount, got.Action.Meta["nomad_autoscaler.dry_run.count"])
			require.Contains(t, got.Action.Reason, "dry-run, not applied")
		})
	}
}

func TestRunErrors(t *testing.T) {
	cases := []struct {
		name    string
		eval    *sdk.ScalingCheckEvaluation
		count   int64
		wantErr string
	}{
		{name: "invalid config names the key", eval: newEval(map[string]string{"target": "x"}, series(testNow, 50)), count: 3, wantErr: `invalid value for "target"`},
		{name: "negative count", eval: newEval(nil, series(testNow, 50)), count: -1, wantErr: "negative"},
		{name: "missing check", eval: &sdk.ScalingCheckEvaluation{}, count: 3, wantErr: "strategy block"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCPUTargetPlugin(nil, WithClock(func() time.Time { return testNow }))
			_, err := s.Run(tc.eval, tc.count)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestPluginBase(t *testing.T) {
	cases := []struct {
		name   string
		config map[string]string
	}{
		{name: "agent keys are accepted", config: map[string]string{"nomad_address": "http://127.0.0.1:4646", "nomad_region": "global"}},
		{name: "empty config is accepted", config: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := NewCPUTargetPlugin(nil)
			require.NoError(t, s.SetConfig(tc.config))
			info, err := s.PluginInfo()
			require.NoError(t, err)
			require.Equal(t, "strategy-cpu-target", info.Name)
			require.Equal(t, sdk.PluginTypeStrategy, info.PluginType)
		})
	}
}

// ramp returns n datapoints climbing evenly from a to b.
func ramp(n int, a, b float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = a + (b-a)*float64(i)/float64(n-1)
	}
	return out
}
