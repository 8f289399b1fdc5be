package sim

import (
	"math"
	"sort"
	"time"
)

// placement models demand as allocations with a resource ask and Nomad's
// placement of them: demand D (in nodes) is ceil(D / ask) allocations,
// serving capacity C holds floor(C / ask) of them, and the rest wait,
// queued, to be placed. Allocation k exists while the demand counts at
// least k allocations, so a rise adds allocations on top and a fall ends
// the topmost ones; the lowest ones are placed first. An allocation that
// loses its place (capacity went: an interruption, a scale-in) waits again.
// An allocation whose demand ends before it is placed counts as having
// waited until then.
type placement struct {
	ask     float64
	waiting []time.Duration // per allocation k-1: since when it waits, or -1 (placed or absent)
	exists  []bool

	waits              []float64 // seconds, per wait that ended
	started            int       // allocations that arrived or lost their place
	queuedAllocSeconds float64
}

func newPlacement(ask float64) *placement {
	if ask <= 0 {
		ask = 0.125
	}
	return &placement{ask: ask}
}

// allocs is the number of allocations that make up demand d.
func (p *placement) allocs(d float64) int {
	return int(math.Ceil(math.Round(d/p.ask*1e6) / 1e6))
}

// step applies the demand and the serving capacity at now and returns the
// number of allocations waiting.
func (p *placement) step(now, tick time.Duration, demand float64, serving int) int {
	n := p.allocs(demand)
	slots := int(math.Floor(float64(serving)/p.ask + 1e-9))
	for len(p.exists) < n {
		p.exists = append(p.exists, false)
		p.waiting = append(p.waiting, -1)
	}
	queued := 0
	for k := range p.exists {
		alive := k < n
		switch {
		case alive && !p.exists[k]:
			p.exists[k] = true
			p.started++
			if k >= slots {
				p.waiting[k] = now
			}
		case alive && p.waiting[k] >= 0 && k < slots:
			p.waits = append(p.waits, (now - p.waiting[k]).Seconds())
			p.waiting[k] = -1
		case alive && p.waiting[k] < 0 && k >= slots:
			p.started++ // lost its place
			p.waiting[k] = now
		case !alive && p.exists[k]:
			if p.waiting[k] >= 0 {
				p.waits = append(p.waits, (now - p.waiting[k]).Seconds())
			}
			p.exists[k], p.waiting[k] = false, -1
		}
		if alive && p.waiting[k] >= 0 {
			queued++
		}
	}
	p.queuedAllocSeconds += float64(queued) * tick.Seconds()
	return queued
}

// finish ends the waits still open at the end of the replay.
func (p *placement) finish(now time.Duration) {
	for k := range p.exists {
		if p.exists[k] && p.waiting[k] >= 0 {
			p.waits = append(p.waits, (now - p.waiting[k]).Seconds())
		}
	}
}

// WaitStats summarises the time allocations waited to be placed.
type WaitStats struct {
	Allocations int     // allocations that arrived or lost their place
	Waited      int     // of them, those that had to wait
	MeanSeconds float64 // mean wait of those that waited
	P95Seconds  float64 // 95th percentile wait of those that waited
	// QueuedNodeHours is the ask of waiting allocations integrated over
	// time: node-hours of work that waited.
	QueuedNodeHours float64
}

func (p *placement) stats() WaitStats {
	s := WaitStats{Allocations: p.started, QueuedNodeHours: p.queuedAllocSeconds * p.ask / 3600}
	var w []float64
	for _, x := range p.waits {
		if x > 0 {
			w = append(w, x)
		}
	}
	s.Waited = len(w)
	if len(w) == 0 {
		return s
	}
	sort.Float64s(w)
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	s.MeanSeconds = sum / float64(len(w))
	s.P95Seconds = w[min(len(w)-1, int(math.Ceil(0.95*float64(len(w))))-1)]
	return s
}
