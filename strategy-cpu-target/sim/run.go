package sim

import (
	"math"
	"time"
)

// Scenario is one trace replay: the demand, the fleet, and the clock.
type Scenario struct {
	Name     string
	Demand   func(time.Duration) float64 // node-equivalents of CPU (1 = one node at 100%)
	Duration time.Duration
	Tick     time.Duration
	Target   float64 // percent
	Fleet    FleetConfig
	Seed     int64
	Epoch    time.Time
	// Spot is the stream of interruption warnings every policy meets; nil
	// draws one from Fleet.SpotRate and Seed.
	Spot *SpotEvents
}

func (sc Scenario) spot() *SpotEvents {
	if sc.Spot != nil {
		return sc.Spot
	}
	return NewSpotEvents(sc.Fleet.SpotRate, 2*sc.Fleet.Max, sc.Duration, sc.Seed)
}

// Result is what one policy did over one scenario.
type Result struct {
	Policy        string
	OverloadPct   float64 // % of time the pool's average CPU was above 90%
	AboveBandPct  float64 // % of time above target + 10 points
	MeanCPU       float64
	NodeHours     float64
	Actions       int
	Interruptions int
	Errors        int
	Wait          WaitStats
	// Agent-driven policies: evaluations skipped (target not ready), failed
	// (no metrics), and Scale calls that were no-ops.
	NotReady, Failed, NoOps int

	// Per-tick series for the plots.
	Serving []float32 // nodes serving
	CPU     []float32 // pool average CPU, %
}

// Overload thresholds, in CPU percent.
const (
	overloadCPU     = 90.0
	aboveBandPoints = 10.0
)

// PoolCPU is the average CPU of serving nodes carrying demand: saturated at
// 100% when demand exceeds capacity (and with no node serving at all).
func PoolCPU(demand float64, serving int) float64 {
	if serving <= 0 {
		if demand > 0 {
			return 100
		}
		return 0
	}
	return math.Min(100, 100*demand/float64(serving))
}

// OracleCount is the clairvoyant count: enough nodes to carry demand at the
// target, within min and max.
func OracleCount(demand, target float64, cfg FleetConfig) int {
	n := int(math.Ceil(math.Round(demand*100/target*1e9) / 1e9))
	return max(cfg.Min, min(cfg.Max, n))
}

// UnplacedNodes is apm-node's unplaced_nodes as the model sees it: the
// empty nodes needed to place the waiting allocations. Launching nodes are
// not subtracted: the strategy asks for count + value and the target counts
// its launching capacity toward that itself (Fleet.ScaleTo). The model has
// no warm-up (its count is every ready node), so nothing is added for it.
// All asks are equal, so first-fit-decreasing packs perNode of them per
// node.
func UnplacedNodes(waiting int, ask float64) float64 {
	perNode := int(math.Floor(1/ask + 1e-9))
	if perNode < 1 || waiting <= 0 {
		return 0 // nothing waits, or an ask larger than a node: left out
	}
	return float64((waiting + perNode - 1) / perNode)
}

type tally struct {
	res          Result
	ticks, over  int
	aboveBand    int
	cpuSum       float64
	aboveBandCPU float64
}

func newTally(name string, ticks int, target float64) *tally {
	return &tally{res: Result{Policy: name, Serving: make([]float32, 0, ticks), CPU: make([]float32, 0, ticks)},
		aboveBandCPU: target + aboveBandPoints}
}

func (t *tally) add(cpu float64, serving int) {
	t.ticks++
	t.cpuSum += cpu
	if cpu > overloadCPU {
		t.over++
	}
	if cpu > t.aboveBandCPU {
		t.aboveBand++
	}
	t.res.CPU = append(t.res.CPU, float32(cpu))
	t.res.Serving = append(t.res.Serving, float32(serving))
}

func (t *tally) finish(nodeSeconds float64) Result {
	r := t.res
	r.OverloadPct = 100 * float64(t.over) / float64(t.ticks)
	r.AboveBandPct = 100 * float64(t.aboveBand) / float64(t.ticks)
	r.MeanCPU = t.cpuSum / float64(t.ticks)
	r.NodeHours = nodeSeconds / 3600
	return r
}

// Run replays the scenario under one policy. The fleet starts at the
// oracle's count for the first demand, all nodes ready.
func Run(sc Scenario, name string, p Policy) Result {
	ticks := int(sc.Duration / sc.Tick)
	fleet := NewFleet(sc.Fleet, p.NomadAware(), OracleCount(sc.Demand(0), sc.Target, sc.Fleet), sc.spot())
	hist := &History{Tick: sc.Tick, Epoch: sc.Epoch, CPU: make([]float64, 0, ticks), Unplaced: make([]float64, 0, ticks)}
	t := newTally(name, ticks, sc.Target)
	pl := newPlacement(sc.Fleet.AllocSize)

	for i := 0; i < ticks; i++ {
		now := time.Duration(i) * sc.Tick
		if i > 0 {
			fleet.Advance(now, sc.Tick)
		}
		d := sc.Demand(now)
		serving := fleet.Serving()
		cpu := PoolCPU(d, serving)
		waiting := pl.step(now, sc.Tick, d, serving)
		unplaced := math.NaN() // no datapoint when the pool has no node
		if fleet.Billed() > 0 {
			unplaced = UnplacedNodes(waiting, pl.ask)
		}
		hist.CPU = append(hist.CPU, cpu)
		hist.Unplaced = append(hist.Unplaced, unplaced)
		t.add(cpu, serving)

		if p.Evaluate(now, fleet, hist) {
			t.res.Actions++
		}
	}
	pl.finish(sc.Duration)
	t.res.Wait = pl.stats()
	t.res.Interruptions = fleet.interruptions
	if ap, ok := p.(*AgentPolicy); ok {
		t.res.Errors, t.res.NotReady, t.res.Failed, t.res.NoOps = ap.Errors, ap.NotReady, ap.FailedEvaluations, ap.NoOps
	}
	return t.finish(fleet.nodeSeconds + float64(fleet.Billed())*sc.Tick.Seconds())
}

// RunOracle replays the scenario with a clairvoyant count: the right number
// of nodes at every tick, with no boot, drain or interruption.
func RunOracle(sc Scenario) Result {
	ticks := int(sc.Duration / sc.Tick)
	t := newTally(NameOracle, ticks, sc.Target)
	pl := newPlacement(sc.Fleet.AllocSize)
	nodeSeconds := 0.0
	prev := -1
	for i := 0; i < ticks; i++ {
		now := time.Duration(i) * sc.Tick
		d := sc.Demand(now)
		n := OracleCount(d, sc.Target, sc.Fleet)
		if prev >= 0 && n != prev {
			t.res.Actions++
		}
		prev = n
		nodeSeconds += float64(n) * sc.Tick.Seconds()
		pl.step(now, sc.Tick, d, n)
		t.add(PoolCPU(d, n), n)
	}
	pl.finish(sc.Duration)
	t.res.Wait = pl.stats()
	return t.finish(nodeSeconds)
}
