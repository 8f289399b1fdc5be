package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/require"
)

func TestLoadCSV(t *testing.T) {
	longLine := strings.Repeat("1,", 600_000) + "3" // 1.2 MB on one line: 600,001 values
	cases := []struct {
		name     string
		content  string
		opts     CSVOptions
		wantStep time.Duration
		want     []float64
		wantLen  int // instead of want, for long series
		wantErr  string
	}{
		{
			name:     "named column with a header, step given",
			content:  "cpu_util_percent,mem\n10,90\n20,91\n30,92\n",
			opts:     CSVOptions{Column: "cpu_util_percent", Step: 30 * time.Second},
			wantStep: 30 * time.Second,
			want:     []float64{10, 20, 30},
		},
		{
			name:    "several columns and none named is refused, not the last one taken",
			content: "cpu_util_percent,mem\n10,90\n20,91\n",
			opts:    CSVOptions{Step: 30 * time.Second},
			wantErr: "2 value columns (cpu_util_percent, mem): name the one to use",
		},
		{
			name:     "a file without a header names its column by position",
			content:  "10,90\n20,91\n",
			opts:     CSVOptions{Column: "1", Step: time.Minute},
			wantStep: time.Minute,
			want:     []float64{10, 20},
		},
		{
			name:    "several columns without a header and none named is refused",
			content: "10,90\n20,91\n",
			opts:    CSVOptions{Step: time.Minute},
			wantErr: "name the column by its position",
		},
		{
			name:    "rows without timestamps need their step",
			content: "5\n6\n",
			wantErr: "its step (the length of one row's bucket, e.g. 30s) must be given",
		},
		{
			name:    "a step given for timestamped rows is refused",
			content: "2012-03-05 00:00:00;1\n2012-03-05 01:00:00;2\n",
			opts:    CSVOptions{Step: time.Minute},
			wantErr: "the step comes from the timestamps",
		},
		{
			name:     "timestamps give the step; duplicates dropped; a missing bucket holds the previous row",
			content:  "2012-03-05 00:00:00;100\n2012-03-05 01:00:00;200\n2012-03-05 01:00:00;999\n2012-03-05 03:00:00;400\n2012-03-05 04:00:00;500\n",
			wantStep: time.Hour,
			want:     []float64{100, 200, 200, 400, 500},
		},
		{
			name:     "a missing bucket is interpolated only when asked",
			content:  "2012-03-05 00:00:00;100\n2012-03-05 01:00:00;200\n2012-03-05 03:00:00;400\n2012-03-05 04:00:00;500\n",
			opts:     CSVOptions{Interpolate: true},
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
			name: "per-second rows aggregate to the step asked",
			content: "time,cpu\n2024-01-01T00:00:00Z,1\n2024-01-01T00:00:01Z,2\n2024-01-01T00:00:02Z,3\n" +
				"2024-01-01T00:00:03Z,5\n2024-01-01T00:00:04Z,7\n2024-01-01T00:00:05Z,9\n",
			opts:     CSVOptions{Resample: 3 * time.Second},
			wantStep: 3 * time.Second,
			want:     []float64{2, 7},
		},
		{
			name:    "a resample step that is not a multiple of the file's is refused",
			content: "1\n2\n3\n",
			opts:    CSVOptions{Step: 2 * time.Second, Resample: 3 * time.Second},
			wantErr: "must be a multiple of the file's step 2s",
		},
		{
			name:     "one long line of values, one per field",
			content:  longLine + "\n",
			opts:     CSVOptions{Step: time.Second, Resample: 10 * time.Second},
			wantStep: 10 * time.Second,
			wantLen:  60_001,
		},
		{
			name:     "carriage-return line ends",
			content:  "v\r1\r2\r\n3\r",
			opts:     CSVOptions{Step: time.Second},
			wantStep: time.Second,
			want:     []float64{1, 2, 3},
		},
		{
			name:    "unknown column is named",
			content: "a,b\n1,2\n",
			opts:    CSVOptions{Column: "cpu", Step: time.Second},
			wantErr: `no column "cpu"`,
		},
		{
			name:    "negative value is refused with its line",
			content: "v\n1\n-2\n",
			opts:    CSVOptions{Step: time.Second},
			wantErr: "line 3",
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
			if tc.wantLen > 0 {
				require.Len(t, tr.Values, tc.wantLen)
				require.InDelta(t, 1.0, tr.Values[0], 1e-9)
				require.InDelta(t, 3.0, tr.Values[len(tr.Values)-1], 1e-9) // the partial last bucket
				return
			}
			require.Equal(t, tc.want, tr.Values)
		})
	}
}

