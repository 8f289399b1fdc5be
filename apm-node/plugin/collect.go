package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"
)

// maxListedNodes caps the nodes named in one log line; the count is always
// given in full.
const maxListedNodes = 10

// sample is one reading of a query: the aggregate of the counted nodes'
// figures at one time.
type sample struct {
	at    time.Time
	value float64
	nodes int // nodes whose figure went into value
}

// outcome is the result of one sampling attempt. Exactly one of its three
// shapes holds: a sample, an empty pool (empty says why), or an error.
type outcome struct {
	sample sample
	empty  string
	err    error
}

// collector takes one sample of a query from Nomad.
type collector struct {
	api    nomadAPI
	nodes  *nodeReader   // full node reads: admission gate and warm-up start
	warmup time.Duration // 0: no warm-up
	// countWarmup is how long target-spotfleet leaves an admitted node out
	// of its count (its node_warmup: warmup + sample_interval, 0 without a
	// warm-up); the unplaced figure adds such nodes back.
	countWarmup time.Duration
	// unplaced: what unplaced_nodes remembers between samples (warnings
	// given, the stall guard, jobs read).
	unplaced unplacedMemory
	run      runner
	now      func() time.Time
}

// collect takes one sample: it lists the pool, leaves out the nodes that do
// not count (logging which and why), reads the counted nodes' figures and
// aggregates them. A node counts when it is ready, eligible and not
// draining (from the node list), admitted by its admission gate (from its
// meta) and past its warm-up.
func (c *collector) collect(ctx context.Context, q query, log hclog.Logger) outcome {
	if q.metric == metricUnplacedNodes {
		return c.collectUnplaced(ctx, q, log)
	}
	start := c.now()

	nodes, err := c.api.Nodes(ctx)
	if err != nil {
		return outcome{err: err}
	}

	var pool, candidates []*api.NodeListStub
	var excluded []exclusion
	for _, n := range nodes {
		if !q.inPool(n) {
			continue
		}
		pool = append(pool, n)
		if reason := schedulingExclusion(n); reason != "" {
			excluded = append(excluded, exclusion{node: n, reason: reason})
			continue
		}
		candidates = append(candidates, n)
	}
	if len(pool) == 0 {
		return outcome{empty: fmt.Sprintf("no Nomad node matches the pool (%d nodes in the cluster)", len(nodes))}
	}

	facts, errs := c.nodes.read(ctx, candidates, c.run)
	now := c.now()
	counted := candidates[:0:0]
	var unread []exclusion
	for i, n := range candidates {
		var reason string
		switch {
		case errs[i] != nil:
			reason = fmt.Sprintf("admission gate and warm-up start unknown: %v", errs[i])
			unread = append(unread, exclusion{node: n, reason: reason})
		case facts[i].gateReason != "":
			reason = facts[i].gateReason
		case c.warmup > 0:
			reason = facts[i].warmingUp(now, c.warmup)
		}
		if reason != "" {
			excluded = append(excluded, exclusion{node: n, reason: reason})
			continue
		}
		counted = append(counted, n)
	}
	if len(excluded) > 0 {
		log.Debug("nodes left out of the sample", "count", len(excluded), "nodes", listExclusions(excluded))
	}
	if len(counted) == 0 && len(unread) > 0 {
		// Whether the pool has capacity is unknown, not none.
		return outcome{err: fmt.Errorf("none of the %d pool nodes counts and %d could not be read, for example %s",
			len(pool), len(unread), unread[0])}
	}
	if len(counted) == 0 {
		return outcome{empty: fmt.Sprintf("none of the %d pool nodes counts (not ready, ineligible, draining, waiting for launch hooks or warming up)", len(pool))}
	}

	figures, failed, err := c.read(ctx, q, counted)
	if err != nil {
		return outcome{err: err}
	}
	if len(failed) > 0 {
		log.Warn("skipped nodes whose stats could not be read", "count", len(failed), "nodes", listExclusions(failed))
	}
	if len(figures) == 0 {
		return outcome{err: fmt.Errorf("none of the %d counted nodes could be read, for example %s",
			len(counted), failed[0])}
	}

	value := aggregate(figures, q.aggregate)
	log.Debug("sampled", "value", value, "counted_nodes", len(figures),
		"left_out", len(excluded), "unreadable", len(failed), "took", c.now().Sub(start))
	return outcome{sample: sample{at: start, value: value, nodes: len(figures)}}
}

// read returns the figure of each counted node that could be read and the
// nodes that could not. An error means no node could be read at all.
func (c *collector) read(ctx context.Context, q query, nodes []*api.NodeListStub) ([]float64, []exclusion, error) {
	if q.usesHostStats() {
		return c.readHostStats(ctx, q, nodes)
	}
	return c.readAllocations(ctx, q, nodes)
}

