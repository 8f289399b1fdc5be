package plugin

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// newTestSet builds a sampler set over the fake whose background loop never
// ticks within a test, so only the test decides when samples happen.
func newTestSet(t *testing.T, f *fakeNomad, clock *fakeClock) (*samplerSet, *logBuffer) {
	t.Helper()
	log, logs := testLogger(t)
	cfg := config{sampleInterval: time.Hour, sampleRetention: 15 * time.Minute, requestTimeout: time.Second}
	set := newSamplerSet(newTestCollector(f, clock, 0), cfg, log)
	t.Cleanup(set.stop)
	return set, logs
}

func mustQuery(t *testing.T, text string) query {
	t.Helper()
	q, err := parseQuery(text)
	require.NoError(t, err)
	return q
}

func TestFirstQuerySamplesAtOnce(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	f.addNode("a", "spot", 2000, clock.now())
	f.setHostCPU("a", 0, 40)
	set, _ := newTestSet(t, f, clock)
	now := clock.now()

	got, err := set.query(mustQuery(t, "host_cpu node_class=spot"), sdk.TimeRange{From: now.Add(-time.Minute), To: now})

	require.NoError(t, err)
	assert.Equal(t, sdk.TimestampedMetrics{{Timestamp: now, Value: 40}}, got)
}

func TestConcurrentFirstQueriesShareOneSample(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	f.addNode("a", "spot", 2000, clock.now())
	f.setHostCPU("a", 0, 40)
	set, _ := newTestSet(t, f, clock)
	now := clock.now()

	var wg sync.WaitGroup
	results := make([]sdk.TimestampedMetrics, 8)
	for i := range results {
		// Same pool, keys written in different orders.
		text := "host_cpu node_class=spot aggregate=mean"
		if i%2 == 0 {
			text = "host_cpu aggregate=mean node_class=spot"
		}
		wg.Go(func() {
			results[i], _ = set.query(mustQuery(t, text), sdk.TimeRange{From: now.Add(-time.Minute), To: now})
		})
	}
	wg.Wait()

	assert.Equal(t, 1, f.count("Nodes"), "one sampler, one immediate sample")
	for _, r := range results {
		assert.Len(t, r, 1)
	}
}

func TestWindowReturnsTheSamplesInsideTheRange(t *testing.T) {
	clock := newFakeClock()
	t0 := clock.now()
	// Samples every 10 s from t0-60s to t0.
	history := make([]sample, 0, 7)
	for i := 6; i >= 0; i-- {
		history = append(history, sample{at: t0.Add(-time.Duration(i) * 10 * time.Second), value: float64(60 - 10*i)})
	}

	cases := []struct {
		name string
		r    sdk.TimeRange
		want []float64
	}{
		{name: "last 30 s, both ends inclusive", r: sdk.TimeRange{From: t0.Add(-30 * time.Second), To: t0}, want: []float64{30, 40, 50, 60}},
		{name: "window with an offset", r: sdk.TimeRange{From: t0.Add(-45 * time.Second), To: t0.Add(-15 * time.Second)}, want: []float64{20, 30, 40}},
		{name: "a sample just after the end is within the slack", r: sdk.TimeRange{From: t0.Add(-5 * time.Second), To: t0.Add(-500 * time.Millisecond)}, want: []float64{60}},
		{name: "instant is the newest sample", r: sdk.TimeRange{From: t0, To: t0}, want: []float64{60}},
		{name: "instant in the past is the newest sample before it", r: sdk.TimeRange{From: t0.Add(-25 * time.Second), To: t0.Add(-25 * time.Second)}, want: []float64{30}},
		{name: "window older than the history", r: sdk.TimeRange{From: t0.Add(-2 * time.Hour), To: t0.Add(-time.Hour)}, want: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeNomad()
			set, _ := newTestSet(t, f, clock)
			sm, _ := set.get(mustQuery(t, "host_cpu"))
			for _, s := range history {
				sm.record(outcome{sample: s})
			}

			got, err := sm.window(tc.r)

			require.NoError(t, err)
			var values []float64
			for _, m := range got {
				values = append(values, m.Value)
			}
			assert.Equal(t, tc.want, values)
		})
	}
}

