package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// markStyle gives each kind of event its colour on the picture.
var markStyle = map[markKind]color.RGBA{
	markLoad:            {R: 150, G: 150, B: 150, A: 255},
	markScaleOut:        {R: 23, G: 190, B: 207, A: 255},
	markScaleIn:         {R: 44, G: 160, B: 44, A: 255},
	markAdmitted:        {R: 148, G: 103, B: 189, A: 255},
	markHookFailed:      {R: 214, G: 39, B: 40, A: 255},
	markInterruption:    {R: 255, G: 127, B: 14, A: 255},
	markInterruptionEnd: {R: 227, G: 119, B: 194, A: 255},
}

// markOrder is the legend's order.
var markOrder = []markKind{markLoad, markScaleOut, markScaleIn, markAdmitted, markHookFailed, markInterruption, markInterruptionEnd}

var (
	cpuStyle    = draw.LineStyle{Color: color.RGBA{R: 31, G: 119, B: 180, A: 255}, Width: vg.Points(1.3)}
	readyStyle  = draw.LineStyle{Color: color.Black, Width: vg.Points(1.4)}
	targetStyle = draw.LineStyle{Color: color.RGBA{R: 255, G: 127, B: 14, A: 255}, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(2)}}
	// gatedStyle is brown: purple belongs to the "node admitted" events.
	gatedStyle = draw.LineStyle{Color: color.RGBA{R: 140, G: 86, B: 75, A: 255}, Width: vg.Points(0.9)}
)

// renderPicture draws the pool's CPU and node count over time with the
// events marked, into dir as demo.png and demo.svg, and returns both paths.
func renderPicture(h history, dir string) (pngPath, svgPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("create %s: %w", dir, err)
	}
	pngPath, svgPath = filepath.Join(dir, "demo.png"), filepath.Join(dir, "demo.svg")
	for _, path := range []string{pngPath, svgPath} {
		if err := drawPicture(h, path); err != nil {
			return "", "", err
		}
	}
	return pngPath, svgPath, nil
}

// markText is the label of an event on the picture; empty for admissions
// (many, shown as dashed lines only).
func markText(m mark) string {
	switch m.Kind {
	case markAdmitted:
		return ""
	case markLoad:
		return m.Label
	case markHookFailed:
		return "playbook failed " + shortInstance(m.Label)
	case markInterruption:
		return "spot warning " + shortInstance(strings.TrimPrefix(m.Label, "spot interruption of "))
	case markInterruptionEnd:
		return "reclaimed " + shortInstance(strings.TrimSuffix(m.Label, " reclaimed"))
	}
	return string(m.Kind) + " " + m.Label
}

// shortInstance abbreviates an instance ID for a label.
func shortInstance(id string) string {
	if len(id) > 9 {
		return id[:9] + "…"
	}
	return id
}

// everyTicks puts a labelled tick every step seconds.
type everyTicks struct{ step float64 }

// Ticks implements plot.Ticker.
func (e everyTicks) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	for v := math.Ceil(lo/e.step) * e.step; v <= hi; v += e.step {
		out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'f', 0, 64)})
	}
	return out
}

// Picture geometry.
const (
	pictureWidth  = 12 * vg.Inch
	pictureHeight = 8 * vg.Inch
	// legendWidth is the strip right of both panels that holds their legends.
	legendWidth = 2.6 * vg.Inch
	// labelGap is the least distance between two event labels.
	labelGap = 11 // points
)