func TestTraceDemand(t *testing.T) {
	cases := []struct {
		name        string
		interpolate bool
		at          time.Duration
		want        float64 // in trace units
	}{
		{name: "a row holds flat for its whole bucket", at: 45 * time.Second, want: 40},
		{name: "up to the bucket's last instant", at: 59 * time.Second, want: 40},
		{name: "the next bucket starts with its own value", at: 60 * time.Second, want: 20},
		{name: "interpolation, when asked, puts each row at its bucket's centre", interpolate: true, at: 45 * time.Second, want: 40},
		{name: "and moves linearly between centres", interpolate: true, at: 60 * time.Second, want: 30},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Trace{Name: "t", Step: 30 * time.Second, Values: []float64{10, 40, 20}, Interpolate: tc.interpolate}.Demand(18, 75)
			require.NoError(t, err)
			require.InDelta(t, tc.want/40*18*0.75, d(tc.at), 1e-9)
		})
	}
}

var testFleet = FleetConfig{Min: 1, Max: 20, BootDelay: 90 * time.Second, DrainTime: time.Minute,
	Notice: 2 * time.Minute, InterruptDrainDeadline: 90 * time.Second, AllocSize: 0.125}

func TestFleetTarget(t *testing.T) {
	step := 10 * time.Second
	cases := []struct {
		name        string
		nomadAware  bool
		act         func(f *Fleet)
		at          time.Duration // advance up to here
		wantServing int
		wantBilled  int
		wantTarget  int
		wantReady   int
	}{
		{name: "new nodes do not serve before the boot delay", nomadAware: true,
			act: func(f *Fleet) { f.ScaleTo(6, 0) }, at: 80 * time.Second, wantServing: 4, wantBilled: 6, wantTarget: 6, wantReady: 4},
		{name: "new nodes serve once booted", nomadAware: true,
			act: func(f *Fleet) { f.ScaleTo(6, 0) }, at: 90 * time.Second, wantServing: 6, wantBilled: 6, wantTarget: 6, wantReady: 6},
		{name: "scale-out counts the capacity launching toward the nodes asked for", nomadAware: true,
			act: func(f *Fleet) { f.ScaleTo(6, 0); f.ScaleTo(7, 10*time.Second) }, at: 20 * time.Second, wantServing: 4, wantBilled: 7, wantTarget: 7, wantReady: 4},
		{name: "scale-in drains ready nodes and never removes launching ones", nomadAware: true,
			act: func(f *Fleet) { f.ScaleTo(6, 0); f.ScaleTo(3, 10*time.Second) }, at: 20 * time.Second, wantServing: 3, wantBilled: 6, wantTarget: 5, wantReady: 3},
		{name: "drained nodes are gone after the drain time", nomadAware: true,
			act: func(f *Fleet) { f.ScaleTo(2, 0) }, at: 60 * time.Second, wantServing: 2, wantBilled: 2, wantTarget: 2, wantReady: 2},
		{name: "AWS scale-in cancels launches, then terminates at once", nomadAware: false,
			act: func(f *Fleet) { f.SetCapacity(6, 0); f.SetCapacity(3, 10*time.Second) }, at: 20 * time.Second, wantServing: 3, wantBilled: 3, wantTarget: 3, wantReady: 3},
		{name: "AWS capacity stays within min and max", nomadAware: false,
			act: func(f *Fleet) { f.SetCapacity(0, 0) }, at: 10 * time.Second, wantServing: 1, wantBilled: 1, wantTarget: 1, wantReady: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFleet(testFleet, tc.nomadAware, 4, nil)
			tc.act(f)
			for now := step; now <= tc.at; now += step {
				f.Advance(now, step)
			}
			require.Equal(t, tc.wantServing, f.Serving(), "serving")
			require.Equal(t, tc.wantBilled, f.Billed(), "billed")
			require.Equal(t, tc.wantTarget, f.Target(), "target")
			require.Equal(t, tc.wantReady, f.Ready(), "ready (Count)")
		})
	}
}

