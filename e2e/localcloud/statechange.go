package localcloud

// State-change notifications: the rules and their timing are in the package
// doc (cloud.go). The tracker below remembers what was sent per instance.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// stateForgetAfter is how long the tracker remembers an instance whose
// notifications are complete after moto last listed it.
const stateForgetAfter = time.Minute

// stateRank orders the notified states along an instance's lifecycle.
var stateRank = map[string]int{
	string(types.InstanceStateNameRunning):      1,
	string(types.InstanceStateNameStopping):     2,
	string(types.InstanceStateNameStopped):      3,
	string(types.InstanceStateNameShuttingDown): 4,
	string(types.InstanceStateNameTerminated):   5,
}

// dueStates returns the notifications an observed state calls for, in order.
func dueStates(observed string) []string {
	switch types.InstanceStateName(observed) {
	case types.InstanceStateNameRunning:
		return []string{observed}
	case types.InstanceStateNameStopping:
		return []string{observed}
	case types.InstanceStateNameStopped:
		return []string{string(types.InstanceStateNameStopping), observed}
	case types.InstanceStateNameShuttingDown:
		return []string{observed}
	case types.InstanceStateNameTerminated:
		return []string{string(types.InstanceStateNameShuttingDown), observed}
	}
	return nil
}

// stateTracker remembers the notifications sent per fleet instance.
type stateTracker struct {
	// mu guards insts and is held while a notification is sent, so that an
	// instance's notifications go out in order and exactly once.
	mu    chanMutex
	insts map[string]*trackedInstance
}

// chanMutex is a mutex whose Lock can give up when a context ends (a send
// to a hung moto must not block Close forever).
type chanMutex chan struct{}

func newChanMutex() chanMutex { return make(chanMutex, 1) }

func (m chanMutex) lock(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m chanMutex) unlock() { <-m }

// trackedInstance is what the tracker knows about one fleet instance.
type trackedInstance struct {
	fleetID  string
	sent     map[string]bool
	top      int       // stateRank of the latest state sent
	silent   bool      // terminated by a capacity limit before "running" was sent
	lastSeen time.Time // last listed in its fleet (or learned)
}

// done reports whether nothing more will be sent for the instance.
func (ti *trackedInstance) done() bool {
	return ti.silent || ti.sent[string(types.InstanceStateNameTerminated)]
}

func newStateTracker() stateTracker {
	return stateTracker{mu: newChanMutex(), insts: map[string]*trackedInstance{}}
}

// entry returns the instance's record, creating it (lock held).
func (tr *stateTracker) entry(instanceID, fleetID string) *trackedInstance {
	ti, ok := tr.insts[instanceID]
	if !ok {
		ti = &trackedInstance{fleetID: fleetID, sent: map[string]bool{}, lastSeen: time.Now()}
		tr.insts[instanceID] = ti
	}
	if fleetID != "" {
		ti.fleetID = fleetID
	}
	return ti
}

// fleetOf returns the fleet of a tracked instance.
func (tr *stateTracker) fleetOf(ctx context.Context, instanceID string) (string, bool) {
	if tr.lock(ctx) != nil {
		return "", false
	}
	defer tr.unlock()
	ti, ok := tr.insts[instanceID]
	if !ok {
		return "", false
	}
	return ti.fleetID, true
}

// lock takes mu unless ctx ends first; unlock releases it.
func (tr *stateTracker) lock(ctx context.Context) error { return tr.mu.lock(ctx) }

func (tr *stateTracker) unlock() { tr.mu.unlock() }

