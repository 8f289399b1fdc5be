package plugin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

func TestCollectUnplaced(t *testing.T) {
	long := 10 * time.Minute
	// Pool nodes of the default fake size: 1000 MHz and 4096 MB schedulable.
	twoNodes := func(f *fakeNomad, now time.Time) {
		f.addNode("a", "spot", 1000, now.Add(-long))
		f.addNode("b", "spot", 1000, now.Add(-long))
	}
	cases := []struct {
		name    string
		query   string
		setup   func(f *fakeNomad, now time.Time)
		want    float64
		empty   bool
		wantErr string
		logs    []string
	}{
		{
			name:  "nothing waits: zero, not an empty answer",
			setup: twoNodes,
			want:  0,
		},
		{
			name: "one node per ask when two asks do not share a node",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "reserve", 5, 3, 600, 64)
			},
			want: 3,
			// The scarcest-resource sum alone would say 1.8 nodes.
			logs: []string{"waiting_allocations=3", "asked_cpu_mhz=1800", "nodes_without_fragmentation=1.80"},
		},
		{
			name: "small asks share nodes",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "small", 5, 5, 400, 64) // two per node: 3 nodes
			},
			want: 3,
		},
		{
			name: "memory is the scarcest resource",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "mem", 4, 4, 100, 3000) // one per 4096 MB node
			},
			want: 4,
		},
		{
			name: "CPU-heavy and memory-heavy asks share nodes",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "cpu-heavy", 2, 2, 700, 500)
				f.addJob("default", "mem-heavy", 2, 2, 200, 3000)
			},
			want: 2,
		},
		{
			name: "jobs in other namespaces count",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "x", 1, 1, 600, 64)
				f.addJob("team-b", "x", 1, 1, 600, 64)
			},
			want: 2,
		},
		{
			name: "a joining node does not lower the figure: target-spotfleet counts it as coming capacity",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addNode("c", "spot", 1000, now).Status = api.NodeStatusInit
				f.addJob("default", "reserve", 3, 3, 600, 64)
			},
			want: 3,
			logs: []string{"coming_nodes=1"},
		},
		{
			// Issue 11's example: the strategy asks count + value, the
			// target counts its 3 joining nodes toward that and adds the 2
			// more the work needs (15 in all). Filling the joining nodes
			// here too (value 2, 12 asked, 13 there) added nothing.
			name: "10 ready, 3 joining, 5 nodes of work waiting: 5",
			setup: func(f *fakeNomad, now time.Time) {
				for i := range 10 {
					f.addNode(fmt.Sprintf("r%d", i), "spot", 1000, now.Add(-long))
				}
				for i := range 3 {
					f.addNode(fmt.Sprintf("j%d", i), "spot", 1000, now).Status = api.NodeStatusInit
				}
				f.addJob("default", "reserve", 15, 5, 600, 64)
			},
			want: 5,
			logs: []string{"coming_nodes=3", "warming_nodes=0"},
		},
		{
			name: "a node waiting for its admission gate does not lower the figure, and the gate constraint is judged as admitted",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 1000, now.Add(-long))
				f.info["a"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GateAdmitted}
				f.addNode("c", "spot", 1000, now)
				f.info["c"].Meta = map[string]string{nomadnode.DefaultGateKey: "pending"}
				j := f.addJob("default", "reserve", 3, 3, 600, 64)
				j.TaskGroups[0].Constraints = []*api.Constraint{{LTarget: "${meta." + nomadnode.DefaultGateKey + "}", RTarget: "admitted", Operand: "="}}
			},
			want: 3,
			logs: []string{"coming_nodes=1"},
		},
		{
			// Admitted 65 s ago: apm-node's warm-up (1m) is over, but
			// target-spotfleet's count leaves the node out for node_warmup
			// = 1m + sample_interval 10s; it takes work (the scheduler has
			// filled it), so the figure adds it back to the count.
			name: "work waits: a node target-spotfleet still holds in warm-up is added",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.info["b"].Meta = admittedMeta(now.Add(-65 * time.Second))
				f.addJob("default", "reserve", 5, 3, 600, 64)
			},
			want: 4,
			logs: []string{"warming_nodes=1"},
		},
		{
			name: "a node admitted longer ago than target-spotfleet's warm-up is in its count: not added",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.info["b"].Meta = admittedMeta(now.Add(-75 * time.Second))
				f.addJob("default", "reserve", 5, 3, 600, 64)
			},
			want: 3,
			logs: []string{"warming_nodes=0"},
		},
		{
			name: "a node without an admission gate is counted by target-spotfleet at once: not added",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 1000, now.Add(-long))
				f.addNode("b", "spot", 1000, now.Add(-5*time.Second))
				f.addJob("default", "reserve", 5, 3, 600, 64)
			},
			want: 3,
			logs: []string{"warming_nodes=0"},
		},
		{
			name: "nothing waits: a warming node adds nothing",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.info["b"].Meta = admittedMeta(now.Add(-20 * time.Second))
			},
			want: 0,
		},
		{
			name: "a draining node gives its size but is not coming capacity",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 1000, now.Add(-long)).Drain = true
				f.addJob("default", "reserve", 1, 1, 600, 64)
			},
			want: 1,
		},
		{
			name:  "a job constrained to another class waits for another pool",
			query: "unplaced_nodes node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addNode("g", "gpu", 1000, now.Add(-long))
				j := f.addJob("default", "gpu", 2, 2, 600, 64)
				j.Constraints = []*api.Constraint{{LTarget: "${node.class}", RTarget: "gpu", Operand: "="}}
			},
			want: 0,
			logs: []string{"cannot run", "default/gpu[web]"},
		},
		{
			name: "task constraints count, and a regexp one that matches lets the job in",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.info["a"].Attributes = map[string]string{"kernel.name": "linux"}
				j := f.addJob("default", "linux", 1, 1, 600, 64)
				j.TaskGroups[0].Tasks[0].Constraints = []*api.Constraint{{LTarget: "${attr.kernel.name}", RTarget: "^lin", Operand: "regexp"}}
				k := f.addJob("default", "windows", 1, 1, 600, 64)
				k.TaskGroups[0].Tasks[0].Constraints = []*api.Constraint{{LTarget: "${attr.kernel.name}", RTarget: "windows", Operand: "="}}
			},
			want: 1,
		},
		{
			name: "datacenter globs are matched",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "glob", 1, 1, 600, 64).Datacenters = []string{"d*1"}
				f.addJob("default", "other-dc", 1, 1, 600, 64).Datacenters = []string{"eu-*"}
			},
			want: 1,
		},
		{
			name: "node pools are matched, all matches every pool",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "all", 1, 1, 600, 64).NodePool = pointer(api.NodePoolAll)
				f.addJob("default", "gpu-pool", 1, 1, 600, 64).NodePool = pointer("gpu")
				f.addJob("default", "unset", 1, 1, 600, 64).NodePool = nil
			},
			want: 2,
		},
		{
			name: "a job purged since its blocked evaluation was listed is skipped",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "gone", 1, 1, 600, 64)
				delete(f.jobs, "default/gone")
				delete(f.summaries, "default/gone")
				f.addJob("default", "here", 1, 1, 600, 64)
			},
			want: 1,
			logs: []string{"job of a blocked evaluation is gone"},
		},
		{
			name: "a stopped job is skipped",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "stopped", 1, 1, 600, 64).Stop = pointer(true)
			},
			want: 0,
		},
		{
			name: "only task groups the blocked evaluation names count",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				j := f.addJob("default", "two-groups", 1, 1, 600, 64)
				j.TaskGroups = append(j.TaskGroups, &api.TaskGroup{Name: pointer("api"), Tasks: j.TaskGroups[0].Tasks})
				f.summaries["default/two-groups"].Summary["api"] = api.TaskGroupSummary{Queued: 4}
			},
			want: 1,
		},
		{
			name: "queued zero in the summary means placed since",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "placed", 1, 1, 600, 64)
				f.summaries["default/placed"].Summary["web"] = api.TaskGroupSummary{Running: 1}
			},
			want: 0,
		},
		{
			name: "system jobs are left out",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "sys", 1, 1, 600, 64)
				f.evals[0].Type = api.JobTypeSystem
			},
			want: 0,
		},
		{
			name: "an ask no pool node can hold is left out with a warning",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "huge", 1, 1, 1500, 64)
			},
			want: 0,
			logs: []string{"asks more than any pool node offers", "default/huge[web]"},
		},
		{
			name: "in a pool of mixed sizes new nodes are the smallest, and a bigger ask takes one of its own",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 1000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.addJob("default", "mid", 2, 2, 1500, 64)
				f.addJob("default", "small", 2, 2, 500, 64)
			},
			want: 3, // 1500, 1500, then 500+500 on one 1000 MHz node
		},
		{
			name: "cores are asked at the pool's MHz per core",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				for _, n := range f.nodes {
					n.NodeResources.Cpu.TotalCpuCores = 2 // 1100/2 = 550 MHz per core
				}
				j := f.addJob("default", "cores", 2, 2, 0, 64)
				j.TaskGroups[0].Tasks[0].Resources = &api.Resources{Cores: pointer(1), MemoryMB: pointer(64)}
			},
			want: 2,
		},
		{
			name: "down nodes do not make a pool",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 1000, now.Add(-long)).Status = api.NodeStatusDown
				f.addJob("default", "reserve", 1, 1, 600, 64)
			},
			empty: true,
		},
		{
			name: "a failing summary fails the sample: the figure would be too low",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.addJob("default", "reserve", 1, 1, 600, 64)
				f.fail["JobSummary:default/reserve"] = errBoom
			},
			wantErr: "connection refused",
		},
		{
			name: "a failing evaluation list fails the sample",
			setup: func(f *fakeNomad, now time.Time) {
				twoNodes(f, now)
				f.fail["BlockedEvaluations"] = errBoom
			},
			wantErr: "connection refused",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, clock := newFakeNomad(), newFakeClock()
			tc.setup(f, clock.now())
			text := tc.query
			if text == "" {
				text = "unplaced_nodes"
			}
			q, err := parseQuery(text)
			require.NoError(t, err)
			log, logs := testLogger(t)

			o := newTestCollector(f, clock, time.Minute).collect(context.Background(), q, log)

			switch {
			case tc.wantErr != "":
				require.Error(t, o.err)
				assert.Contains(t, o.err.Error(), tc.wantErr)
			case tc.empty:
				require.NoError(t, o.err)
				assert.NotEmpty(t, o.empty)
			default:
				require.NoError(t, o.err)
				require.Empty(t, o.empty)
				assert.Equal(t, tc.want, o.sample.value)
				assert.Equal(t, clock.now(), o.sample.at)
			}
			for _, want := range tc.logs {
				assert.Contains(t, logs.String(), want)
			}
		})
	}
}

