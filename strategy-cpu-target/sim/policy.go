package sim

import (
	"errors"
	"math"
	"sort"
	"time"

	"github.com/hashicorp/nomad-autoscaler/plugins/strategy"
	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// Policy decides the fleet's capacity as time passes.
type Policy interface {
	// NomadAware reports whether scaling goes through the Nomad-aware
	// spotfleet target (drain on scale-in, replace on interruption notice).
	NomadAware() bool
	// Evaluate is called once per tick, after the tick's samples are
	// recorded; it may scale the fleet. It reports whether it started a
	// scaling action that changed the fleet.
	Evaluate(now time.Duration, f *Fleet, h *History) bool
}

// Metric names the series of History a check queries.
type Metric int

// The metrics the APM (apm-node) serves in the model.
const (
	MetricCPU      Metric = iota // pool average CPU, percent
	MetricUnplaced               // apm-node's unplaced_nodes: additional empty nodes needed
)

// History holds what the APM plugin would report, sampled every tick.
type History struct {
	Tick     time.Duration
	Epoch    time.Time
	CPU      []float64 // CPU[i] was sampled at i × Tick
	Unplaced []float64 // NaN: no datapoint (the pool has no node)
}

// Window returns the datapoints of m sampled in (now-d, now] as the APM
// would return them for a query window d.
func (h *History) Window(m Metric, now, d time.Duration) sdk.TimestampedMetrics {
	series := h.CPU
	if m == MetricUnplaced {
		series = h.Unplaced
	}
	last := int(now / h.Tick)
	first := max(0, last-int(d/h.Tick)+1)
	ms := make(sdk.TimestampedMetrics, 0, max(0, last-first+1))
	for i := first; i <= last && i < len(series); i++ {
		if math.IsNaN(series[i]) {
			continue
		}
		ms = append(ms, sdk.TimestampedMetric{Timestamp: h.Epoch.Add(time.Duration(i) * h.Tick), Value: series[i]})
	}
	return ms
}

// AgentCheck is one check of an agent policy: the check block, its strategy
// plugin and the metric its query returns.
type AgentCheck struct {
	Check    *sdk.ScalingPolicyCheck
	Strategy strategy.Runner
	Metric   Metric
}

type agentState int

const (
	stateIdle agentState = iota
	stateScaling
	stateCooldown
)

// AgentPolicy drives strategy plugins the way the Nomad Autoscaler agent
// v0.5.0 does (policy/handler.go, policy/check.go): every EvaluationInterval
// it reads the target's Status and skips the evaluation when the target is
// not ready; it runs every check (query window, strategy, cap to min/max;
// a check without datapoints fails the whole evaluation, a strategy error
// leaves that check an empty action, direction none, as the default
// on_error does), picks the winner as pickWinnerActionFromGroups does,
// and when the count changes and the policy is idle, calls Scale. The
// cooldown (CooldownOnScaleUp after a scale-out, Cooldown otherwise) starts
// when Scale returns; a no-op answer starts none.
type AgentPolicy struct {
	Checks            []AgentCheck
	Min, Max          int64
	EvalInterval      time.Duration
	Cooldown          time.Duration
	CooldownOnScaleUp time.Duration

	// Clock, when set, is moved to each evaluation's time before the
	// strategies run.
	Clock *Clock

	nextEval      time.Duration
	state         agentState
	scaleReturns  time.Duration
	scaleNoop     bool
	scaleUp       bool
	outOfCooldown time.Duration

	// Errors counts strategy errors (the check's result is then an empty
	// action, as with the default on_error).
	Errors int
	// FailedEvaluations counts evaluations failed for want of metrics.
	FailedEvaluations int
	// NotReady counts evaluations skipped because the target was not ready.
	NotReady int
	// NoOps counts Scale calls the target answered as a no-op.
	NoOps int
	// LastReason is the Reason of the last action taken.
	LastReason string
}

// NomadAware is true: the agent scales through the spotfleet target.
func (a *AgentPolicy) NomadAware() bool { return true }

var errNoMetrics = errors.New("no metrics available")

// Evaluate runs one agent evaluation when one is due.
func (a *AgentPolicy) Evaluate(now time.Duration, f *Fleet, h *History) bool {
	if a.state == stateScaling && now >= a.scaleReturns {
		a.finishScale()
	}
	if now < a.nextEval {
		return false
	}
	a.nextEval = now + a.EvalInterval
	ready, count := f.Status(now)
	if !ready {
		a.NotReady++
		return false
	}
	if a.Clock != nil {
		a.Clock.T = h.Epoch.Add(now)
	}
	action, err := a.calculate(now, int64(count), h)
	if err != nil {
		a.FailedEvaluations++
		return false
	}
	if action == nil || action.Direction == sdk.ScaleDirectionNone || action.Count == int64(count) {
		return false
	}
	if a.state == stateCooldown && now > a.outOfCooldown {
		a.state = stateIdle
	}
	if a.state != stateIdle {
		return false // on cooldown, or the target still scaling
	}
	a.state = stateScaling
	a.scaleUp = action.Direction == sdk.ScaleDirectionUp
	a.scaleReturns, a.scaleNoop = f.ScaleTo(int(action.Count), now)
	if a.scaleNoop {
		a.NoOps++
	} else {
		a.LastReason = action.Reason
	}
	if now >= a.scaleReturns {
		a.finishScale()
	}
	return !a.scaleNoop
}

func (a *AgentPolicy) finishScale() {
	if a.scaleNoop {
		a.state = stateIdle
		return
	}
	a.state = stateCooldown
	cd := a.Cooldown
	if a.scaleUp {
		cd = a.CooldownOnScaleUp
	}
	a.outOfCooldown = a.scaleReturns + cd
}

// calculate runs every check and returns the winning action.
func (a *AgentPolicy) calculate(now time.Duration, count int64, h *History) (*sdk.ScalingAction, error) {
	groups := map[string][]*sdk.ScalingAction{}
	for _, c := range a.Checks {
		ms := h.Window(c.Metric, now, c.Check.QueryWindow)
		if len(ms) == 0 {
			return nil, errNoMetrics
		}
		eval := &sdk.ScalingCheckEvaluation{
			Check:   c.Check,
			Action:  &sdk.ScalingAction{Meta: map[string]interface{}{"nomad_policy_id": "sim"}},
			Metrics: ms,
		}
		action := sdk.ScalingAction{}
		resp, err := c.Strategy.Run(eval, count)
		switch {
		case err != nil:
			a.Errors++
		case resp != nil && resp.Action != nil:
			action = *resp.Action
		}
		action.CapCount(a.Min, a.Max)
		groups[c.Check.Group] = append(groups[c.Check.Group], &action)
	}
	return pickWinner(groups), nil
}

// pickWinner chooses among the checks' actions as agent v0.5.0's
// pickWinnerActionFromGroups does: within a named group, none is ignored
// unless every check of the group says none; across groups and within
// them, sdk.PreemptScalingAction decides (up beats none beats down; the
// larger count wins among ups and among downs).
func pickWinner(groups map[string][]*sdk.ScalingAction) *sdk.ScalingAction {
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	var winner *sdk.ScalingAction
	for _, g := range names {
		results := groups[g]
		var gw *sdk.ScalingAction
		none := 0
		for _, r := range results {
			if g != "" && r.Direction == sdk.ScaleDirectionNone {
				none++
				continue
			}
			gw = sdk.PreemptScalingAction(gw, r)
		}
		if none > 0 && none == len(results) {
			gw = results[0]
		}
		if gw == nil {
			continue
		}
		winner = sdk.PreemptScalingAction(winner, gw)
	}
	return winner
}

// AWSTargetTracking models Application Auto Scaling target tracking on the
// fleet's EC2SpotFleetRequestAverageCPUUtilization. CloudWatch has one
// datapoint per Period (the mean of the samples in it), available
// PublishDelay after the period ends. The alarms are evaluated every
// period on the datapoints available: scale out when the last OutPoints
// are above target, scale in when the last InPoints are below InRatio ×
// target; the new capacity is proportional to the last datapoint. An alarm
// in ALARM invokes the policy again every period. During the scale-out
// cooldown a further scale-out happens when the new desired capacity,
// computed on the capacity before the scale-out that began the cooldown,
// exceeds the current one (the capacity already added counts); a scale-out
// ends the scale-in cooldown; no scale-in within InCooldown of a scale-in
// or OutCooldown of a scale-out. It terminates without draining.
type AWSTargetTracking struct {
	Target       float64
	Period       time.Duration
	PublishDelay time.Duration
	OutPoints    int
	InPoints     int
	InRatio      float64
	OutCooldown  time.Duration
	InCooldown   time.Duration
	// NoScaleOutInCooldown blocks every scale-out during the scale-out
	// cooldown (the benchmark's earlier model; not what AWS documents).
	NoScaleOutInCooldown bool

	pending      []datapoint // computed, not yet published
	above, below int
	last         float64
	outUntil     time.Duration
	outBase      int
	inUntil      time.Duration
	published    bool
}

type datapoint struct {
	at    time.Duration // published at
	value float64
}

// NewAWSTargetTracking returns the model with AWS's documented defaults for
// a Spot Fleet and a publication delay.
func NewAWSTargetTracking(target float64, publishDelay time.Duration) *AWSTargetTracking {
	return &AWSTargetTracking{Target: target, Period: time.Minute, PublishDelay: publishDelay, OutPoints: 3, InPoints: 15, InRatio: 0.9,
		OutCooldown: 300 * time.Second, InCooldown: 300 * time.Second}
}

// NomadAware is false: AWS terminates without draining.
func (a *AWSTargetTracking) NomadAware() bool { return false }

// Evaluate closes a datapoint at each period's end, publishes those whose
// delay has passed, and applies the alarms.
func (a *AWSTargetTracking) Evaluate(now time.Duration, f *Fleet, h *History) bool {
	if now > 0 && now%a.Period == 0 {
		// The period [now-Period, now): the samples taken in it.
		ms := h.Window(MetricCPU, now-h.Tick, a.Period)
		if len(ms) > 0 {
			dp := 0.0
			for _, m := range ms {
				dp += m.Value
			}
			a.pending = append(a.pending, datapoint{at: now + a.PublishDelay, value: dp / float64(len(ms))})
		}
	}
	fresh := false
	for len(a.pending) > 0 && a.pending[0].at <= now {
		dp := a.pending[0].value
		a.pending = a.pending[1:]
		fresh, a.published, a.last = true, true, dp
		if dp > a.Target {
			a.above++
		} else {
			a.above = 0
		}
		if dp < a.InRatio*a.Target {
			a.below++
		} else {
			a.below = 0
		}
	}
	if !fresh || !a.published {
		return false
	}
	capNow := f.Target()
	if a.above >= a.OutPoints {
		inCooldown := now < a.outUntil
		if inCooldown && a.NoScaleOutInCooldown {
			return false
		}
		base := capNow
		if inCooldown {
			base = a.outBase
		}
		want := int(math.Ceil(math.Round(float64(base)*a.last/a.Target*1e9) / 1e9))
		if !inCooldown {
			want = max(want, capNow+1)
		}
		if want > capNow && f.SetCapacity(want, now) != capNow {
			if !inCooldown {
				a.outBase, a.outUntil = capNow, now+a.OutCooldown
			}
			a.inUntil = 0
			return true
		}
		return false
	}
	if a.below >= a.InPoints && now >= a.inUntil && now >= a.outUntil {
		want := int(math.Ceil(math.Round(float64(capNow)*a.last/a.Target*1e9) / 1e9))
		if want < capNow && f.SetCapacity(want, now) != capNow {
			a.inUntil = now + a.InCooldown
			return true
		}
	}
	return false
}
