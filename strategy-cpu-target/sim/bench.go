package sim

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Policy names as they appear in the results.
const (
	NameCPUTarget   = "strategy-cpu-target"
	NameTargetValue = "target-value"
	NameAWS         = "aws-target-tracking"
	NameOracle      = "oracle"
)

// Bench is one benchmark configuration, applied to every trace.
type Bench struct {
	Fleet       FleetConfig
	Target      float64
	PeakNodes   float64
	Tick        time.Duration
	Seed        int64
	CPUTarget   AgentSettings
	TargetValue AgentSettings
}

// Replay runs every policy over one trace, with the same seed for each.
func (b Bench) Replay(tr Trace) (TraceResult, error) {
	demand, err := tr.Demand(b.PeakNodes, b.Target)
	if err != nil {
		return TraceResult{}, err
	}
	sc := Scenario{Name: tr.Name, Demand: demand, Duration: tr.Duration(), Tick: b.Tick, Target: b.Target,
		Fleet: b.Fleet, Seed: b.Seed, Epoch: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}

	out := TraceResult{Scenario: sc, Source: tr.Source}
	ticks := int(sc.Duration / sc.Tick)
	out.Demand = make([]float32, ticks)
	for i := range out.Demand {
		out.Demand[i] = float32(demand(time.Duration(i)*sc.Tick) * 100 / b.Target)
	}
	out.Results = []Result{
		Run(sc, NameCPUTarget, NewCPUTargetPolicy(b.CPUTarget, b.Fleet)),
		Run(sc, NameTargetValue, NewTargetValuePolicy(b.TargetValue, b.Fleet)),
		Run(sc, NameAWS, NewAWSTargetTracking(b.Target)),
		RunOracle(sc),
	}
	return out, nil
}

// Markdown renders the settings, one table per trace, the plots and the
// done-when checks, computed from the figures.
func (b Bench) Markdown(results []TraceResult, plotsDir, docPath string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "Settings: target %g%%, trace peak scaled to %g nodes at target, fleet min %d / max %d, boot-to-ready %s, drain %s, "+
		"spot interruptions %g per node-hour with %s notice, seed %d, %s ticks (metric sampling).\n\n",
		b.Target, b.PeakNodes, b.Fleet.Min, b.Fleet.Max, b.Fleet.BootDelay, b.Fleet.DrainTime, b.Fleet.SpotRate, b.Fleet.Notice, b.Seed, b.Tick)
	fmt.Fprintf(&s, "- `%s`: evaluation %s, query_window %s, cooldown %s, cooldown_on_scale_up %s, config %s\n",
		NameCPUTarget, b.CPUTarget.EvalInterval, b.CPUTarget.QueryWindow, b.CPUTarget.Cooldown, b.CPUTarget.CooldownOnScaleUp, configString(b.CPUTarget.StrategyConfig))
	fmt.Fprintf(&s, "- `%s`: evaluation %s, query_window %s, cooldown %s, cooldown_on_scale_up %s, config %s\n",
		NameTargetValue, b.TargetValue.EvalInterval, b.TargetValue.QueryWindow, b.TargetValue.Cooldown, b.TargetValue.CooldownOnScaleUp, configString(b.TargetValue.StrategyConfig))
	fmt.Fprintf(&s, "- `%s`: 1-minute datapoints, 3 above target to scale out, 15 below 90%% of target to scale in, 300 s cooldowns, no drain\n", NameAWS)
	fmt.Fprintf(&s, "- `%s`: ceil(demand / target) at every tick, no boot, drain or interruption\n", NameOracle)

	for _, tr := range results {
		fmt.Fprintf(&s, "\n### %s\n\n", tr.Scenario.Name)
		fmt.Fprintf(&s, "Source: `%s`; %.1f hours replayed.\n\n", tr.Source, tr.Scenario.Duration.Hours())
		s.WriteString(tr.MarkdownTable())
		if plotsDir != "" {
			plot := filepath.Join(plotsDir, tr.Scenario.Name+".svg")
			if docPath != "" {
				if rel, err := filepath.Rel(filepath.Dir(docPath), plot); err == nil {
					plot = rel
				}
			}
			fmt.Fprintf(&s, "\n![%s: demand, capacity and CPU per policy](%s)\n", tr.Scenario.Name, filepath.ToSlash(plot))
		}
		s.WriteString("\n")
		for _, c := range tr.Checks() {
			fmt.Fprintf(&s, "- %s\n", c)
		}
	}
	return s.String()
}

// Checks states the done-when criteria for this trace and whether each holds.
func (tr TraceResult) Checks() []string {
	by := map[string]Result{}
	for _, r := range tr.Results {
		by[r.Policy] = r
	}
	ours, tv, aws := by[NameCPUTarget], by[NameTargetValue], by[NameAWS]
	mark := func(ok bool) string {
		if ok {
			return "holds"
		}
		return "DOES NOT hold"
	}
	strict := "overload strictly less than both: not applicable, neither baseline overloads on this trace"
	if tv.OverloadPct > 0 || aws.OverloadPct > 0 {
		strict = "overload strictly less than both: " + mark(ours.OverloadPct < tv.OverloadPct && ours.OverloadPct < aws.OverloadPct)
	}
	return []string{
		fmt.Sprintf("overload no more than either baseline (%.3f%% vs target-value %.3f%%, AWS %.3f%%): %s",
			ours.OverloadPct, tv.OverloadPct, aws.OverloadPct, mark(ours.OverloadPct <= tv.OverloadPct && ours.OverloadPct <= aws.OverloadPct)),
		strict,
		fmt.Sprintf("node-hours no more than AWS (%.1f vs %.1f): %s", ours.NodeHours, aws.NodeHours, mark(ours.NodeHours <= aws.NodeHours)),
		fmt.Sprintf("node-hours at most 10%% above target-value (%.1f vs %.1f, %+.1f%%): %s",
			ours.NodeHours, tv.NodeHours, 100*(ours.NodeHours/tv.NodeHours-1), mark(ours.NodeHours <= 1.10*tv.NodeHours)),
		fmt.Sprintf("fewer scaling actions than target-value (%d vs %d): %s", ours.Actions, tv.Actions, mark(ours.Actions < tv.Actions)),
	}
}

func configString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%s", k, m[k])
	}
	return "`" + strings.Join(parts, " ") + "`"
}
