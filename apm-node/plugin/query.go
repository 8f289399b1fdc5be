package plugin

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Metric names accepted as the first word of a query.
const (
	metricHostCPU         = "host_cpu"
	metricHostMemory      = "host_memory"
	metricWorkloadCPU     = "workload_cpu"
	metricWorkloadMemory  = "workload_memory"
	metricAllocatedCPU    = "allocated_cpu"
	metricAllocatedMemory = "allocated_memory"
	// metricUnplacedNodes is the number of empty pool nodes the allocations
	// waiting unplaced need (see unplaced.go): one figure for the pool, so
	// it takes no aggregate=.
	metricUnplacedNodes = "unplaced_nodes"
)

// Query keys that follow the metric as key=value words.
const (
	queryKeyNodeClass  = "node_class"
	queryKeyDatacenter = "datacenter"
	queryKeyNodePool   = "node_pool"
	queryKeyAggregate  = "aggregate"
)

// queryForm is quoted in every parse error so the operator sees the whole
// grammar next to what was wrong.
const queryForm = `"<metric> [node_class=<class>[,<class>...]] [datacenter=<dc>[,<dc>...]] ` +
	`[node_pool=<pool>[,<pool>...]] [aggregate=mean|max|p<1-100>]" (no aggregate= for unplaced_nodes)`

var (
	acceptedMetrics = []string{
		metricHostCPU, metricWorkloadCPU, metricAllocatedCPU,
		metricHostMemory, metricWorkloadMemory, metricAllocatedMemory,
		metricUnplacedNodes,
	}
	acceptedKeys = []string{queryKeyNodeClass, queryKeyDatacenter, queryKeyNodePool, queryKeyAggregate}
)

// aggregation says how the per-node figures of one sample become one value.
type aggregation struct {
	kind       string  // "mean", "max" or "percentile"
	percentile float64 // 0 < p <= 100, only for kind "percentile"
}

// String returns the aggregation as it is written in a query.
func (a aggregation) String() string {
	if a.kind == "percentile" {
		return "p" + strconv.FormatFloat(a.percentile, 'f', -1, 64)
	}
	return a.kind
}

// query is a parsed apm-node query: one metric over the nodes of one pool.
type query struct {
	metric      string
	classes     []string
	datacenters []string
	pools       []string
	aggregate   aggregation
}

// usesHostStats reports whether the metric is read from each client's host
// stats (as opposed to the allocations on the node).
func (q query) usesHostStats() bool {
	return q.metric == metricHostCPU || q.metric == metricHostMemory
}

// String returns the canonical form of the query: the same pool and metric
// always give the same text, whatever order the operator wrote the keys in.
// Samplers are keyed by it.
func (q query) String() string {
	var b strings.Builder
	b.WriteString(q.metric)
	for _, kv := range []struct {
		key    string
		values []string
	}{
		{queryKeyNodeClass, q.classes},
		{queryKeyDatacenter, q.datacenters},
		{queryKeyNodePool, q.pools},
	} {
		if len(kv.values) > 0 {
			fmt.Fprintf(&b, " %s=%s", kv.key, strings.Join(kv.values, ","))
		}
	}
	if q.metric != metricUnplacedNodes {
		fmt.Fprintf(&b, " %s=%s", queryKeyAggregate, q.aggregate)
	}
	return b.String()
}

// parseQuery parses the query text of a scaling policy check. Every error
// names the part that is wrong and lists the accepted forms.
func parseQuery(text string) (query, error) {
	fields := strings.Fields(text)
	if len(fields) == 0 {
		return query{}, queryError(text, "the query is empty; it must start with a metric (%s)",
			strings.Join(acceptedMetrics, ", "))
	}

	q := query{metric: fields[0], aggregate: aggregation{kind: "mean"}}
	if !slices.Contains(acceptedMetrics, q.metric) {
		return query{}, queryError(text, "unknown metric %q; accepted metrics: %s",
			q.metric, strings.Join(acceptedMetrics, ", "))
	}

	seen := make(map[string]bool, len(fields))
	for _, field := range fields[1:] {
		key, value, ok := strings.Cut(field, "=")
		if !ok {
			return query{}, queryError(text, "%q is not a key=value pair; accepted keys: %s",
				field, strings.Join(acceptedKeys, ", "))
		}
		if !slices.Contains(acceptedKeys, key) {
			return query{}, queryError(text, "unknown key %q; accepted keys: %s",
				key, strings.Join(acceptedKeys, ", "))
		}
		if seen[key] {
			return query{}, queryError(text, "key %q is given more than once", key)
		}
		seen[key] = true

		if key == queryKeyAggregate && q.metric == metricUnplacedNodes {
			return query{}, queryError(text, "aggregate=%q does not apply to %s: it is one figure for the whole pool, "+
				"not a figure per node; leave aggregate out", value, metricUnplacedNodes)
		}
		if key == queryKeyAggregate {
			agg, err := parseAggregation(value)
			if err != nil {
				return query{}, queryError(text, "%s", err)
			}
			q.aggregate = agg
			continue
		}

		values, err := splitValues(key, value)
		if err != nil {
			return query{}, queryError(text, "%s", err)
		}
		switch key {
		case queryKeyNodeClass:
			q.classes = values
		case queryKeyDatacenter:
			q.datacenters = values
		case queryKeyNodePool:
			q.pools = values
		}
	}
	return q, nil
}

// splitValues splits a comma-separated filter value; empty members are
// refused because they usually hide a typo.
func splitValues(key, value string) ([]string, error) {
	values := strings.Split(value, ",")
	for _, v := range values {
		if v == "" {
			return nil, fmt.Errorf("%s=%q has an empty value; write %s=<name> or %s=<a>,<b>",
				key, value, key, key)
		}
	}
	slices.Sort(values)
	return slices.Compact(values), nil
}

// parseAggregation parses the value of aggregate=.
func parseAggregation(value string) (aggregation, error) {
	switch value {
	case "mean", "max":
		return aggregation{kind: value}, nil
	}
	if rest, ok := strings.CutPrefix(value, "p"); ok {
		p, err := strconv.ParseFloat(rest, 64)
		if err == nil && p > 0 && p <= 100 {
			return aggregation{kind: "percentile", percentile: p}, nil
		}
	}
	return aggregation{}, fmt.Errorf("aggregate=%q is not accepted; use mean, max or p<N> with 0 < N <= 100 (p50, p90, p99.9)", value)
}

func queryError(text, format string, args ...any) error {
	return fmt.Errorf("invalid apm-node query %q: %s; query form: %s",
		text, fmt.Sprintf(format, args...), queryForm)
}