// admittedMeta is the meta of a node target-spotfleet admitted at at.
func admittedMeta(at time.Time) map[string]string {
	return map[string]string{
		nomadnode.DefaultGateKey:                              nomadnode.GateAdmitted,
		nomadnode.DefaultGateKey + nomadnode.AdmittedAtSuffix: at.UTC().Format(time.RFC3339),
	}
}

func TestSatisfiesFollowsNomadsOperators(t *testing.T) {
	n := &api.NodeListStub{ID: "id-1", Name: "n1", NodeClass: "spot", Datacenter: "dc1", NodePool: "default"}
	meta := map[string]string{"zone": "a", "tags": "x, y,z"}
	attrs := map[string]string{"kernel.name": "linux"}
	cases := []struct {
		c    api.Constraint
		want bool
	}{
		{api.Constraint{LTarget: "${node.class}", RTarget: "spot"}, true}, // empty operand is =
		{api.Constraint{LTarget: "${node.class}", RTarget: "gpu", Operand: "=="}, false},
		{api.Constraint{LTarget: "${node.datacenter}", RTarget: "dc1", Operand: "is"}, true},
		{api.Constraint{LTarget: "${node.pool}", RTarget: "default", Operand: "!="}, false},
		{api.Constraint{LTarget: "${meta.missing}", RTarget: "x", Operand: "!="}, true},
		{api.Constraint{LTarget: "${meta.missing}", RTarget: "x", Operand: "="}, false},
		{api.Constraint{LTarget: "${meta.zone}", Operand: "is_set"}, true},
		{api.Constraint{LTarget: "${meta.zone}", Operand: "is_not_set"}, false},
		{api.Constraint{LTarget: "${meta.tags}", RTarget: "y,z", Operand: "set_contains"}, true},
		{api.Constraint{LTarget: "${meta.tags}", RTarget: "y,w", Operand: "set_contains_all"}, false},
		{api.Constraint{LTarget: "${meta.tags}", RTarget: "w,x", Operand: "set_contains_any"}, true},
		{api.Constraint{LTarget: "${node.unique.name}", RTarget: "^n[0-9]$", Operand: "regexp"}, true},
		{api.Constraint{LTarget: "${node.unique.id}", RTarget: "[", Operand: "regexp"}, false},
		// Not honoured: assumed satisfied.
		{api.Constraint{LTarget: "${attr.kernel.version}", RTarget: ">= 9.0", Operand: "version"}, true},
		{api.Constraint{Operand: "distinct_hosts", RTarget: "true"}, true},
		{api.Constraint{LTarget: "${node.region}", RTarget: "eu", Operand: "="}, true},
		{api.Constraint{LTarget: "${attr.kernel.name}", RTarget: "linux", Operand: "="}, true},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, satisfies(&tc.c, n, meta, attrs), "%+v", tc.c)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, value string
		want           bool
	}{
		{"dc1", "dc1", true}, {"dc1", "dc10", false}, {"*", "anything", true},
		{"dc*", "dc2", true}, {"*-1", "eu-1", true}, {"eu-*-a", "eu-west-a", true},
		{"eu-*-a", "eu-west-b", false}, {"a*b*c", "abc", true}, {"a*b*c", "acb", false},
	} {
		assert.Equal(t, tc.want, globMatch(tc.pattern, tc.value), "%q ~ %q", tc.pattern, tc.value)
	}
}

