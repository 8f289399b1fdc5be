package sim

import (
	"math/rand"
	"time"
)

// FleetConfig describes the modelled Spot Fleet of Nomad clients.
type FleetConfig struct {
	Min, Max int
	// BootDelay is launch to ready: boot, Nomad join, post-configuration.
	BootDelay time.Duration
	// DrainTime is how long a node scaled in by a Nomad-aware target is
	// billed while its allocations move away (it serves nothing meanwhile).
	DrainTime time.Duration
	// SpotRate is the chance of a spot interruption per node-hour.
	SpotRate float64
	// Notice is the interruption warning before termination (2 minutes on EC2).
	Notice time.Duration
}

type nodeState int

const (
	booting  nodeState = iota // launched, not yet serving
	ready                     // serving
	draining                  // scaled in or interrupted, allocations moving away, still billed
	noticed                   // interruption notice received, still serving until servesUntil
)

type node struct {
	state       nodeState
	until       time.Duration // when booting ends (ready) or the node is gone (draining, noticed)
	servesUntil time.Duration // noticed nodes: when they stop serving
}

// Fleet is the pool of nodes under one policy. A Nomad-aware fleet (the
// autoscaler agent with the spotfleet target) drains before it terminates and
// launches a replacement as soon as an interruption notice arrives; an
// AWS-managed fleet terminates scaled-in instances at once and refills an
// interrupted one only after it has gone.
type Fleet struct {
	cfg        FleetConfig
	nomadAware bool
	target     int // the fleet's TargetCapacity
	nodes      []*node
	rng        *rand.Rand

	nodeSeconds   float64
	interruptions int
}

// NewFleet returns a fleet of initial ready nodes.
func NewFleet(cfg FleetConfig, nomadAware bool, initial int, seed int64) *Fleet {
	f := &Fleet{cfg: cfg, nomadAware: nomadAware, rng: rand.New(rand.NewSource(seed))}
	for i := 0; i < initial; i++ {
		f.nodes = append(f.nodes, &node{state: ready})
	}
	f.target = initial
	return f
}

// Target is the desired capacity that the fleet reports as its count.
func (f *Fleet) Target() int { return f.target }

// Serving is the number of nodes running workload now.
func (f *Fleet) Serving() int {
	n := 0
	for _, nd := range f.nodes {
		if nd.state == ready || nd.state == noticed {
			n++
		}
	}
	return n
}

// Billed is the number of instances running (and paid for) now.
func (f *Fleet) Billed() int { return len(f.nodes) }

// live is the number of nodes that make up the target capacity: interrupted
// ones stop counting once a Nomad-aware fleet has replaced them, or once an
// AWS-managed one has terminated them.
func (f *Fleet) live() int {
	n := 0
	for _, nd := range f.nodes {
		if nd.state == booting || nd.state == ready || (nd.state == noticed && !f.nomadAware) {
			n++
		}
	}
	return n
}

// Scale sets the target capacity (clamped to min and max) and launches or
// removes nodes to match it. It returns the target set.
func (f *Fleet) Scale(to int, now time.Duration) int {
	to = max(f.cfg.Min, min(f.cfg.Max, to))
	f.target = to
	for f.live() < to {
		f.launch(now)
	}
	// Scale in: cancel launches first (newest first), then remove serving nodes.
	for excess := f.live() - to; excess > 0; excess-- {
		victim := -1
		for i := len(f.nodes) - 1; i >= 0; i-- {
			if f.nodes[i].state == booting {
				victim = i
				break
			}
		}
		if victim < 0 {
			for i := len(f.nodes) - 1; i >= 0; i-- {
				if f.nodes[i].state == ready {
					victim = i
					break
				}
			}
		}
		if victim < 0 {
			break
		}
		if f.nodes[victim].state == ready && f.nomadAware && f.cfg.DrainTime > 0 {
			f.nodes[victim].state, f.nodes[victim].until = draining, now+f.cfg.DrainTime
			continue
		}
		f.nodes = append(f.nodes[:victim], f.nodes[victim+1:]...)
	}
	return to
}

func (f *Fleet) launch(now time.Duration) {
	f.nodes = append(f.nodes, &node{state: booting, until: now + f.cfg.BootDelay})
}

// Advance bills the nodes for the step just ended, then applies what happens
// by now: boots that finish, drains and terminations that end, and new spot
// interruption notices.
func (f *Fleet) Advance(now, step time.Duration) {
	f.nodeSeconds += float64(len(f.nodes)) * step.Seconds()

	kept := f.nodes[:0]
	refill := 0
	for _, nd := range f.nodes {
		switch {
		case nd.state == booting && nd.until <= now:
			nd.state = ready
		case nd.state == noticed && nd.until <= now:
			if !f.nomadAware {
				refill++ // a maintain fleet notices the lost capacity only now
			}
			continue
		case nd.state == noticed && nd.servesUntil <= now:
			nd.state = draining // until stays: terminated at the end of the notice
		case nd.state == draining && nd.until <= now:
			continue
		}
		kept = append(kept, nd)
	}
	f.nodes = kept

	if f.cfg.SpotRate > 0 {
		p := f.cfg.SpotRate * step.Hours()
		n := len(f.nodes)
		for i := 0; i < n; i++ {
			nd := f.nodes[i]
			if (nd.state != ready && nd.state != booting) || f.rng.Float64() >= p {
				continue
			}
			f.interruptions++
			nd.state, nd.until = noticed, now+f.cfg.Notice
			nd.servesUntil = nd.until
			if f.nomadAware {
				// Drain so that allocations are gone before the instance is,
				// and launch the replacement at once.
				nd.servesUntil = max(now, nd.until-f.cfg.DrainTime)
				refill++
			}
		}
	}
	for ; refill > 0 && f.live() < f.target; refill-- {
		f.launch(now)
	}
}
