package sim

import (
	"fmt"
	"os"
	"strings"
)

// TraceResult gathers every policy's result on one scenario.
type TraceResult struct {
	Scenario Scenario
	Source   string
	Demand   []float32 // per tick, in nodes needed at target
	Results  []Result  // oracle last
}

// Oracle returns the oracle's result.
func (tr TraceResult) Oracle() Result {
	for _, r := range tr.Results {
		if r.Policy == NameOracle {
			return r
		}
	}
	return Result{}
}

// MarkdownTable renders the per-policy figures of one trace.
func (tr TraceResult) MarkdownTable() string {
	var b strings.Builder
	oracle := tr.Oracle()
	b.WriteString("| policy | overload: CPU > 90% (% of time) | CPU > target+10 (% of time) | mean CPU % | node-hours | ÷ oracle | scaling actions " +
		"| allocations that waited (% of placements) | wait to be placed: mean / p95 (s) | waiting work (node-hours) | spot interruptions |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range tr.Results {
		ratio := "-"
		if oracle.NodeHours > 0 {
			ratio = fmt.Sprintf("%.3f", r.NodeHours/oracle.NodeHours)
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.1f | %.1f | %s | %d | %.2f | %s | %.2f | %d |\n",
			r.Policy, r.OverloadPct, r.AboveBandPct, r.MeanCPU, r.NodeHours, ratio, r.Actions,
			r.Wait.waitedPct(), r.Wait.meanP95(), r.Wait.QueuedNodeHours, r.Interruptions)
	}
	return b.String()
}

func (w WaitStats) waitedPct() float64 {
	if w.Allocations == 0 {
		return 0
	}
	return 100 * float64(w.Waited) / float64(w.Allocations)
}

func (w WaitStats) meanP95() string {
	if w.Waited == 0 {
		return "- / -"
	}
	return fmt.Sprintf("%.0f / %.0f", w.MeanSeconds, w.P95Seconds)
}

// Text renders the same figures for a terminal.
func (tr TraceResult) Text() string {
	var b strings.Builder
	oracle := tr.Oracle()
	fmt.Fprintf(&b, "%s (%s, %.1f h)\n", tr.Scenario.Name, tr.Source, tr.Scenario.Duration.Hours())
	fmt.Fprintf(&b, "  %-31s %8s %8s %7s %9s %7s %7s %7s %11s %8s %5s %s\n", "policy", ">90%", ">tgt+10", "meanCPU", "node-h", "/oracle", "actions",
		"waited", "wait mean/95", "queued", "spot", "notready/failed/noops/errors")
	for _, r := range tr.Results {
		fmt.Fprintf(&b, "  %-31s %7.3f%% %7.3f%% %6.1f%% %9.1f %7.3f %7d %6.2f%% %11s %8.2f %5d %d/%d/%d/%d\n", r.Policy, r.OverloadPct, r.AboveBandPct,
			r.MeanCPU, r.NodeHours, r.NodeHours/oracle.NodeHours, r.Actions, r.Wait.waitedPct(), r.Wait.meanP95(), r.Wait.QueuedNodeHours,
			r.Interruptions, r.NotReady, r.Failed, r.NoOps, r.Errors)
	}
	return b.String()
}

// Doc markers delimit the generated part of the results document.
const (
	DocBegin = "<!-- BEGIN GENERATED RESULTS (make bench) -->"
	DocEnd   = "<!-- END GENERATED RESULTS -->"
)

// UpdateDoc replaces the text between DocBegin and DocEnd in path with
// generated, leaving the rest of the document as written.
func UpdateDoc(path, generated string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	s := string(old)
	i, j := strings.Index(s, DocBegin), strings.Index(s, DocEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q section to regenerate", path, DocBegin, DocEnd)
	}
	out := s[:i+len(DocBegin)] + "\n" + generated + "\n" + s[j:]
	return os.WriteFile(path, []byte(out), 0o644)
}