// readHostStats reads each node's host stats: one call per node.
func (c *collector) readHostStats(ctx context.Context, q query, nodes []*api.NodeListStub) ([]float64, []exclusion, error) {
	figures := make([]float64, len(nodes))
	errs := make([]error, len(nodes))
	c.run(ctx, len(nodes), func(ctx context.Context, i int) {
		stats, err := c.api.HostStats(ctx, nodes[i].ID)
		if err != nil {
			errs[i] = err
			return
		}
		if q.metric == metricHostCPU {
			figures[i], errs[i] = hostCPUPercent(stats)
		} else {
			figures[i], errs[i] = hostMemoryPercent(stats)
		}
	})
	read, failed := split(nodes, figures, errs)
	return read, failed, nil
}

// readAllocations works out each node's share from its allocations: one list
// call for the cluster, plus, for workload metrics, one stats call per
// running allocation on a counted node.
func (c *collector) readAllocations(ctx context.Context, q query, nodes []*api.NodeListStub) ([]float64, []exclusion, error) {
	allocs, err := c.api.Allocations(ctx)
	if err != nil {
		return nil, nil, err
	}

	index := make(map[string]int, len(nodes))
	for i, n := range nodes {
		index[n.ID] = i
	}
	workload := q.metric == metricWorkloadCPU || q.metric == metricWorkloadMemory
	cpu := q.metric == metricWorkloadCPU || q.metric == metricAllocatedCPU

	used := make([]float64, len(nodes))
	type statsCall struct {
		node    int
		allocID string
	}
	var calls []statsCall
	for _, a := range allocs {
		i, ok := index[a.NodeID]
		if !ok || a.DesiredStatus != api.AllocDesiredStatusRun {
			continue
		}
		switch {
		case workload && a.ClientStatus == api.AllocClientStatusRunning:
			calls = append(calls, statsCall{node: i, allocID: a.ID})
		case !workload && (a.ClientStatus == api.AllocClientStatusRunning || a.ClientStatus == api.AllocClientStatusPending):
			if cpu {
				used[i] += allocatedCPU(a)
			} else {
				used[i] += allocatedMemoryMB(a)
			}
		}
	}

	errs := make([]error, len(nodes))
	if len(calls) > 0 {
		callUsed := make([]float64, len(calls))
		callErrs := make([]error, len(calls))
		c.run(ctx, len(calls), func(ctx context.Context, j int) {
			stats, err := c.api.AllocStats(ctx, calls[j].allocID)
			switch {
			case errors.Is(err, errAllocGone):
				// Stopped since the list: it uses nothing now.
			case err != nil:
				callErrs[j] = err
			case cpu:
				callUsed[j], callErrs[j] = usedCPU(stats)
			default:
				callUsed[j], callErrs[j] = usedMemoryMB(stats)
			}
		})
		for j, call := range calls {
			if callErrs[j] != nil {
				// One unreadable allocation makes the node's sum wrong.
				if errs[call.node] == nil {
					errs[call.node] = fmt.Errorf("allocation %s: %w", shortID(call.allocID), callErrs[j])
				}
				continue
			}
			used[call.node] += callUsed[j]
		}
	}

	figures := make([]float64, len(nodes))
	for i, n := range nodes {
		if errs[i] != nil {
			continue
		}
		var capacity float64
		if cpu {
			capacity, errs[i] = schedulableCPU(n)
		} else {
			capacity, errs[i] = schedulableMemoryMB(n)
		}
		if errs[i] == nil {
			figures[i] = 100 * used[i] / capacity
		}
	}
	read, failed := split(nodes, figures, errs)
	return read, failed, nil
}

// split separates the nodes read from those that failed.
func split(nodes []*api.NodeListStub, figures []float64, errs []error) ([]float64, []exclusion) {
	read := make([]float64, 0, len(nodes))
	var failed []exclusion
	for i, n := range nodes {
		if errs[i] != nil {
			failed = append(failed, exclusion{node: n, reason: errs[i].Error()})
			continue
		}
		read = append(read, figures[i])
	}
	return read, failed
}

// listExclusions formats up to maxListedNodes exclusions for one log line.
func listExclusions(ex []exclusion) string {
	parts := make([]string, 0, min(len(ex), maxListedNodes)+1)
	for i, e := range ex {
		if i == maxListedNodes {
			parts = append(parts, fmt.Sprintf("and %d more", len(ex)-maxListedNodes))
			break
		}
		parts = append(parts, e.String())
	}
	return strings.Join(parts, "; ")
}
