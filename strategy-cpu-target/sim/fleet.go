package sim

import (
	"math"
	"math/rand"
	"time"
)

// FleetConfig describes the modelled Spot Fleet of Nomad clients.
type FleetConfig struct {
	Min, Max int
	// BootDelay is launch to ready: boot, Nomad join, post-configuration.
	BootDelay time.Duration
	// DrainTime is how long a scale-in drain of target-spotfleet takes: the
	// node serves nothing meanwhile, is billed, and Scale returns only when
	// it is over (the plugin drains before it lowers the target).
	DrainTime time.Duration
	// SpotRate is the chance of a spot interruption per node-hour.
	SpotRate float64
	// Notice is the interruption warning before termination (2 minutes on EC2).
	Notice time.Duration
	// InterruptDrainDeadline is target-spotfleet's interruption_drain_deadline
	// (default 90 s): an interrupted node's drain deadline, capped at the
	// notice minus 15 s; the node serves what cannot move until then.
	InterruptDrainDeadline time.Duration
	// ScaleOutCall is how long target-spotfleet's Scale takes to return
	// after raising the target (it polls until the instances are launched).
	ScaleOutCall time.Duration
	// ModifyTime is how long the Spot Fleet request stays "modifying" after
	// a change of its target capacity; target-spotfleet reports the target
	// not ready meanwhile, and the agent skips its evaluations.
	ModifyTime time.Duration
	// AllocSize is the resource ask of one allocation, in nodes (0.125:
	// eight allocations fill a node); demand is made of such allocations.
	AllocSize float64
}

type nodeState int

const (
	booting  nodeState = iota // launched, not yet serving
	ready                     // serving
	draining                  // scaled in, or interrupted and drained: serves nothing, billed until gone
	leaving                   // interrupted, drained by target-spotfleet: serves what cannot move until servesUntil
	noticed                   // interrupted in an AWS-managed fleet: serves until it is reclaimed
)

type node struct {
	state       nodeState
	launched    time.Duration
	until       time.Duration // booting: ready at; draining, leaving, noticed: gone at
	servesUntil time.Duration // leaving: end of its drain deadline
	neverServed bool          // noticed while still booting
}

// Fleet is the pool of nodes under one policy, with the target in front of
// it. A Nomad-aware fleet is driven through target-spotfleet and behaves as
// that plugin does (its Status and Scale, its interruption handling); an
// AWS-managed fleet is driven by Application Auto Scaling, terminates
// scaled-in instances at once and refills an interrupted one only after it
// has gone.
type Fleet struct {
	cfg        FleetConfig
	nomadAware bool
	target     int // the fleet's TargetCapacity (replacement units aside)
	nodes      []*node
	spot       *SpotEvents
	nextEvent  int

	busyUntil      time.Duration // a Scale of target-spotfleet runs until then
	modifyingUntil time.Duration // the request is "modifying" until then

	nodeSeconds   float64
	interruptions int
}

// NewFleet returns a fleet of initial ready nodes, interrupted by the spot
// events given (nil: none).
func NewFleet(cfg FleetConfig, nomadAware bool, initial int, spot *SpotEvents) *Fleet {
	f := &Fleet{cfg: cfg, nomadAware: nomadAware, spot: spot}
	for i := 0; i < initial; i++ {
		f.nodes = append(f.nodes, &node{state: ready})
	}
	f.target = initial
	return f
}

// Target is the fleet's target capacity.
func (f *Fleet) Target() int { return f.target }

// Ready is the number of nodes that take work: target-spotfleet's Count.
func (f *Fleet) Ready() int { return f.count(func(n *node) bool { return n.state == ready }) }

// Serving is the number of nodes whose capacity carries demand now.
func (f *Fleet) Serving() int {
	return f.count(func(n *node) bool { return n.state == ready || n.state == noticed || n.state == leaving })
}

// Billed is the number of instances running (and paid for) now.
func (f *Fleet) Billed() int { return len(f.nodes) }

func (f *Fleet) count(pred func(*node) bool) int {
	n := 0
	for _, nd := range f.nodes {
		if pred(nd) {
			n++
		}
	}
	return n
}

// live is the number of instances that make up the target capacity:
// launching and ready ones, and, in an AWS-managed fleet, interrupted ones
// until they are gone (the fleet refills them only then).
func (f *Fleet) live() int {
	return f.count(func(n *node) bool {
		return n.state == booting || n.state == ready || (n.state == noticed && !f.nomadAware)
	})
}

// Status is target-spotfleet's Status: Count is the ready nodes; the target
// is not ready while one of its Scale calls runs or while the fleet request
// is modifying.
func (f *Fleet) Status(now time.Duration) (ready bool, count int) {
	return now >= f.busyUntil && now >= f.modifyingUntil, f.Ready()
}

