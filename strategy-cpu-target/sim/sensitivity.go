package sim

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"
)

// variation is one change to the bench settings (or to the trace's
// replay), applied to every policy it concerns.
type variation struct {
	label string
	apply func(b *Bench, tr *Trace)
}

func variations(b Bench) []variation {
	boot := func(d, up time.Duration) variation {
		label := fmt.Sprintf("boot %s, cooldown_on_scale_up %s", d, up)
		return variation{label, func(b *Bench, _ *Trace) { b.Fleet.BootDelay = d; b.CPUTarget.CooldownOnScaleUp = up }}
	}
	return []variation{
		{"as benchmarked", func(*Bench, *Trace) {}},
		{"trace interpolated between bucket centres (the old default was interpolation)", func(_ *Bench, tr *Trace) { tr.Interpolate = true }},
		{"AWS publication delay 0", func(b *Bench, _ *Trace) { b.AWSPublishDelay = 0 }},
		{"AWS publication delay 2m", func(b *Bench, _ *Trace) { b.AWSPublishDelay = 2 * time.Minute }},
		{"AWS without scale-out during its scale-out cooldown (the old model)", func(b *Bench, _ *Trace) { b.AWSNoScaleOutInCooldown = true }},
		{"target-spotfleet answers at once: no modifying state, Scale returns at once after a scale-out", func(b *Bench, _ *Trace) {
			b.Fleet.ModifyTime, b.Fleet.ScaleOutCall = 0, 0
		}},
		{"query_window 3m", func(b *Bench, _ *Trace) { b.CPUTarget.QueryWindow = 3 * time.Minute }},
		{"query_window 10m", func(b *Bench, _ *Trace) { b.CPUTarget.QueryWindow = 10 * time.Minute }},
		{"cooldown (scale-in) 5m", func(b *Bench, _ *Trace) { b.CPUTarget.Cooldown = 5 * time.Minute }},
		{"rise_window 0s: no headroom for recent rises on scale-in (the earlier behaviour)", func(b *Bench, _ *Trace) {
			b.CPUTarget.StrategyConfig = withKey(b.CPUTarget.StrategyConfig, "rise_window", "0s")
		}},
		{"rise_window 3m", func(b *Bench, _ *Trace) {
			b.CPUTarget.StrategyConfig = withKey(b.CPUTarget.StrategyConfig, "rise_window", "3m")
		}},
		{"scale_out_window 60s", func(b *Bench, _ *Trace) {
			b.CPUTarget.StrategyConfig = withKey(b.CPUTarget.StrategyConfig, "scale_out_window", "60s")
		}},
		{"tolerance 0.02", func(b *Bench, _ *Trace) {
			b.CPUTarget.StrategyConfig = withKey(b.CPUTarget.StrategyConfig, "tolerance", "0.02")
		}},
		boot(60*time.Second, b.CPUTarget.CooldownOnScaleUp),
		boot(180*time.Second, b.CPUTarget.CooldownOnScaleUp),
		boot(180*time.Second, 210*time.Second),
		{"spot interruptions 0.05 per node-hour", func(b *Bench, _ *Trace) { b.Fleet.SpotRate = 0.05 }},
		{"drain 5m", func(b *Bench, _ *Trace) { b.Fleet.DrainTime = 5 * time.Minute }},
	}
}

func withKey(m map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(m)+1)
	for key, val := range m {
		out[key] = val
	}
	out[k] = v
	return out
}

// Sensitivity replays tr under each variation of the settings and renders
// one Markdown row per variation: overload, node-hours, actions and the
// p95 wait to be placed of strategy-cpu-target (with the unplaced check
// too when the bench has it) beside the two baselines under the same
// variation.
func (b Bench) Sensitivity(tr Trace) (string, error) {
	names := []string{NameCPUTarget}
	head := "ours"
	if b.Unplaced {
		names = append(names, NameCPUTargetUnplaced)
		head = "ours / ours + unplaced"
	}
	names = append(names, NameTargetValue, NameAWS)
	var s strings.Builder
	fmt.Fprintf(&s, "| variation (%s) | overload %% of time: %s / target-value / AWS | node-hours, same order | actions, same order | p95 wait to be placed (s), same order |\n", tr.Name, head)
	fmt.Fprintf(&s, "|---|---|---|---|---|\n")
	vs := variations(b)
	rows := make([]string, len(vs))
	errs := make([]error, len(vs))
	sem := make(chan struct{}, max(1, runtime.GOMAXPROCS(0)))
	var wg sync.WaitGroup
	for i, v := range vs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rows[i], errs[i] = b.sensitivityRow(tr, v, names)
		}()
	}
	wg.Wait()
	for i := range vs {
		if errs[i] != nil {
			return "", errs[i]
		}
		s.WriteString(rows[i])
	}
	return s.String(), nil
}

func (b Bench) sensitivityRow(tr Trace, v variation, names []string) (string, error) {
	vb, vt := b, tr
	vb.CPUTarget.StrategyConfig = withKey(b.CPUTarget.StrategyConfig, "target", b.CPUTarget.StrategyConfig["target"])
	v.apply(&vb, &vt)
	res, err := vb.Replay(vt)
	if err != nil {
		return "", err
	}
	by := map[string]Result{}
	for _, r := range res.Results {
		by[r.Policy] = r
	}
	var over, nh, acts, p95 []string
	for _, n := range names {
		r := by[n]
		over = append(over, fmt.Sprintf("%.3f", r.OverloadPct))
		nh = append(nh, fmt.Sprintf("%.1f", r.NodeHours))
		acts = append(acts, fmt.Sprintf("%d", r.Actions))
		p95 = append(p95, fmt.Sprintf("%.0f", r.Wait.P95Seconds))
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s |\n", v.label, strings.Join(over, " / "), strings.Join(nh, " / "),
		strings.Join(acts, " / "), strings.Join(p95, " / ")), nil
}
