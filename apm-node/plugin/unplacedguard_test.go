package plugin

import (
	"context"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"
)

// packOneByOne is first-fit-decreasing one ask at a time, as the packing
// was before it placed equal asks arithmetically: the reference the
// arithmetic packing must agree with.
func packOneByOne(items []packItem, size nodeSize) int {
	share := func(a unplacedAsk) float64 { return max(a.cpu/size.cpu, a.mem/size.mem) }
	var asks []unplacedAsk
	for _, it := range items {
		for range it.n {
			asks = append(asks, it.ask)
		}
	}
	sort.SliceStable(asks, func(i, j int) bool { return share(asks[i]) > share(asks[j]) })
	var free []unplacedAsk
	added := 0
	for _, a := range asks {
		placed := false
		for i := range free {
			if a.cpu <= free[i].cpu && a.mem <= free[i].mem {
				free[i].cpu -= a.cpu
				free[i].mem -= a.mem
				placed = true
				break
			}
		}
		switch {
		case placed:
		case a.cpu > size.cpu || a.mem > size.mem:
			added++
		default:
			free = append(free, unplacedAsk{cpu: size.cpu - a.cpu, mem: size.mem - a.mem})
			added++
		}
	}
	return added
}

func TestPackingEqualAsksArithmeticallyMatchesOneByOne(t *testing.T) {
	size := nodeSize{cpu: 1000, mem: 4096, maxCPU: 2000, maxMem: 8192}
	rng := rand.New(rand.NewPCG(11, 5))
	for trial := range 500 {
		var items []packItem
		for range 1 + rng.IntN(6) {
			// Multiples of 50 MHz / 64 MB, some above the smallest node.
			items = append(items, packItem{
				ask: unplacedAsk{cpu: float64(50 * rng.IntN(25)), mem: float64(64 * (1 + rng.IntN(70)))},
				n:   rng.IntN(40),
			})
		}
		got, err := packFirstFitDecreasing(context.Background(), items, size)
		require.NoError(t, err)
		require.Equal(t, packOneByOne(items, size), got, "trial %d: %+v", trial, items)
	}
}

func TestPackingStopsWhenTheSampleIsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := packFirstFitDecreasing(ctx, []packItem{{ask: unplacedAsk{cpu: 100, mem: 64}, n: 3}}, nodeSize{cpu: 1000, mem: 4096})
	require.ErrorIs(t, err, context.Canceled)
}

// unplacedValue takes one sample with c and returns its value and log.
func unplacedValue(t *testing.T, c *collector, text string) (float64, string) {
	t.Helper()
	log, logs := testLogger(t)
	o := c.collect(context.Background(), mustQuery(t, text), log)
	require.NoError(t, o.err)
	require.Empty(t, o.empty)
	return o.sample.value, logs.String()
}

func TestStallGuardStopsCountingAndCountsAgainWhenTheQueueChanges(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	f.addJob("default", "stuck", 3, 2, 600, 64) // two nodes asked

	var values []float64
	var logs strings.Builder
	sample := func() {
		v, l := unplacedValue(t, c, "unplaced_nodes")
		values = append(values, v)
		logs.WriteString(l)
		clock.advance(10 * time.Second)
	}
	sample() // 2: ready 1
	f.addNode("b", "spot", 1000, clock.now().Add(-time.Hour))
	sample() // 2: ready 2, not yet the 2 asked
	sample() // 2: still 2 ready, no growth counted
	f.addNode("c", "spot", 1000, clock.now().Add(-time.Hour))
	sample() // 2: ready 3 = 1 + 2, first sample grown
	sample() // 0: second: stalled
	sample() // 0: one warning only
	require.Equal(t, []float64{2, 2, 2, 2, 0, 0}, values)
	require.Equal(t, 1, strings.Count(logs.String(), "unplaced task group left out: the pool's ready nodes grew"), logs.String())
	require.Contains(t, logs.String(), "task_group=default/stuck[web]")

	// One allocation was placed: the queue changed, the group counts again.
	f.summaries["default/stuck"].Summary["web"] = api.TaskGroupSummary{Queued: 1, Running: 2}
	v, l := unplacedValue(t, c, "unplaced_nodes")
	require.Equal(t, 1.0, v)
	require.Contains(t, l, "unplaced task group counted again")

	// A new version of the job counts again too, even with the same queue.
	for range 3 {
		unplacedValue(t, c, "unplaced_nodes")
	}
	f.addNode("d", "spot", 1000, clock.now().Add(-time.Hour))
	for range 2 {
		unplacedValue(t, c, "unplaced_nodes")
	}
	v, _ = unplacedValue(t, c, "unplaced_nodes")
	require.Equal(t, 0.0, v, "stalled again: 4 ready >= 3 + 1 asked for two samples")
	f.jobs["default/stuck"].JobModifyIndex = pointer(uint64(42))
	v, _ = unplacedValue(t, c, "unplaced_nodes")
	require.Equal(t, 1.0, v)
}

