package plugin

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLargestRise checks that the rise is measured on the rolling
// scale_out_window mean: sampling noise, which the window's peak already
// holds, barely counts, while a step that lasts a whole scale_out_window
// counts in full, also after it has fallen back.
func TestLargestRise(t *testing.T) {
	alternating := make([]float64, 61)
	for i := range alternating {
		alternating[i] = 35
		if i%2 == 1 {
			alternating[i] = 55
		}
	}
	tests := []struct {
		name   string
		values []float64
		want   float64
		wantAt int // index of the datapoint where the rise ended; -1 for none
	}{
		{
			// 3-sample means alternate 41.7% / 48.3%: a rise of 6.7, not
			// the 20 points from one sample to the next.
			name: "noise alternating 35/55 rises only a third of its swing", values: alternating,
			want: 20.0 / 3, wantAt: 5,
		},
		{
			name: "a flat series never rises", values: flat(60, 40),
			want: 0, wantAt: -1,
		},
		{
			name:   "a step held for the scale_out_window counts in full, though it fell back",
			values: with(flat(60, 40), map[int]float64{20: 70, 21: 70, 22: 70}),
			want:   30, wantAt: 22,
		},
		{
			name:   "a step still held at the newest datapoint counts in full",
			values: append(flat(57, 40), 70, 70, 70),
			want:   30, wantAt: 59,
		},
		{
			// The first means (one sample, then two) would read 35 -> 45:
			// they do not cover the whole window and are left out.
			name:   "partial means at the start of the data are not a rise",
			values: append([]float64{35, 55}, flat(10, 45)...),
			want:   0, wantAt: -1,
		},
		{
			name:   "unusable values are skipped, not read as 0",
			values: with(flat(30, 40), map[int]float64{10: math.NaN(), 11: -1}),
			want:   0, wantAt: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := series(testNow, tt.values...)
			got, at := largestRise(ms, 30*time.Second, 90*time.Second)
			require.InDelta(t, tt.want, got, 1e-9)
			if tt.wantAt < 0 {
				require.True(t, at.IsZero(), "no rise, but it ended at %s", at)
			} else {
				require.Equal(t, ms[tt.wantAt].Timestamp, at)
			}
		})
	}
	t.Run("rise_window 0s turns it off", func(t *testing.T) {
		got, at := largestRise(series(testNow, alternating...), 30*time.Second, 0)
		require.Zero(t, got)
		require.True(t, at.IsZero())
	})
}
