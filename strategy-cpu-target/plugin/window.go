package plugin

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// window is what the decision needs to know about the datapoints of one
// query window: the recent mean drives scale-out, the peak of the whole
// window bounds scale-in.
type window struct {
	Points int           // datapoints in the window
	Newest time.Time     // timestamp of the newest datapoint
	Span   time.Duration // newest minus oldest timestamp

	RecentMean   float64 // mean CPU of the datapoints within ScaleOutWindow of the newest
	RecentPoints int

	Peak   float64 // highest CPU in the window
	PeakAt time.Time

	// OlderInvalid is set when a datapoint older than the recent part is
	// missing a usable value: the peak is then not trustworthy, so no
	// scale-in, while a clean recent part may still scale out.
	OlderInvalid string
}

// summarise checks the datapoints and reduces them to a window. A non-empty
// problem means the data cannot support any action; it says why.
func summarise(ms sdk.TimestampedMetrics, scaleOutWindow, maxAge time.Duration, now time.Time) (w window, problem string) {
	if len(ms) == 0 {
		return w, "no datapoints in the query window (metrics missing)"
	}
	if !sort.IsSorted(ms) {
		sorted := make(sdk.TimestampedMetrics, len(ms))
		copy(sorted, ms)
		sort.Stable(sorted)
		ms = sorted
	}

	newest := ms[len(ms)-1]
	w.Points = len(ms)
	w.Newest = newest.Timestamp
	w.Span = newest.Timestamp.Sub(ms[0].Timestamp)

	if age := now.Sub(newest.Timestamp); age > maxAge {
		return w, fmt.Sprintf("newest datapoint is %s old, older than %s=%s (metrics stale)",
			age.Round(time.Second), configKeyMaxDataAge, maxAge)
	}

	recentFrom := newest.Timestamp.Add(-scaleOutWindow)
	sum := 0.0
	w.Peak = math.Inf(-1)
	for _, m := range ms {
		recent := m.Timestamp.After(recentFrom)
		if !usableCPU(m.Value) {
			if recent {
				return w, fmt.Sprintf("datapoint at %s is %v, not a CPU percentage (metrics invalid)",
					m.Timestamp.UTC().Format(time.RFC3339), m.Value)
			}
			if w.OlderInvalid == "" {
				w.OlderInvalid = fmt.Sprintf("datapoint at %s is %v", m.Timestamp.UTC().Format(time.RFC3339), m.Value)
			}
			continue
		}
		if m.Value > w.Peak {
			w.Peak, w.PeakAt = m.Value, m.Timestamp
		}
		if recent {
			sum += m.Value
			w.RecentPoints++
		}
	}
	w.RecentMean = sum / float64(w.RecentPoints)
	return w, ""
}

// usableCPU reports whether v can be a CPU percentage: finite and not
// negative. Values above 100 are kept (some sources report over-commit).
func usableCPU(v float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0
}
