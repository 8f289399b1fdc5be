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
// target: ceil(count × peak/target).
func decide(cfg checkConfig, count int64, w window, queryWindow time.Duration) decision {
	if count == 0 {
		return decideFromZero(w)
	}

	recent := fmt.Sprintf("recent mean CPU %.1f%% (%d points over %s)", w.RecentMean, w.RecentPoints, cfg.ScaleOutWindow)
	peak := fmt.Sprintf("window peak CPU %.1f%% (%d points over %s)", w.Peak, w.Points, w.Span.Round(time.Second))

	if w.RecentMean > cfg.scaleOutAbove() {
		want := ceilNodes(count, w.RecentMean, cfg.Target)
		formula := fmt.Sprintf("ceil(%d × %.1f/%g) = %d", count, w.RecentMean, cfg.Target, want)
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
	formula := fmt.Sprintf("ceil(%d × %.1f/%g) = %d", count, w.Peak, cfg.Target, want)
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
		Reason: fmt.Sprintf("scale in %d -> %d: %s < %.2f%% (target %g%% - %g%% tolerance); %s keeps that peak at or below target",
			count, want, peak, cfg.scaleInBelow(), cfg.Target, cfg.Tolerance*100, formula),
	}
}

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
	return int64(math.Ceil(math.Round(x*1e9) / 1e9))
}
