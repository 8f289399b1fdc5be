package localcloud

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TerminateInstance terminates one instance at once and without any warning
// (an undrained loss: a host failure, an operator, a spot reclaim whose
// warning went missing) unless it is already shutting down or terminated
// (moto decrements a fleet's fulfilled capacity again for every repeated
// termination). It is the local cloud's "terminate without warning"; a
// plugin-like termination is a TerminateInstances call through EC2() itself.
//
// For a fleet instance, the state-change notifications "shutting-down" and
// "terminated" (and "running" first, if none was sent for it yet) are queued
// before it returns, unless Config.NoStateChangeEvents; the instance's client
// agent is stopped between the two, as the machine is down when AWS says
// "terminated".
func (c *Cloud) TerminateInstance(ctx context.Context, instanceID string) error {
	_, err := c.terminateIfRunning(ctx, instanceID, "TerminateInstance")
	return err
}

// StopInstance stops a running instance in moto (StopInstances): what a spot
// interruption with the "stop" behaviour does at the end of its notice, or an
// operator's stop. The instance then counts as not running: the reconciler
// stops its client agent like a terminated one's (it is woken at once), and
// RunningFleetInstances leaves it out. moto keeps a stopped instance in
// DescribeSpotFleetInstances and in the fleet's FulfilledCapacity; maintain
// refill counts only running instances, so after Config.RefillDelay it
// launches a replacement (FulfilledCapacity then exceeds TargetCapacity by
// the stopped ones), and nothing ever starts the stopped instance again.
//
// For a fleet instance, the notifications "stopping" and "stopped" are queued
// before it returns (see TerminateInstance). Stopping a stopped instance is a
// no-op; stopping a terminated one is an error.
func (c *Cloud) StopInstance(ctx context.Context, instanceID string) error {
	_, done, err := c.stopIfRunning(ctx, instanceID, "StopInstance")
	if err != nil {
		return err
	}
	if done {
		c.record(Event{Kind: EventInstanceStopped, InstanceID: instanceID,
			Message: "stopped; it stays listed in its fleet and in moto's fulfilled capacity"})
	}
	return nil
}

// terminateIfRunning terminates the instance unless it is already shutting
// down or terminated, and reports whether it did. It queues the instance's
// state-change notifications (via names the cause in the timeline).
func (c *Cloud) terminateIfRunning(ctx context.Context, instanceID, via string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	inst, err := c.describeInstance(ctx, instanceID)
	if err != nil {
		return false, fmt.Errorf("localcloud: terminate %s: %w", instanceID, err)
	}
	if inst.State == string(types.InstanceStateNameTerminated) || inst.State == string(types.InstanceStateNameShuttingDown) {
		return false, nil
	}
	fleetID, notify := c.noteBefore(ctx, inst, via)
	if _, err := c.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{instanceID}}); err != nil {
		return false, fmt.Errorf("localcloud: terminate %s: %w", instanceID, err)
	}
	if notify {
		c.noteAfter(ctx, instanceID, fleetID, via)
	}
	c.kickReconciler()
	return true, nil
}

// stopIfRunning stops a running instance and reports the state it had and
// whether it stopped it: a stopped (or stopping) one is left alone, any
// other state is an errNotRunning error (moto would "stop" even a
// terminated instance).
func (c *Cloud) stopIfRunning(ctx context.Context, instanceID, via string) (string, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	inst, err := c.describeInstance(ctx, instanceID)
	if err != nil {
		return "", false, fmt.Errorf("localcloud: stop %s: %w", instanceID, err)
	}
	switch inst.State {
	case string(types.InstanceStateNameRunning):
	case string(types.InstanceStateNameStopped), string(types.InstanceStateNameStopping):
		return inst.State, false, nil
	default:
		return inst.State, false, fmt.Errorf("localcloud: stop %s: %w (state %s)", instanceID, errNotRunning, inst.State)
	}
	fleetID, notify := c.noteBefore(ctx, inst, via)
	if _, err := c.ec2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{instanceID}}); err != nil {
		return inst.State, false, fmt.Errorf("localcloud: stop %s: %w", instanceID, err)
	}
	if notify {
		c.noteAfter(ctx, instanceID, fleetID, via)
	}
	c.kickReconciler()
	return inst.State, true, nil
}

