package plugin

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

func newTestPlugin(t *testing.T, cfg map[string]string) (*APMPlugin, *logBuffer) {
	t.Helper()
	log, logs := testLogger(t)
	p := NewPlugin(log)
	require.NoError(t, p.SetConfig(cfg))
	t.Cleanup(p.Stop)
	return p, logs
}

func lastMinute() sdk.TimeRange {
	now := time.Now()
	return sdk.TimeRange{From: now.Add(-time.Minute), To: now}
}

func TestPluginInfoNameMatchesTheBinary(t *testing.T) {
	info, err := NewPlugin(nil).PluginInfo()
	require.NoError(t, err)
	assert.Equal(t, "apm-node", info.Name)
	assert.Equal(t, sdk.PluginTypeAPM, info.PluginType)
}

func TestSetConfig(t *testing.T) {
	cases := []struct {
		name    string
		cfg     map[string]string
		wantErr []string
	}{
		{name: "defaults", cfg: map[string]string{}},
		{name: "every key", cfg: map[string]string{
			"sample_interval": "5s", "sample_retention": "10m", "node_warmup": "0s",
			"stats_concurrency": "8", "request_timeout": "2s", "admission_meta_key": "spotfleet_admission",
		}},
		{name: "agent keys for an unreachable Nomad need no network", cfg: map[string]string{
			"nomad_address": "http://127.0.0.1:1", "nomad_token": "secret", "nomad_region": "global",
		}},
		{name: "bad interval", cfg: map[string]string{"sample_interval": "often"},
			wantErr: []string{`invalid sample_interval "often"`, "positive duration"}},
		{name: "zero interval", cfg: map[string]string{"sample_interval": "0s"},
			wantErr: []string{`invalid sample_interval "0s"`}},
		{name: "negative warm-up", cfg: map[string]string{"node_warmup": "-1m"},
			wantErr: []string{`invalid node_warmup "-1m"`, "0s or more"}},
		{name: "bad concurrency", cfg: map[string]string{"stats_concurrency": "0"},
			wantErr: []string{`invalid stats_concurrency "0"`, "1 to 1024"}},
		{name: "bad timeout", cfg: map[string]string{"request_timeout": "5"},
			wantErr: []string{`invalid request_timeout "5"`}},
		{name: "admission meta key", cfg: map[string]string{"admission_meta_key": "pool.admission"}},
		{name: "bad admission meta key", cfg: map[string]string{"admission_meta_key": "spot fleet"},
			wantErr: []string{`invalid admission_meta_key: "spot fleet" is not a Nomad meta key`, "for example spotfleet_admission"}},
		{name: "retention shorter than the interval", cfg: map[string]string{"sample_interval": "1m", "sample_retention": "30s"},
			wantErr: []string{"invalid sample_retention", "at least sample_interval"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log, logs := testLogger(t)
			p := NewPlugin(log)

			err := p.SetConfig(tc.cfg)

			if len(tc.wantErr) == 0 {
				require.NoError(t, err)
				p.samplers.stop()
				assert.NotContains(t, logs.String(), "secret")
				return
			}
			require.Error(t, err)
			for _, w := range tc.wantErr {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestAdmissionMetaKeyDefaultsToTheTargetsGate(t *testing.T) {
	cfg, err := parseConfig(map[string]string{})
	require.NoError(t, err)
	assert.Equal(t, nomadnode.DefaultGateKey, cfg.gate.MetaKey())
	assert.Equal(t, "spotfleet_admission_at", cfg.gate.AdmittedAtKey())

	cfg, err = parseConfig(map[string]string{"admission_meta_key": " pool.admission "})
	require.NoError(t, err)
	assert.Equal(t, "pool.admission", cfg.gate.MetaKey())
}

func TestQueryBeforeSetConfigFails(t *testing.T) {
	_, err := NewPlugin(nil).Query("host_cpu", lastMinute())
	assert.ErrorContains(t, err, "not configured")
}

func TestQueryWithBadTextNamesThePart(t *testing.T) {
	p, _ := newTestPlugin(t, map[string]string{"nomad_address": "http://127.0.0.1:1"})
	_, err := p.Query("workload_cpu class=spot", lastMinute())
	assert.ErrorContains(t, err, `unknown key "class"`)
}

func TestQueryReadsEachMetricFromNomad(t *testing.T) {
	srv := newRecordedNomad(t)
	p, _ := newTestPlugin(t, map[string]string{"nomad_address": srv.URL, "node_warmup": "0s"})

	cases := []struct {
		name  string
		query string
		want  float64
	}{
		{name: "host cpu", query: "host_cpu node_class=spot-worker", want: 55},
		{name: "workload cpu", query: "workload_cpu node_class=spot-worker", want: 100 * 1198.589900932198 / 3800},
		{name: "allocated cpu", query: "allocated_cpu node_class=spot-worker", want: 100 * 500.0 / 3800},
		{name: "host memory", query: "host_memory node_class=spot-worker", want: 100 * 3272544256.0 / 25325268992},
		{name: "workload memory", query: "workload_memory node_class=spot-worker", want: 100 * (85794816.0 / (1 << 20)) / 23896},
		{name: "allocated memory", query: "allocated_memory node_class=spot-worker", want: 100 * 64.0 / 23896},
		{name: "pool by datacenter and node pool", query: "workload_cpu datacenter=dc1 node_pool=default aggregate=p90", want: 100 * 1198.589900932198 / 3800},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Query(tc.query, lastMinute())
			require.NoError(t, err)
			require.Len(t, got, 1)
			assert.InDelta(t, tc.want, got[0].Value, 1e-9)
		})
	}
}

func TestQueryOfAnEmptyPoolHasNoDatapoints(t *testing.T) {
	srv := newRecordedNomad(t)
	p, logs := newTestPlugin(t, map[string]string{"nomad_address": srv.URL})

	got, err := p.Query("workload_cpu node_class=batch", lastMinute())

	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Contains(t, logs.String(), "returning no datapoints")
	assert.Contains(t, logs.String(), "no Nomad node matches the pool")
}

func TestQueryLeavesOutAWarmingNode(t *testing.T) {
	srv := newRecordedNomad(t)
	log, logs := testLogger(t)
	p := NewPlugin(log)
	// The recorded node registered (its "Node registered" event) at
	// 1795692912; pretend it is 30 s later.
	p.now = func() time.Time { return time.Unix(1795692912+30, 0) }
	require.NoError(t, p.SetConfig(map[string]string{"nomad_address": srv.URL, "node_warmup": "2m"}))
	defer p.Stop()
	now := p.now()

	got, err := p.Query("host_cpu node_class=spot-worker", sdk.TimeRange{From: now.Add(-time.Minute), To: now})

	require.NoError(t, err)
	assert.Empty(t, got)
	assert.Contains(t, logs.String(), "vm (f1dfe207): warming up: ready and eligible for 30s of 2m0s")
}

func TestQueryFailsWhenNoNodeCanBeRead(t *testing.T) {
	rec := newRecordedNomad(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/client/stats" {
			http.Error(w, "No path to node", http.StatusInternalServerError)
			return
		}
		rec.Config.Handler.ServeHTTP(w, r)
	}))
	defer srv.Close()
	p, _ := newTestPlugin(t, map[string]string{"nomad_address": srv.URL, "node_warmup": "0s"})

	got, err := p.Query("host_cpu node_class=spot-worker", lastMinute())

	require.Error(t, err)
	assert.Nil(t, got)
	assert.Contains(t, err.Error(), "none of the 1 counted nodes could be read")
	assert.Contains(t, err.Error(), "No path to node")
}

func TestSetConfigAgainRestartsSampling(t *testing.T) {
	srv := newRecordedNomad(t)
	p, _ := newTestPlugin(t, map[string]string{"nomad_address": srv.URL, "node_warmup": "0s"})
	_, err := p.Query("host_cpu", lastMinute())
	require.NoError(t, err)
	first := p.samplers

	require.NoError(t, p.SetConfig(map[string]string{"nomad_address": srv.URL, "node_warmup": "0s"}))

	assert.NotSame(t, first, p.samplers)
	assert.Error(t, first.ctx.Err(), "the old samplers are stopped")
	got, err := p.Query("host_cpu", lastMinute())
	require.NoError(t, err)
	assert.Len(t, got, 1)
}

func TestQueryAfterStopFails(t *testing.T) {
	srv := newRecordedNomad(t)
	p, _ := newTestPlugin(t, map[string]string{"nomad_address": srv.URL, "node_warmup": "0s"})
	_, err := p.Query("host_cpu", lastMinute())
	require.NoError(t, err)

	p.Stop()

	_, err = p.Query("host_cpu", lastMinute())
	assert.ErrorContains(t, err, "not configured")
}
