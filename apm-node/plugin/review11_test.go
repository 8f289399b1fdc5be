package plugin

// Review of issue 11 (adversarial, SRE view): each test reproduces a
// suspected defect of unplaced_nodes. They are expected to FAIL on the
// code under review; see the review report for the argument.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"
)

// review11Sample takes one unplaced_nodes sample of query text with c. The
// collector must be the same across a test's samples, as the plugin's is
// (one per SetConfig): what the figure remembers between samples (the
// stall guard, warnings given) lives in it.
func review11Sample(t *testing.T, c *collector, text string) (float64, string) {
	t.Helper()
	q, err := parseQuery(text)
	require.NoError(t, err)
	log, logs := testLogger(t)
	o := c.collect(context.Background(), q, log)
	require.NoError(t, o.err)
	require.Empty(t, o.empty)
	return o.sample.value, logs.String()
}

// A job pinned to one existing node (node.unique.name) that is full: "at
// least one pool node satisfies the constraints" is true, so the query asks
// for a node; the new node can never satisfy the constraint, the allocation
// keeps waiting, and every sample asks for one more node. With the sample
// policy (no max_scale_up, max 20) the pool walks to max and stays there:
// the unplaced up (capped to max) beats every CPU scale-in.
func TestReview11PinnedToAFullNodeGrowsThePoolForever(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	j := f.addJob("default", "pinned", 2, 1, 600, 64)
	j.Constraints = []*api.Constraint{{LTarget: "${node.unique.name}", RTarget: "node-a", Operand: "="}}

	var values []float64
	for i, id := range []string{"b", "c", "d", "e"} {
		v, _ := review11Sample(t, c, "unplaced_nodes")
		values = append(values, v)
		// The strategy adds v nodes; a new empty node joins, cannot take
		// the pinned allocation, which keeps waiting.
		f.addNode(id, "spot", 1000, clock.now().Add(-time.Hour))
		f.evals[0].FailedTGAllocs["web"].NodesEvaluated = i + 2
		f.evals[0].FailedTGAllocs["web"].NodesFiltered = i + 1
		f.evals[0].FailedTGAllocs["web"].ConstraintFiltered = map[string]int{"${node.unique.name} = node-a": i + 1}
		clock.advance(10 * time.Second)
	}
	require.Contains(t, values, 0.0,
		"work that only an existing node can take must stop asking for new nodes once new ones did not help; values per sample while empty nodes were added: %v", values)
}

// Nomad filtered every pool node for a reason the query does not check
// (a driver the nodes lack, a device they do not have): the blocked
// evaluation says so (NodesExhausted 0, every evaluated node filtered), but
// the query ignores FailedTGAllocs' metrics and asks for nodes; the nodes
// added are identical, so the ask never ends.
func TestReview11WorkNomadFilteredFromEveryNodeIsCounted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		adjust func(task *api.Task)
		reason string
	}{
		{"driver the nodes lack", func(task *api.Task) { task.Driver = "docker" }, "missing drivers"},
		{"device the nodes lack", func(task *api.Task) {
			task.Resources.Devices = []*api.RequestedDevice{{Name: "nvidia/gpu", Count: pointer(uint64(1))}}
		}, "missing devices"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, clock := newFakeNomad(), newFakeClock()
			c := newTestCollector(f, clock, time.Minute)
			for _, id := range []string{"a", "b"} {
				f.addNode(id, "spot", 1000, clock.now().Add(-time.Hour))
				f.info[id].Attributes = map[string]string{"driver.raw_exec": "1", "kernel.name": "linux"}
			}
			j := f.addJob("default", "misfit", 3, 3, 100, 64)
			tc.adjust(j.TaskGroups[0].Tasks[0])
			// What Nomad records for such an evaluation: every node
			// evaluated was filtered, none was exhausted.
			f.evals[0].FailedTGAllocs["web"] = &api.AllocationMetric{NodesEvaluated: 2, NodesFiltered: 2,
				ConstraintFiltered: map[string]int{tc.reason: 2}, CoalescedFailures: 2}

			v, _ := review11Sample(t, c, "unplaced_nodes")
			require.Equal(t, 0.0, v, "Nomad filtered every node (%s, NodesExhausted=0): new nodes of this pool cannot place it", tc.reason)
		})
	}
}

