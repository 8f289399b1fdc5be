package plugin

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

func TestCollect(t *testing.T) {
	long := 10 * time.Minute // how long the standard nodes have been ready

	cases := []struct {
		name    string
		query   string
		warmup  time.Duration
		setup   func(f *fakeNomad, now time.Time)
		want    float64 // expected value when a sample is expected
		nodes   int     // nodes counted in the sample
		empty   bool
		wantErr string
		logs    []string // substrings the log must contain
	}{
		{
			name:  "host cpu averages cores then nodes",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.setHostCPU("a", 0, 80, 60) // 70
				f.setHostCPU("b", 0, 10, 30) // 20
			},
			want: 45, nodes: 2,
		},
		{
			name:  "host memory",
			query: "host_memory node_class=spot aggregate=max",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.setHostCPU("a", 2048, 0) // 25% of 8 GiB
				f.setHostCPU("b", 4096, 0) // 50%
			},
			want: 50, nodes: 2,
		},
		{
			name:  "workload cpu sums a node's allocations over its schedulable cpu",
			query: "workload_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 4000, now.Add(-long))
				f.addAlloc("a1", "a", 500, 256, 1000, 100)
				f.addAlloc("a2", "a", 500, 256, 500, 100)  // a: 1500/2000 = 75%
				f.addAlloc("b1", "b", 500, 256, 1000, 100) // b: 1000/4000 = 25%
			},
			want: 50, nodes: 2,
		},
		{
			name:  "a node with no allocations uses nothing",
			query: "workload_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.addAlloc("a1", "a", 500, 256, 1600, 100) // 80%
			},
			want: 40, nodes: 2,
		},
		{
			name:  "workload memory",
			query: "workload_memory node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addAlloc("a1", "a", 500, 2048, 100, 1024) // 1024 / 4096 MB
			},
			want: 25, nodes: 1,
		},
		{
			name:  "allocated cpu counts pending and running, not stopping allocations",
			query: "allocated_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addAlloc("a1", "a", 500, 256, 0, 0)
				f.addAlloc("a2", "a", 300, 256, 0, 0)
				f.allocs[1].ClientStatus = api.AllocClientStatusPending
				f.addAlloc("a3", "a", 700, 256, 0, 0)
				f.allocs[2].DesiredStatus = api.AllocDesiredStatusStop
			},
			want: 40, nodes: 1,
		},
		{
			name:  "allocated memory",
			query: "allocated_memory node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addAlloc("a1", "a", 500, 3072, 0, 0)
			},
			want: 75, nodes: 1,
		},
		{
			name:  "only the pool's nodes count",
			query: "host_cpu node_class=spot datacenter=dc1 node_pool=default",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("other-class", "batch", 2000, now.Add(-long))
				f.addNode("other-dc", "spot", 2000, now.Add(-long)).Datacenter = "dc2"
				f.addNode("other-pool", "spot", 2000, now.Add(-long)).NodePool = "gpu"
				f.setHostCPU("a", 0, 30)
				for _, id := range []string{"other-class", "other-dc", "other-pool"} {
					f.setHostCPU(id, 0, 100)
				}
			},
			want: 30, nodes: 1,
		},
		{
			name:  "not ready, draining and ineligible nodes are left out and logged",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("down", "spot", 2000, now.Add(-long)).Status = api.NodeStatusDown
				f.addNode("init", "spot", 2000, now.Add(-long)).Status = api.NodeStatusInit
				f.addNode("drain", "spot", 2000, now.Add(-long)).Drain = true
				f.addNode("inel", "spot", 2000, now.Add(-long)).SchedulingEligibility = api.NodeSchedulingIneligible
				f.setHostCPU("a", 0, 30)
				for _, id := range []string{"down", "init", "drain", "inel"} {
					f.setHostCPU(id, 0, 100)
				}
			},
			want: 30, nodes: 1,
			logs: []string{
				"nodes left out of the sample", "count=4",
				"node-down (down): status is down", "node-init (init): status is initializing",
				"node-drain (drain): draining", "node-inel (inel): ineligible for scheduling",
			},
		},
		{
			name:   "nodes younger than the warm-up are left out and logged",
			query:  "host_cpu node_class=spot",
			warmup: 2 * time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("old", "spot", 2000, now.Add(-long))
				f.addNode("new", "spot", 2000, now.Add(-90*time.Second))
				f.setHostCPU("old", 0, 60)
				f.setHostCPU("new", 0, 0)
			},
			want: 60, nodes: 1,
			logs: []string{"node-new (new): warming up: ready and eligible for 1m30s of 2m0s"},
		},
		{
			name:   "warm-up restarts when a long-ready node is marked eligible",
			query:  "host_cpu node_class=spot",
			warmup: 2 * time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("old", "spot", 2000, now.Add(-long))
				f.addNode("hooked", "spot", 2000, now.Add(-long))
				f.info["hooked"].Events = []*api.NodeEvent{
					{Message: "Node registered", Timestamp: now.Add(-long)},
					{Message: eligibleEventMessage, Timestamp: now.Add(-30 * time.Second)},
				}
				f.setHostCPU("old", 0, 60)
				f.setHostCPU("hooked", 0, 0)
			},
			want: 60, nodes: 1,
			logs: []string{"node-hooked (hooked): warming up: ready and eligible for 30s of 2m0s"},
		},
		{
			name:   "a client re-registering while it stays up does not warm up again",
			query:  "host_cpu node_class=spot",
			warmup: 2 * time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("old", "spot", 2000, now.Add(-long))
				f.info["old"].StatusUpdatedAt = now.Add(-5 * time.Second).Unix()
				f.setHostCPU("old", 0, 60)
			},
			want: 60, nodes: 1,
		},
		{
			name:   "a node back from down warms up again",
			query:  "host_cpu node_class=spot",
			warmup: 2 * time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("old", "spot", 2000, now.Add(-long))
				f.addNode("back", "spot", 2000, now.Add(-long))
				f.info["back"].Events = append(f.info["back"].Events,
					&api.NodeEvent{Message: "Node re-registered", Timestamp: now.Add(-20 * time.Second)})
				f.setHostCPU("old", 0, 60)
				f.setHostCPU("back", 0, 0)
			},
			want: 60, nodes: 1,
			logs: []string{"node-back (back): warming up: ready and eligible for 20s of 2m0s"},
		},
		{
			name:   "a node that cannot be read in full is left out",
			query:  "host_cpu node_class=spot",
			warmup: time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.fail["Node:b"] = errBoom
				f.setHostCPU("a", 0, 60)
				f.setHostCPU("b", 0, 0)
			},
			want: 60, nodes: 1,
			logs: []string{"node-b (b): admission gate and warm-up start unknown: connection refused"},
		},
		{
			name:  "a pool none of whose nodes can be read in full is an error, not empty",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.fail["Node:a"] = errBoom
				f.fail["Node:b"] = errBoom
			},
			wantErr: "none of the 2 pool nodes counts and 2 could not be read, for example node-a (a): admission gate and warm-up start unknown: connection refused",
		},
		{
			name:  "a node waiting for its launch hooks is left out; admitted and ungated nodes count",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("ungated", "spot", 2000, now.Add(-long))
				f.addNode("pending", "spot", 2000, now.Add(-long))
				f.addNode("admitted", "spot", 2000, now.Add(-long))
				f.addNode("failed", "spot", 2000, now.Add(-long))
				f.info["pending"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GatePending}
				f.info["admitted"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GateAdmitted}
				f.info["failed"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GateFailed}
				f.setHostCPU("ungated", 0, 60)
				f.setHostCPU("pending", 0, 0) // an idle node being configured would dilute the mean
				f.setHostCPU("admitted", 0, 40)
				f.setHostCPU("failed", 0, 0)
			},
			want: 50, nodes: 2,
			logs: []string{
				"count=2",
				"node-pending (pending): waiting for its launch hooks (meta spotfleet_admission=pending)",
				"node-failed (failed): a launch hook failed (meta spotfleet_admission=failed)",
			},
		},
		{
			name:  "a pool where every node waits for its launch hooks has no sample",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.info["a"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GatePending}
				f.setHostCPU("a", 0, 0)
			},
			empty: true,
			logs:  []string{"node-a (a): waiting for its launch hooks"},
		},
		{
			name:   "warm-up counts from the admission time",
			query:  "host_cpu node_class=spot",
			warmup: 2 * time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("old", "spot", 2000, now.Add(-long))
				f.addNode("fresh", "spot", 2000, now.Add(-long))
				f.info["old"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GateAdmitted,
					"spotfleet_admission_at": now.Add(-5 * time.Minute).Format(time.RFC3339)}
				f.info["fresh"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GateAdmitted,
					"spotfleet_admission_at": now.Add(-45 * time.Second).Format(time.RFC3339)}
				f.setHostCPU("old", 0, 60)
				f.setHostCPU("fresh", 0, 0)
			},
			want: 60, nodes: 1,
			logs: []string{"node-fresh (fresh): warming up: admitted for 45s of 2m0s"},
		},
		{
			name:   "warm-up counts from eligibility when it came after the admission",
			query:  "host_cpu node_class=spot",
			warmup: 2 * time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("old", "spot", 2000, now.Add(-long))
				f.addNode("cordoned", "spot", 2000, now.Add(-long))
				f.info["cordoned"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GateAdmitted,
					"spotfleet_admission_at": now.Add(-5 * time.Minute).Format(time.RFC3339)}
				f.info["cordoned"].Events = append(f.info["cordoned"].Events,
					&api.NodeEvent{Message: eligibleEventMessage, Timestamp: now.Add(-10 * time.Second)})
				f.setHostCPU("old", 0, 60)
				f.setHostCPU("cordoned", 0, 0)
			},
			want: 60, nodes: 1,
			logs: []string{"node-cordoned (cordoned): warming up: ready and eligible for 10s of 2m0s"},
		},
		{
			name:   "an unreadable admission time is ignored",
			query:  "host_cpu node_class=spot",
			warmup: 2 * time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.info["a"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GateAdmitted,
					"spotfleet_admission_at": "a moment ago"}
				f.setHostCPU("a", 0, 60)
			},
			want: 60, nodes: 1,
		},
		{
			name:  "an unreadable node is skipped and logged",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.setHostCPU("a", 0, 60)
				f.fail["HostStats:b"] = errBoom
			},
			want: 60, nodes: 1,
			logs: []string{"skipped nodes whose stats could not be read", "node-b (b): connection refused"},
		},
		{
			name:  "a node with one unreadable allocation is skipped, not under-counted",
			query: "workload_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.addAlloc("a1", "a", 500, 256, 1000, 0)
				f.addAlloc("b1", "b", 500, 256, 1000, 0)
				f.addAlloc("b2", "b", 500, 256, 1000, 0)
				f.fail["AllocStats:b2"] = errBoom
			},
			want: 50, nodes: 1,
			logs: []string{"node-b (b): allocation b2: connection refused"},
		},
		{
			name:  "an allocation that stopped since the list counts as unused",
			query: "workload_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addAlloc("a1", "a", 500, 256, 1000, 0)
				f.addAlloc("gone", "a", 500, 256, 0, 0)
				delete(f.allocStats, "gone")
			},
			want: 50, nodes: 1,
		},
		{
			name:  "a node without resources in the list is skipped",
			query: "allocated_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long)).NodeResources = nil
				f.addAlloc("a1", "a", 1000, 256, 0, 0)
			},
			want: 50, nodes: 1,
			logs: []string{"node-b (b): node resources missing"},
		},
		{
			name:  "no readable node is an error, never a 0",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.addNode("b", "spot", 2000, now.Add(-long))
				f.fail["HostStats:a"] = errBoom
				f.fail["HostStats:b"] = errBoom
			},
			wantErr: "none of the 2 counted nodes could be read, for example node-a (a): connection refused",
		},
		{
			name:  "node list failure is an error",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.fail["Nodes"] = errBoom
			},
			wantErr: "connection refused",
		},
		{
			name:  "allocation list failure is an error",
			query: "workload_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-long))
				f.fail["Allocations"] = errBoom
			},
			wantErr: "connection refused",
		},
		{
			name:  "an empty pool has no sample",
			query: "host_cpu node_class=spot",
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "batch", 2000, now.Add(-long))
			},
			empty: true,
		},
		{
			name:   "a pool where no node counts has no sample",
			query:  "host_cpu node_class=spot",
			warmup: time.Minute,
			setup: func(f *fakeNomad, now time.Time) {
				f.addNode("a", "spot", 2000, now.Add(-time.Second))
				f.addNode("b", "spot", 2000, now.Add(-long)).Drain = true
			},
			empty: true,
			logs:  []string{"node-a (a): warming up", "node-b (b): draining"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, clock := newFakeNomad(), newFakeClock()
			tc.setup(f, clock.now())
			q, err := parseQuery(tc.query)
			require.NoError(t, err)
			log, logs := testLogger(t)

			o := newTestCollector(f, clock, tc.warmup).collect(context.Background(), q, log)

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
				assert.InDelta(t, tc.want, o.sample.value, 1e-9)
				assert.Equal(t, tc.nodes, o.sample.nodes)
				assert.Equal(t, clock.now(), o.sample.at)
			}
			for _, want := range tc.logs {
				assert.Contains(t, logs.String(), want)
			}
		})
	}
}

