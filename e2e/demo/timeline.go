package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// timeline prints one line per event, stamped with the time since the demo
// started, and counts what the summary needs. It is safe for concurrent use.
type timeline struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func newTimeline(w io.Writer, start time.Time) *timeline {
	return &timeline{w: w, start: start}
}

// printf writes one timeline line: "+mm:ss  <kind>  <message>".
func (t *timeline) printf(kind, format string, args ...any) {
	t.at(time.Now(), kind, format, args...)
}

// at writes one timeline line for an event that happened at when.
func (t *timeline) at(when time.Time, kind, format string, args ...any) {
	d := max(when.Sub(t.start), 0).Truncate(time.Second)
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "+%02d:%02d  %-8s %s\n", int(d.Minutes()), int(d.Seconds())%60, kind, msg)
}

// elapsed is the time since the demo started, rounded for display.
func (t *timeline) elapsed() time.Duration {
	return time.Since(t.start).Round(time.Second)
}
