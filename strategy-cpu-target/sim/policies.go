package sim

import (
	"strconv"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	targetvalue "github.com/hashicorp/nomad-autoscaler/plugins/builtin/strategy/target-value/plugin"
	"github.com/hashicorp/nomad-autoscaler/sdk"

	cputarget "github.com/nomad-spotfleet/nomad-spotfleet/strategy-cpu-target/plugin"
)

// Clock is the simulated wall clock handed to a strategy that judges
// staleness.
type Clock struct{ T time.Time }

// Now returns the simulated time.
func (c *Clock) Now() time.Time { return c.T }

// AgentSettings are the agent policy settings that wrap a strategy.
type AgentSettings struct {
	EvalInterval      time.Duration
	QueryWindow       time.Duration
	Cooldown          time.Duration
	CooldownOnScaleUp time.Duration
	// StrategyConfig is the check's strategy block.
	StrategyConfig map[string]string
}

// CPUTargetDefaults are the policy settings recommended for
// strategy-cpu-target with a ~90 s boot-to-ready pool: a 5 m window for
// scale-in, a scale-up cooldown that outlasts one boot plus the 30 s
// scale-out window, so that the next decision sees the new nodes at work.
func CPUTargetDefaults(target float64) AgentSettings {
	return AgentSettings{
		EvalInterval:      10 * time.Second,
		QueryWindow:       5 * time.Minute,
		Cooldown:          2 * time.Minute,
		CooldownOnScaleUp: 2 * time.Minute,
		StrategyConfig:    map[string]string{"target": strconv.FormatFloat(target, 'f', -1, 64)},
	}
}

// TargetValueDefaults are the agent's defaults (10 s evaluation, 1 m query
// window, 5 m cooldown both ways) around the stock target-value strategy.
func TargetValueDefaults(target float64) AgentSettings {
	return AgentSettings{
		EvalInterval:      10 * time.Second,
		QueryWindow:       time.Minute,
		Cooldown:          5 * time.Minute,
		CooldownOnScaleUp: 5 * time.Minute,
		StrategyConfig:    map[string]string{"target": strconv.FormatFloat(target, 'f', -1, 64)},
	}
}

func newAgentPolicy(s AgentSettings, name string, fleet FleetConfig) *AgentPolicy {
	return &AgentPolicy{
		Check: &sdk.ScalingPolicyCheck{
			Name:        "cpu",
			QueryWindow: s.QueryWindow,
			Strategy:    &sdk.ScalingPolicyStrategy{Name: name, Config: s.StrategyConfig},
		},
		Min: int64(fleet.Min), Max: int64(fleet.Max),
		EvalInterval: s.EvalInterval, Cooldown: s.Cooldown, CooldownOnScaleUp: s.CooldownOnScaleUp,
	}
}

// NewCPUTargetPolicy runs this project's strategy, its real code, in process.
func NewCPUTargetPolicy(s AgentSettings, fleet FleetConfig) *AgentPolicy {
	p := newAgentPolicy(s, cputarget.PluginName, fleet)
	p.Clock = &Clock{}
	p.Strategy = cputarget.NewCPUTargetPlugin(hclog.NewNullLogger(), cputarget.WithClock(p.Clock.Now))
	return p
}

// NewTargetValuePolicy runs the stock target-value strategy from the
// nomad-autoscaler module, its real code, in process.
func NewTargetValuePolicy(s AgentSettings, fleet FleetConfig) *AgentPolicy {
	p := newAgentPolicy(s, "target-value", fleet)
	p.Strategy = targetvalue.NewTargetValuePlugin(hclog.NewNullLogger())
	return p
}
