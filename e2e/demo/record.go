package main

import (
	"sort"
	"sync"
	"time"
)

// snapshot is the state of the fleet and the pool at one moment.
type snapshot struct {
	At           time.Time
	Target       int // the fleet's TargetCapacity
	Running      int // running fleet instances
	Ready        int // pool nodes ready, eligible, not draining and admitted
	Admitting    int // pool nodes ready but not admitted yet (launch hooks)
	Draining     int // pool nodes draining
	Initializing int // pool nodes not ready yet
	Burners      int // burner allocations running
	WorkloadCPU  string
	// CPU is the pool's mean workload CPU in percent; HaveCPU false when
	// apm-node counted no node.
	CPU     float64
	HaveCPU bool
	// TargetSince is when Target last changed.
	TargetSince time.Time
}

// steady reports whether the fleet and the pool agree: every instance of
// the target capacity runs and is a ready, admitted node, nothing drains.
func (s snapshot) steady() bool {
	return s.Target == s.Running && s.Running == s.Ready && s.Draining == 0 && s.Initializing == 0 && s.Admitting == 0
}

// nodeHist is what the demo saw of one pool node.
type nodeHist struct {
	ID, Name   string // Name is the instance ID
	Registered time.Time
	Ready      time.Time // first seen ready
	Admitted   time.Time // first seen admitted at the server
	// NodeDir is the node's meta.node_dir as the servers show it.
	NodeDir string
	// Marker is what the watcher found when it first saw the node
	// admitted: the content of the monitoring marker the playbook writes
	// in the node's own directory (localcloud NodeDir), or why it could
	// not be read (MarkerErr).
	Marker, MarkerErr string
	DrainStart        time.Time // first seen draining
	DrainEnd          time.Time // first seen no longer draining while still ready
	Down              time.Time
}

// allocHist is one allocation of the pool, as first seen.
type allocHist struct {
	ID, JobID, NodeID, NodeName string
	Created                     time.Time // the server's CreateTime
	Status                      string    // the latest client status seen
}

// instHist is one fleet instance: when it was first seen running and when
// it was first seen gone from the running instances.
type instHist struct {
	ID         string
	Seen, Gone time.Time
	PrivateIP  string // the address EC2 gave it
}

// instSeen is a running fleet instance as one poll sees it.
type instSeen struct {
	ID, PrivateIP string
	PID           int // its client agent, 0 if none (yet)
}

// sample is one point of the picture.
type sample struct {
	At             time.Time
	CPU            float64
	HaveCPU        bool
	Target, Ready  int
	Running        int
	Admitting      int
	Burners        int
	Draining, Down int
}

// markKind is the kind of an event marked on the picture.
type markKind string

const (
	markScaleOut        markKind = "scale-out"
	markScaleIn         markKind = "scale-in"
	markAdmitted        markKind = "node admitted"
	markHookFailed      markKind = "playbook failed"
	markInterruption    markKind = "spot interruption warning"
	markInterruptionEnd markKind = "interrupted instance terminated"
	markLoad            markKind = "load step"
)

// mark is one event of the picture.
type mark struct {
	At    time.Time
	Kind  markKind
	Label string
}

// interruption is the demo's spot interruption.
type interruption struct {
	Instance, NodeID string
	Warned           time.Time // just before the warning was queued
	Deadline         time.Time // Warned + the notice: EC2 takes it then
	DrainLogged      time.Time // the plugin's "draining the node of a leaving instance"
	// Requested is the plugin's "replacement requested" line for it (the
	// target raised by one), GivenBack its "replacement unit given back"
	// line naming it, GivenBackWhy that line's reason.
	Requested, GivenBack time.Time
	GivenBackWhy         string
	Terminated           time.Time // the local cloud terminated it
}

// record is what the demo has seen so far, for the status line, the steps,
// the promises, the summary and the picture. It is safe for concurrent use.
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
	noOps         int // dispatched actions the target found nothing to do for
	scaleOuts     int
	scaleIns      int
	joined        int
	left          int
	lost          map[string]string // allocation ID -> description
	agentErrors   []string
	cloudProblems []string

	nodes       map[string]*nodeHist  // by node ID
	allocs      map[string]*allocHist // by allocation ID
	instances   map[string]*instHist  // by instance ID
	samples     []sample
	marks       []mark
	admitLogged map[string]time.Time // instance -> the plugin's "node admitted" line
	hookFailed  map[string]time.Time // instance -> the plugin's "launch hook failed" line
	hookRemoved map[string]time.Time // instance -> "terminated the instance whose launch hook failed"
	scaledIn    map[string]time.Time // instance -> the "scaled in" line that terminated it
	pids        map[string]int       // instance -> its client agent's PID
	irq         interruption
}

func newRecord() *record {
	return &record{lost: map[string]string{}, nodes: map[string]*nodeHist{}, allocs: map[string]*allocHist{},
		instances: map[string]*instHist{}, admitLogged: map[string]time.Time{}, hookFailed: map[string]time.Time{},
		hookRemoved: map[string]time.Time{}, scaledIn: map[string]time.Time{}, pids: map[string]int{}}
}

