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
	NameCPUTarget         = "strategy-cpu-target"
	NameCPUTargetUnplaced = "strategy-cpu-target + unplaced"
	NameTargetValue       = "target-value"
	NameAWS               = "aws-target-tracking"
	NameOracle            = "oracle"
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
	// AWSPublishDelay is CloudWatch's delay before a datapoint can be used.
	AWSPublishDelay time.Duration
	// AWSNoScaleOutInCooldown is the earlier AWS model's rule (see
	// AWSTargetTracking.NoScaleOutInCooldown), for comparison only.
	AWSNoScaleOutInCooldown bool
	// Unplaced adds strategy-cpu-target with a second check on apm-node's
	// unplaced_nodes (Unplaced settings) beside the CPU-only one.
	Unplaced      bool
	UnplacedCheck *CheckSettings
}

// Replay runs every policy over one trace, with the same seed and the same
// spot interruption warnings for each.
func (b Bench) Replay(tr Trace) (TraceResult, error) {
	demand, err := tr.Demand(b.PeakNodes, b.Target)
	if err != nil {
		return TraceResult{}, err
	}
	sc := Scenario{Name: tr.Name, Demand: demand, Duration: tr.Duration(), Tick: b.Tick, Target: b.Target,
		Fleet: b.Fleet, Seed: b.Seed, Epoch: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	sc.Spot = sc.spot()

	out := TraceResult{Scenario: sc, Source: tr.Source}
	ticks := int(sc.Duration / sc.Tick)
	out.Demand = make([]float32, ticks)
	for i := range out.Demand {
		out.Demand[i] = float32(demand(time.Duration(i)*sc.Tick) * 100 / b.Target)
	}
	out.Results = append(out.Results, Run(sc, NameCPUTarget, NewCPUTargetPolicy(b.CPUTarget, b.Fleet)))
	if b.Unplaced {
		s := b.CPUTarget
		s.Unplaced = b.UnplacedCheck
		if s.Unplaced == nil {
			s.Unplaced = UnplacedCheck()
		}
		out.Results = append(out.Results, Run(sc, NameCPUTargetUnplaced, NewCPUTargetPolicy(s, b.Fleet)))
	}
	out.Results = append(out.Results,
		Run(sc, NameTargetValue, NewTargetValuePolicy(b.TargetValue, b.Fleet)),
		Run(sc, NameAWS, b.awsModel()),
		RunOracle(sc),
	)
	return out, nil
}

// Markdown renders the settings, one table per trace, the plots and the
// goal's checks, computed from the figures.
func (b Bench) Markdown(results []TraceResult, plotsDir, docPath string) string {
	var s strings.Builder
	f := b.Fleet
	fmt.Fprintf(&s, "Settings (the same for every trace): target %g%%, trace peak scaled to %g nodes at target, fleet min %d / max %d, "+
		"boot-to-ready %s, scale-in drain %s, fleet request modifying %s after each change, "+
		"Scale returns %s after a scale-out, allocations of %g node each, spot interruptions %g per node-hour with %s notice "+
		"(interruption drain deadline %s), seed %d, %s ticks (metric sampling).\n\n",
		b.Target, b.PeakNodes, f.Min, f.Max, f.BootDelay, f.DrainTime, f.ModifyTime, f.ScaleOutCall, f.AllocSize,
		f.SpotRate, f.Notice, f.InterruptDrainDeadline, b.Seed, b.Tick)
	agent := func(name string, a AgentSettings) {
		fmt.Fprintf(&s, "- `%s`: evaluation %s, query_window %s, cooldown %s, cooldown_on_scale_up %s, config %s",
			name, a.EvalInterval, a.QueryWindow, a.Cooldown, a.CooldownOnScaleUp, configString(a.StrategyConfig))
		if a.Group != "" {
			fmt.Fprintf(&s, ", group `%s`", a.Group)
		}
		s.WriteString("\n")
	}
	agent(NameCPUTarget, b.CPUTarget)
	if b.Unplaced {
		u := b.UnplacedCheck
		if u == nil {
			u = UnplacedCheck()
		}
		fmt.Fprintf(&s, "- `%s`: the same, plus a second check in the same group on apm-node's `unplaced_nodes`: query_window %s, config %s\n",
			NameCPUTargetUnplaced, u.QueryWindow, configString(u.StrategyConfig))
	}
	agent(NameTargetValue, b.TargetValue)
	fmt.Fprintf(&s, "- `%s`: 1-minute datapoints published %s after their minute, 3 above target to scale out, 15 below 90%% of target to scale in, "+
		"300 s cooldowns (scale-out continues during its cooldown, counting the capacity added), no drain\n", NameAWS, b.AWSPublishDelay)
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

// Checks states the goal of issue 11 for this trace and whether it holds,
// for each variant of strategy-cpu-target: on a trace where a baseline
// overloads, overload below 1%, node-hours no more than the AWS model's
// and at most 10% above target-value's, fewer actions than target-value;
// where neither overloads, no worse than either baseline (overload and
// node-hours).
func (tr TraceResult) Checks() []string {
	by := map[string]Result{}
	for _, r := range tr.Results {
		by[r.Policy] = r
	}
	tv, aws := by[NameTargetValue], by[NameAWS]
	mark := func(ok bool) string {
		if ok {
			return "holds"
		}
		return "DOES NOT hold"
	}
	var out []string
	for _, name := range []string{NameCPUTarget, NameCPUTargetUnplaced} {
		ours, ok := by[name]
		if !ok {
			continue
		}
		if tv.OverloadPct == 0 && aws.OverloadPct == 0 {
			out = append(out,
				fmt.Sprintf("`%s`: overload no more than either baseline (%.3f%% vs target-value %.3f%%, AWS %.3f%%): %s", name,
					ours.OverloadPct, tv.OverloadPct, aws.OverloadPct, mark(ours.OverloadPct <= tv.OverloadPct && ours.OverloadPct <= aws.OverloadPct)),
				fmt.Sprintf("`%s`: node-hours no more than either baseline (%.1f vs target-value %.1f, AWS %.1f): %s", name,
					ours.NodeHours, tv.NodeHours, aws.NodeHours, mark(ours.NodeHours <= tv.NodeHours && ours.NodeHours <= aws.NodeHours)))
			continue
		}
		out = append(out,
			fmt.Sprintf("`%s`: overload below 1%% (%.3f%%; target-value %.3f%%, AWS %.3f%%): %s", name,
				ours.OverloadPct, tv.OverloadPct, aws.OverloadPct, mark(ours.OverloadPct < 1)),
			fmt.Sprintf("`%s`: node-hours no more than AWS (%.1f vs %.1f, %+.1f%%): %s", name, ours.NodeHours, aws.NodeHours,
				100*(ours.NodeHours/aws.NodeHours-1), mark(ours.NodeHours <= aws.NodeHours)),
			fmt.Sprintf("`%s`: node-hours at most 10%% above target-value (%.1f vs %.1f, %+.1f%%): %s", name,
				ours.NodeHours, tv.NodeHours, 100*(ours.NodeHours/tv.NodeHours-1), mark(ours.NodeHours <= 1.10*tv.NodeHours)),
			fmt.Sprintf("`%s`: fewer scaling actions than target-value (%d vs %d): %s", name, ours.Actions, tv.Actions, mark(ours.Actions < tv.Actions)),
		)
	}
	return out
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

func (b Bench) awsModel() *AWSTargetTracking {
	a := NewAWSTargetTracking(b.Target, b.AWSPublishDelay)
	a.NoScaleOutInCooldown = b.AWSNoScaleOutInCooldown
	return a
}
