package plugin

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestAggregate(t *testing.T) {
	values := []float64{90, 10, 40, 20, 30, 50, 60, 70, 80, 100}
	cases := []struct {
		name   string
		values []float64
		agg    aggregation
		want   float64
	}{
		{name: "mean", values: values, agg: aggregation{kind: "mean"}, want: 55},
		{name: "max", values: values, agg: aggregation{kind: "max"}, want: 100},
		{name: "p50 is a node's own figure", values: values, agg: aggregation{kind: "percentile", percentile: 50}, want: 50},
		{name: "p90", values: values, agg: aggregation{kind: "percentile", percentile: 90}, want: 90},
		{name: "p91 rounds the rank up", values: values, agg: aggregation{kind: "percentile", percentile: 91}, want: 100},
		{name: "p100 is the max", values: values, agg: aggregation{kind: "percentile", percentile: 100}, want: 100},
		{name: "tiny percentile is the min", values: values, agg: aggregation{kind: "percentile", percentile: 0.1}, want: 10},
		{name: "one node", values: []float64{42}, agg: aggregation{kind: "percentile", percentile: 99}, want: 42},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]float64(nil), tc.values...)
			assert.InDelta(t, tc.want, aggregate(tc.values, tc.agg), 1e-9)
			assert.Equal(t, before, tc.values, "aggregate must not reorder the caller's slice")
		})
	}
}
