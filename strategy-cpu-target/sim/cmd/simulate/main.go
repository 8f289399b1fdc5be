// Command simulate replays demand traces through a modelled Spot Fleet of
// Nomad clients under strategy-cpu-target, the stock target-value strategy,
// an AWS target-tracking model and a clairvoyant oracle, and reports
// overload, node-hours and scaling actions side by side.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/strategy-cpu-target/sim"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

const (
	alibabaFile   = "alibaba2018/machine_usage_days_1_to_8_grouped_30_seconds.csv"
	wikipediaFile = "wikipedia-en-hourly/traces_en_wikipedia.csv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "simulate:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		tracesDir   = flag.String("traces", "../shared/traces", "folder holding the shared traces (alibaba2018/, wikipedia-en-hourly/); empty to skip them")
		traceSpecs  stringList
		wikiFrom    = flag.String("wiki-from", "2012-03-05 00:00:00", "first hour of the Wikipedia trace to replay")
		wikiTo      = flag.String("wiki-to", "2012-03-11 23:00:00", "last hour of the Wikipedia trace to replay")
		interpolate = flag.Bool("interpolate", false, "interpolate every trace linearly between bucket centres instead of holding each row flat for its bucket (labelled in the results)")
		peakNodes   = flag.Float64("peak-nodes", 18, "nodes the trace's peak needs at the target")
		target      = flag.Float64("target", 75, "target average CPU, percent")
		tick        = flag.Duration("tick", 10*time.Second, "simulation step and metric sampling interval")
		boot        = flag.Duration("boot", 90*time.Second, "instance launch to ready (boot, Nomad join, post-configuration)")
		drain       = flag.Duration("drain", time.Minute, "drain time of a node scaled in through target-spotfleet")
		modify      = flag.Duration("modify", 20*time.Second, "time the spot fleet request stays modifying after a change of its target (target-spotfleet is not ready meanwhile)")
		scaleOut    = flag.Duration("scale-out-call", 15*time.Second, "time target-spotfleet's Scale takes to return after a scale-out (it waits to see the instances launched)")
		allocSize   = flag.Float64("alloc-size", 0.125, "resource ask of one allocation, in nodes")
		minNodes    = flag.Int("min", 1, "fleet minimum")
		maxNodes    = flag.Int("max", 20, "fleet maximum")
		spotRate    = flag.Float64("spot-rate", 0, "spot interruptions per node-hour (0: none)")
		notice      = flag.Duration("notice", 2*time.Minute, "spot interruption notice")
		intDrain    = flag.Duration("interruption-drain-deadline", 90*time.Second, "target-spotfleet's interruption_drain_deadline")
		awsDelay    = flag.Duration("aws-publish-delay", time.Minute, "CloudWatch publication delay of the AWS model's datapoints")
		seed        = flag.Int64("seed", 1, "random seed, the same for every policy")
		unplaced    = flag.Bool("unplaced", false, "also run strategy-cpu-target with a second check on apm-node's unplaced_nodes")
		cooldown    = flag.Duration("cpu-target-cooldown", 0, "override the agent cooldown used with strategy-cpu-target")
		cooldownUp  = flag.Duration("cpu-target-cooldown-up", 0, "override the agent cooldown_on_scale_up used with strategy-cpu-target")
		window      = flag.Duration("cpu-target-window", 0, "override the query_window used with strategy-cpu-target")
		knobs       = flag.String("cpu-target-config", "", "extra strategy-cpu-target CPU check config, key=value,key=value")
		outMD       = flag.String("out-md", "", "write the Markdown tables to this file")
		doc         = flag.String("doc", "", "regenerate the results section of this Markdown document")
		plots       = flag.String("plots", "", "write one SVG plot per trace into this folder")
		sensitive   = flag.String("sensitivity", "", "name of a trace on which to add a sensitivity table (settings varied one at a time)")
	)
	flag.Var(&traceSpecs, "csv", "extra trace (repeatable): path, or name=path, followed by per-trace settings as ,key=value: "+
		"column (header name, or 1-based position without a header; required when there is more than one value column), "+
		"step (row length, required without timestamps, refused with them), resample (aggregate to this step), "+
		"from, to (timestamps, \"2006-01-02 15:04:05\"), interpolate (true/false)")
	flag.Parse()

	fleet := sim.FleetConfig{Min: *minNodes, Max: *maxNodes, BootDelay: *boot, DrainTime: *drain, SpotRate: *spotRate,
		Notice: *notice, InterruptDrainDeadline: *intDrain, ScaleOutCall: *scaleOut, ModifyTime: *modify, AllocSize: *allocSize}
	if err := checkFleet(fleet); err != nil {
		return err
	}
	ours := sim.CPUTargetDefaults(*target)
	if *cooldown > 0 {
		ours.Cooldown = *cooldown
	}
	if *cooldownUp > 0 {
		ours.CooldownOnScaleUp = *cooldownUp
	}
	if *window > 0 {
		ours.QueryWindow = *window
	}
	for _, kv := range strings.Split(*knobs, ",") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("-cpu-target-config %q: %q is not key=value", *knobs, kv)
		}
		ours.StrategyConfig[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}

	traces, err := loadTraces(*tracesDir, traceSpecs, *wikiFrom, *wikiTo, *interpolate)
	if err != nil {
		return err
	}
	if len(traces) == 0 {
		return fmt.Errorf("no trace to replay: pass -traces or -csv")
	}

	bench := sim.Bench{Fleet: fleet, Target: *target, PeakNodes: *peakNodes, Tick: *tick, Seed: *seed,
		CPUTarget: ours, TargetValue: sim.TargetValueDefaults(*target), AWSPublishDelay: *awsDelay, Unplaced: *unplaced}
	results := make([]sim.TraceResult, len(traces))
	errs := make([]error, len(traces))
	var wg sync.WaitGroup
	for i, tr := range traces {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = bench.Replay(tr)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}

	for _, r := range results {
		fmt.Print(r.Text())
	}
	if *plots != "" {
		if err := os.MkdirAll(*plots, 0o755); err != nil {
			return err
		}
		for _, r := range results {
			path := filepath.Join(*plots, r.Scenario.Name+".svg")
			if err := sim.Plot(r, path); err != nil {
				return err
			}
			fmt.Println("wrote", path)
		}
	}
	md := bench.Markdown(results, *plots, *doc)
	if *sensitive != "" {
		found := false
		for _, tr := range traces {
			if tr.Name != *sensitive {
				continue
			}
			found = true
			table, err := bench.Sensitivity(tr)
			if err != nil {
				return err
			}
			fmt.Print("\nsensitivity on ", tr.Name, "\n", table)
			md += "\n### Sensitivity (" + tr.Name + ")\n\nOne setting changed at a time, for every policy it applies to; the rest as benchmarked.\n\n" + table
		}
		if !found {
			return fmt.Errorf("-sensitivity %q: no such trace", *sensitive)
		}
	}
	if *outMD != "" {
		if err := os.WriteFile(*outMD, []byte(md), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", *outMD)
	}
	if *doc != "" {
		if err := sim.UpdateDoc(*doc, md); err != nil {
			return err
		}
		fmt.Println("updated", *doc)
	}
	return nil
}

