package localcloud

// Capacity-shortage mode: EC2 answers a fleet that asks for more spot
// capacity than a pool has with InsufficientInstanceCapacity, and the fleet
// stays below its target (fulfilled < target) until capacity comes back.
// moto has no notion of capacity: it launches every instance ModifySpotFleetRequest
// asks for (delta = target - fulfilled), synchronously. So the reconciler
// emulates the shortage after the fact: in each pass, before it starts any
// client agent, it terminates the newest running instances of a limited
// fleet above the limit (each exactly once: moto decrements the fulfilled
// capacity again on every repeated termination), which leaves moto's
// FulfilledCapacity at the limit and the TargetCapacity where the caller set
// it. The maintain refill launches only up to the limit.

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// NoCapacityLimit as the n of SetCapacityLimit lifts a fleet's limit (any
// negative value does).
const NoCapacityLimit = -1

// SetCapacityLimit puts a fleet in capacity-shortage mode: from the next
// reconciler pass on, the fleet has at most n running instances (n >= 0).
// Instances above the limit (the newest first) are terminated by the
// reconciler before any client agent starts for them, each with an
// EventInsufficientCapacity event; if more than n already run when the limit
// is set, the newest of them are terminated the same way (their client agents
// are stopped, as for any terminated instance). The fleet's TargetCapacity is
// never changed, and maintain refill launches only up to the limit.
//
// Until the reconciler's pass (at most about one Config.ReconcileInterval;
// SetTargetCapacity wakes it at once) moto lists the excess instances as
// running: a caller that polls moto in between may see them briefly.
//
// A negative n (NoCapacityLimit) lifts the limit: maintain refill then brings
// the fleet up to its target after Config.RefillDelay. The reconciler is
// woken at once; the limit needs Config.Reconcile (or calls to Reconcile).
func (c *Cloud) SetCapacityLimit(fleetID string, n int) {
	c.mu.Lock()
	if n < 0 {
		delete(c.capLimits, fleetID)
	} else {
		c.capLimits[fleetID] = n
	}
	c.mu.Unlock()
	if n < 0 {
		c.logf("capacity limit of fleet %s lifted", fleetID)
	} else {
		c.logf("capacity limit of fleet %s set to %d running instances", fleetID, n)
	}
	c.kickReconciler()
}

// ClearCapacityLimit lifts the fleet's capacity limit (SetCapacityLimit with
// NoCapacityLimit).
func (c *Cloud) ClearCapacityLimit(fleetID string) {
	c.SetCapacityLimit(fleetID, NoCapacityLimit)
}

// CapacityLimit returns the fleet's capacity limit and whether it has one.
func (c *Cloud) CapacityLimit(fleetID string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.capLimits[fleetID]
	return n, ok
}

// kickReconciler asks the reconciler for a pass now (no-op without one, or
// when a pass is already pending).
func (c *Cloud) kickReconciler() {
	select {
	case c.recKick <- struct{}{}:
	default:
	}
}

// newestLast orders a fleet's running instances oldest first: by the order
// in which the reconciler first saw them, then by moto's listing order, which
// is launch order (moto appends every launch to the fleet's request list).
func (st *reconcilerState) newestLast(running []Instance) []Instance {
	out := slices.Clone(running)
	idx := map[string]int{}
	for i, in := range running {
		idx[in.ID] = i
	}
	slices.SortStableFunc(out, func(a, b Instance) int {
		if sa, sb := st.seen[a.ID], st.seen[b.ID]; sa != sb {
			if sa < sb {
				return -1
			}
			return 1
		}
		return idx[a.ID] - idx[b.ID]
	})
	return out
}

// enforceCapacity terminates the newest of a fleet's running instances above
// its capacity limit and returns the ones that may keep running. running is
// in moto's listing order and has no instance that enforceCapacity
// terminated before.
func (c *Cloud) enforceCapacity(ctx context.Context, st *reconcilerState, fleetID string, running []Instance) ([]Instance, error) {
	limit, ok := c.CapacityLimit(fleetID)
	if !ok || len(running) <= limit {
		return running, nil
	}
	ordered := st.newestLast(running)
	keep, excess := ordered[:limit], ordered[limit:]
	ids := make([]string, len(excess))
	for i, in := range excess {
		ids[i] = in.ID
		st.capTerminated[in.ID] = true // never twice, even if the call below fails
		c.markSilent(ctx, in.ID, fleetID)
	}
	_, err := c.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
	if err != nil {
		err = fmt.Errorf("capacity limit of fleet %s: terminate %v: %w", fleetID, ids, err)
		// Did the termination happen? Forget only the ones that still run,
		// so that the next pass tries them again.
		insts, derr := c.describeInstances(ctx, ids)
		if derr != nil {
			for _, id := range ids {
				delete(st.capTerminated, id)
			}
			return nil, errors.Join(err, derr)
		}
		for _, in := range insts {
			if in.State == string(types.InstanceStateNameRunning) || in.State == string(types.InstanceStateNamePending) {
				delete(st.capTerminated, in.ID)
			}
		}
		return nil, err
	}
	c.mu.Lock()
	hadClient := map[string]bool{}
	for _, id := range ids {
		if _, ok := c.clients[id]; ok {
			hadClient[id] = true
		}
	}
	c.mu.Unlock()
	for _, in := range excess {
		what := "terminated at launch, before any client agent started"
		if hadClient[in.ID] {
			what = "terminated (the limit was set below what ran); its client agent is stopped"
		}
		c.record(Event{Kind: EventInsufficientCapacity, FleetID: fleetID, InstanceID: in.ID, Message: fmt.Sprintf(
			"InsufficientInstanceCapacity: %s above the fleet's capacity limit of %d (%d were running): %s",
			in.Type, limit, len(running), what)})
	}
	return keep, nil
}

// effectiveTarget is what maintain refill aims at: the fleet's target, or its
// capacity limit when that is lower.
func (c *Cloud) effectiveTarget(fleetID string, target int32) (int32, bool) {
	if limit, ok := c.CapacityLimit(fleetID); ok && int32(limit) < target {
		return int32(limit), true
	}
	return target, false
}

// capacityLimitOf returns FleetSpec.CapacityLimit, if it sets a limit.
func capacityLimitOf(spec FleetSpec) (int, bool) {
	if spec.CapacityLimit == nil || *spec.CapacityLimit < 0 {
		return 0, false
	}
	return *spec.CapacityLimit, true
}