// observe stores a new snapshot, keeping TargetSince across equal targets,
// and adds a sample for the picture.
func (r *record) observe(s snapshot, down int) snapshot {
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
	r.samples = append(r.samples, sample{At: s.At, CPU: s.CPU, HaveCPU: s.HaveCPU, Target: s.Target, Ready: s.Ready,
		Running: s.Running, Admitting: s.Admitting, Burners: s.Burners, Draining: s.Draining, Down: down})
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

func (r *record) scaled(direction string, at time.Time, label string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kind := markScaleIn
	if direction == "out" {
		r.scaleOuts++
		kind = markScaleOut
	} else {
		r.scaleIns++
	}
	r.marks = append(r.marks, mark{At: at, Kind: kind, Label: label})
}

// addMark records an event for the picture.
func (r *record) addMark(at time.Time, kind markKind, label string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks = append(r.marks, mark{At: at, Kind: kind, Label: label})
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

func (r *record) noOp() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.noOps++
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

// node returns the history of a node, created on first sight.
func (r *record) node(id, name string, at time.Time) *nodeHist {
	n := r.nodes[id]
	if n == nil {
		n = &nodeHist{ID: id, Name: name, Registered: at}
		r.nodes[id] = n
	}
	return n
}

// updateNode applies fn to a node's history under the lock.
func (r *record) updateNode(id, name string, at time.Time, fn func(n *nodeHist)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r.node(id, name, at))
}

// nodeAdmitted reports whether the node was seen admitted.
func (r *record) nodeAdmitted(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[id]
	return n != nil && !n.Admitted.IsZero()
}

// seeAlloc records an allocation of the pool.
func (r *record) seeAlloc(a allocHist) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.allocs[a.ID]; old != nil {
		old.Status = a.Status
		return
	}
	r.allocs[a.ID] = &a
}

// seeInstances records the fleet's running instances at one moment.
func (r *record) seeInstances(at time.Time, running []instSeen) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := map[string]bool{}
	for _, s := range running {
		now[s.ID] = true
		in := r.instances[s.ID]
		if in == nil {
			in = &instHist{ID: s.ID, Seen: at}
			r.instances[s.ID] = in
		}
		if in.PrivateIP == "" {
			in.PrivateIP = s.PrivateIP
		}
		if s.PID != 0 {
			r.pids[s.ID] = s.PID
		}
	}
	for id, in := range r.instances {
		if !now[id] && in.Gone.IsZero() {
			in.Gone = at
		}
	}
}

// logged records the time of a plugin line about an instance into m.
func (r *record) logged(m map[string]time.Time, instance string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := m[instance]; !ok {
		m[instance] = at
	}
}

// clientPID records the PID of an instance's client agent (from the local
// cloud's start event: also a client the poll never saw).
func (r *record) clientPID(instance string, pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if pid != 0 {
		r.pids[instance] = pid
	}
}

// clientPIDs returns every client agent PID seen, by instance.
func (r *record) clientPIDs() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.pids))
	for k, v := range r.pids {
		out[k] = v
	}
	return out
}

// scaledInInstance records an instance a scale-in terminated.
func (r *record) scaledInInstance(instance string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.scaledIn[instance]; !ok {
		r.scaledIn[instance] = at
	}
}

// updateIRQ applies fn to the interruption under the lock.
func (r *record) updateIRQ(fn func(*interruption)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(&r.irq)
}

// history is a copy of everything the promises and the picture look at.
type history struct {
	Start       time.Time
	End         time.Time
	Nodes       []nodeHist
	Allocs      []allocHist
	Instances   map[string]instHist
	Samples     []sample
	Marks       []mark
	AdmitLogged map[string]time.Time
	HookFailed  map[string]time.Time
	HookRemoved map[string]time.Time
	ScaledIn    map[string]time.Time // instance -> the scale-in that terminated it
	IRQ         interruption
}

// history copies the record's history.
func (r *record) history(start, end time.Time) history {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := history{Start: start, End: end, Instances: map[string]instHist{},
		Samples: append([]sample(nil), r.samples...), Marks: append([]mark(nil), r.marks...),
		AdmitLogged: cloneTimes(r.admitLogged), HookFailed: cloneTimes(r.hookFailed),
		HookRemoved: cloneTimes(r.hookRemoved), ScaledIn: cloneTimes(r.scaledIn), IRQ: r.irq}
	for _, n := range r.nodes {
		h.Nodes = append(h.Nodes, *n)
	}
	sort.Slice(h.Nodes, func(i, j int) bool { return h.Nodes[i].Registered.Before(h.Nodes[j].Registered) })
	for _, a := range r.allocs {
		h.Allocs = append(h.Allocs, *a)
	}
	sort.Slice(h.Allocs, func(i, j int) bool { return h.Allocs[i].Created.Before(h.Allocs[j].Created) })
	for id, in := range r.instances {
		h.Instances[id] = *in
	}
	sort.Slice(h.Marks, func(i, j int) bool { return h.Marks[i].At.Before(h.Marks[j].At) })
	return h
}

func cloneTimes(m map[string]time.Time) map[string]time.Time {
	out := make(map[string]time.Time, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// summary is a copy of the counts for the end of the demo.
type summary struct {
	Last                      snapshot
	PeakTarget, PeakReady     int
	DecisionsOut, DecisionsIn int
	Dispatched, HeldBack      int
	NoOps                     int
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
		Dispatched: r.dispatchedN, HeldBack: r.heldBackN, NoOps: r.noOps,
		ScaleOuts: r.scaleOuts, ScaleIns: r.scaleIns, Joined: r.joined, Left: r.left,
		AgentErrors:   append([]string(nil), r.agentErrors...),
		CloudProblems: append([]string(nil), r.cloudProblems...),
	}
	for _, d := range r.lost {
		s.Lost = append(s.Lost, d)
	}
	sort.Strings(s.Lost)
	return s
}

// interruption returns a copy of the interruption's record.
func (r *record) interruption() interruption {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.irq
}
