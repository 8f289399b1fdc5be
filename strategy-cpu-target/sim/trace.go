// Package sim replays a demand trace through a modelled Spot Fleet of Nomad
// clients under several scaling policies (this project's strategy, the stock
// target-value strategy, an AWS target-tracking model and a clairvoyant
// oracle) and measures overload, waiting work, cost and churn for each.
package sim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Trace is a demand series at a fixed step, in the trace's own units. Each
// value is the mean of its bucket [i×Step, (i+1)×Step).
type Trace struct {
	Name   string
	Source string // file it was read from, and how
	Step   time.Duration
	Values []float64
	// Interpolate, when set, makes Demand interpolate linearly between
	// bucket centres instead of holding each bucket flat for its period.
	Interpolate bool
}

// CSVOptions says how to read a CSV file into a Trace.
type CSVOptions struct {
	// Column names the value column: a header name, or, for a file without
	// a header, its 1-based position. It may be empty only when the file
	// has one value column (a timestamp column aside).
	Column string
	// Step is the bucket length of rows that carry no timestamp; it must be
	// given for such files. For timestamped rows it must be empty: the step
	// is the median spacing of the timestamps.
	Step time.Duration
	// Resample, when set, aggregates the series to buckets of this length
	// (the mean of the rows in each), e.g. per-second data to 10 s. It must
	// be a multiple of the file's step.
	Resample time.Duration
	// From and To, when set, keep only timestamped rows in [From, To].
	From, To time.Time
	// Interpolate is copied to the Trace (see Trace.Interpolate).
	Interpolate bool
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

// lineReader yields the lines of r, ended by "\n", "\r\n" or a lone "\r",
// with no limit on their length (a whole trace may sit on one line).
type lineReader struct {
	r    *bufio.Reader
	line strings.Builder
}

func (l *lineReader) next() (string, error) {
	l.line.Reset()
	for {
		b, err := l.r.ReadByte()
		if err == io.EOF {
			if l.line.Len() > 0 {
				return l.line.String(), nil
			}
			return "", io.EOF
		}
		if err != nil {
			return "", err
		}
		switch b {
		case '\n':
			return l.line.String(), nil
		case '\r':
			if nb, err := l.r.Peek(1); err == nil && nb[0] == '\n' {
				_, _ = l.r.ReadByte()
			}
			return l.line.String(), nil
		}
		l.line.WriteByte(b)
	}
}

// LoadCSV reads a trace. It accepts ',' or ';' separated files, with or
// without a header, with or without a timestamp in the first column
// ("2006-01-02 15:04:05" or RFC 3339), with lines of any length ended by
// "\n", "\r\n" or "\r". A file that is one single line of numbers is read as
// one value per field. Timestamped rows are sorted and de-duplicated (first
// wins); missing buckets hold the previous value (or are interpolated with
// Interpolate). Rows are read one at a time, so large per-second files load
// in little memory when Resample aggregates them.
func LoadCSV(name, path string, opts CSVOptions) (Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return Trace{}, fmt.Errorf("opening trace %s: %w", path, err)
	}
	defer f.Close()
	tr, err := readCSV(name, path, f, opts)
	if err != nil {
		return Trace{}, fmt.Errorf("trace %s (%s): %w", name, path, err)
	}
	return tr, nil
}

type point struct {
	t time.Time
	v float64
}

