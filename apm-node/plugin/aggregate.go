package plugin

import (
	"math"
	"slices"
)

// aggregate reduces the per-node figures of one sample to the value the
// strategy sees. values must not be empty.
func aggregate(values []float64, agg aggregation) float64 {
	switch agg.kind {
	case "max":
		return slices.Max(values)
	case "percentile":
		return percentile(values, agg.percentile)
	default:
		var sum float64
		for _, v := range values {
			sum += v
		}
		return sum / float64(len(values))
	}
}

// percentile returns the nearest-rank percentile: the smallest figure such
// that at least p% of the figures are at or below it. It always returns one
// of the nodes' own figures, never an interpolated one.
func percentile(values []float64, p float64) float64 {
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}