// noteBefore runs before an immediate state change of inst: it finds the
// instance's fleet (the tracker's memory, else moto's fleet listings) and
// queues what is due for the state it has now ("running" for an instance
// the reconciler has not reported yet), so that the notifications after the
// change follow in order. It reports the fleet and whether inst is a fleet
// instance with notifications on. Errors are logged: the reconciler sends
// what is missing on its next pass.
func (c *Cloud) noteBefore(ctx context.Context, inst Instance, via string) (string, bool) {
	if c.cfg.NoStateChangeEvents {
		return "", false
	}
	fleetID, ok := c.states.fleetOf(ctx, inst.ID)
	if !ok {
		var err error
		if fleetID, ok, err = c.findFleet(ctx, inst.ID); err != nil {
			c.logf("state change of %s: %v", inst.ID, err)
			return "", false
		}
		if !ok {
			return "", false // not a fleet instance
		}
	}
	if err := c.emitState(ctx, inst.ID, fleetID, inst.State, via); err != nil {
		c.logf("%v", err)
	}
	return fleetID, true
}

// noteAfter queues the notifications due for the instance's state right
// after an immediate change.
func (c *Cloud) noteAfter(ctx context.Context, instanceID, fleetID, via string) {
	inst, err := c.describeInstance(ctx, instanceID)
	if err != nil {
		c.logf("state change of %s: %v", instanceID, err)
		return
	}
	// The machine goes down before AWS says "terminated" or "stopped": the
	// intermediate state first, then the client agent is stopped, then the
	// final state.
	switch types.InstanceStateName(inst.State) {
	case types.InstanceStateNameTerminated, types.InstanceStateNameStopped:
		first := string(types.InstanceStateNameShuttingDown)
		if types.InstanceStateName(inst.State) == types.InstanceStateNameStopped {
			first = string(types.InstanceStateNameStopping)
		}
		if err := c.emitState(ctx, instanceID, fleetID, first, via); err != nil {
			c.logf("%v", err)
		}
		if err := c.stopClient(instanceID, "instance "+inst.State); err != nil {
			c.logf("%v", err)
		}
	}
	if err := c.emitState(ctx, instanceID, fleetID, inst.State, via); err != nil {
		c.logf("%v", err)
	}
}

// findFleet returns the fleet whose listing holds the instance.
func (c *Cloud) findFleet(ctx context.Context, instanceID string) (string, bool, error) {
	fleets, err := c.describeFleets(ctx)
	if err != nil {
		return "", false, err
	}
	for _, f := range fleets {
		ids, err := c.fleetInstanceIDs(ctx, f.id)
		if err != nil {
			return "", false, err
		}
		if slices.Contains(ids, instanceID) {
			return f.id, true, nil
		}
	}
	return "", false, nil
}

// SetRefillDelay changes Config.RefillDelay at run time, with the same
// meaning: zero is DefaultRefillDelay, RefillDisabled (any negative value)
// turns maintain refill off. A fleet that is already below its target is
// refilled once it has been below for the new delay (the countdown is not
// restarted); the reconciler is woken at once.
func (c *Cloud) SetRefillDelay(d time.Duration) {
	if d == 0 {
		d = DefaultRefillDelay
	}
	if d < 0 {
		d = RefillDisabled
	}
	c.refillDelay.Store(int64(d))
	if d < 0 {
		c.logf("maintain refill disabled")
	} else {
		c.logf("refill delay set to %s", d)
	}
	c.kickReconciler()
}

// RefillDelay returns the current refill delay (RefillDisabled when refill is
// off).
func (c *Cloud) RefillDelay() time.Duration {
	return time.Duration(c.refillDelay.Load())
}
