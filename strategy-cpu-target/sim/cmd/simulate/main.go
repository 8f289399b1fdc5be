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
		tracesDir  = flag.String("traces", "../shared/traces", "folder holding the shared traces (alibaba2018/, wikipedia-en-hourly/); empty to skip them")
		csvs       stringList
		csvColumn  = flag.String("csv-column", "", "header name of the value column in -csv files (default: last column)")
		csvStep    = flag.Duration("csv-step", time.Minute, "bucket length of -csv rows that carry no timestamp")
		wikiFrom   = flag.String("wiki-from", "2012-03-05 00:00:00", "first hour of the Wikipedia trace to replay")
		wikiTo     = flag.String("wiki-to", "2012-03-11 23:00:00", "last hour of the Wikipedia trace to replay")
		peakNodes  = flag.Float64("peak-nodes", 18, "nodes the trace's peak needs at the target")
		target     = flag.Float64("target", 75, "target average CPU, percent")
		tick       = flag.Duration("tick", 10*time.Second, "simulation step and metric sampling interval")
		boot       = flag.Duration("boot", 90*time.Second, "instance launch to ready (boot, Nomad join, post-configuration)")
		drain      = flag.Duration("drain", time.Minute, "drain time of a node scaled in or interrupted (Nomad-aware fleets)")
		minNodes   = flag.Int("min", 1, "fleet minimum")
		maxNodes   = flag.Int("max", 20, "fleet maximum")
		spotRate   = flag.Float64("spot-rate", 0, "spot interruptions per node-hour (0: none)")
		notice     = flag.Duration("notice", 2*time.Minute, "spot interruption notice")
		seed       = flag.Int64("seed", 1, "random seed, the same for every policy")
		cooldown   = flag.Duration("cpu-target-cooldown", 0, "override the agent cooldown used with strategy-cpu-target")
		cooldownUp = flag.Duration("cpu-target-cooldown-up", 0, "override the agent cooldown_on_scale_up used with strategy-cpu-target")
		window     = flag.Duration("cpu-target-window", 0, "override the query_window used with strategy-cpu-target")
		knobs      = flag.String("cpu-target-config", "", "extra strategy-cpu-target check config, key=value,key=value")
		outMD      = flag.String("out-md", "", "write the Markdown tables to this file")
		doc        = flag.String("doc", "", "regenerate the results section of this Markdown document")
		plots      = flag.String("plots", "", "write one SVG plot per trace into this folder")
		sensitive  = flag.String("sensitivity", "", "name of a trace on which to add a sensitivity table (settings varied one at a time)")
	)
	flag.Var(&csvs, "csv", "extra trace: a CSV file, or name=file (repeatable)")
	flag.Parse()

	fleet := sim.FleetConfig{Min: *minNodes, Max: *maxNodes, BootDelay: *boot, DrainTime: *drain, SpotRate: *spotRate, Notice: *notice}
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
		if k, v, ok := strings.Cut(kv, "="); ok {
			ours.StrategyConfig[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}

	traces, err := loadTraces(*tracesDir, csvs, *csvColumn, *csvStep, *wikiFrom, *wikiTo)
	if err != nil {
		return err
	}
	if len(traces) == 0 {
		return fmt.Errorf("no trace to replay: pass -traces or -csv")
	}

	bench := sim.Bench{Fleet: fleet, Target: *target, PeakNodes: *peakNodes, Tick: *tick, Seed: *seed,
		CPUTarget: ours, TargetValue: sim.TargetValueDefaults(*target)}
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

func loadTraces(dir string, csvs []string, column string, step time.Duration, wikiFrom, wikiTo string) ([]sim.Trace, error) {
	var out []sim.Trace
	if dir != "" {
		missing := func(err error) error {
			return fmt.Errorf("%w\nthe shared traces are not in %s: see docs/benchmark.md (\"Getting the traces\") to download them, or point -traces at them", err, dir)
		}
		ali, err := sim.LoadCSV("alibaba2018", filepath.Join(dir, alibabaFile), sim.CSVOptions{Column: "cpu_util_percent", Step: 30 * time.Second})
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
		wiki, err := sim.LoadCSV("wikipedia-en", filepath.Join(dir, wikipediaFile), sim.CSVOptions{From: from, To: to})
		if err != nil {
			return nil, missing(err)
		}
		out = append(out, ali, wiki)
	}
	for _, c := range csvs {
		name, path, ok := strings.Cut(c, "=")
		if !ok {
			path = c
			name = strings.TrimSuffix(filepath.Base(c), filepath.Ext(c))
		}
		tr, err := sim.LoadCSV(name, path, sim.CSVOptions{Column: column, Step: step})
		if err != nil {
			return nil, err
		}
		out = append(out, tr)
	}
	return out, nil
}
