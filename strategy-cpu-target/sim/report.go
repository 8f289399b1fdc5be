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
		if r.Policy == "oracle" {
			return r
		}
	}
	return Result{}
}

// MarkdownTable renders the per-policy figures of one trace.
func (tr TraceResult) MarkdownTable() string {
	var b strings.Builder
	oracle := tr.Oracle()
	fmt.Fprintf(&b, "| policy | overload: CPU > 90%% (%% of time) | CPU > target+10 (%% of time) | mean CPU %% | node-hours | ÷ oracle | scaling actions | spot interruptions |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range tr.Results {
		ratio := "-"
		if oracle.NodeHours > 0 {
			ratio = fmt.Sprintf("%.3f", r.NodeHours/oracle.NodeHours)
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.1f | %.1f | %s | %d | %d |\n",
			r.Policy, r.OverloadPct, r.AboveBandPct, r.MeanCPU, r.NodeHours, ratio, r.Actions, r.Interruptions)
	}
	return b.String()
}

// Text renders the same figures for a terminal.
func (tr TraceResult) Text() string {
	var b strings.Builder
	oracle := tr.Oracle()
	fmt.Fprintf(&b, "%s (%s, %.1f h)\n", tr.Scenario.Name, tr.Source, tr.Scenario.Duration.Hours())
	fmt.Fprintf(&b, "  %-20s %9s %9s %8s %10s %8s %8s %6s\n", "policy", ">90%", ">tgt+10", "meanCPU", "node-h", "/oracle", "actions", "spot")
	for _, r := range tr.Results {
		fmt.Fprintf(&b, "  %-20s %8.3f%% %8.3f%% %7.1f%% %10.1f %8.3f %8d %6d\n", r.Policy, r.OverloadPct, r.AboveBandPct,
			r.MeanCPU, r.NodeHours, r.NodeHours/oracle.NodeHours, r.Actions, r.Interruptions)
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
