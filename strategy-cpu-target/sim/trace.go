// Package sim replays a demand trace through a modelled Spot Fleet of Nomad
// clients under several scaling policies (this project's strategy, the stock
// target-value strategy, an AWS target-tracking model and a clairvoyant
// oracle) and measures overload, cost and churn for each.
package sim

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Trace is a demand series at a fixed step, in the trace's own units.
type Trace struct {
	Name   string
	Source string // file it was read from, and how
	Step   time.Duration
	Values []float64
}

// CSVOptions says how to read a CSV file into a Trace.
type CSVOptions struct {
	// Column is the header name of the value column; empty means the last column.
	Column string
	// Step is the bucket length of rows without a timestamp; timestamped rows
	// are resampled to their median spacing when Step is zero.
	Step time.Duration
	// From and To, when set, keep only timestamped rows in [From, To].
	From, To time.Time
}

var timeLayouts = []string{"2006-01-02 15:04:05", time.RFC3339, "2006-01-02T15:04:05", "2006-01-02 15:04"}

func parseTime(s string) (time.Time, bool) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// LoadCSV reads a trace. It accepts ',' or ';' separated files, with or
// without a header, with or without a timestamp in the first column
// ("2006-01-02 15:04:05" or RFC 3339). Timestamped rows are sorted,
// de-duplicated (first wins) and gaps are filled by linear interpolation.
func LoadCSV(name, path string, opts CSVOptions) (Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return Trace{}, fmt.Errorf("opening trace %s: %w", path, err)
	}
	defer f.Close()

	var rows [][]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	sep := ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if sep == "" {
			sep = ","
			if strings.Contains(line, ";") && !strings.Contains(line, ",") {
				sep = ";"
			}
		}
		rows = append(rows, strings.Split(line, sep))
	}
	if err := sc.Err(); err != nil {
		return Trace{}, fmt.Errorf("reading trace %s: %w", path, err)
	}
	if len(rows) == 0 {
		return Trace{}, fmt.Errorf("trace %s has no rows", path)
	}

	col := len(rows[0]) - 1
	if opts.Column != "" {
		col = -1
		for i, h := range rows[0] {
			if strings.TrimSpace(h) == opts.Column {
				col = i
			}
		}
		if col < 0 {
			return Trace{}, fmt.Errorf("trace %s: no column %q in header %q", path, opts.Column, strings.Join(rows[0], sep))
		}
	}
	if _, err := strconv.ParseFloat(strings.TrimSpace(rows[0][col]), 64); err != nil {
		rows = rows[1:] // header
	}
	_, timed := parseTime(strings.TrimSpace(rows[0][0]))
	timed = timed && col != 0

	src := fmt.Sprintf("%s (column %d)", path, col+1)
	if !timed {
		step := opts.Step
		if step <= 0 {
			step = time.Minute
		}
		vals := make([]float64, 0, len(rows))
		for i, r := range rows {
			v, err := cell(r, col)
			if err != nil {
				return Trace{}, fmt.Errorf("trace %s row %d: %w", path, i+1, err)
			}
			vals = append(vals, v)
		}
		return Trace{Name: name, Source: src, Step: step, Values: vals}, nil
	}

	type point struct {
		t time.Time
		v float64
	}
	var pts []point
	for i, r := range rows {
		t, ok := parseTime(strings.TrimSpace(r[0]))
		if !ok {
			return Trace{}, fmt.Errorf("trace %s row %d: %q is not a timestamp", path, i+1, r[0])
		}
		if (!opts.From.IsZero() && t.Before(opts.From)) || (!opts.To.IsZero() && t.After(opts.To)) {
			continue
		}
		v, err := cell(r, col)
		if err != nil {
			return Trace{}, fmt.Errorf("trace %s row %d: %w", path, i+1, err)
		}
		pts = append(pts, point{t, v})
	}
	if len(pts) < 2 {
		return Trace{}, fmt.Errorf("trace %s: fewer than two rows in the chosen time range", path)
	}
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].t.Before(pts[j].t) })
	uniq := pts[:1]
	for _, p := range pts[1:] {
		if !p.t.Equal(uniq[len(uniq)-1].t) {
			uniq = append(uniq, p)
		}
	}
	step := opts.Step
	if step <= 0 {
		gaps := make([]time.Duration, len(uniq)-1)
		for i := range gaps {
			gaps[i] = uniq[i+1].t.Sub(uniq[i].t)
		}
		sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
		step = gaps[len(gaps)/2]
	}
	start, end := uniq[0].t, uniq[len(uniq)-1].t
	n := int(end.Sub(start)/step) + 1
	vals := make([]float64, n)
	j := 0
	for i := range vals {
		t := start.Add(time.Duration(i) * step)
		for j+1 < len(uniq) && !uniq[j+1].t.After(t) {
			j++
		}
		if j+1 >= len(uniq) || uniq[j].t.Equal(t) {
			vals[i] = uniq[j].v
			continue
		}
		a, b := uniq[j], uniq[j+1]
		frac := float64(t.Sub(a.t)) / float64(b.t.Sub(a.t))
		vals[i] = a.v + frac*(b.v-a.v)
	}
	src = fmt.Sprintf("%s, %s to %s", src, start.Format("2006-01-02 15:04"), end.Format("2006-01-02 15:04"))
	return Trace{Name: name, Source: src, Step: step, Values: vals}, nil
}

func cell(r []string, col int) (float64, error) {
	if col >= len(r) {
		return 0, fmt.Errorf("missing column %d", col+1)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(r[col]), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return 0, fmt.Errorf("value %q is not a finite, non-negative number", r[col])
	}
	return v, nil
}

// Duration is the time the trace covers.
func (t Trace) Duration() time.Duration { return time.Duration(len(t.Values)) * t.Step }

// Demand returns a function giving, at an offset from the trace's start, the
// demand in node-equivalents of CPU (1.0 = one node at 100%), scaled so that
// the trace's peak needs peakNodes nodes at target percent. Values between
// buckets are interpolated linearly.
func (t Trace) Demand(peakNodes, target float64) (func(time.Duration) float64, error) {
	peak := 0.0
	for _, v := range t.Values {
		peak = math.Max(peak, v)
	}
	if peak <= 0 || len(t.Values) == 0 {
		return nil, errors.New("trace " + t.Name + " has no positive value")
	}
	scale := peakNodes * target / 100 / peak
	return func(at time.Duration) float64 {
		x := float64(at) / float64(t.Step)
		i := int(x)
		if i >= len(t.Values)-1 {
			return t.Values[len(t.Values)-1] * scale
		}
		frac := x - float64(i)
		return (t.Values[i] + frac*(t.Values[i+1]-t.Values[i])) * scale
	}, nil
}