func TestLatestSampleDecidesWhatQueryReturns(t *testing.T) {
	clock := newFakeClock()
	t0 := clock.now()
	ok := outcome{sample: sample{at: t0.Add(-10 * time.Second), value: 50}}
	failed := outcome{err: errors.New("none of the 3 counted nodes could be read")}
	empty := outcome{empty: "no Nomad node matches the pool"}

	cases := []struct {
		name      string
		outcomes  []outcome
		wantErr   string
		wantLen   int
		wantInLog string
	}{
		{name: "a good sample is returned", outcomes: []outcome{ok}, wantLen: 1},
		{name: "a failed latest sample fails the query even with older figures", outcomes: []outcome{ok, failed},
			wantErr: `latest sample of "host_cpu aggregate=mean" failed: none of the 3 counted nodes could be read`},
		{name: "an empty pool returns no datapoints and says so", outcomes: []outcome{ok, empty}, wantLen: 0,
			wantInLog: `returning no datapoints: the pool has no node that counts: query="host_cpu aggregate=mean" reason="no Nomad node matches the pool"`},
		{name: "recovery after a failure returns figures again", outcomes: []outcome{failed, ok}, wantLen: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, logs := newTestSet(t, newFakeNomad(), clock)
			sm, _ := set.get(mustQuery(t, "host_cpu"))
			for _, o := range tc.outcomes {
				sm.record(o)
			}

			got, err := sm.window(sdk.TimeRange{From: t0.Add(-time.Minute), To: t0})

			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, got)
			assert.Len(t, got, tc.wantLen)
			if tc.wantInLog != "" {
				assert.Contains(t, logs.String(), tc.wantInLog)
			}
		})
	}
}

func TestHistoryIsBoundedByTheRetention(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	set, _ := newTestSet(t, f, clock)
	sm, _ := set.get(mustQuery(t, "host_cpu"))

	for range 200 { // 200 samples 10 s apart: 33 minutes
		sm.record(outcome{sample: sample{at: clock.now(), value: 1}})
		clock.advance(10 * time.Second)
	}

	// 15 minutes of 10 s samples, both ends included.
	assert.LessOrEqual(t, len(sm.history), 91)
	assert.GreaterOrEqual(t, len(sm.history), 90)
}

func TestIdleSamplerRetiresAndANewQueryStartsAfresh(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	f.addNode("a", "spot", 2000, clock.now())
	f.setHostCPU("a", 0, 40)
	set, logs := newTestSet(t, f, clock)
	q := mustQuery(t, "host_cpu")
	r := func() sdk.TimeRange { return sdk.TimeRange{From: clock.now().Add(-time.Minute), To: clock.now()} }
	_, err := set.query(q, r())
	require.NoError(t, err)
	sm, _ := set.get(q)

	clock.advance(14 * time.Minute)
	assert.False(t, set.retireIfIdle(sm), "queried within the retention period")

	clock.advance(16 * time.Minute)
	assert.True(t, set.retireIfIdle(sm))
	assert.Contains(t, logs.String(), "stopping sampler: not queried within the retention period")

	_, err = set.query(q, r())
	require.NoError(t, err)
	assert.Equal(t, 2, f.count("Nodes"), "the new sampler samples at once")
}

func TestBackgroundSamplerKeepsSampling(t *testing.T) {
	f := newFakeNomad()
	f.addNode("a", "spot", 2000, time.Now())
	f.setHostCPU("a", 0, 40)
	log, _ := testLogger(t)
	coll := &collector{api: f, nodes: newNodeReader(f, nomadnode.Gate{}), run: newLimiter(2).run, now: time.Now}
	cfg := config{sampleInterval: 5 * time.Millisecond, sampleRetention: time.Minute, requestTimeout: time.Second}
	set := newSamplerSet(coll, cfg, log)

	_, err := set.query(mustQuery(t, "host_cpu"), sdk.TimeRange{From: time.Now().Add(-time.Minute), To: time.Now()})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return f.count("Nodes") >= 4 }, 5*time.Second, 5*time.Millisecond)

	set.stop()
	stopped := f.count("Nodes")
	_, err = set.query(mustQuery(t, "host_cpu"), sdk.TimeRange{From: time.Now().Add(-time.Minute), To: time.Now()})
	assert.ErrorContains(t, err, "reconfiguring or stopping")
	assert.Equal(t, stopped, f.count("Nodes"), "a stopped set samples no more")
}