// oneEvent is a stream with one warning at 15 s for the first slot.
func oneEvent() *SpotEvents {
	return &SpotEvents{Slots: 40, Events: []SpotEvent{{At: 15 * time.Second, U: 0}}}
}

func TestSpotInterruptionCredit(t *testing.T) {
	type at struct {
		t                      time.Duration
		serving, billed, ready int
	}
	cases := []struct {
		name       string
		nomadAware bool
		want       []at
	}{
		{
			// target-spotfleet drains at once (deadline 90 s), launches the
			// replacement at once, and EC2 reclaims at the notice's end.
			name: "target-spotfleet", nomadAware: true,
			want: []at{
				{t: 20 * time.Second, serving: 4, billed: 5, ready: 3},
				{t: 100 * time.Second, serving: 4, billed: 5, ready: 3}, // the leaving node serves until its deadline
				{t: 110 * time.Second, serving: 4, billed: 5, ready: 4}, // replacement ready, leaving node drained
				{t: 140 * time.Second, serving: 4, billed: 4, ready: 4}, // reclaimed
			},
		},
		{
			// An AWS-managed fleet keeps the node until it is reclaimed and
			// refills it only then.
			name: "AWS-managed", nomadAware: false,
			want: []at{
				{t: 20 * time.Second, serving: 4, billed: 4, ready: 3},
				{t: 140 * time.Second, serving: 3, billed: 4, ready: 3},
				{t: 230 * time.Second, serving: 4, billed: 4, ready: 4},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			step := 10 * time.Second
			f := NewFleet(testFleet, tc.nomadAware, 4, oneEvent())
			i := 0
			for now := step; i < len(tc.want); now += step {
				f.Advance(now, step)
				if now == tc.want[i].t {
					w := tc.want[i]
					require.Equal(t, w.serving, f.Serving(), "serving at %s", now)
					require.Equal(t, w.billed, f.Billed(), "billed at %s", now)
					require.Equal(t, w.ready, f.Ready(), "ready at %s", now)
					i++
				}
			}
			require.Equal(t, 1, f.interruptions)
		})
	}
}

func TestSpotEventsAreSharedAndIndependentOfTicks(t *testing.T) {
	ev := NewSpotEvents(0.5, 40, 200*time.Hour, 7)
	require.NotEmpty(t, ev.Events)
	// Per slot-hour the rate asked for (0.5): 40 slots × 200 h × 0.5 = 4000.
	require.InDelta(t, 4000, len(ev.Events), 250)

	count := func(step time.Duration, nomadAware bool) int {
		f := NewFleet(testFleet, nomadAware, 10, ev)
		for now := step; now <= 200*time.Hour; now += step {
			f.Advance(now, step)
		}
		return f.interruptions
	}
	// The same events hit fleets advanced at other ticks the same number
	// of times: the draws do not depend on ticks. An AWS-managed fleet has
	// fewer running instances to hit while it waits for a reclaim to refill.
	n := count(10*time.Second, true)
	require.Greater(t, n, 0)
	require.Equal(t, n, count(30*time.Second, true))
	aws := count(10*time.Second, false)
	require.InDelta(t, aws, count(30*time.Second, false), 0.01*float64(aws))
	require.InDelta(t, n, aws, 0.1*float64(n))
	// About rate × nodes × hours: 0.5 × 10 × 200 = 1000 (a replaced node is
	// a new running one, so the fleet stays at 10).
	require.InDelta(t, 1000, n, 150)
}

// staticStrategy is a strategy.Runner that answers with a fixed direction:
// count+delta.
type staticStrategy struct {
	dir   sdk.ScaleDirection
	delta int64
	runs  int
}

func (s *staticStrategy) Run(eval *sdk.ScalingCheckEvaluation, count int64) (*sdk.ScalingCheckEvaluation, error) {
	s.runs++
	eval.Action.Direction, eval.Action.Count = s.dir, count+s.delta
	if s.dir == sdk.ScaleDirectionNone {
		eval.Action.Count = count
	}
	return eval, nil
}

