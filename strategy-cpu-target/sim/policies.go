package sim

import (
	"strconv"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	targetvalue "github.com/hashicorp/nomad-autoscaler/plugins/builtin/strategy/target-value/plugin"
	"github.com/hashicorp/nomad-autoscaler/plugins/strategy"
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
	// Group is the checks' group (both checks share it).
	Group string
	// Unplaced, when set, adds a second check on apm-node's unplaced_nodes.
	Unplaced *CheckSettings
}

// CheckSettings are the settings of one more check of a policy.
type CheckSettings struct {
	QueryWindow    time.Duration
	StrategyConfig map[string]string
}

// UnplacedCheck is the second check of strategy-cpu-target on apm-node's
// unplaced_nodes (signal = "unplaced"; the strategy uses the newest
// datapoint).
func UnplacedCheck() *CheckSettings {
	return &CheckSettings{QueryWindow: time.Minute, StrategyConfig: map[string]string{"signal": "unplaced"}}
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
		Group:             "pool",
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

func newAgentPolicy(s AgentSettings, name string, r strategy.Runner, fleet FleetConfig) *AgentPolicy {
	p := &AgentPolicy{
		Checks: []AgentCheck{{
			Check: &sdk.ScalingPolicyCheck{
				Name:        "cpu",
				Group:       s.Group,
				QueryWindow: s.QueryWindow,
				Strategy:    &sdk.ScalingPolicyStrategy{Name: name, Config: s.StrategyConfig},
			},
			Strategy: r,
			Metric:   MetricCPU,
		}},
		Min: int64(fleet.Min), Max: int64(fleet.Max),
		EvalInterval: s.EvalInterval, Cooldown: s.Cooldown, CooldownOnScaleUp: s.CooldownOnScaleUp,
	}
	if s.Unplaced != nil {
		p.Checks = append(p.Checks, AgentCheck{
			Check: &sdk.ScalingPolicyCheck{
				Name:        "unplaced",
				Group:       s.Group,
				QueryWindow: s.Unplaced.QueryWindow,
				Strategy:    &sdk.ScalingPolicyStrategy{Name: name, Config: s.Unplaced.StrategyConfig},
			},
			Strategy: r,
			Metric:   MetricUnplaced,
		})
	}
	return p
}

// NewCPUTargetPolicy runs this project's strategy, its real code, in
// process: one CPU check, and with s.Unplaced a second check on apm-node's
// unplaced_nodes in the same group.
func NewCPUTargetPolicy(s AgentSettings, fleet FleetConfig) *AgentPolicy {
	clock := &Clock{}
	r := cputarget.NewCPUTargetPlugin(hclog.NewNullLogger(), cputarget.WithClock(clock.Now))
	p := newAgentPolicy(s, cputarget.PluginName, r, fleet)
	p.Clock = clock
	return p
}

// NewTargetValuePolicy runs the stock target-value strategy from the
// nomad-autoscaler module, its real code, in process.
func NewTargetValuePolicy(s AgentSettings, fleet FleetConfig) *AgentPolicy {
	return newAgentPolicy(s, "target-value", targetvalue.NewTargetValuePlugin(hclog.NewNullLogger()), fleet)
}
