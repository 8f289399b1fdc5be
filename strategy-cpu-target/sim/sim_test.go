package sim

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLoadCSV(t *testing.T) {
	cases := []struct {
		name     string
		content  string
		opts     CSVOptions
		wantStep time.Duration
		want     []float64
		wantErr  string
	}{
		{
			name:     "named column with a header, fixed buckets",
			content:  "cpu_util_percent,mem\n10,90\n20,91\n30,92\n",
			opts:     CSVOptions{Column: "cpu_util_percent", Step: 30 * time.Second},
			wantStep: 30 * time.Second,
			want:     []float64{10, 20, 30},
		},
		{
			name:     "semicolon timestamps: duplicates dropped, gaps interpolated",
			content:  "2012-03-05 00:00:00;100\n2012-03-05 01:00:00;200\n2012-03-05 01:00:00;999\n2012-03-05 03:00:00;400\n2012-03-05 04:00:00;500\n",
			wantStep: time.Hour,
			want:     []float64{100, 200, 300, 400, 500},
		},
		{
			name:     "time range keeps only the rows inside it",
			content:  "2012-03-05 00:00:00;1\n2012-03-05 01:00:00;2\n2012-03-05 02:00:00;3\n2012-03-05 03:00:00;4\n",
			opts:     CSVOptions{From: time.Date(2012, 3, 5, 1, 0, 0, 0, time.UTC), To: time.Date(2012, 3, 5, 2, 0, 0, 0, time.UTC)},
			wantStep: time.Hour,
			want:     []float64{2, 3},
		},
		{
			name:     "single column without header uses the default step",
			content:  "5\n6\n",
			wantStep: time.Minute,
			want:     []float64{5, 6},
		},
		{
			name:    "unknown column is named",
			content: "a,b\n1,2\n",
			opts:    CSVOptions{Column: "cpu"},
			wantErr: `no column "cpu"`,
		},
		{
			name:    "negative value is refused with its row",
			content: "v\n1\n-2\n",
			wantErr: "row 2",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "trace.csv")
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o644))
			tr, err := LoadCSV("t", path, tc.opts)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantStep, tr.Step)
			require.Equal(t, tc.want, tr.Values)
		})
	}
}

func TestTraceDemandScalesPeakToNodes(t *testing.T) {
	cases := []struct {
		name      string
		values    []float64
		peakNodes float64
		at        time.Duration
		want      float64
	}{
		{name: "peak maps to peak nodes at target", values: []float64{10, 40, 20}, peakNodes: 18, at: 30 * time.Second, want: 18 * 0.75},
		{name: "between buckets is interpolated", values: []float64{10, 40, 20}, peakNodes: 18, at: 45 * time.Second, want: 30.0 / 40 * 18 * 0.75},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Trace{Name: "t", Step: 30 * time.Second, Values: tc.values}.Demand(tc.peakNodes, 75)
			require.NoError(t, err)
			require.InDelta(t, tc.want, d(tc.at), 1e-9)
		})
	}
}

var testFleet = FleetConfig{Min: 1, Max: 20, BootDelay: 90 * time.Second, DrainTime: time.Minute, Notice: 2 * time.Minute}

func TestFleet(t *testing.T) {
	step := 10 * time.Second
	cases := []struct {
		name        string
		nomadAware  bool
		spotRate    float64
		act         func(f *Fleet)
		at          time.Duration // advance up to here
		wantServing int
		wantBilled  int
		wantTarget  int
	}{
		{name: "new nodes do not serve before the boot delay", nomadAware: true,
			act: func(f *Fleet) { f.Scale(6, 0) }, at: 80 * time.Second, wantServing: 4, wantBilled: 6, wantTarget: 6},
		{name: "new nodes serve once booted", nomadAware: true,
			act: func(f *Fleet) { f.Scale(6, 0) }, at: 90 * time.Second, wantServing: 6, wantBilled: 6, wantTarget: 6},
		{name: "Nomad-aware scale-in stops serving at once but is billed while draining", nomadAware: true,
			act: func(f *Fleet) { f.Scale(2, 0) }, at: 50 * time.Second, wantServing: 2, wantBilled: 4, wantTarget: 2},
		{name: "drained nodes are gone after the drain time", nomadAware: true,
			act: func(f *Fleet) { f.Scale(2, 0) }, at: 60 * time.Second, wantServing: 2, wantBilled: 2, wantTarget: 2},
		{name: "AWS scale-in terminates at once", nomadAware: false,
			act: func(f *Fleet) { f.Scale(2, 0) }, at: 10 * time.Second, wantServing: 2, wantBilled: 2, wantTarget: 2},
		{name: "scale stays within min and max", nomadAware: true,
			act: func(f *Fleet) { f.Scale(0, 0) }, at: 60 * time.Second, wantServing: 1, wantBilled: 1, wantTarget: 1},
		{name: "Nomad-aware fleet replaces interrupted nodes before they go", nomadAware: true, spotRate: 1e9,
			act: func(f *Fleet) {}, at: 10 * time.Second, wantServing: 4, wantBilled: 8, wantTarget: 4},
		{name: "AWS fleet keeps interrupted nodes in its count until they go", nomadAware: false, spotRate: 1e9,
			act: func(f *Fleet) {}, at: 10 * time.Second, wantServing: 4, wantBilled: 4, wantTarget: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testFleet
			cfg.SpotRate = tc.spotRate
			f := NewFleet(cfg, tc.nomadAware, 4, 1)
			tc.act(f)
			for now := step; now <= tc.at; now += step {
				f.Advance(now, step)
			}
			require.Equal(t, tc.wantServing, f.Serving(), "serving")
			require.Equal(t, tc.wantBilled, f.Billed(), "billed")
			require.Equal(t, tc.wantTarget, f.Target(), "target")
		})
	}
}