func agentWith(s *staticStrategy) *AgentPolicy {
	return &AgentPolicy{
		Checks: []AgentCheck{{Check: &sdk.ScalingPolicyCheck{Name: "c", QueryWindow: time.Minute,
			Strategy: &sdk.ScalingPolicyStrategy{Name: "static"}}, Strategy: s, Metric: MetricCPU}},
		Min: 1, Max: 20, EvalInterval: 10 * time.Second, Cooldown: 2 * time.Minute, CooldownOnScaleUp: 2 * time.Minute,
	}
}

// drive runs the policy on a fleet of 10 nodes for d, and returns the
// times at which it changed the fleet.
func drive(t *testing.T, p *AgentPolicy, cfg FleetConfig, d time.Duration) (*Fleet, []time.Duration) {
	t.Helper()
	tick := 10 * time.Second
	f := NewFleet(cfg, true, 10, nil)
	h := &History{Tick: tick}
	var acted []time.Duration
	for now := time.Duration(0); now <= d; now += tick {
		if now > 0 {
			f.Advance(now, tick)
		}
		h.CPU = append(h.CPU, 50)
		h.Unplaced = append(h.Unplaced, 0)
		if p.Evaluate(now, f, h) {
			acted = append(acted, now)
		}
	}
	return f, acted
}

func TestAgentLoopLikeV050(t *testing.T) {
	t.Run("the cooldown starts when Scale returns, after the scale-in's drain", func(t *testing.T) {
		p := agentWith(&staticStrategy{dir: sdk.ScaleDirectionDown, delta: -1})
		_, acted := drive(t, p, testFleet, 400*time.Second)
		// Scale at 0 returns after the 60 s drain; cooldown 2 m to 180 s;
		// the agent leaves cooldown strictly after it: 190 s.
		require.Equal(t, []time.Duration{0, 190 * time.Second, 380 * time.Second}, acted)
		require.Positive(t, p.NotReady, "evaluations during the drain see the target not ready")
	})
	t.Run("the target is not ready while its fleet request is modifying", func(t *testing.T) {
		cfg := testFleet
		cfg.ModifyTime, cfg.ScaleOutCall = 40*time.Second, 10*time.Second
		s := &staticStrategy{dir: sdk.ScaleDirectionNone}
		p := agentWith(s)
		p.Checks[0].Strategy = s
		f := NewFleet(cfg, true, 10, nil)
		f.ScaleTo(12, 0)
		h := &History{Tick: 10 * time.Second, CPU: make([]float64, 10)}
		for now := 10 * time.Second; now <= 60*time.Second; now += 10 * time.Second {
			p.Evaluate(now, f, h)
		}
		// Ready again at 40 s: evaluations at 40, 50, 60 run the strategy.
		require.Equal(t, 3, p.NotReady)
		require.Equal(t, 3, s.runs)
	})
	t.Run("a no-op Scale starts no cooldown", func(t *testing.T) {
		cfg := testFleet
		cfg.BootDelay = time.Hour // launched capacity stays launching
		p := agentWith(&staticStrategy{dir: sdk.ScaleDirectionUp, delta: 2})
		f, acted := drive(t, p, cfg, 300*time.Second)
		// At 0: 10 ready, asked 12: target 12, cooldown to 120 s. From
		// 130 s, 12 is covered by the launching nodes: every evaluation
		// calls Scale again (18 of them), a no-op that starts no cooldown.
		require.Equal(t, []time.Duration{0}, acted)
		require.Equal(t, 12, f.Target())
		require.Equal(t, 18, p.NoOps)
	})
}