func TestWarmupReadsEachNodeOnceUntilItChanges(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	n := f.addNode("a", "spot", 2000, clock.now().Add(-time.Hour))
	f.setHostCPU("a", 0, 50)
	q, err := parseQuery("host_cpu")
	require.NoError(t, err)
	log, _ := testLogger(t)
	c := newTestCollector(f, clock, time.Minute)

	c.collect(context.Background(), q, log)
	c.collect(context.Background(), q, log)
	assert.Equal(t, 1, f.count("Node:a"), "an unchanged node is read once")

	n.ModifyIndex++
	c.collect(context.Background(), q, log)
	assert.Equal(t, 2, f.count("Node:a"), "a changed node is read again")
}

func TestCollectWithoutWarmupStillReadsTheGateOncePerNodeChange(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	f.addNode("a", "spot", 2000, clock.now())
	f.addNode("b", "spot", 2000, clock.now())
	f.info["b"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GatePending}
	f.setHostCPU("a", 0, 50)
	f.setHostCPU("b", 0, 10)
	q, err := parseQuery("host_cpu")
	require.NoError(t, err)
	log, logs := testLogger(t)
	c := newTestCollector(f, clock, 0)

	o := c.collect(context.Background(), q, log)
	require.NoError(t, o.err)
	assert.Equal(t, 1, o.sample.nodes, "the pending node is left out")
	assert.Contains(t, logs.String(), "node-b (b): waiting for its launch hooks (meta spotfleet_admission=pending)")

	c.collect(context.Background(), q, log)
	assert.Equal(t, 1, f.count("Node:a"), "an unchanged node is read once")
	assert.Equal(t, 1, f.count("Node:b"), "an unchanged node is read once")

	// target-spotfleet admits b through dynamic metadata: its ModifyIndex moves.
	f.setMeta("b", map[string]string{nomadnode.DefaultGateKey: nomadnode.GateAdmitted,
		"spotfleet_admission_at": clock.now().Format(time.RFC3339)})
	o = c.collect(context.Background(), q, log)
	require.NoError(t, o.err)
	assert.Equal(t, 2, o.sample.nodes, "the admitted node counts")
	assert.InDelta(t, 30, o.sample.value, 1e-9)
	assert.Equal(t, 2, f.count("Node:b"), "a changed node is read again")
	assert.Equal(t, 1, f.count("Node:a"))

	c.collect(context.Background(), q, log)
	assert.Equal(t, 2, f.count("Node:b"), "and then not again")
}

func TestCollectUsesTheConfiguredGateKey(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	f.addNode("a", "spot", 2000, clock.now().Add(-time.Hour))
	f.addNode("b", "spot", 2000, clock.now().Add(-time.Hour))
	// a is gated by the configured key; b carries only the default key,
	// which this pool does not use.
	f.info["a"].Meta = map[string]string{"pool.gate": nomadnode.GatePending}
	f.info["b"].Meta = map[string]string{nomadnode.DefaultGateKey: nomadnode.GatePending}
	f.setHostCPU("a", 0, 0)
	f.setHostCPU("b", 0, 70)
	gate, err := nomadnode.ParseGate("pool.gate")
	require.NoError(t, err)
	c := newTestCollector(f, clock, 0)
	c.nodes = newNodeReader(f, gate)
	log, logs := testLogger(t)

	o := c.collect(context.Background(), mustQuery(t, "host_cpu"), log)

	require.NoError(t, o.err)
	assert.InDelta(t, 70, o.sample.value, 1e-9)
	assert.Contains(t, logs.String(), "node-a (a): waiting for its launch hooks (meta pool.gate=pending)")
}
