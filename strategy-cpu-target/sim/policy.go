package sim

import (
	"math"
	"time"

	"github.com/hashicorp/nomad-autoscaler/plugins/strategy"
	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// Policy decides the fleet's desired count as time passes.
type Policy interface {
	// NomadAware reports whether scaling goes through the Nomad-aware
	// spotfleet target (drain on scale-in, replace on interruption notice).
	NomadAware() bool
	// Evaluate is called once per tick, after the tick's sample is recorded.
	// It returns the new desired count, or -1 to leave the fleet alone.
	Evaluate(now time.Duration, count int, h *History) int
}

// History holds the pool's average CPU sampled every tick, as the APM
// plugin would report it.
type History struct {
	Tick  time.Duration
	Epoch time.Time
	CPU   []float64 // CPU[i] was sampled at i × Tick
}

// Window returns the datapoints sampled in (now-d, now] as the APM would
// return them for a query window d.
func (h *History) Window(now, d time.Duration) sdk.TimestampedMetrics {
	last := int(now / h.Tick)
	first := max(0, last-int(d/h.Tick)+1)
	ms := make(sdk.TimestampedMetrics, 0, last-first+1)
	for i := first; i <= last && i < len(h.CPU); i++ {
		ms = append(ms, sdk.TimestampedMetric{Timestamp: h.Epoch.Add(time.Duration(i) * h.Tick), Value: h.CPU[i]})
	}
	return ms
}

// AgentPolicy drives a strategy plugin the way the Nomad Autoscaler agent
// v0.5.0 does: it evaluates every EvaluationInterval outside cooldown,
// queries QueryWindow of metrics, runs the strategy, caps the count to
// min/max and, when the count changes, scales and enters cooldown
// (CooldownOnScaleUp after a scale-out, Cooldown otherwise).
type AgentPolicy struct {
	Strategy          strategy.Runner
	Check             *sdk.ScalingPolicyCheck
	Min, Max          int64
	EvalInterval      time.Duration
	Cooldown          time.Duration
	CooldownOnScaleUp time.Duration

	// Clock, when set, is moved to each evaluation's time before the
	// strategy runs.
	Clock *Clock

	nextEval      time.Duration
	outOfCooldown time.Duration
	// Errors counts evaluations whose strategy returned an error.
	Errors int
	// LastReason is the Reason of the last action taken.
	LastReason string
}

// NomadAware is true: the agent scales through the spotfleet target.
func (a *AgentPolicy) NomadAware() bool { return true }

// Evaluate runs one agent evaluation when one is due.
func (a *AgentPolicy) Evaluate(now time.Duration, count int, h *History) int {
	if now < a.nextEval {
		return -1
	}
	a.nextEval = now + a.EvalInterval
	if now < a.outOfCooldown {
		return -1 // the agent evaluates but skips scaling while in cooldown
	}
	if a.Clock != nil {
		a.Clock.T = h.Epoch.Add(now)
	}
	eval := &sdk.ScalingCheckEvaluation{
		Check:   a.Check,
		Action:  &sdk.ScalingAction{Meta: map[string]interface{}{"nomad_policy_id": "sim"}},
		Metrics: h.Window(now, a.Check.QueryWindow),
	}
	if len(eval.Metrics) == 0 {
		return -1 // the agent stops at "no metrics" before the strategy runs
	}
	resp, err := a.Strategy.Run(eval, int64(count))
	if err != nil {
		a.Errors++
		return -1
	}
	if resp == nil || resp.Action == nil {
		return -1
	}
	action := *resp.Action
	action.CapCount(a.Min, a.Max)
	if action.Direction == sdk.ScaleDirectionNone || action.Count == int64(count) {
		return -1
	}
	if action.Direction == sdk.ScaleDirectionUp {
		a.outOfCooldown = now + a.CooldownOnScaleUp
	} else {
		a.outOfCooldown = now + a.Cooldown
	}
	a.LastReason = action.Reason
	return int(action.Count)
}

// AWSTargetTracking models Application Auto Scaling target tracking on the
// fleet's EC2SpotFleetRequestAverageCPUUtilization: one-minute datapoints;
// scale out when OutPoints consecutive datapoints are above target, scale in
// when InPoints consecutive ones are below InRatio × target; the new capacity
// is proportional to the last datapoint; no scale-out within OutCooldown of
// a scale-out, and no scale-in within InCooldown of any scaling.
type AWSTargetTracking struct {
	Target      float64
	Period      time.Duration
	OutPoints   int
	InPoints    int
	InRatio     float64
	OutCooldown time.Duration
	InCooldown  time.Duration

	above, below int
	outUntil     time.Duration
	inUntil      time.Duration
}

// NewAWSTargetTracking returns the model with AWS's documented defaults.
func NewAWSTargetTracking(target float64) *AWSTargetTracking {
	return &AWSTargetTracking{Target: target, Period: time.Minute, OutPoints: 3, InPoints: 15, InRatio: 0.9,
		OutCooldown: 300 * time.Second, InCooldown: 300 * time.Second}
}

// NomadAware is false: AWS terminates without draining.
func (a *AWSTargetTracking) NomadAware() bool { return false }

// Evaluate publishes a datapoint at each period's end and applies the alarms.
func (a *AWSTargetTracking) Evaluate(now time.Duration, count int, h *History) int {
	if now == 0 || now%a.Period != 0 {
		return -1
	}
	ms := h.Window(now, a.Period)
	dp := 0.0
	for _, m := range ms {
		dp += m.Value
	}
	dp /= float64(len(ms))

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
	want := int(math.Ceil(float64(count) * dp / a.Target))
	switch {
	case a.above >= a.OutPoints && now >= a.outUntil:
		want = max(want, count+1)
		a.outUntil = now + a.OutCooldown
		a.inUntil = max(a.inUntil, now+a.OutCooldown)
		return want
	case a.below >= a.InPoints && now >= a.inUntil && now >= a.outUntil && want < count:
		a.inUntil = now + a.InCooldown
		return want
	}
	return -1
}