func TestPickWinnerLikeV050(t *testing.T) {
	up := func(n int64) *sdk.ScalingAction { return &sdk.ScalingAction{Direction: sdk.ScaleDirectionUp, Count: n} }
	down := func(n int64) *sdk.ScalingAction {
		return &sdk.ScalingAction{Direction: sdk.ScaleDirectionDown, Count: n}
	}
	none := func(n int64) *sdk.ScalingAction {
		return &sdk.ScalingAction{Direction: sdk.ScaleDirectionNone, Count: n}
	}
	cases := []struct {
		name   string
		groups map[string][]*sdk.ScalingAction
		want   *sdk.ScalingAction
	}{
		{name: "in a group, none is ignored: down wins", groups: map[string][]*sdk.ScalingAction{"pool": {down(8), none(10)}}, want: down(8)},
		{name: "without a group, none beats down", groups: map[string][]*sdk.ScalingAction{"": {down(8), none(10)}}, want: none(10)},
		{name: "up beats down", groups: map[string][]*sdk.ScalingAction{"pool": {down(8), up(12)}}, want: up(12)},
		{name: "the larger up wins", groups: map[string][]*sdk.ScalingAction{"pool": {up(11), up(14)}}, want: up(14)},
		{name: "all none in a group: none", groups: map[string][]*sdk.ScalingAction{"pool": {none(10), none(10)}}, want: none(10)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := pickWinner(tc.groups)
			require.Equal(t, tc.want.Direction, got.Direction)
			require.Equal(t, tc.want.Count, got.Count)
		})
	}
}

func TestAWSTargetTracking(t *testing.T) {
	feed := func(a *AWSTargetTracking, f *Fleet, cpu func(time.Duration) float64, until time.Duration) []time.Duration {
		tick := 10 * time.Second
		h := &History{Tick: tick}
		var acted []time.Duration
		for now := time.Duration(0); now <= until; now += tick {
			if now > 0 {
				f.Advance(now, tick)
			}
			h.CPU = append(h.CPU, cpu(now))
			if a.Evaluate(now, f, h) {
				acted = append(acted, now)
			}
		}
		return acted
	}
	flat := func(v float64) func(time.Duration) float64 { return func(time.Duration) float64 { return v } }
	cfg := testFleet
	cfg.BootDelay = time.Hour // keep the CPU as fed

	t.Run("without delay the third datapoint above target scales out at minute 3", func(t *testing.T) {
		f := NewFleet(cfg, false, 10, nil)
		acted := feed(NewAWSTargetTracking(75, 0), f, flat(90), 3*time.Minute)
		require.Equal(t, []time.Duration{3 * time.Minute}, acted)
		require.Equal(t, 12, f.Target())
	})
	t.Run("CloudWatch's publication delay postpones it by the delay", func(t *testing.T) {
		f := NewFleet(cfg, false, 10, nil)
		acted := feed(NewAWSTargetTracking(75, time.Minute), f, flat(90), 4*time.Minute)
		require.Equal(t, []time.Duration{4 * time.Minute}, acted)
	})
	t.Run("a rising load scales out again during the cooldown, counting the capacity added", func(t *testing.T) {
		f := NewFleet(cfg, false, 10, nil)
		cpu := func(now time.Duration) float64 {
			if now < 3*time.Minute {
				return 90
			}
			return 100
		}
		acted := feed(NewAWSTargetTracking(75, 0), f, cpu, 5*time.Minute)
		// 10 × 90/75 = 12 at minute 3; then 10 × 100/75 = 14 > 12 at minute 4.
		require.Equal(t, []time.Duration{3 * time.Minute, 4 * time.Minute}, acted)
		require.Equal(t, 14, f.Target())
	})
	t.Run("the fifteenth datapoint below 90% of target scales in", func(t *testing.T) {
		f := NewFleet(cfg, false, 10, nil)
		acted := feed(NewAWSTargetTracking(75, time.Minute), f, flat(50), 16*time.Minute)
		require.Equal(t, []time.Duration{16 * time.Minute}, acted)
		require.Equal(t, 7, f.Target())
	})
	t.Run("a datapoint between 90% of target and target does nothing", func(t *testing.T) {
		f := NewFleet(cfg, false, 10, nil)
		require.Empty(t, feed(NewAWSTargetTracking(75, time.Minute), f, flat(70), 20*time.Minute))
	})
}

