package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// timeline prints one line per event, stamped with the time since the demo
// started. Once buffer is called it holds lines for a short delay and
// prints them in time order: events reach the demo from several sources
// (the agent's log, the watcher's polls, the local cloud's events, AWX) a
// little late and in no particular order. It is safe for concurrent use.
type timeline struct {
	mu      sync.Mutex
	w       io.Writer
	start   time.Time
	delay   time.Duration // 0: print at once
	pending []tlEntry
	seq     int
	stopc   chan struct{}
	done    chan struct{}
}

// tlEntry is one line waiting to be printed.
type tlEntry struct {
	when time.Time
	seq  int
	kind string
	msg  string
}

func newTimeline(w io.Writer, start time.Time) *timeline {
	return &timeline{w: w, start: start}
}

// buffer makes the timeline hold each line for delay and print the lines
// in time order; stop ends that and prints what is held.
func (t *timeline) buffer(delay time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopc != nil || delay <= 0 {
		return
	}
	stopc, done := make(chan struct{}), make(chan struct{})
	t.delay, t.stopc, t.done = delay, stopc, done
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopc:
				return
			case now := <-tick.C:
				t.mu.Lock()
				if t.delay > 0 {
					t.printDue(now.Add(-t.delay))
				}
				t.mu.Unlock()
			}
		}
	}()
}

// stop prints every held line and prints later lines at once. It is
// idempotent.
func (t *timeline) stop() {
	t.mu.Lock()
	stopc, done := t.stopc, t.done
	t.stopc = nil
	t.mu.Unlock()
	if stopc != nil {
		close(stopc)
		<-done
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.delay = 0
	t.printDue(time.Time{})
}

// printDue prints, in time order, the held lines from before cutoff (all
// of them when cutoff is zero). The caller holds t.mu.
func (t *timeline) printDue(cutoff time.Time) {
	sort.SliceStable(t.pending, func(i, j int) bool {
		a, b := t.pending[i], t.pending[j]
		if !a.when.Equal(b.when) {
			return a.when.Before(b.when)
		}
		return a.seq < b.seq
	})
	n := 0
	for n < len(t.pending) && (cutoff.IsZero() || !t.pending[n].when.After(cutoff)) {
		t.write(t.pending[n])
		n++
	}
	t.pending = append(t.pending[:0], t.pending[n:]...)
}

// write prints one line: "+mm:ss  <kind>  <message>". The caller holds t.mu.
func (t *timeline) write(e tlEntry) {
	d := max(e.when.Sub(t.start), 0).Truncate(time.Second)
	fmt.Fprintf(t.w, "+%02d:%02d  %-8s %s\n", int(d.Minutes()), int(d.Seconds())%60, e.kind, e.msg)
}

// printf writes one timeline line for now.
func (t *timeline) printf(kind, format string, args ...any) {
	t.at(time.Now(), kind, format, args...)
}

// at writes one timeline line for an event that happened at when.
func (t *timeline) at(when time.Time, kind, format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	e := tlEntry{when: when, seq: t.seq, kind: kind, msg: msg}
	if t.delay <= 0 {
		t.write(e)
		return
	}
	t.pending = append(t.pending, e)
}

// elapsed is the time since the demo started, rounded for display.
func (t *timeline) elapsed() time.Duration {
	return time.Since(t.start).Round(time.Second)
}