// drawPicture writes the picture to path, PNG or SVG by its extension.
func drawPicture(h history, path string) error {
	// x is a time on the x axis: seconds since the demo started.
	x := func(t time.Time) float64 { return t.Sub(h.Start).Seconds() }
	end := x(h.End)
	if end <= 0 {
		return fmt.Errorf("picture %s: the demo has no duration", path)
	}

	cpu := plot.New()
	// Workload CPU is relative to the admitted nodes' schedulable CPU: load
	// beyond it still runs (queues) on them, so the axis can pass 100%.
	cpu.Title.Text = fmt.Sprintf("Pool workload CPU (admitted nodes' mean, apm-node) vs the %d%% target; >100%%: load queued beyond capacity", targetCPU)
	cpu.Y.Label.Text = "% of schedulable CPU (>100: queued)"
	nodes := plot.New()
	nodes.Title.Text = "Nodes: admitted and ready, configuring (gated), and the fleet's target capacity; the events"
	nodes.Y.Label.Text = "nodes"
	cpuLegend, nodesLegend := plot.NewLegend(), plot.NewLegend()
	for _, p := range []*plot.Plot{cpu, nodes} {
		p.X.Min, p.X.Max = 0, end
		p.X.Tick.Marker = everyTicks{step: 30}
		p.X.Label.Text = "seconds since the demo started"
		p.Y.Min = 0
		p.Add(plotter.NewGrid())
	}

	// CPU: one line per run of measured samples.
	var runs []plotter.XYs
	var cur plotter.XYs
	maxCPU, maxNodes := float64(targetCPU)+10, 1.0
	for _, s := range h.Samples {
		if !s.HaveCPU {
			if len(cur) > 0 {
				runs = append(runs, cur)
				cur = nil
			}
			continue
		}
		cur = append(cur, plotter.XY{X: x(s.At), Y: s.CPU})
		maxCPU = max(maxCPU, s.CPU)
	}
	if len(cur) > 0 {
		runs = append(runs, cur)
	}
	for i, r := range runs {
		l, err := plotter.NewLine(r)
		if err != nil {
			return fmt.Errorf("picture %s: CPU line: %w", path, err)
		}
		l.LineStyle = cpuStyle
		cpu.Add(l)
		if i == 0 {
			cpuLegend.Add("workload CPU", l)
		}
	}
	cpu.Y.Max = maxCPU * 1.08
	tl, err := plotter.NewLine(plotter.XYs{{X: 0, Y: targetCPU}, {X: end, Y: targetCPU}})
	if err != nil {
		return fmt.Errorf("picture %s: target line: %w", path, err)
	}
	tl.LineStyle = draw.LineStyle{Color: color.RGBA{R: 180, G: 0, B: 0, A: 255}, Width: vg.Points(0.7), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}
	cpu.Add(tl)
	cpuLegend.Add(fmt.Sprintf("target %d%%", targetCPU), tl)

	// Nodes: step lines.
	var ready, target, gated plotter.XYs
	for i, s := range h.Samples {
		if i > 0 {
			prev := h.Samples[i-1]
			ready = append(ready, plotter.XY{X: x(s.At), Y: float64(prev.Ready)})
			target = append(target, plotter.XY{X: x(s.At), Y: float64(prev.Target)})
			gated = append(gated, plotter.XY{X: x(s.At), Y: float64(prev.Admitting)})
		}
		ready = append(ready, plotter.XY{X: x(s.At), Y: float64(s.Ready)})
		target = append(target, plotter.XY{X: x(s.At), Y: float64(s.Target)})
		gated = append(gated, plotter.XY{X: x(s.At), Y: float64(s.Admitting)})
		maxNodes = max(maxNodes, float64(s.Ready), float64(s.Target), float64(s.Admitting))
	}
	for _, l := range []struct {
		name string
		pts  plotter.XYs
		sty  draw.LineStyle
	}{{"fleet target capacity", target, targetStyle}, {"configuring (gated)", gated, gatedStyle}, {"admitted ready nodes", ready, readyStyle}} {
		if len(l.pts) == 0 {
			continue
		}
		line, err := plotter.NewLine(l.pts)
		if err != nil {
			return fmt.Errorf("picture %s: %s: %w", path, l.name, err)
		}
		line.LineStyle = l.sty
		nodes.Add(line)
		nodesLegend.Add(l.name, line)
	}
	// The upper part of the node panel holds the events' labels.
	nodes.Y.Max = (maxNodes + 0.5) / 0.58

	// Events: a vertical line in both panels, a vertical label beside it in
	// the node panel, moved right when it would touch the previous one.
	seen := map[markKind]bool{}
	marks := append([]mark(nil), h.Marks...)
	sort.Slice(marks, func(i, j int) bool { return marks[i].At.Before(marks[j].At) })
	plotWidth := pictureWidth - legendWidth - vg.Inch // minus the axes, roughly
	gap := labelGap * end / plotWidth.Points()
	var labels plotter.XYLabels
	lastLabel := math.Inf(-1)
	for _, m := range marks {
		mx := x(m.At)
		if mx < 0 || mx > end {
			continue
		}
		sty := draw.LineStyle{Color: markStyle[m.Kind], Width: vg.Points(0.9)}
		if m.Kind == markAdmitted || m.Kind == markLoad {
			sty.Width = vg.Points(0.6)
			sty.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		}
		for _, p := range []*plot.Plot{cpu, nodes} {
			v, err := plotter.NewLine(plotter.XYs{{X: mx, Y: 0}, {X: mx, Y: p.Y.Max}})
			if err != nil {
				return fmt.Errorf("picture %s: event line: %w", path, err)
			}
			v.LineStyle = sty
			p.Add(v)
		}
		seen[m.Kind] = true
		if text := markText(m); text != "" {
			lx := max(mx, lastLabel+gap)
			lastLabel = lx
			labels.XYs = append(labels.XYs, plotter.XY{X: lx, Y: nodes.Y.Max * 0.985})
			labels.Labels = append(labels.Labels, text)
		}
	}
	if len(labels.XYs) > 0 {
		lb, err := plotter.NewLabels(labels)
		if err != nil {
			return fmt.Errorf("picture %s: labels: %w", path, err)
		}
		for i := range lb.TextStyle {
			// Rotated a quarter turn: the text runs up, ending at the top.
			lb.TextStyle[i].Font.Size = vg.Points(8)
			lb.TextStyle[i].Rotation = math.Pi / 2
			lb.TextStyle[i].XAlign = draw.XRight
			lb.TextStyle[i].YAlign = draw.YTop
		}
		nodes.Add(lb)
	}
	// The legend of the events, in a fixed order.
	for _, k := range markOrder {
		if !seen[k] {
			continue
		}
		sw, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 0, Y: 0}})
		if err != nil {
			return err
		}
		sw.LineStyle = draw.LineStyle{Color: markStyle[k], Width: vg.Points(1.5)}
		nodesLegend.Add(string(k), sw)
	}

	format := strings.TrimPrefix(filepath.Ext(path), ".")
	canvas, err := draw.NewFormattedCanvas(pictureWidth, pictureHeight, format)
	if err != nil {
		return fmt.Errorf("picture %s: %w (use .svg or .png)", path, err)
	}
	dc := draw.New(canvas)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(6), PadY: vg.Points(14)}
	cells := plot.Align([][]*plot.Plot{{cpu}, {nodes}}, tiles, dc)
	for i, pl := range []struct {
		p *plot.Plot
		l plot.Legend
	}{{cpu, cpuLegend}, {nodes, nodesLegend}} {
		c := cells[i][0]
		area, side := c, c
		area.Max.X -= legendWidth
		side.Min.X = area.Max.X + vg.Points(10)
		side.Max.Y -= vg.Points(24) // below the title's height
		pl.p.Draw(area)
		pl.l.Top, pl.l.Left = true, true
		pl.l.Draw(side)
	}

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create picture %s: %w", path, err)
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("write picture %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write picture %s: %w", path, err)
	}
	return nil
}