func TestPlacementWaits(t *testing.T) {
	tick := 10 * time.Second
	p := newPlacement(0.25)
	// One node holds 4 allocations; demand of 1.5 nodes is 6: 2 wait
	// until a second node serves at 60 s.
	for now := time.Duration(0); now <= 90*time.Second; now += tick {
		serving := 1
		if now >= 60*time.Second {
			serving = 2
		}
		waiting := p.step(now, tick, 1.5, serving)
		if now < 60*time.Second {
			require.Equal(t, 2, waiting, "at %s", now)
		} else {
			require.Zero(t, waiting, "at %s", now)
		}
	}
	p.finish(100 * time.Second)
	s := p.stats()
	require.Equal(t, 6, s.Allocations)
	require.Equal(t, 2, s.Waited)
	require.InDelta(t, 60, s.MeanSeconds, 1e-9)
	require.InDelta(t, 60, s.P95Seconds, 1e-9)
	require.InDelta(t, 2*0.25*60.0/3600, s.QueuedNodeHours, 1e-9)
}

func TestUnplacedNodes(t *testing.T) {
	cases := []struct {
		name    string
		waiting int
		ask     float64
		want    float64
	}{
		{name: "nothing waits", waiting: 0, ask: 0.25, want: 0},
		{name: "a full node", waiting: 4, ask: 0.25, want: 1},
		{name: "bins of the node size", waiting: 9, ask: 0.25, want: 3},
		{name: "an ask larger than a node is left out", waiting: 3, ask: 1.5, want: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, UnplacedNodes(tc.waiting, tc.ask))
		})
	}
}

func TestAgentPolicyWithRealStrategies(t *testing.T) {
	cases := []struct {
		name        string
		settings    AgentSettings
		targetValue bool
		wantActions int
	}{
		{name: "target-value with a 5 m cooldown acts at most once in 4 minutes", settings: TargetValueDefaults(75), targetValue: true, wantActions: 1},
		{name: "cpu-target with a 2 m scale-up cooldown acts twice in 4 minutes", settings: CPUTargetDefaults(75), wantActions: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Demand of 30 node-equivalents saturates the 20-node maximum,
			// so every evaluation out of cooldown wants more nodes.
			sc := Scenario{Name: "burst", Duration: 4 * time.Minute, Tick: 10 * time.Second, Target: 75, Fleet: testFleet,
				Epoch: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
				Demand: func(at time.Duration) float64 {
					if at == 0 {
						return 3
					}
					return 30
				}}
			var p *AgentPolicy
			if tc.targetValue {
				p = NewTargetValuePolicy(tc.settings, testFleet)
			} else {
				p = NewCPUTargetPolicy(tc.settings, testFleet)
			}
			r := Run(sc, "p", p)
			require.Equal(t, tc.wantActions, r.Actions)
			require.Zero(t, r.Errors)
			require.Positive(t, r.Wait.Waited, "work above capacity waits to be placed")
		})
	}
}

func TestOracleNeverOverloadsNorWaits(t *testing.T) {
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
			require.Zero(t, r.Wait.Waited)
			require.Greater(t, r.NodeHours, 0.0)
		})
	}
}

func TestUnplacedCheckPlacesABigBurstSooner(t *testing.T) {
	// Demand triples at 5 minutes: CPU saturates, so the CPU check can ask
	// for a third more per cooldown; unplaced_nodes says how many nodes the
	// waiting work needs.
	sc := Scenario{Name: "step", Duration: 30 * time.Minute, Tick: 10 * time.Second, Target: 75, Fleet: testFleet,
		Epoch: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		Demand: func(at time.Duration) float64 {
			if at < 5*time.Minute {
				return 4
			}
			return 13
		}}
	cpuOnly := Run(sc, "cpu", NewCPUTargetPolicy(CPUTargetDefaults(75), testFleet))
	s := CPUTargetDefaults(75)
	s.Unplaced = UnplacedCheck()
	both := Run(sc, "both", NewCPUTargetPolicy(s, testFleet))
	t.Logf("CPU only: %d actions, waits %+v; with unplaced: %d actions, waits %+v", cpuOnly.Actions, cpuOnly.Wait, both.Actions, both.Wait)
	require.Zero(t, both.Errors, "the strategy accepts the unplaced check")
	require.Zero(t, both.Failed)
	require.Positive(t, cpuOnly.Wait.QueuedNodeHours)
	require.Less(t, both.Wait.QueuedNodeHours, cpuOnly.Wait.QueuedNodeHours)
	require.Less(t, both.Wait.P95Seconds, cpuOnly.Wait.P95Seconds)
}
