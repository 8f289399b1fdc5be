package localcloud

import (
	"fmt"
	"strings"
	"time"
)

// EventKind names what happened in the local cloud.
type EventKind string

// The kinds of Event the local cloud records.
const (
	EventClientStarted          EventKind = "client-started"
	EventClientStopped          EventKind = "client-stopped"
	EventClientFailed           EventKind = "client-failed"
	EventRefill                 EventKind = "refill"
	EventInterruptionWarning    EventKind = "interruption-warning"
	EventInterruptionTerminated EventKind = "interruption-terminated"
	EventReconcileError         EventKind = "reconcile-error"
	// EventInsufficientCapacity: the reconciler terminated an instance above
	// its fleet's capacity limit (SetCapacityLimit), as EC2 would have
	// refused it with InsufficientInstanceCapacity.
	EventInsufficientCapacity EventKind = "insufficient-capacity"
	// EventNomadFault: the Nomad API proxy answered a request with an
	// injected fault (FailNomad).
	EventNomadFault EventKind = "nomad-fault"
	// EventInterruptionStopped: an interruption with Action "stop" stopped
	// its instance at the end of the notice (InterruptWith).
	EventInterruptionStopped EventKind = "interruption-stopped"
	// EventRebalance: a rebalance recommendation was queued (Rebalance).
	EventRebalance EventKind = "rebalance-recommendation"
	// EventStateChange: an "EC2 Instance State-change Notification" was
	// queued; Message begins with the state it announces.
	EventStateChange EventKind = "state-change"
	// EventInstanceStopped: StopInstance stopped an instance.
	EventInstanceStopped EventKind = "instance-stopped"
	// EventMessageSent: SendMessage queued a raw message body.
	EventMessageSent EventKind = "message-sent"
	// EventBootCallback: a new instance called AWX's provisioning callback
	// (Config.BootCallback), or could not; Message says which and what AWX
	// answered.
	EventBootCallback EventKind = "boot-callback"
)

// Event is one entry of the local cloud's timeline.
type Event struct {
	Time       time.Time
	Kind       EventKind
	FleetID    string // when the event concerns a fleet
	InstanceID string // when the event concerns an instance
	Message    string
}

// String formats the event as one timeline line.
func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-24s", e.Time.Format("15:04:05.000"), e.Kind)
	if e.FleetID != "" {
		fmt.Fprintf(&b, " fleet=%s", e.FleetID)
	}
	if e.InstanceID != "" {
		fmt.Fprintf(&b, " instance=%s", e.InstanceID)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, " %s", e.Message)
	}
	return b.String()
}

// Events returns a copy of every event recorded so far, oldest first.
func (c *Cloud) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// record appends an event, logs it and hands it to Config.OnEvent.
func (c *Cloud) record(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	c.logf("event %s", e)
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(e)
	}
}