func TestStallGuardIsPerPool(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	f.addNode("x", "other", 1000, clock.now().Add(-time.Hour))
	f.addJob("default", "stuck", 2, 1, 600, 64)
	unplacedValue(t, c, "unplaced_nodes node_class=spot")
	unplacedValue(t, c, "unplaced_nodes node_class=other")
	f.addNode("b", "spot", 1000, clock.now().Add(-time.Hour))
	for range 2 {
		unplacedValue(t, c, "unplaced_nodes node_class=spot")
		unplacedValue(t, c, "unplaced_nodes node_class=other")
	}
	vs, _ := unplacedValue(t, c, "unplaced_nodes node_class=spot")
	vo, _ := unplacedValue(t, c, "unplaced_nodes node_class=other")
	require.Equal(t, []float64{0, 1}, []float64{vs, vo}, "only the pool that grew stops counting")
}

func TestFilteredOnlyKeepsFiltersANewNodePasses(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *api.AllocationMetric
		want bool
	}{
		{"no metric", nil, false},
		{"no node evaluated (empty cluster)", &api.AllocationMetric{}, false},
		{"a node exhausted", &api.AllocationMetric{NodesEvaluated: 2, NodesFiltered: 1, NodesExhausted: 1}, false},
		{"every node filtered by a driver", &api.AllocationMetric{NodesEvaluated: 2, NodesFiltered: 2,
			ConstraintFiltered: map[string]int{"missing drivers": 2}}, true},
		{"distinct_hosts: a new host passes", &api.AllocationMetric{NodesEvaluated: 2, NodesFiltered: 2,
			ConstraintFiltered: map[string]int{api.ConstraintDistinctHosts: 2}}, false},
		{"distinct_property: a new value may pass", &api.AllocationMetric{NodesEvaluated: 2, NodesFiltered: 2,
			ConstraintFiltered: map[string]int{api.ConstraintDistinctProperty + " ${meta.rack}": 2}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, filteredOnly(tc.m))
		})
	}
}

func TestPinnedToExistingHosts(t *testing.T) {
	for _, tc := range []struct {
		c    api.Constraint
		want bool
	}{
		{api.Constraint{LTarget: "${node.unique.name}", RTarget: "node-a", Operand: "="}, true},
		{api.Constraint{LTarget: "${node.unique.id}", RTarget: "id-1"}, true},
		{api.Constraint{LTarget: "${attr.unique.hostname}", RTarget: "h1,h2", Operand: api.ConstraintSetContainsAny}, true},
		{api.Constraint{LTarget: "${node.unique.name}", RTarget: "node-a", Operand: "!="}, false},
		{api.Constraint{LTarget: "${node.unique.name}", RTarget: "^node-", Operand: api.ConstraintRegex}, false},
		{api.Constraint{LTarget: "${node.class}", RTarget: "spot"}, false},
	} {
		require.Equal(t, tc.want, pinnedToExistingHosts([]*api.Constraint{&tc.c}), "%+v", tc.c)
	}

	// "Not on node-a" still counts: a new node passes it.
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	j := f.addJob("default", "avoid", 2, 1, 600, 64)
	j.TaskGroups[0].Constraints = []*api.Constraint{{LTarget: "${node.unique.name}", RTarget: "node-a", Operand: "!="}}
	v, _ := unplacedValue(t, c, "unplaced_nodes")
	require.Equal(t, 1.0, v)
}

func TestJobReadIsCachedByJobModifyIndex(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	j := f.addJob("default", "web", 2, 1, 600, 64)
	j.JobModifyIndex = pointer(uint64(7))
	f.evals[0].JobModifyIndex = 7
	for range 3 {
		v, _ := unplacedValue(t, c, "unplaced_nodes")
		require.Equal(t, 1.0, v)
	}
	require.Equal(t, 1, f.count("Job:default/web"), "the job is read once while its JobModifyIndex stays")
	require.Equal(t, 3, f.count("JobSummary:default/web"), "the summary (the queue) is read at every sample")

	// A new version: the new blocked evaluation carries its index.
	j2 := *j
	j2.JobModifyIndex = pointer(uint64(9))
	j2.TaskGroups = slices.Clone(j.TaskGroups)
	f.jobs["default/web"] = &j2
	f.evals[0].JobModifyIndex = 9
	unplacedValue(t, c, "unplaced_nodes")
	require.Equal(t, 2, f.count("Job:default/web"))
}