// emitState queues the notifications that the observed state of a fleet
// instance calls for and that were not sent yet, and records an
// EventStateChange for each (via names who saw the change). A failed send
// is not remembered, so the next caller (the reconciler's next pass) sends
// it again.
func (c *Cloud) emitState(ctx context.Context, instanceID, fleetID, observed, via string) error {
	if c.cfg.NoStateChangeEvents {
		return nil
	}
	due := dueStates(observed)
	if len(due) == 0 {
		return nil
	}
	tr := &c.states
	if err := tr.lock(ctx); err != nil {
		return fmt.Errorf("localcloud: state change of %s: %w", instanceID, err)
	}
	var recs []Event
	var err error
	ti := tr.entry(instanceID, fleetID)
	for _, s := range due {
		if ti.silent || ti.sent[s] || stateRank[s] < ti.top {
			continue
		}
		if err = c.sendBody(ctx, stateChangeBody(instanceID, s)); err != nil {
			err = fmt.Errorf("localcloud: state change of %s to %s: %w", instanceID, s, err)
			break
		}
		ti.sent[s] = true
		ti.top = max(ti.top, stateRank[s])
		recs = append(recs, Event{Kind: EventStateChange, FleetID: ti.fleetID, InstanceID: instanceID,
			Message: fmt.Sprintf("%s (seen by %s)", s, via)})
	}
	tr.unlock()
	for _, e := range recs {
		c.record(e)
	}
	return err
}

// markSilent notes that a capacity limit terminated the instance: unless
// "running" was sent for it, it gets no notification at all.
func (c *Cloud) markSilent(ctx context.Context, instanceID, fleetID string) {
	tr := &c.states
	if tr.lock(ctx) != nil {
		return
	}
	defer tr.unlock()
	ti := tr.entry(instanceID, fleetID)
	if !ti.sent[string(types.InstanceStateNameRunning)] {
		ti.silent = true
	}
}

// listedInstance is a fleet instance as one reconciler pass listed it.
type listedInstance struct {
	inst    Instance
	fleetID string
}

// reconcileStates is the reconciler's part: "running" for every kept
// running instance (running), what a listed instance's other state calls
// for, and, for every tracked instance that is neither, its current state
// read from moto (terminated instances vanish from the fleet listing).
func (c *Cloud) reconcileStates(ctx context.Context, listed map[string]listedInstance, running map[string]listedInstance) error {
	if c.cfg.NoStateChangeEvents {
		return nil
	}
	const via = "reconciler"
	var errs []error
	for id, l := range running {
		errs = append(errs, c.emitState(ctx, id, l.fleetID, string(types.InstanceStateNameRunning), via))
	}
	for id, l := range listed {
		if l.inst.State != string(types.InstanceStateNameRunning) {
			errs = append(errs, c.emitState(ctx, id, l.fleetID, l.inst.State, via))
		}
	}

	tr := &c.states
	if err := tr.lock(ctx); err != nil {
		return errors.Join(append(errs, err)...)
	}
	now := time.Now()
	check := map[string]string{} // instance -> fleet
	for id, ti := range tr.insts {
		l, isListed := listed[id]
		if isListed {
			ti.lastSeen = now
		}
		if ti.done() {
			if !isListed && now.Sub(ti.lastSeen) > stateForgetAfter {
				delete(tr.insts, id)
			}
			continue
		}
		if _, ok := running[id]; ok {
			continue
		}
		if isListed && l.inst.State != string(types.InstanceStateNameRunning) {
			continue // handled above from the listing
		}
		check[id] = ti.fleetID
	}
	tr.unlock()

	for id, fleetID := range check {
		inst, err := c.describeInstance(ctx, id)
		if isNotFound(err) {
			c.forgetState(ctx, id)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("state change of %s: %w", id, err))
			continue
		}
		errs = append(errs, c.emitState(ctx, id, fleetID, inst.State, via))
	}
	return errors.Join(errs...)
}

// forgetState drops an instance from the tracker.
func (c *Cloud) forgetState(ctx context.Context, instanceID string) {
	if c.states.lock(ctx) != nil {
		return
	}
	delete(c.states.insts, instanceID)
	c.states.unlock()
}

// isNotFound reports whether err is EC2's InvalidInstanceID.NotFound.
func isNotFound(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "InvalidInstanceID.NotFound"
}