func readCSV(name, path string, r io.Reader, opts CSVOptions) (Trace, error) {
	if opts.Step < 0 || opts.Resample < 0 {
		return Trace{}, fmt.Errorf("step %s and resample %s must not be negative", opts.Step, opts.Resample)
	}
	lr := &lineReader{r: bufio.NewReaderSize(r, 1<<16)}
	sep := ""
	var (
		header []string
		col    = -1
		timed  bool
		first  = true
		vals   []float64
		pts    []point
		row    int
		fields []string
		// onlyLine holds the first data row until a second one shows
		// whether the file is one long line of values.
		onlyLine []string
	)
	for {
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Trace{}, fmt.Errorf("reading: %w", err)
		}
		row++
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if sep == "" {
			sep = ","
			if strings.Contains(line, ";") && !strings.Contains(line, ",") {
				sep = ";"
			}
		}
		fields = strings.Split(line, sep)
		if first {
			first = false
			_, isTime := parseTime(strings.TrimSpace(fields[0]))
			if !isTime && !allNumbers(fields) {
				header = fields
				continue
			}
		}
		if onlyLine != nil {
			return Trace{}, fmt.Errorf("%d value columns and no header: name the column by its position (1 to %d)", len(onlyLine), len(onlyLine))
		}
		if col < 0 {
			if col, timed, err = chooseColumn(fields, header, opts.Column); err != nil {
				return Trace{}, err
			}
			if col < 0 {
				onlyLine = fields // one long line of values, or an error at the next row
				continue
			}
		}
		if timed {
			t, ok := parseTime(strings.TrimSpace(fields[0]))
			if !ok {
				return Trace{}, fmt.Errorf("line %d: %q is not a timestamp", row, fields[0])
			}
			if (!opts.From.IsZero() && t.Before(opts.From)) || (!opts.To.IsZero() && t.After(opts.To)) {
				continue
			}
			v, err := cell(fields, col)
			if err != nil {
				return Trace{}, fmt.Errorf("line %d: %w", row, err)
			}
			pts = append(pts, point{t, v})
			continue
		}
		v, err := cell(fields, col)
		if err != nil {
			return Trace{}, fmt.Errorf("line %d: %w", row, err)
		}
		vals = append(vals, v)
	}
	if onlyLine != nil {
		// One line of values: one value per field.
		col = -1
		for i := range onlyLine {
			v, err := cell(onlyLine, i)
			if err != nil {
				return Trace{}, fmt.Errorf("field %d of the only line: %w", i+1, err)
			}
			vals = append(vals, v)
		}
	}
	colName := "the only value column"
	switch {
	case col >= 0 && header != nil:
		colName = fmt.Sprintf("column %q", strings.TrimSpace(header[col]))
	case col >= 0 && (opts.Column != "" || timed):
		colName = fmt.Sprintf("column %d", col+1)
	case onlyLine != nil:
		colName = "one line, one value per field"
	}

	if timed {
		if opts.Step != 0 {
			return Trace{}, fmt.Errorf("step %s given for a file with timestamps: the step comes from the timestamps; leave it out (use resample to aggregate)", opts.Step)
		}
		return fromPoints(name, path, colName, pts, opts)
	}
	if !opts.From.IsZero() || !opts.To.IsZero() {
		return Trace{}, errors.New("from/to given for a file without timestamps")
	}
	if opts.Step == 0 {
		return Trace{}, errors.New("the file has no timestamps: its step (the length of one row's bucket, e.g. 30s) must be given")
	}
	if len(vals) == 0 {
		return Trace{}, errors.New("no data rows")
	}
	tr := Trace{Name: name, Source: fmt.Sprintf("%s (%s, %s per row)", path, colName, opts.Step), Step: opts.Step, Values: vals, Interpolate: opts.Interpolate}
	return resample(tr, opts.Resample)
}

// chooseColumn picks the value column of a data row: by header name or
// 1-based position, or the only value column there is.
func chooseColumn(fields, header []string, column string) (col int, timed bool, err error) {
	_, timed = parseTime(strings.TrimSpace(fields[0]))
	firstValue := 0
	if timed {
		firstValue = 1
	}
	if column == "" {
		switch n := len(fields) - firstValue; {
		case n == 1:
			return firstValue, timed, nil
		case n < 1:
			return 0, timed, errors.New("rows have a timestamp but no value column")
		case header != nil:
			return 0, timed, fmt.Errorf("%d value columns (%s): name the one to use", n, strings.Join(header[firstValue:], ", "))
		default:
			return -1, false, nil // decided by the caller: one long line, or an error
		}
	}
	if header != nil {
		for i, h := range header {
			if strings.TrimSpace(h) == column {
				if timed && i == 0 {
					return 0, timed, fmt.Errorf("column %q is the timestamp column", column)
				}
				return i, timed, nil
			}
		}
		return 0, timed, fmt.Errorf("no column %q in header %q", column, strings.Join(header, ","))
	}
	n, err := strconv.Atoi(column)
	if err != nil || n < 1 || n > len(fields) {
		return 0, timed, fmt.Errorf("column %q: the file has no header, so name the column by its position, 1 to %d", column, len(fields))
	}
	if timed && n == 1 {
		return 0, timed, fmt.Errorf("column %q is the timestamp column", column)
	}
	return n - 1, timed, nil
}

func allNumbers(fields []string) bool {
	for _, f := range fields {
		if _, err := strconv.ParseFloat(strings.TrimSpace(f), 64); err != nil {
			return false
		}
	}
	return true
}

