package plugin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseCheckConfig(t *testing.T) {
	cases := []struct {
		name    string
		raw     map[string]string
		want    checkConfig
		wantErr []string // substrings the error must contain
	}{
		{
			name: "empty config gives the defaults",
			raw:  nil,
			want: defaultCheckConfig(),
		},
		{
			name: "every key set",
			raw: map[string]string{
				"target": "60", "tolerance": "0.1", "scale_out_window": "1m", "max_data_age": "45s",
				"scale_in_min_coverage": "0.5", "max_scale_up": "4", "max_scale_down": "2", "dry-run": "true",
				"signal": "cpu", "saturation": "90", "trend_lead": "2m", "trend_window": "45s", "rise_window": "2m",
			},
			want: checkConfig{Target: 60, Tolerance: 0.1, ScaleOutWindow: time.Minute, MaxDataAge: 45 * time.Second,
				ScaleInCoverage: 0.5, MaxScaleUp: 4, MaxScaleDown: 2, DryRun: true,
				Signal: "cpu", Saturation: 90, TrendLead: 2 * time.Minute, TrendWindow: 45 * time.Second, RiseWindow: 2 * time.Minute},
		},
		{
			name: "an unplaced check takes its own keys",
			raw:  map[string]string{"signal": "unplaced", "max_data_age": "30s", "max_scale_up": "3", "dry-run": "false"},
			want: func() checkConfig {
				c := defaultCheckConfig()
				c.Signal, c.MaxDataAge, c.MaxScaleUp = "unplaced", 30*time.Second, 3
				return c
			}(),
		},
		{
			name: "trend_lead 0s turns the trend off",
			raw:  map[string]string{"trend_lead": "0s"},
			want: func() checkConfig { c := defaultCheckConfig(); c.TrendLead = 0; return c }(),
		},
		{
			name: "rise_window 0s turns the rise headroom off",
			raw:  map[string]string{"rise_window": "0s"},
			want: func() checkConfig { c := defaultCheckConfig(); c.RiseWindow = 0; return c }(),
		},
		{
			name:    "a negative rise_window names key, value and what is accepted",
			raw:     map[string]string{"rise_window": "-1m"},
			wantErr: []string{`"rise_window"`, `"-1m"`, "0s or more"},
		},
		{
			name:    "rise_window is a CPU key, refused on an unplaced check",
			raw:     map[string]string{"signal": "unplaced", "rise_window": "90s"},
			wantErr: []string{`"rise_window"`, `"unplaced"`},
		},
		{
			name:    "unknown signal names key, value and the accepted ones",
			raw:     map[string]string{"signal": "memory"},
			wantErr: []string{`"signal"`, `"memory"`, `"cpu"`, `"unplaced"`},
		},
		{
			name:    "CPU keys are refused on an unplaced check",
			raw:     map[string]string{"signal": "unplaced", "target": "75", "max_scale_down": "2"},
			wantErr: []string{`"max_scale_down", "target"`, `do not apply to signal = "unplaced"`, `"max_scale_up"`},
		},
		{
			name:    "saturation above 100 is refused",
			raw:     map[string]string{"saturation": "101"},
			wantErr: []string{`"saturation"`, `"101"`, "(0, 100]"},
		},
		{
			name:    "negative trend_lead is refused",
			raw:     map[string]string{"trend_lead": "-5s"},
			wantErr: []string{`"trend_lead"`, `"-5s"`, "0s or more"},
		},
		{
			name:    "trend_window of zero is refused",
			raw:     map[string]string{"trend_window": "0s"},
			wantErr: []string{`"trend_window"`, `"0s"`, "positive duration"},
		},
		{
			name: "zero tolerance is allowed",
			raw:  map[string]string{"tolerance": "0"},
			want: func() checkConfig { c := defaultCheckConfig(); c.Tolerance = 0; return c }(),
		},
		{
			name:    "target that is not a number names key, value and range",
			raw:     map[string]string{"target": "high"},
			wantErr: []string{`"target"`, `"high"`, "(0, 100]"},
		},
		{
			name:    "target of zero is refused",
			raw:     map[string]string{"target": "0"},
			wantErr: []string{`"target"`, `"0"`},
		},
		{
			name:    "target above 100 is refused",
			raw:     map[string]string{"target": "120"},
			wantErr: []string{`"target"`, `"120"`},
		},
		{
			name:    "NaN target is refused",
			raw:     map[string]string{"target": "NaN"},
			wantErr: []string{`"target"`, `"NaN"`},
		},
		{
			name:    "tolerance given in percent is refused",
			raw:     map[string]string{"tolerance": "5"},
			wantErr: []string{`"tolerance"`, `"5"`, "[0, 0.5]"},
		},
		{
			name:    "scale_out_window without a unit is refused",
			raw:     map[string]string{"scale_out_window": "30"},
			wantErr: []string{`"scale_out_window"`, `"30"`, "positive duration"},
		},
		{
			name:    "negative max_data_age is refused",
			raw:     map[string]string{"max_data_age": "-1m"},
			wantErr: []string{`"max_data_age"`, `"-1m"`, "positive duration"},
		},
		{
			name:    "scale_in_min_coverage above 1 is refused",
			raw:     map[string]string{"scale_in_min_coverage": "1.5"},
			wantErr: []string{`"scale_in_min_coverage"`, `"1.5"`, "[0, 1]"},
		},
		{
			name:    "max_scale_up of zero is refused",
			raw:     map[string]string{"max_scale_up": "0"},
			wantErr: []string{`"max_scale_up"`, `"0"`, "1 or more"},
		},
		{
			name:    "fractional max_scale_down is refused",
			raw:     map[string]string{"max_scale_down": "1.5"},
			wantErr: []string{`"max_scale_down"`, `"1.5"`, "1 or more"},
		},
		{
			name:    "dry-run that is not a boolean is refused",
			raw:     map[string]string{"dry-run": "maybe"},
			wantErr: []string{`"dry-run"`, `"maybe"`, "true or false"},
		},
		{
			name:    "misspelt key is named with the accepted keys",
			raw:     map[string]string{"tolerence": "0.1"},
			wantErr: []string{`"tolerence"`, `"tolerance"`, "accepted keys"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCheckConfig(tc.raw)
			if len(tc.wantErr) > 0 {
				require.Error(t, err)
				for _, s := range tc.wantErr {
					require.Contains(t, err.Error(), s)
				}
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