// ScaleTo is target-spotfleet's Scale to `to` ready nodes, at now. It
// returns when the call returns and whether it was a no-op (the agent then
// starts no cooldown).
//
// Scale-out sets the target to min(max(to, launching+ready), max(target,
// to)): capacity that is launching counts toward the desired nodes, and a
// target that already covers them is a no-op. Scale-in drains ready−to
// ready nodes (launching ones are never removed), and lowers the target by
// their number once the drain is over; the call returns then.
func (f *Fleet) ScaleTo(to int, now time.Duration) (returns time.Duration, noop bool) {
	count := f.Ready()
	switch {
	case to > count:
		live := f.live()
		goal := min(max(to, live), max(f.target, to))
		if goal == f.target {
			return now, true
		}
		f.target = goal
		for f.live() < goal {
			f.launch(now)
		}
		f.busyUntil = now + f.cfg.ScaleOutCall
		f.modifyingUntil = max(f.modifyingUntil, now+f.cfg.ModifyTime)
		return f.busyUntil, false
	case to < count:
		k := count - to
		for i := len(f.nodes) - 1; i >= 0 && k > 0; i-- { // newest first
			if nd := f.nodes[i]; nd.state == ready {
				nd.state, nd.until = draining, now+f.cfg.DrainTime
				k--
			}
		}
		f.target = f.live() // max(to, serving − removed)
		f.busyUntil = now + f.cfg.DrainTime
		f.modifyingUntil = max(f.modifyingUntil, f.busyUntil+f.cfg.ModifyTime)
		return f.busyUntil, false
	}
	return now, false // "no scaling needed": returns nil
}

// SetCapacity is Application Auto Scaling setting an AWS-managed fleet's
// target capacity (clamped to min and max): launches start at once;
// scale-in cancels launches first (newest first), then terminates ready
// instances at once, without a drain. It returns the capacity set.
func (f *Fleet) SetCapacity(to int, now time.Duration) int {
	to = max(f.cfg.Min, min(f.cfg.Max, to))
	f.target = to
	for f.live() < to {
		f.launch(now)
	}
	for excess := f.live() - to; excess > 0; excess-- {
		victim := -1
		for _, st := range []nodeState{booting, ready} {
			for i := len(f.nodes) - 1; i >= 0 && victim < 0; i-- {
				if f.nodes[i].state == st {
					victim = i
				}
			}
		}
		if victim < 0 {
			break
		}
		f.nodes = append(f.nodes[:victim], f.nodes[victim+1:]...)
	}
	return to
}

func (f *Fleet) launch(now time.Duration) {
	f.nodes = append(f.nodes, &node{state: booting, launched: now, until: now + f.cfg.BootDelay})
}

// Advance bills the nodes for the step just ended, then applies what happens
// by now: boots that finish, drains and terminations that end, and the spot
// interruption warnings of the shared event stream.
func (f *Fleet) Advance(now, step time.Duration) {
	f.nodeSeconds += float64(len(f.nodes)) * step.Seconds()

	kept := f.nodes[:0]
	refill := 0
	for _, nd := range f.nodes {
		switch {
		case nd.state == booting && nd.until <= now:
			nd.state = ready
		case nd.state == noticed && nd.until <= now:
			refill++ // a maintain fleet notices the lost capacity only now
			continue
		case nd.state == leaving && nd.until <= now, nd.state == draining && nd.until <= now:
			continue
		case nd.state == leaving && nd.servesUntil <= now:
			nd.state = draining // until stays: reclaimed at the end of the notice
		}
		kept = append(kept, nd)
	}
	f.nodes = kept

	for f.spot != nil && f.nextEvent < len(f.spot.Events) && f.spot.Events[f.nextEvent].At <= now {
		f.interrupt(f.spot.Events[f.nextEvent], now)
		f.nextEvent++
	}
	for ; refill > 0 && f.live() < f.target; refill-- {
		f.launch(now)
	}
}

// interrupt applies one warning: the event picks a slot; the running
// instance in that slot (launch order), if any, is warned.
func (f *Fleet) interrupt(ev SpotEvent, now time.Duration) {
	slot := int(ev.U * float64(f.spot.Slots))
	for _, nd := range f.nodes {
		if nd.state != booting && nd.state != ready {
			continue
		}
		if slot > 0 {
			slot--
			continue
		}
		f.interruptions++
		if !f.nomadAware {
			nd.neverServed = nd.state == booting
			nd.state, nd.until = noticed, now+f.cfg.Notice
			return
		}
		// target-spotfleet: drain at once with the interruption deadline,
		// raise the target for a replacement that launches now, give the
		// unit back once it has launched (two target changes).
		deadline := min(f.cfg.InterruptDrainDeadline, f.cfg.Notice-15*time.Second)
		wasReady := nd.state == ready
		nd.state, nd.until, nd.servesUntil = leaving, now+f.cfg.Notice, now+max(0, deadline)
		if !wasReady {
			nd.state = draining
		}
		f.launch(now)
		f.modifyingUntil = max(f.modifyingUntil, now+f.cfg.ModifyTime)
		return
	}
}

// SpotEvent is one spot interruption warning: when, and a uniform number
// that picks the instance.
type SpotEvent struct {
	At time.Duration
	U  float64
}

// SpotEvents is one random stream of interruption warnings, shared by
// every policy of a scenario: a Poisson process at rate × Slots per hour,
// each event naming one of Slots slots; it interrupts the instance in that
// slot when the fleet has one. Each running instance is thus interrupted
// at the given rate per hour, and fleets of the same size meet the same
// events, whatever their policy evaluates and whenever.
type SpotEvents struct {
	Slots  int
	Events []SpotEvent
}

// NewSpotEvents draws the warnings of a scenario of the given duration.
func NewSpotEvents(rate float64, slots int, duration time.Duration, seed int64) *SpotEvents {
	s := &SpotEvents{Slots: max(1, slots)}
	if rate <= 0 {
		return s
	}
	rng := rand.New(rand.NewSource(seed))
	perSecond := rate * float64(s.Slots) / 3600
	at := 0.0
	for {
		at += rng.ExpFloat64() / perSecond
		if at >= duration.Seconds() || math.IsInf(at, 0) {
			return s
		}
		s.Events = append(s.Events, SpotEvent{At: time.Duration(at * float64(time.Second)), U: rng.Float64()})
	}
}