// A pool of mixed sizes: an ask within the largest node but above the
// smallest "takes a node of its own". If the fleet launches small nodes (the
// query assumes new nodes are the smallest), the ask is never placed and
// every sample asks for one more node, until max.
func TestReview11MidSizeAskOnAMixedPoolKeepsAskingWhileSmallNodesArrive(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	f.addNode("big", "spot", 2000, clock.now().Add(-time.Hour)) // busy: the scheduler found no room
	f.addJob("default", "mid", 2, 1, 1500, 64)
	var values []float64
	for _, id := range []string{"b", "c", "d"} {
		v, _ := review11Sample(t, c, "unplaced_nodes")
		values = append(values, v)
		f.addNode(id, "spot", 1000, clock.now().Add(-time.Hour)) // what the fleet launched
		clock.advance(10 * time.Second)
	}
	require.Contains(t, values, 0.0,
		"a 1500 MHz ask cannot fit a new node of the assumed (smallest, 1000 MHz) size; it asked for a node at every sample: %v", values)
}

// An ask larger than every pool node is left out with a warning, as the
// contract says; but the warning is repeated at every sample
// (sample_interval, 10 s by default): 8640 lines a day per task group.
func TestReview11OversizedAskWarnsOnceNotEverySample(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	f.addJob("default", "huge", 1, 1, 5000, 64)
	q, err := parseQuery("unplaced_nodes")
	require.NoError(t, err)
	log, logs := testLogger(t)
	for range 3 {
		o := c.collect(context.Background(), q, log)
		require.NoError(t, o.err)
		require.Equal(t, 0.0, o.sample.value)
		clock.advance(10 * time.Second)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "asks more than any pool node offers"),
		"the same unplaceable task group should be warned about once (or on change), not at every sample")
}

// Two pools (two Spot Fleets, node classes spot-a and spot-b, one policy
// each) and a job that may run on either: each pool's query counts all of
// its waiting work, so both policies would scale out by the full amount.
// The queries cannot share the work out (each sees one pool, and which
// pool Nomad places on is the scheduler's choice), so docs/apm-node.md and
// docs/unplaced.md require a pool-exclusive constraint (node_class or
// node_pool) on the jobs of a pool when several pools are scaled on
// unplaced work. The reviewer's expectation (va+vb <= 3 for an
// unconstrained job) is not met by design; this test pins both halves: the
// documented double count, and the constrained job counted by its pool
// only.
func TestReview11WorkTwoPoolsCanRunIsCountedByBoth(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot-a", 1000, clock.now().Add(-time.Hour))
	f.addNode("b", "spot-b", 1000, clock.now().Add(-time.Hour))
	j := f.addJob("default", "anywhere", 4, 3, 600, 64)
	va, _ := review11Sample(t, c, "unplaced_nodes node_class=spot-a")
	vb, _ := review11Sample(t, c, "unplaced_nodes node_class=spot-b")
	require.Equal(t, []float64{3, 3}, []float64{va, vb}, "documented limit: work both pools can run is counted by each")

	j.Constraints = []*api.Constraint{{LTarget: "${node.class}", RTarget: "spot-a", Operand: "="}}
	va, _ = review11Sample(t, c, "unplaced_nodes node_class=spot-a")
	vb, _ = review11Sample(t, c, "unplaced_nodes node_class=spot-b")
	require.LessOrEqual(t, va+vb, 3.0,
		"3 allocations of 600 MHz need 3 nodes in all; pool spot-a asks %v and pool spot-b asks %v", va, vb)
	require.Equal(t, 3.0, va, "the pool the job is constrained to counts it")
}

// One task group with a large queue (a batch job dispatched or scaled to
// tens of thousands of allocations, which Nomad accepts): the packing
// expands every queued allocation into its own ask and first-fit scans all
// the bins opened so far for each one, O(queued × nodes), with no context
// check. The sample that should take milliseconds takes seconds, far past
// sample_interval, and grows quadratically with the queue.
func TestReview11ALargeQueueStallsTheSample(t *testing.T) {
	f, clock := newFakeNomad(), newFakeClock()
	c := newTestCollector(f, clock, time.Minute)
	f.addNode("a", "spot", 1000, clock.now().Add(-time.Hour))
	f.addJob("default", "fanout", 150000, 150000, 100, 64) // ten per node: 15000 nodes
	start := time.Now()
	v, _ := review11Sample(t, c, "unplaced_nodes")
	took := time.Since(start)
	require.Equal(t, 15000.0, v)
	require.Less(t, took, time.Second, "one sample of one job with 150000 queued allocations took %s", took)
}
