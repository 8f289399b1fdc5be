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
	fleet := NewFleet(sc.Fleet, p.NomadAware(), OracleCount(sc.Demand(0), sc.Target, sc.Fleet), sc.Seed)
	hist := &History{Tick: sc.Tick, Epoch: sc.Epoch, CPU: make([]float64, 0, ticks)}
	t := newTally(name, ticks, sc.Target)

	for i := 0; i < ticks; i++ {
		now := time.Duration(i) * sc.Tick
		if i > 0 {
			fleet.Advance(now, sc.Tick)
		}
		cpu := PoolCPU(sc.Demand(now), fleet.Serving())
		hist.CPU = append(hist.CPU, cpu)
		t.add(cpu, fleet.Serving())

		if want := p.Evaluate(now, fleet.Target(), hist); want >= 0 && want != fleet.Target() {
			before := fleet.Target()
			if fleet.Scale(want, now) != before {
				t.res.Actions++
			}
		}
	}
	t.res.Interruptions = fleet.interruptions
	if ap, ok := p.(*AgentPolicy); ok {
		t.res.Errors = ap.Errors
	}
	return t.finish(fleet.nodeSeconds + float64(fleet.Billed())*sc.Tick.Seconds())
}

// RunOracle replays the scenario with a clairvoyant count: the right number
// of nodes at every tick, with no boot, drain or interruption.
func RunOracle(sc Scenario) Result {
	ticks := int(sc.Duration / sc.Tick)
	t := newTally("oracle", ticks, sc.Target)
	nodeSeconds := 0.0
	prev := -1
	for i := 0; i < ticks; i++ {
		d := sc.Demand(time.Duration(i) * sc.Tick)
		n := OracleCount(d, sc.Target, sc.Fleet)
		if prev >= 0 && n != prev {
			t.res.Actions++
		}
		prev = n
		nodeSeconds += float64(n) * sc.Tick.Seconds()
		t.add(PoolCPU(d, n), n)
	}
	return t.finish(nodeSeconds)
}
