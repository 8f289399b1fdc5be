package sim

import (
	"fmt"
	"strings"
	"time"
)

// variation is one change to the bench settings, applied to every policy.
type variation struct {
	label string
	apply func(b *Bench)
}

func variations(b Bench) []variation {
	boot := func(d, up time.Duration) variation {
		label := fmt.Sprintf("boot %s, cooldown_on_scale_up %s", d, up)
		return variation{label, func(b *Bench) { b.Fleet.BootDelay = d; b.CPUTarget.CooldownOnScaleUp = up }}
	}
	return []variation{
		{"as benchmarked", func(*Bench) {}},
		{"query_window 3m", func(b *Bench) { b.CPUTarget.QueryWindow = 3 * time.Minute }},
		{"query_window 10m", func(b *Bench) { b.CPUTarget.QueryWindow = 10 * time.Minute }},
		{"cooldown (scale-in) 5m", func(b *Bench) { b.CPUTarget.Cooldown = 5 * time.Minute }},
		{"tolerance 0.02", func(b *Bench) { b.CPUTarget.StrategyConfig = withKey(b.CPUTarget.StrategyConfig, "tolerance", "0.02") }},
		boot(60*time.Second, b.CPUTarget.CooldownOnScaleUp),
		boot(180*time.Second, b.CPUTarget.CooldownOnScaleUp),
		boot(180*time.Second, 210*time.Second),
		{"spot interruptions 0.05 per node-hour", func(b *Bench) { b.Fleet.SpotRate = 0.05 }},
		{"drain 5m", func(b *Bench) { b.Fleet.DrainTime = 5 * time.Minute }},
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
// one Markdown row per variation: overload, node-hours and actions of
// strategy-cpu-target beside the two baselines under the same variation.
func (b Bench) Sensitivity(tr Trace) (string, error) {
	var s strings.Builder
	fmt.Fprintf(&s, "| variation (%s) | overload ours / target-value / AWS (%% of time) | node-hours ours / target-value / AWS | actions ours / target-value |\n", tr.Name)
	fmt.Fprintf(&s, "|---|---|---|---|\n")
	for _, v := range variations(b) {
		vb := b
		vb.CPUTarget.StrategyConfig = withKey(b.CPUTarget.StrategyConfig, "target", b.CPUTarget.StrategyConfig["target"])
		v.apply(&vb)
		res, err := vb.Replay(tr)
		if err != nil {
			return "", err
		}
		by := map[string]Result{}
		for _, r := range res.Results {
			by[r.Policy] = r
		}
		o, tv, aws := by[NameCPUTarget], by[NameTargetValue], by[NameAWS]
		fmt.Fprintf(&s, "| %s | %.3f / %.3f / %.3f | %.1f / %.1f / %.1f | %d / %d |\n",
			v.label, o.OverloadPct, tv.OverloadPct, aws.OverloadPct, o.NodeHours, tv.NodeHours, aws.NodeHours, o.Actions, tv.Actions)
	}
	return s.String(), nil
}
