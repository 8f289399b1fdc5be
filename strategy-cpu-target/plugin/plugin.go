// Package plugin is the strategy-cpu-target Nomad Autoscaler strategy: it
// holds the average CPU of a pool of nodes at a target, scaling out fast on
// the recent load (past the proportional step when the CPU is saturated and
// still rising) and scaling in only as far as the peak of the whole query
// window allows. A check with signal = "unplaced" reads apm-node's
// unplaced_nodes instead and adds the nodes waiting work needs; it never
// scales in (docs/unplaced.md).
package plugin

import (
	"errors"
	"fmt"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/plugins/base"
	"github.com/hashicorp/nomad-autoscaler/plugins/strategy"
	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// PluginName is the name of this plugin; the agent requires it to match the
// binary's name.
const PluginName = "strategy-cpu-target"

var pluginInfo = &base.PluginInfo{
	Name:       PluginName,
	PluginType: sdk.PluginTypeStrategy,
}

// Assert that StrategyPlugin meets the strategy.Strategy interface.
var _ strategy.Strategy = (*StrategyPlugin)(nil)

// StrategyPlugin is the cpu-target implementation of strategy.Strategy. It
// keeps no state between evaluations: every decision comes from the query
// window and the current count alone, so an agent restart changes nothing.
type StrategyPlugin struct {
	logger hclog.Logger
	now    func() time.Time
}

// Option changes how a StrategyPlugin is built.
type Option func(*StrategyPlugin)

// WithClock sets the clock used to judge whether datapoints are stale; the
// simulator and the tests replay time with it.
func WithClock(now func() time.Time) Option {
	return func(s *StrategyPlugin) { s.now = now }
}

// NewCPUTargetPlugin returns the cpu-target strategy.
func NewCPUTargetPlugin(log hclog.Logger, opts ...Option) *StrategyPlugin {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &StrategyPlugin{logger: log, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// SetConfig satisfies base.Base. The plugin block needs no settings; every
// key (including the agent's nomad_* keys) is accepted and ignored, since
// all tuning lives in each check's strategy block.
func (s *StrategyPlugin) SetConfig(config map[string]string) error {
	s.logger.Debug("plugin config ignored: settings belong in the check's strategy block", "keys", len(config))
	return nil
}

// PluginInfo satisfies base.Base.
func (s *StrategyPlugin) PluginInfo() (*base.PluginInfo, error) {
	return pluginInfo, nil
}

// Run satisfies strategy.Strategy: it fills eval.Action with the desired
// count, the direction and a Reason that states the numbers behind it.
func (s *StrategyPlugin) Run(eval *sdk.ScalingCheckEvaluation, count int64) (*sdk.ScalingCheckEvaluation, error) {
	if eval == nil || eval.Check == nil || eval.Check.Strategy == nil {
		return nil, errors.New("invalid evaluation: the check and its strategy block are required")
	}
	cfg, err := parseCheckConfig(eval.Check.Strategy.Config)
	if err != nil {
		return nil, fmt.Errorf("check %q: %w", eval.Check.Name, err)
	}
	log := s.logger.With("check", eval.Check.Name, "signal", cfg.Signal, "count", count)
	if count < 0 {
		return nil, fmt.Errorf("check %q: current count %d is negative", eval.Check.Name, count)
	}
	if eval.Action == nil {
		eval.Action = &sdk.ScalingAction{}
	}
	eval.Action.Canonicalize()

	var d decision
	var problem string
	if cfg.Signal == signalUnplaced {
		var nodes float64
		var at time.Time
		nodes, at, problem = newestNodes(eval.Metrics, cfg.MaxDataAge, s.now())
		if problem == "" {
			d = decideUnplaced(cfg, count, nodes, at)
		}
	} else {
		var w window
		w, problem = summarise(eval.Metrics, cfg.ScaleOutWindow, cfg.TrendWindow, cfg.RiseWindow, cfg.MaxDataAge, s.now())
		if problem == "" {
			d = decide(cfg, count, w, eval.Check.QueryWindow)
		}
	}
	if problem != "" {
		d = decision{Direction: sdk.ScaleDirectionNone, Count: count,
			Reason: fmt.Sprintf("hold %d: no action, %s", count, problem)}
	}

	eval.Action.Direction = d.Direction
	eval.Action.Count = d.Count
	eval.Action.Reason = d.Reason
	if cfg.DryRun && d.Direction != sdk.ScaleDirectionNone {
		eval.Action.Reason = "dry-run, not applied: " + d.Reason
		eval.Action.SetDryRun()
	}

	switch {
	case problem != "":
		log.Warn(eval.Action.Reason)
	case d.Direction == sdk.ScaleDirectionNone:
		log.Debug(eval.Action.Reason)
	default:
		log.Info(eval.Action.Reason)
	}
	return eval, nil
}
