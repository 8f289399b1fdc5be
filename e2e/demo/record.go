package main

import (
	"sync"
	"time"
)

// snapshot is the state of the fleet and the pool at one moment.
type snapshot struct {
	At           time.Time
	Target       int // the fleet's TargetCapacity
	Running      int // running fleet instances
	Ready        int // pool nodes ready, eligible and not draining
	Draining     int // pool nodes draining
	Initializing int // pool nodes not ready yet
	Burners      int // burner allocations running
	WorkloadCPU  string
	// TargetSince is when Target last changed.
	TargetSince time.Time
}

// steady reports whether the fleet and the pool agree: every instance of
// the target capacity runs and is a ready, eligible node, nothing drains.
func (s snapshot) steady() bool {
	return s.Target == s.Running && s.Running == s.Ready && s.Draining == 0 && s.Initializing == 0
}

// record is what the demo has seen so far, for the status line, the steps
// and the summary. It is safe for concurrent use.
type record struct {
	mu            sync.Mutex
	last          snapshot
	haveSnapshot  bool
	peakTarget    int
	peakReady     int
	decisionsOut  int // strategy lines asking for a scale-out
	decisionsIn   int // strategy lines asking for a scale-in
	dispatchedN   int // actions the agent sent to the target
	heldBackN     int // actions the agent held back (cooldown, still scaling)
	scaleOuts     int
	scaleIns      int
	joined        int
	left          int
	lost          map[string]string // allocation ID -> description
	agentErrors   []string
	cloudProblems []string
}

func newRecord() *record {
	return &record{lost: map[string]string{}}
}

// observe stores a new snapshot, keeping TargetSince across equal targets.
func (r *record) observe(s snapshot) snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.haveSnapshot && s.Target == r.last.Target {
		s.TargetSince = r.last.TargetSince
	} else {
		s.TargetSince = s.At
	}
	r.last, r.haveSnapshot = s, true
	r.peakTarget = max(r.peakTarget, s.Target)
	r.peakReady = max(r.peakReady, s.Ready)
	return s
}

// latest returns the newest snapshot (ok false before the first one).
func (r *record) latest() (snapshot, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.haveSnapshot
}

func (r *record) decision(direction string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if direction == "out" {
		r.decisionsOut++
	} else {
		r.decisionsIn++
	}
}

func (r *record) scaled(direction string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if direction == "out" {
		r.scaleOuts++
	} else {
		r.scaleIns++
	}
}

func (r *record) nodeJoined() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.joined++
}

func (r *record) nodeLeft() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.left++
}

// addLost records a lost allocation; it reports whether it is new.
func (r *record) addLost(id, desc string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.lost[id]; ok {
		return false
	}
	r.lost[id] = desc
	return true
}

func (r *record) dispatched() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dispatchedN++
}

func (r *record) heldBack() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.heldBackN++
}

func (r *record) agentError(text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.agentErrors = append(r.agentErrors, text)
}

func (r *record) cloudProblem(text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cloudProblems = append(r.cloudProblems, text)
}

// summary is a copy of the counts for the end of the demo.
type summary struct {
	Last                      snapshot
	PeakTarget, PeakReady     int
	DecisionsOut, DecisionsIn int
	Dispatched, HeldBack      int
	ScaleOuts, ScaleIns       int
	Joined, Left              int
	Lost                      []string
	AgentErrors               []string
	CloudProblems             []string
}

func (r *record) summary() summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := summary{
		Last: r.last, PeakTarget: r.peakTarget, PeakReady: r.peakReady,
		DecisionsOut: r.decisionsOut, DecisionsIn: r.decisionsIn,
		Dispatched: r.dispatchedN, HeldBack: r.heldBackN,
		ScaleOuts: r.scaleOuts, ScaleIns: r.scaleIns, Joined: r.joined, Left: r.left,
		AgentErrors:   append([]string(nil), r.agentErrors...),
		CloudProblems: append([]string(nil), r.cloudProblems...),
	}
	for _, d := range r.lost {
		s.Lost = append(s.Lost, d)
	}
	return s
}
