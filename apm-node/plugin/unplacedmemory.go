package plugin

import (
	"sync"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"
)

// stallSamples is how many consecutive samples a task group's queue must
// stay unchanged after the pool's ready nodes grew by the nodes asked for
// it before the stall guard stops counting it. Two samples: the new nodes
// were ready for at least a whole sample_interval, while Nomad unblocks and
// places a blocked evaluation within a second of a node becoming eligible.
const stallSamples = 2

// unplacedMemory is what the unplaced figure remembers between samples: per
// pool (query text), the warnings already given and the stall guard's watch
// of each waiting task group; for the cluster, the jobs last read.
type unplacedMemory struct {
	mu    sync.Mutex
	pools map[string]*poolMemory
	jobs  map[jobKey]*api.Job // by the job's JobModifyIndex, see cachedJob
}

// poolMemory is one pool's memory. Its methods take the owner's lock.
type poolMemory struct {
	owner *unplacedMemory
	// oversized: what was warned about a task group that asks more than
	// any pool node offers, by task group name.
	oversized map[string]oversizedNote
	// watches: the stall guard's view of each waiting task group.
	watches map[string]*groupWatch
}

// oversizedNote is what an oversized warning said.
type oversizedNote struct {
	ask            unplacedAsk
	maxCPU, maxMem float64
}

// groupWatch follows one waiting task group with one queue.
type groupWatch struct {
	jobIndex uint64 // the job's JobModifyIndex
	queued   int
	// readyBase: the pool's ready nodes when this queue was first seen;
	// asked: the new nodes that sample asked for (all task groups'), -1
	// until the sample's packing is done.
	readyBase, asked int
	grown            int // consecutive samples with ready >= readyBase + asked
	stalled          bool
	seen             bool // in the current sample
}

// pool returns the memory of the pool a query names.
func (m *unplacedMemory) pool(key string) *poolMemory {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pools == nil {
		m.pools = map[string]*poolMemory{}
	}
	p, ok := m.pools[key]
	if !ok {
		p = &poolMemory{owner: m, oversized: map[string]oversizedNote{}, watches: map[string]*groupWatch{}}
		m.pools[key] = p
	}
	return p
}

// cachedJob returns the job read before when its JobModifyIndex is index
// (the blocked evaluation's): the job has not changed since.
func (m *unplacedMemory) cachedJob(k jobKey, index uint64) (*api.Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[k]
	if !ok || index == 0 || j.JobModifyIndex == nil || *j.JobModifyIndex != index {
		return nil, false
	}
	return j, true
}

// keepJobs replaces the job cache with the jobs of the current sample.
func (m *unplacedMemory) keepJobs(jobs map[jobKey]*api.Job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.jobs = jobs
}

// warnOversized reports whether the oversized task group name should be
// warned about: the first time, and again when its ask or the pool's
// largest node changed.
func (p *poolMemory) warnOversized(name string, note oversizedNote) bool {
	p.owner.mu.Lock()
	defer p.owner.mu.Unlock()
	if old, ok := p.oversized[name]; ok && old == note {
		return false
	}
	p.oversized[name] = note
	return true
}

// forgetOversized drops the notes of task groups not oversized in this
// sample, so one that comes back is warned about again.
func (p *poolMemory) forgetOversized(keep map[string]bool) {
	p.owner.mu.Lock()
	defer p.owner.mu.Unlock()
	for name := range p.oversized {
		if !keep[name] {
			delete(p.oversized, name)
		}
	}
}

// guard is the stall guard: it returns the groups to count, leaving out a
// task group whose queue has not changed for stallSamples samples after
// the pool's ready nodes grew by the new nodes asked for when that queue
// was first seen. Nodes were added for it, they are ready, and Nomad still
// placed none of its allocations: something the figure cannot see (a
// constraint it does not honour, a node larger than the ones the fleet
// launches, a port, a volume) keeps it waiting, and asking for more nodes
// would only pin the pool at its max. The group counts again when its job
// (JobModifyIndex) or its queue changes. ready is the pool's ready nodes.
func (p *poolMemory) guard(groups []waitingGroup, ready int, log hclog.Logger) []waitingGroup {
	p.owner.mu.Lock()
	defer p.owner.mu.Unlock()
	for _, w := range p.watches {
		w.seen = false
	}
	counted := groups[:0:0]
	for _, g := range groups {
		name := g.name()
		w, ok := p.watches[name]
		if !ok || w.jobIndex != g.jobIndex || w.queued != g.queued {
			if ok && w.stalled {
				log.Info("unplaced task group counted again: its job or its queue changed", "task_group", name,
					"queued", g.queued, "was_queued", w.queued)
			}
			w = &groupWatch{jobIndex: g.jobIndex, queued: g.queued, readyBase: ready, asked: -1}
			p.watches[name] = w
		}
		w.seen = true
		if !w.stalled && w.asked > 0 {
			if ready >= w.readyBase+w.asked {
				w.grown++
			} else {
				w.grown = 0
			}
			if w.grown >= stallSamples {
				w.stalled = true
				log.Warn("unplaced task group left out: the pool's ready nodes grew by the nodes asked for it, yet none of its allocations was placed; adding nodes does not place it (counted again when its job or its queue changes)",
					"task_group", name, "queued", g.queued, "nodes_asked", w.asked,
					"ready_nodes_then", w.readyBase, "ready_nodes", ready, "samples", w.grown)
			}
		}
		if w.stalled {
			log.Debug("unplaced task group left out by the stall guard", "task_group", name, "queued", g.queued)
			continue
		}
		counted = append(counted, g)
	}
	for name, w := range p.watches {
		if !w.seen {
			delete(p.watches, name)
		}
	}
	return counted
}

// asked records, for the watches begun in this sample, the new nodes the
// sample asked for.
func (p *poolMemory) asked(groups []waitingGroup, needed int) {
	p.owner.mu.Lock()
	defer p.owner.mu.Unlock()
	for _, g := range groups {
		if w, ok := p.watches[g.name()]; ok && w.asked < 0 {
			w.asked = needed
		}
	}
}
