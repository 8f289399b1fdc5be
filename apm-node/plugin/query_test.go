package plugin

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseQueryAcceptsEachForm(t *testing.T) {
	cases := []struct {
		name      string
		text      string
		canonical string
	}{
		{
			name:      "unplaced nodes of a pool carry no aggregate",
			text:      "unplaced_nodes  node_pool=spot node_class=spot",
			canonical: "unplaced_nodes node_class=spot node_pool=spot",
		},
		{
			name:      "metric alone means every node and the mean",
			text:      "workload_cpu",
			canonical: "workload_cpu aggregate=mean",
		},
		{
			name:      "class filter",
			text:      "host_cpu node_class=spot-worker",
			canonical: "host_cpu node_class=spot-worker aggregate=mean",
		},
		{
			name:      "all filters in any order with extra spaces",
			text:      "  allocated_cpu   node_pool=spot datacenter=dc2,dc1  node_class=web ",
			canonical: "allocated_cpu node_class=web datacenter=dc1,dc2 node_pool=spot aggregate=mean",
		},
		{
			name:      "max",
			text:      "workload_memory node_class=a aggregate=max",
			canonical: "workload_memory node_class=a aggregate=max",
		},
		{
			name:      "whole percentile",
			text:      "host_memory aggregate=p90",
			canonical: "host_memory aggregate=p90",
		},
		{
			name:      "fractional percentile",
			text:      "allocated_memory aggregate=p99.9",
			canonical: "allocated_memory aggregate=p99.9",
		},
		{
			name:      "duplicate values collapse",
			text:      "workload_cpu datacenter=dc1,dc1",
			canonical: "workload_cpu datacenter=dc1 aggregate=mean",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q, err := parseQuery(tc.text)
			require.NoError(t, err)
			assert.Equal(t, tc.canonical, q.String())

			again, err := parseQuery(q.String())
			require.NoError(t, err, "the canonical form must parse")
			assert.Equal(t, q, again)
		})
	}
}

func TestParseQueryErrorsNameTheWrongPart(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []string // substrings the error must contain
	}{
		{name: "empty", text: "  ", want: []string{"empty", "host_cpu", "query form"}},
		{name: "stock nomad-apm syntax", text: "node_percentage-allocated_cpu/spot/class",
			want: []string{`unknown metric "node_percentage-allocated_cpu/spot/class"`, "workload_cpu", "query form"}},
		{name: "unknown metric", text: "cpu node_class=a", want: []string{`unknown metric "cpu"`, "host_cpu, workload_cpu"}},
		{name: "bare word", text: "workload_cpu spot", want: []string{`"spot" is not a key=value pair`, "node_class, datacenter, node_pool, aggregate"}},
		{name: "unknown key", text: "workload_cpu class=spot", want: []string{`unknown key "class"`, "node_class"}},
		{name: "repeated key", text: "workload_cpu node_class=a node_class=b", want: []string{`key "node_class" is given more than once`}},
		{name: "empty value", text: "workload_cpu node_class=", want: []string{`node_class="" has an empty value`}},
		{name: "empty list member", text: "workload_cpu datacenter=dc1,", want: []string{`datacenter="dc1," has an empty value`}},
		{name: "unknown aggregate", text: "workload_cpu aggregate=avg", want: []string{`aggregate="avg" is not accepted`, "mean, max or p<N>"}},
		{name: "percentile zero", text: "workload_cpu aggregate=p0", want: []string{`aggregate="p0"`}},
		{name: "percentile above 100", text: "workload_cpu aggregate=p101", want: []string{`aggregate="p101"`}},
		{name: "percentile not a number", text: "workload_cpu aggregate=pX", want: []string{`aggregate="pX"`}},
		{name: "aggregate of unplaced nodes", text: "unplaced_nodes node_class=spot aggregate=max",
			want: []string{`aggregate="max" does not apply to unplaced_nodes`, "one figure for the whole pool", "leave aggregate out"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseQuery(tc.text)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}
