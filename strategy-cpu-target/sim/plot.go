package sim

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// policyStyle gives each policy the same colour in every panel.
var policyStyle = map[string]draw.LineStyle{
	NameCPUTarget:         {Color: color.RGBA{R: 31, G: 119, B: 180, A: 255}, Width: vg.Points(1.1)},
	NameCPUTargetUnplaced: {Color: color.RGBA{R: 148, G: 103, B: 189, A: 255}, Width: vg.Points(0.9), Dashes: []vg.Length{vg.Points(4), vg.Points(2)}},
	NameTargetValue:       {Color: color.RGBA{R: 255, G: 127, B: 14, A: 255}, Width: vg.Points(0.8)},
	NameAWS:               {Color: color.RGBA{R: 44, G: 160, B: 44, A: 255}, Width: vg.Points(0.8)},
	NameOracle:            {Color: color.RGBA{R: 140, G: 140, B: 140, A: 255}, Width: vg.Points(0.7), Dashes: []vg.Length{vg.Points(3), vg.Points(2)}},
}

var demandStyle = draw.LineStyle{Color: color.Black, Width: vg.Points(1.2)}

// zoomSpan is the length of the detailed panels.
const zoomSpan = 6 * time.Hour

// Plot writes one SVG (or PNG, by the file's extension) for a trace: demand and serving nodes, then average
// CPU, over the whole trace (bucketed), and the same at full resolution over
// the six hours where the policies overload most.
func Plot(tr TraceResult, path string) error {
	tick := tr.Scenario.Tick
	n := len(tr.Demand)
	bucket := max(1, int(math.Ceil(float64(n)/1500)))
	zoomTicks := min(n, int(zoomSpan/tick))
	from := busiestWindow(tr, zoomTicks)

	full := func(title, ylabel string) *plot.Plot {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = "hours from the trace's start"
		p.Y.Label.Text = ylabel
		// The lower part of every panel is empty (CPU and node counts
		// rarely fall near 0), so the legend sits there.
		p.Legend.Top, p.Legend.Left = false, true
		p.Legend.XOffs = vg.Points(8)
		p.Y.Min = 0
		return p
	}

	capFull := full(fmt.Sprintf("%s: nodes needed at target (demand) and nodes serving, mean per %s", tr.Scenario.Name, time.Duration(bucket)*tick), "nodes")
	cpuFull := full(fmt.Sprintf("%s: pool average CPU, mean per %s", tr.Scenario.Name, time.Duration(bucket)*tick), "CPU %")
	zoomTitle := fmt.Sprintf("hours %.1f to %.1f (every %s sample)", hoursAt(from, tick), hoursAt(from+zoomTicks, tick), tick)
	capZoom := full(tr.Scenario.Name+": nodes, "+zoomTitle, "nodes")
	cpuZoom := full(tr.Scenario.Name+": CPU, "+zoomTitle, "CPU %")

	if err := addLine(capFull, "demand", demandStyle, bucketed(tr.Demand, 0, n, bucket, tick)); err != nil {
		return err
	}
	if err := addLine(capZoom, "demand", demandStyle, bucketed(tr.Demand, from, from+zoomTicks, 1, tick)); err != nil {
		return err
	}
	for _, r := range tr.Results {
		sty := policyStyle[r.Policy]
		for _, l := range []struct {
			p      *plot.Plot
			series []float32
			lo, hi int
			bucket int
		}{
			{capFull, r.Serving, 0, n, bucket},
			{cpuFull, r.CPU, 0, n, bucket},
			{capZoom, r.Serving, from, from + zoomTicks, 1},
			{cpuZoom, r.CPU, from, from + zoomTicks, 1},
		} {
			if err := addLine(l.p, r.Policy, sty, bucketed(l.series, l.lo, l.hi, l.bucket, tick)); err != nil {
				return err
			}
		}
	}
	for _, p := range []*plot.Plot{cpuFull, cpuZoom} {
		p.Y.Min, p.Y.Max = 0, 105
		p.Add(hline(tr.Scenario.Target, p), hline(overloadCPU, p))
	}

	const width, height = 11 * vg.Inch, 14 * vg.Inch
	format := strings.TrimPrefix(filepath.Ext(path), ".")
	canvas, err := draw.NewFormattedCanvas(width, height, format)
	if err != nil {
		return fmt.Errorf("plot %s: %w (use .svg or .png)", path, err)
	}
	dc := draw.New(canvas)
	tiles := draw.Tiles{Rows: 4, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12), PadY: vg.Points(14)}
	cells := plot.Align([][]*plot.Plot{{capFull}, {cpuFull}, {capZoom}, {cpuZoom}}, tiles, dc)
	capFull.Draw(cells[0][0])
	cpuFull.Draw(cells[1][0])
	capZoom.Draw(cells[2][0])
	cpuZoom.Draw(cells[3][0])

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating plot %s: %w", path, err)
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("writing plot %s: %w", path, err)
	}
	return f.Close()
}

func hoursAt(i int, tick time.Duration) float64 { return (time.Duration(i) * tick).Hours() }

// bucketed averages series[lo:hi] over buckets of b ticks, x in hours.
func bucketed(series []float32, lo, hi, b int, tick time.Duration) plotter.XYs {
	hi = min(hi, len(series))
	pts := make(plotter.XYs, 0, (hi-lo)/b+1)
	for i := lo; i < hi; i += b {
		end := min(hi, i+b)
		sum := 0.0
		for _, v := range series[i:end] {
			sum += float64(v)
		}
		pts = append(pts, plotter.XY{X: hoursAt(i, tick), Y: sum / float64(end-i)})
	}
	return pts
}

func addLine(p *plot.Plot, name string, sty draw.LineStyle, pts plotter.XYs) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return fmt.Errorf("plotting %s: %w", name, err)
	}
	l.LineStyle = sty
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

// hline is a thin reference line across the plot at y.
func hline(y float64, p *plot.Plot) *plotter.Function {
	f := plotter.NewFunction(func(float64) float64 { return y })
	f.Color = color.RGBA{R: 180, G: 0, B: 0, A: 255}
	f.Width = vg.Points(0.5)
	f.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	return f
}

// busiestWindow returns the first tick of the span of span ticks in which
// the policies (the oracle aside) spend the most ticks overloaded.
func busiestWindow(tr TraceResult, span int) int {
	n := len(tr.Demand)
	over := make([]int, n)
	for _, r := range tr.Results {
		if r.Policy == NameOracle {
			continue
		}
		for i, c := range r.CPU {
			if c > overloadCPU {
				over[i]++
			}
		}
	}
	best, bestAt, sum := -1, 0, 0
	for i := 0; i < n; i++ {
		sum += over[i]
		if i >= span {
			sum -= over[i-span]
		}
		if i >= span-1 && sum > best {
			best, bestAt = sum, i-span+1
		}
	}
	return bestAt
}