func TestAWSTargetTracking(t *testing.T) {
	cases := []struct {
		name     string
		cpu      float64
		count    int
		minutes  int // datapoints fed
		wantLast int // decision at the last datapoint (-1: none)
		wantAny  bool
	}{
		{name: "two datapoints above target do nothing", cpu: 90, count: 10, minutes: 2, wantLast: -1},
		{name: "the third datapoint above target scales out proportionally", cpu: 90, count: 10, minutes: 3, wantLast: 12},
		{name: "fourteen datapoints below 90% of target do nothing", cpu: 50, count: 10, minutes: 14, wantLast: -1},
		{name: "the fifteenth datapoint below 90% of target scales in", cpu: 50, count: 10, minutes: 15, wantLast: 7},
		{name: "a datapoint between 90% of target and target does nothing", cpu: 70, count: 10, minutes: 20, wantLast: -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tick := 10 * time.Second
			h := &History{Tick: tick}
			a := NewAWSTargetTracking(75)
			last := -1
			for now := time.Duration(0); now <= time.Duration(tc.minutes)*time.Minute; now += tick {
				h.CPU = append(h.CPU, tc.cpu)
				last = a.Evaluate(now, tc.count, h)
			}
			require.Equal(t, tc.wantLast, last)
		})
	}
}

func TestAgentPolicyHonoursCooldown(t *testing.T) {
	cases := []struct {
		name        string
		settings    AgentSettings
		wantActions int
	}{
		{name: "target-value with a 5 m cooldown acts at most once in 4 minutes", settings: TargetValueDefaults(75), wantActions: 1},
		{name: "cpu-target with a 2 m scale-up cooldown acts twice in 4 minutes", settings: CPUTargetDefaults(75), wantActions: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := Scenario{Name: "flat", Demand: func(time.Duration) float64 { return 30 }, Duration: 4 * time.Minute,
				Tick: 10 * time.Second, Target: 75, Fleet: testFleet, Epoch: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
			// Demand of 30 node-equivalents saturates the 20-node maximum,
			// so every evaluation out of cooldown wants more nodes.
			sc.Demand = func(at time.Duration) float64 {
				if at == 0 {
					return 3
				}
				return 30
			}
			var p *AgentPolicy
			if tc.settings.QueryWindow == time.Minute {
				p = NewTargetValuePolicy(tc.settings, testFleet)
			} else {
				p = NewCPUTargetPolicy(tc.settings, testFleet)
			}
			r := Run(sc, "p", p)
			require.Equal(t, tc.wantActions, r.Actions)
			require.Zero(t, r.Errors)
		})
	}
}

func TestOracleNeverOverloads(t *testing.T) {
	cases := []struct {
		name   string
		demand func(time.Duration) float64
	}{
		{name: "steady demand", demand: func(time.Duration) float64 { return 7.3 }},
		{name: "rising demand", demand: func(at time.Duration) float64 { return 1 + at.Hours()*10 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc := Scenario{Demand: tc.demand, Duration: time.Hour, Tick: 10 * time.Second, Target: 75, Fleet: testFleet}
			r := RunOracle(sc)
			require.Zero(t, r.OverloadPct)
			require.Zero(t, r.AboveBandPct)
			require.Greater(t, r.NodeHours, 0.0)
		})
	}
}
