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

	// Slope is the least-squares rise of the CPU, in percentage points per
	// second, over the datapoints within the trend window of the newest;
	// SlopePoints of them. 0 with fewer than two points or no time between.
	Slope       float64
	SlopePoints int

	// RecentSlope is the same fit over the recent part only (the
	// datapoints of RecentMean): whether the CPU is still rising now, not
	// only over the longer trend window.
	RecentSlope float64

	// Rise is the largest rise, in percentage points, of the CPU's rolling
	// scale-out-window mean from a datapoint to a later one at most the
	// rise window apart, over the whole window (0 when it never rose, or
	// the rise window is 0); RiseAt is the datapoint where it ended.
	Rise   float64
	RiseAt time.Time

	// OlderInvalid is set when a datapoint older than the recent part is
	// missing a usable value: the peak is then not trustworthy, so no
	// scale-in, while a clean recent part may still scale out.
	OlderInvalid string
}

// summarise checks the datapoints and reduces them to a window. A non-empty
// problem means the data cannot support any action; it says why.
func summarise(ms sdk.TimestampedMetrics, scaleOutWindow, trendWindow, riseWindow, maxAge time.Duration, now time.Time) (w window, problem string) {
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
	w.Slope, w.SlopePoints = slope(ms, newest.Timestamp.Add(-trendWindow))
	w.RecentSlope, _ = slope(ms, recentFrom)
	w.Rise, w.RiseAt = largestRise(ms, scaleOutWindow, riseWindow)
	return w, ""
}

// largestRise returns the largest rise of the CPU's rolling mean over
// smooth (the scale_out_window mean, the level the scale-out decision reads)
// from one datapoint to a later one at most within apart, and the datapoint
// where it ended. ms is sorted by time; unusable values are skipped.
//
// The rise is measured on the rolling mean, not on the samples, because the
// scale-in adds it to the window's peak, which already holds the upward half
// of the sampling noise: a raw sample-to-sample rise would count that noise a
// second time, and a steady noisy pool would never scale in. A load that
// steps up and stays for smooth moves the rolling mean by the whole step, so
// a real burst keeps its full headroom; a rise shorter than smooth counts in
// proportion to how long it lasted. A rolling mean counts only once the data
// covers its whole window, so that the first, partial means (a single
// sample, then two) do not pass noise for a rise.
func largestRise(ms sdk.TimestampedMetrics, smooth, within time.Duration) (float64, time.Time) {
	var best float64
	var at time.Time
	if within <= 0 || len(ms) == 0 {
		return 0, at
	}
	type level struct {
		t    time.Time
		mean float64
	}
	levels := make([]level, 0, len(ms))
	oldest := ms[0].Timestamp
	sum, n, lo := 0.0, 0, 0
	for j, m := range ms {
		if !usableCPU(m.Value) {
			continue
		}
		sum += m.Value
		n++
		// Drop the samples at or before m.Timestamp - smooth, as
		// summarise does for the recent mean.
		for ; lo <= j && !ms[lo].Timestamp.After(m.Timestamp.Add(-smooth)); lo++ {
			if usableCPU(ms[lo].Value) {
				sum -= ms[lo].Value
				n--
			}
		}
		if n == 0 || m.Timestamp.Sub(oldest) < smooth {
			continue
		}
		levels = append(levels, level{m.Timestamp, sum / float64(n)})
	}
	for j, l := range levels {
		for i := j - 1; i >= 0 && l.t.Sub(levels[i].t) <= within; i-- {
			if r := l.mean - levels[i].mean; r > best {
				best, at = r, l.t
			}
		}
	}
	return best, at
}

// slope fits a least-squares line to the usable datapoints after from and
// returns its slope in units per second and the points it used.
func slope(ms sdk.TimestampedMetrics, from time.Time) (float64, int) {
	var n, sx, sy, sxx, sxy float64
	var t0 time.Time
	for _, m := range ms {
		if !m.Timestamp.After(from) || !usableCPU(m.Value) {
			continue
		}
		if n == 0 {
			t0 = m.Timestamp
		}
		x := m.Timestamp.Sub(t0).Seconds()
		n++
		sx += x
		sy += m.Value
		sxx += x * x
		sxy += x * m.Value
	}
	den := n*sxx - sx*sx
	if n < 2 || den <= 0 {
		return 0, int(n)
	}
	return (n*sxy - sx*sy) / den, int(n)
}

// newestNodes checks the datapoints of an unplaced_nodes check and returns
// the newest value. A non-empty problem says why there is none to act on.
func newestNodes(ms sdk.TimestampedMetrics, maxAge time.Duration, now time.Time) (float64, time.Time, string) {
	if len(ms) == 0 {
		return 0, time.Time{}, "no datapoints in the query window (metrics missing)"
	}
	newest := ms[0]
	for _, m := range ms[1:] {
		if m.Timestamp.After(newest.Timestamp) {
			newest = m
		}
	}
	at := newest.Timestamp.UTC().Format(time.RFC3339)
	if age := now.Sub(newest.Timestamp); age > maxAge {
		return 0, newest.Timestamp, fmt.Sprintf("newest datapoint is %s old, older than %s=%s (metrics stale)",
			age.Round(time.Second), configKeyMaxDataAge, maxAge)
	}
	if !usableCPU(newest.Value) {
		return 0, newest.Timestamp, fmt.Sprintf("datapoint at %s is %v, not a number of nodes (metrics invalid)", at, newest.Value)
	}
	return newest.Value, newest.Timestamp, ""
}

// usableCPU reports whether v can be a CPU percentage: finite and not
// negative. Values above 100 are kept (some sources report over-commit).
func usableCPU(v float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0
}