// fromPoints puts timestamped rows on a regular grid at their median
// spacing, then resamples.
func fromPoints(name, path, colName string, pts []point, opts CSVOptions) (Trace, error) {
	if len(pts) < 2 {
		return Trace{}, errors.New("fewer than two timestamped rows in the chosen time range")
	}
	sort.SliceStable(pts, func(i, j int) bool { return pts[i].t.Before(pts[j].t) })
	uniq := pts[:1]
	for _, p := range pts[1:] {
		if !p.t.Equal(uniq[len(uniq)-1].t) {
			uniq = append(uniq, p)
		}
	}
	if len(uniq) < 2 {
		return Trace{}, errors.New("fewer than two distinct timestamps in the chosen time range")
	}
	gaps := make([]time.Duration, len(uniq)-1)
	for i := range gaps {
		gaps[i] = uniq[i+1].t.Sub(uniq[i].t)
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	step := gaps[len(gaps)/2]

	start, end := uniq[0].t, uniq[len(uniq)-1].t
	n := int(end.Sub(start)/step) + 1
	vals := make([]float64, n)
	filled := 0
	j := 0
	for i := range vals {
		t := start.Add(time.Duration(i) * step)
		for j+1 < len(uniq) && !uniq[j+1].t.After(t) {
			j++
		}
		if uniq[j].t.Equal(t) || j+1 >= len(uniq) {
			vals[i] = uniq[j].v
			if !uniq[j].t.Equal(t) {
				filled++
			}
			continue
		}
		filled++
		if !opts.Interpolate {
			vals[i] = uniq[j].v // a missing bucket holds the previous row
			continue
		}
		a, b := uniq[j], uniq[j+1]
		frac := float64(t.Sub(a.t)) / float64(b.t.Sub(a.t))
		vals[i] = a.v + frac*(b.v-a.v)
	}
	src := fmt.Sprintf("%s (%s, %s per row from the timestamps), %s to %s", path, colName, step, start.Format("2006-01-02 15:04"), end.Format("2006-01-02 15:04"))
	if filled > 0 {
		src += fmt.Sprintf(", %d missing buckets filled", filled)
	}
	return resample(Trace{Name: name, Source: src, Step: step, Values: vals, Interpolate: opts.Interpolate}, opts.Resample)
}

// resample aggregates tr to buckets of step (the mean of the rows in each;
// a last, partial bucket is the mean of the rows it has).
func resample(tr Trace, step time.Duration) (Trace, error) {
	if step == 0 || step == tr.Step {
		return tr, nil
	}
	if step < tr.Step || step%tr.Step != 0 {
		return Trace{}, fmt.Errorf("resample %s: must be a multiple of the file's step %s", step, tr.Step)
	}
	k := int(step / tr.Step)
	out := make([]float64, 0, (len(tr.Values)+k-1)/k)
	for i := 0; i < len(tr.Values); i += k {
		end := min(len(tr.Values), i+k)
		sum := 0.0
		for _, v := range tr.Values[i:end] {
			sum += v
		}
		out = append(out, sum/float64(end-i))
	}
	tr.Source += fmt.Sprintf(", resampled to %s (mean of %d rows)", step, k)
	tr.Step, tr.Values = step, out
	return tr, nil
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
// the trace's peak needs peakNodes nodes at target percent. By default each
// bucket's value holds for its whole period (a row is the mean of its
// bucket); with Interpolate the value moves linearly between bucket centres.
func (t Trace) Demand(peakNodes, target float64) (func(time.Duration) float64, error) {
	peak := 0.0
	for _, v := range t.Values {
		peak = math.Max(peak, v)
	}
	if peak <= 0 || len(t.Values) == 0 {
		return nil, errors.New("trace " + t.Name + " has no positive value")
	}
	if t.Step <= 0 {
		return nil, errors.New("trace " + t.Name + " has no step")
	}
	scale := peakNodes * target / 100 / peak
	last := len(t.Values) - 1
	if !t.Interpolate {
		return func(at time.Duration) float64 {
			i := min(last, max(0, int(at/t.Step)))
			return t.Values[i] * scale
		}, nil
	}
	return func(at time.Duration) float64 {
		x := float64(at)/float64(t.Step) - 0.5 // bucket i is centred at (i+0.5)×Step
		if x <= 0 {
			return t.Values[0] * scale
		}
		i := int(x)
		if i >= last {
			return t.Values[last] * scale
		}
		frac := x - float64(i)
		return (t.Values[i] + frac*(t.Values[i+1]-t.Values[i])) * scale
	}, nil
}
