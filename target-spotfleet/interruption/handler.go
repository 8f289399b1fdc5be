package interruption

import (
	"context"
	"strconv"
	"time"
)

// Disposition is what the watcher does with a message once its event was
// handed to the Handler.
type Disposition int

// The dispositions a Handler can ask for.
const (
	// Done: the event was handled; the message is deleted.
	Done Disposition = iota
	// Drop: the event is not ours or needs nothing; the message is deleted
	// and one line with the Outcome's Why is logged.
	Drop
	// Retry: the event was not handled yet; the message stays on the queue
	// and is delivered again after the Outcome's RetryAfter.
	Retry
)

// String names the disposition for logs.
func (d Disposition) String() string {
	switch d {
	case Done:
		return "done"
	case Drop:
		return "drop"
	case Retry:
		return "retry"
	}
	return "Disposition(" + strconv.Itoa(int(d)) + ")"
}

// Outcome is a Handler's answer for one event.
type Outcome struct {
	Disposition Disposition
	// Why says, for the log, why the event was dropped or retried.
	Why string
	// RetryAfter is how long a retried message stays hidden, rounded up to
	// whole seconds and bounded by SQS's 0 to 12 hours.
	RetryAfter time.Duration
}

// Handler acts on interruption events. Handle is called from many
// goroutines at once, never twice at once for the same event id, and must
// be idempotent: an event can still come twice (after a failed delete, a
// restart, or an hour).
type Handler interface {
	Handle(ctx context.Context, ev Event, msg Message) Outcome
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, ev Event, msg Message) Outcome

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, ev Event, msg Message) Outcome {
	return f(ctx, ev, msg)
}