// newRecordedUnplacedNomad serves what a Nomad v1.6.3 server answered with
// one client (cpu_total_compute = 1000, 100 MHz reserved, class spot) and a
// job "reserve" of four 600 MHz allocations, three of them blocked
// (testdata/unplaced). Unknown jobs get Nomad's 404 "job not found"; an
// evaluation list without the blocked filter is refused, so the test
// proves the client asks for blocked evaluations only.
func newRecordedUnplacedNomad(t *testing.T) *httptest.Server {
	t.Helper()
	files := map[string]string{
		"/v1/nodes":               "nodes.json",
		"/v1/job/reserve/summary": "job_summary.json",
		"/v1/job/reserve":         "job.json",
		"/v1/evaluations":         "evaluations_blocked.json",
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/evaluations" && (r.URL.Query().Get("filter") != `Status == "blocked"` || r.URL.Query().Get("namespace") != "*") {
			http.Error(w, "this recording holds only the blocked evaluations of every namespace", http.StatusBadRequest)
			return
		}
		name, ok := files[r.URL.Path]
		if strings.HasPrefix(r.URL.Path, "/v1/node/") {
			name, ok = "node.json", true
		}
		if !ok {
			if strings.HasPrefix(r.URL.Path, "/v1/job/") {
				http.Error(w, "job not found", http.StatusNotFound)
				return
			}
			http.NotFound(w, r)
			return
		}
		body, err := os.ReadFile(filepath.Join("testdata", "unplaced", name))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Nomad-Index", "15")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestUnplacedFromRecordedNomad(t *testing.T) {
	srv := newRecordedUnplacedNomad(t)
	c := newTestNomadClient(t, srv.URL, "", time.Second)
	clock := newFakeClock()
	coll := &collector{api: c, nodes: newNodeReader(c, nomadnode.Gate{}), run: newLimiter(4).run, now: clock.now}
	log, logs := testLogger(t)

	o := coll.collect(context.Background(), mustQuery(t, "unplaced_nodes node_class=spot"), log)

	require.NoError(t, o.err)
	require.Empty(t, o.empty)
	// 900 MHz schedulable per node, three 600 MHz asks: three nodes.
	assert.Equal(t, 3.0, o.sample.value)
	assert.Contains(t, logs.String(), "waiting_allocations=3")
	assert.Contains(t, logs.String(), "node_cpu_mhz=900")
}