func checkFleet(f sim.FleetConfig) error {
	switch {
	case f.Min < 0 || f.Max < max(1, f.Min):
		return fmt.Errorf("-min %d / -max %d: need 0 <= min <= max and max >= 1", f.Min, f.Max)
	case f.AllocSize <= 0 || f.AllocSize > 1:
		return fmt.Errorf("-alloc-size %g: must be in (0, 1] nodes", f.AllocSize)
	case f.SpotRate < 0:
		return fmt.Errorf("-spot-rate %g: must not be negative", f.SpotRate)
	}
	return nil
}

// parseSpec reads "name=path,key=value,..." (or "path,key=value,...").
func parseSpec(spec string) (name, path string, opts sim.CSVOptions, err error) {
	parts := strings.Split(spec, ",")
	head := parts[0]
	if n, p, ok := strings.Cut(head, "="); ok {
		name, path = n, p
	} else {
		path = head
		name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if path == "" {
		return "", "", opts, fmt.Errorf("-csv %q: no file named", spec)
	}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", "", opts, fmt.Errorf("-csv %q: %q is not key=value", spec, kv)
		}
		switch k {
		case "column":
			opts.Column = v
		case "step", "resample":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return "", "", opts, fmt.Errorf("-csv %q: %s=%q: want a positive duration such as 30s", spec, k, v)
			}
			if k == "step" {
				opts.Step = d
			} else {
				opts.Resample = d
			}
		case "from", "to":
			t, err := time.Parse("2006-01-02 15:04:05", v)
			if err != nil {
				return "", "", opts, fmt.Errorf("-csv %q: %s=%q: want \"2006-01-02 15:04:05\"", spec, k, v)
			}
			if k == "from" {
				opts.From = t
			} else {
				opts.To = t
			}
		case "interpolate":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return "", "", opts, fmt.Errorf("-csv %q: interpolate=%q: want true or false", spec, v)
			}
			opts.Interpolate = b
		default:
			return "", "", opts, fmt.Errorf("-csv %q: unknown setting %q (accepted: column, step, resample, from, to, interpolate)", spec, k)
		}
	}
	return name, path, opts, nil
}

func loadTraces(dir string, specs []string, wikiFrom, wikiTo string, interpolate bool) ([]sim.Trace, error) {
	var out []sim.Trace
	label := func(tr sim.Trace) sim.Trace {
		if tr.Interpolate {
			tr.Source += "; INTERPOLATED between bucket centres (-interpolate), not held flat"
		}
		return tr
	}
	if dir != "" {
		missing := func(err error) error {
			return fmt.Errorf("%w\nthe shared traces are not in %s: see docs/benchmark.md (\"Getting the traces\") to download them, or point -traces at them", err, dir)
		}
		ali, err := sim.LoadCSV("alibaba2018", filepath.Join(dir, alibabaFile),
			sim.CSVOptions{Column: "cpu_util_percent", Step: 30 * time.Second, Interpolate: interpolate})
		if err != nil {
			return nil, missing(err)
		}
		from, err := time.Parse("2006-01-02 15:04:05", wikiFrom)
		if err != nil {
			return nil, fmt.Errorf("-wiki-from: %w", err)
		}
		to, err := time.Parse("2006-01-02 15:04:05", wikiTo)
		if err != nil {
			return nil, fmt.Errorf("-wiki-to: %w", err)
		}
		wiki, err := sim.LoadCSV("wikipedia-en", filepath.Join(dir, wikipediaFile), sim.CSVOptions{From: from, To: to, Interpolate: interpolate})
		if err != nil {
			return nil, missing(err)
		}
		out = append(out, label(ali), label(wiki))
	}
	for _, spec := range specs {
		name, path, opts, err := parseSpec(spec)
		if err != nil {
			return nil, err
		}
		opts.Interpolate = opts.Interpolate || interpolate
		tr, err := sim.LoadCSV(name, path, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, label(tr))
	}
	return out, nil
}
