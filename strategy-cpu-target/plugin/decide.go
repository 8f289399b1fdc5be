package plugin

import (
	"fmt"
	"math"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// decision is the outcome of one evaluation: a direction, the desired count
// and the numbers behind it in words.
type decision struct {
	Direction sdk.ScaleDirection
	Count     int64
	Reason    string
}

// decide turns the current count and a summarised window into a decision.
//
// Scale-out follows the recent load, fast: ceil(count × recent/target).
// Scale-in follows the peak of the whole window, so that it is stateless and
// never picks a count at which the window's peak would have been above the
// target: ceil(count × peak/target); and it keeps headroom for the largest
// rise the window saw within rise_window, so that a repeat of it from the
// peak stays at or below the scale-out threshold:
// ceil(count × (peak + rise)/(target × (1 + tolerance))). The rise is that
// of the rolling scale_out_window mean (see largestRise): the peak already
// holds the sampling noise, so the rise counts only changes of level.
func decide(cfg checkConfig, count int64, w window, queryWindow time.Duration) decision {
	if count == 0 {
		return decideFromZero(w)
	}

	recent := fmt.Sprintf("recent mean CPU %.1f%% (%d points over %s)", w.RecentMean, w.RecentPoints, cfg.ScaleOutWindow)
	peak := fmt.Sprintf("window peak CPU %.1f%% (%d points over %s)", w.Peak, w.Points, w.Span.Round(time.Second))

	if w.RecentMean > cfg.scaleOutAbove() {
		want := ceilNodes(count, w.RecentMean, cfg.Target)
		formula := fmt.Sprintf("ceil(%d × %.1f/%g) = %d", count, w.RecentMean, cfg.Target, want)
		if w.RecentMean >= cfg.Saturation {
			formula += "; " + saturatedStep(cfg, count, w, &want)
		}
		if want <= count {
			want = count + 1
			formula += fmt.Sprintf(", at least one more node: %d", want)
		}
		if cfg.MaxScaleUp > 0 && want > count+cfg.MaxScaleUp {
			want = count + cfg.MaxScaleUp
			formula += fmt.Sprintf(", capped by %s=%d to %d", configKeyMaxScaleUp, cfg.MaxScaleUp, want)
		}
		return decision{
			Direction: sdk.ScaleDirectionUp,
			Count:     want,
			Reason: fmt.Sprintf("scale out %d -> %d: %s > %.2f%% (target %g%% + %g%% tolerance); %s",
				count, want, recent, cfg.scaleOutAbove(), cfg.Target, cfg.Tolerance*100, formula),
		}
	}

	hold := func(why string) decision {
		return decision{Direction: sdk.ScaleDirectionNone, Count: count,
			Reason: fmt.Sprintf("hold %d: %s; %s", count, recent, why)}
	}

	if w.Peak >= cfg.scaleInBelow() {
		return hold(fmt.Sprintf("%s not below %.2f%% (target %g%% - %g%% tolerance)",
			peak, cfg.scaleInBelow(), cfg.Target, cfg.Tolerance*100))
	}
	if w.OlderInvalid != "" {
		return hold(fmt.Sprintf("no scale-in: %s, so the window peak is unknown", w.OlderInvalid))
	}
	if need := time.Duration(cfg.ScaleInCoverage * float64(queryWindow)); queryWindow > 0 && w.Span < need {
		return hold(fmt.Sprintf("no scale-in: the datapoints span %s, less than %s=%g of query_window %s",
			w.Span.Round(time.Second), configKeyScaleInCoverage, cfg.ScaleInCoverage, queryWindow))
	}

	want := ceilNodes(count, w.Peak, cfg.Target)
	formula := fmt.Sprintf("ceil(%d × %.1f/%g) = %d keeps that peak at or below target", count, w.Peak, cfg.Target, want)
	if cfg.RiseWindow > 0 && w.Rise > 0 {
		// Headroom for a repeat of the largest recent rise: from the peak,
		// it must not reach the scale-out threshold at the new count.
		spare := ceilNodes(count, w.Peak+w.Rise, cfg.scaleOutAbove())
		formula += fmt.Sprintf("; largest rise +%.1f points of the %s=%s mean within %s=%s (to %s): ceil(%d × (%.1f+%.1f)/%.2f) = %d",
			w.Rise, configKeyScaleOutWindow, cfg.ScaleOutWindow, configKeyRiseWindow, cfg.RiseWindow, w.RiseAt.UTC().Format(time.RFC3339),
			count, w.Peak, w.Rise, cfg.scaleOutAbove(), spare)
		if spare > want {
			want = spare
			formula += ", kept"
		}
	}
	if want >= count {
		return hold(fmt.Sprintf("%s; %s, no node to spare", peak, formula))
	}
	if cfg.MaxScaleDown > 0 && want < count-cfg.MaxScaleDown {
		want = count - cfg.MaxScaleDown
		formula += fmt.Sprintf(", capped by %s=%d to %d", configKeyMaxScaleDown, cfg.MaxScaleDown, want)
	}
	return decision{
		Direction: sdk.ScaleDirectionDown,
		Count:     want,
		Reason: fmt.Sprintf("scale in %d -> %d: %s < %.2f%% (target %g%% - %g%% tolerance); %s",
			count, want, peak, cfg.scaleInBelow(), cfg.Target, cfg.Tolerance*100, formula),
	}
}

// saturatedStep raises want when the pool is saturated and its CPU is still
// rising: a CPU that cannot read above 100% hides the load past it, so the
// proportional formula misses it. The rise, projected over trend_lead,
// stands in for the hidden load. want holds the proportional step on entry.
// It returns the words that explain the step.
//
// The projection is bounded three ways, each for a reason:
//   - a recent mean above 100% means the metric is not clamped (workload_cpu
//     and over-committed sources read past 100%): the proportional step
//     already sees the whole load, and a trend would count it twice;
//   - the rise must go on in the recent part (the scale-out window) as well
//     as over trend_window, and the smaller of the two slopes is projected.
//     A steady ramp has about the same slope at both scales; a step that has
//     ended leaves a long fit that spans the jump but a flat recent part
//     (no trend), and a step still under way steepens the short fit but not
//     the long one. So neither a finished jump nor the jump's own rate is
//     extrapolated;
//   - the trended step adds at most twice the nodes the proportional step
//     adds: the projection guesses at load the metric cannot show, and a
//     wrong guess costs nodes that a later scale-in must undo.
func saturatedStep(cfg checkConfig, count int64, w window, want *int64) string {
	if w.RecentMean > 100 {
		return fmt.Sprintf("no trend: recent %.1f%% is above 100%%, so the metric is not clamped and the proportional step already sees the whole load", w.RecentMean)
	}
	sat := fmt.Sprintf("saturated (recent %.1f%% >= %s %g%%)", w.RecentMean, configKeySaturation, cfg.Saturation)
	switch {
	case cfg.TrendLead == 0:
		return sat + ", trend off (" + configKeyTrendLead + " 0s)"
	case w.Slope <= 0 || w.SlopePoints < 2:
		return fmt.Sprintf("%s, no rise to project (slope %+.3f%%/s over %d points in %s)", sat, w.Slope, w.SlopePoints, cfg.TrendWindow)
	case w.RecentSlope <= 0:
		return fmt.Sprintf("%s, no trend: the rise over %s (%+.3f%%/s) has stopped, the recent part is not rising (slope %+.3f%%/s over %d points in %s=%s)",
			sat, cfg.TrendWindow, w.Slope, w.RecentSlope, w.RecentPoints, configKeyScaleOutWindow, cfg.ScaleOutWindow)
	}
	proportional := *want
	rate := math.Min(w.Slope, w.RecentSlope)
	projected := w.RecentMean + rate*cfg.TrendLead.Seconds()
	trended := ceilNodes(count, projected, cfg.Target)
	words := fmt.Sprintf("%s, still rising: %+.3f%%/s over %d points in %s and %+.3f%%/s over the recent %d points; the smaller projects %.1f%% in %s: ceil(%d × %.1f/%g) = %d",
		sat, w.Slope, w.SlopePoints, cfg.TrendWindow, w.RecentSlope, w.RecentPoints, projected, cfg.TrendLead, count, projected, cfg.Target, trended)
	if limit := count + 2*(proportional-count); trended > limit {
		trended = limit
		words += fmt.Sprintf(", at most twice the proportional step's %d more node(s): %d", proportional-count, limit)
	}
	if trended > *want {
		*want = trended
		return words + ", taken"
	}
	return words + ", not above the proportional step"
}

// decideUnplaced turns the newest unplaced_nodes value into a decision: the
// nodes the waiting work needs are added whatever the CPU reads, and this
// signal never removes a node. With nothing waiting it answers none, which
// the agent ignores inside a check group (docs/unplaced.md).
func decideUnplaced(cfg checkConfig, count int64, nodes float64, at time.Time) decision {
	seen := fmt.Sprintf("unplaced work needs %g more node(s) (newest datapoint, %s)", nodes, at.UTC().Format(time.RFC3339))
	if nodes == 0 {
		return decision{Direction: sdk.ScaleDirectionNone, Count: count,
			Reason: fmt.Sprintf("hold %d: nothing waits unplaced that this pool could run; this signal never scales in", count)}
	}
	add := int64(math.Ceil(math.Min(nodes, maxNodes)))
	want := count + add
	formula := fmt.Sprintf("%d + %d = %d", count, add, want)
	if cfg.MaxScaleUp > 0 && add > cfg.MaxScaleUp {
		want = count + cfg.MaxScaleUp
		formula += fmt.Sprintf(", capped by %s=%d to %d", configKeyMaxScaleUp, cfg.MaxScaleUp, want)
	}
	return decision{Direction: sdk.ScaleDirectionUp, Count: want,
		Reason: fmt.Sprintf("scale out %d -> %d: %s; %s", count, want, seen, formula)}
}

// maxNodes bounds every count the strategy computes, far above any pool the
// agent's max allows, so that absurd figures cannot overflow an int64.
const maxNodes = 1e6

// decideFromZero handles an empty pool: it has no node to measure, so any
// sign of load brings one node back; the policy's min decides the rest.
func decideFromZero(w window) decision {
	if w.RecentMean > 0 {
		return decision{Direction: sdk.ScaleDirectionUp, Count: 1,
			Reason: fmt.Sprintf("scale out 0 -> 1: count is 0 and recent mean CPU is %.1f%% (%d points)", w.RecentMean, w.RecentPoints)}
	}
	return decision{Direction: sdk.ScaleDirectionNone, Count: 0,
		Reason: "hold 0: count is 0 and the recent mean CPU is 0%; the policy's min decides whether nodes are kept"}
}

// ceilNodes is the node count at which the load seen at count nodes and cpu
// percent would average target percent.
func ceilNodes(count int64, cpu, target float64) int64 {
	// Round first so that float noise (e.g. 8 × 75/75 = 8.000000001) does
	// not add a node.
	x := float64(count) * cpu / target
	// An absurd figure must not overflow the count; the agent caps at max.
	x = math.Min(x, maxNodes)
	return int64(math.Ceil(math.Round(x*1e9) / 1e9))
}