func TestJobReadsTellAGoneJobFromAFailure(t *testing.T) {
	srv := newRecordedUnplacedNomad(t)
	c := newTestNomadClient(t, srv.URL, "", time.Second)
	ctx := context.Background()

	_, err := c.JobSummary(ctx, "default", "purged")
	assert.ErrorIs(t, err, errJobGone)
	_, err = c.Job(ctx, "default", "purged")
	assert.ErrorIs(t, err, errJobGone)

	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "404 page not found", http.StatusNotFound) // a proxy, not Nomad
	}))
	defer other.Close()
	c = newTestNomadClient(t, other.URL, "", time.Second)
	_, err = c.JobSummary(ctx, "default", "reserve")
	require.Error(t, err)
	assert.NotErrorIs(t, err, errJobGone)
	assert.Contains(t, err.Error(), `reading the summary of job "reserve" in namespace "default"`)
}

func TestUnplacedIsATimeSeriesLikeTheOtherQueries(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	set, _ := newTestSet(t, f, clock)
	q := mustQuery(t, "unplaced_nodes node_class=spot")
	t0 := clock.now()

	got, err := set.query(q, sdk.TimeRange{From: t0.Add(-time.Minute), To: t0})
	require.NoError(t, err)
	assert.Equal(t, sdk.TimestampedMetrics{{Timestamp: t0, Value: 0}}, got, "nothing waits: one datapoint of 0")

	f.mu.Lock()
	f.addJob("default", "reserve", 3, 2, 600, 64)
	f.mu.Unlock()
	clock.advance(10 * time.Second)
	sm, created := set.get(q)
	require.False(t, created)
	sm.takeSample()
	t1 := clock.now()

	got, err = set.query(q, sdk.TimeRange{From: t0.Add(-time.Minute), To: t1})
	require.NoError(t, err)
	assert.Equal(t, sdk.TimestampedMetrics{{Timestamp: t0, Value: 0}, {Timestamp: t1, Value: 2}}, got)
}
