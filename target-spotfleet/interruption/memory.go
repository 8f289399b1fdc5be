package interruption

import (
	"sync"
	"time"
)

const (
	// rememberFor is how long an event handled Done or Drop is remembered:
	// EventBridge and SQS duplicates come within minutes, and an hour-old
	// interruption warning is about an instance that is long gone.
	rememberFor = time.Hour
	// maxRemembered bounds each memory; past it the oldest ids are
	// forgotten first (their duplicates would be handled again, which is
	// harmless since handling is idempotent).
	maxRemembered = 10000
)

// claim is the answer of eventMemory.claim.
type claim int

const (
	claimed      claim = iota // the caller handles the event
	alreadyDone               // handled Done or Drop within the last hour
	beingHandled              // another goroutine is handling it now
)

// eventMemory knows which event ids are being handled and which were
// handled recently, so that one event is handed to the Handler once.
type eventMemory struct {
	mu       sync.Mutex
	now      func() time.Time
	inFlight map[string]bool
	done     recentSet // handled Done or Drop
	retried  recentSet // asked to Retry at least once
}

func newEventMemory(now func() time.Time) *eventMemory {
	return &eventMemory{
		now:      now,
		inFlight: map[string]bool{},
		done:     newRecentSet(rememberFor, maxRemembered),
		retried:  newRecentSet(rememberFor, maxRemembered),
	}
}

// claim marks id as being handled by the caller, unless it is done or
// already being handled.
func (m *eventMemory) claim(id string) claim {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.done.has(id, m.now()):
		return alreadyDone
	case m.inFlight[id]:
		return beingHandled
	}
	m.inFlight[id] = true
	return claimed
}

// finish ends the caller's claim on id; done says the event was handled
// Done or Drop, so that later copies are duplicates.
func (m *eventMemory) finish(id string, done bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inFlight, id)
	if done {
		m.done.add(id, m.now())
	}
}

// firstRetry reports whether id is asked to Retry for the first time (in
// the last hour), and remembers that it was.
func (m *eventMemory) firstRetry(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if m.retried.has(id, now) {
		return false
	}
	m.retried.add(id, now)
	return true
}

// recentSet is a set of ids that forgets each id ttl after it was added,
// and its oldest ids when it holds more than max. Not safe for concurrent
// use on its own.
type recentSet struct {
	ttl   time.Duration
	max   int
	added map[string]time.Time
	order []recentID // oldest first
}

type recentID struct {
	id string
	at time.Time
}

func newRecentSet(ttl time.Duration, max int) recentSet {
	return recentSet{ttl: ttl, max: max, added: map[string]time.Time{}}
}

func (s *recentSet) has(id string, now time.Time) bool {
	at, ok := s.added[id]
	return ok && now.Sub(at) < s.ttl
}

func (s *recentSet) add(id string, now time.Time) {
	s.prune(now)
	if _, ok := s.added[id]; ok {
		return
	}
	s.added[id] = now
	s.order = append(s.order, recentID{id: id, at: now})
	s.prune(now)
}

// prune forgets the ids that expired and those past max. Ids are added in
// time order, so both are at the front.
func (s *recentSet) prune(now time.Time) {
	n := 0
	for n < len(s.order) && (len(s.order)-n > s.max || now.Sub(s.order[n].at) >= s.ttl) {
		delete(s.added, s.order[n].id)
		n++
	}
	s.order = s.order[n:]
}

// size is how many ids the set holds (for tests).
func (s *recentSet) size() int { return len(s.added) }
