package localcloud

// What moto 5.2.1 does with spot fleets (read in moto/ec2/models/spot_requests.py
// and instances.py, and checked against moto_server by the e2e test):
//
//   - RequestSpotFleet launches TargetCapacity instances at once (state running,
//     no pending); diversified round-robins over the launch specs starting at
//     the first one, every other strategy puts everything on the first spec.
//     Only Overrides[0] of a LaunchTemplateConfig is used. Type is ignored and
//     not stored, hence the TagFleetType tag.
//   - ModifySpotFleetRequest computes delta = TargetCapacity - FulfilledCapacity.
//     delta > 0 launches delta instances immediately, whatever the policy.
//     delta < 0 terminates instances only when ExcessCapacityTerminationPolicy
//     is omitted (moto compares with "Default"; an explicit "default" or
//     "noTermination" terminates nothing): with noTermination, lowering the
//     target only changes the number.
//   - Terminating a fleet instance decrements FulfilledCapacity by its weight
//     and drops it from DescribeSpotFleetInstances (again on every repeated
//     termination: never terminate twice). Stopping one changes neither.
//   - Nothing ever refills a fleet.
//
// So refill is done through the API: ModifySpotFleetRequest to
// FulfilledCapacity + missing makes moto launch exactly the missing
// instances; a second call restores TargetCapacity (noTermination) when the
// two differ (stopped instances, double-decremented capacity). A deliberate
// scale-in (target lowered with noTermination, then exactly those instances
// terminated) leaves running == TargetCapacity, so no refill follows; while it
// is half done, running > TargetCapacity, so none follows either.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// reconcilerState is the reconciler's memory between passes.
type reconcilerState struct {
	mu         sync.Mutex // one pass at a time
	belowSince map[string]time.Time
	lastErr    string

	// seen numbers every listed fleet instance in the order the reconciler
	// first saw it (the newest has the highest number); capTerminated holds
	// the instances terminated for a capacity limit (never terminated
	// again). Both forget instances that moto no longer lists.
	seen          map[string]uint64
	seq           uint64
	capTerminated map[string]bool
}

// newReconcilerState returns an empty reconciler memory.
func newReconcilerState() reconcilerState {
	return reconcilerState{
		belowSince:    map[string]time.Time{},
		seen:          map[string]uint64{},
		capTerminated: map[string]bool{},
	}
}

// startReconciler runs Reconcile every ReconcileInterval until Close.
func (c *Cloud) startReconciler() {
	c.bgWG.Add(1)
	go func() {
		defer c.bgWG.Done()
		t := time.NewTicker(c.cfg.ReconcileInterval)
		defer t.Stop()
		for {
			_ = c.Reconcile(c.bgCtx)
			select {
			case <-c.bgCtx.Done():
				return
			case <-t.C:
			case <-c.recKick: // SetCapacityLimit, SetTargetCapacity ...
			}
		}
	}()
}

// Reconcile runs one reconciler pass: it reads every spot fleet and its
// instances from moto, terminates the newest instances above a fleet's
// capacity limit (SetCapacityLimit), starts a client agent for each other
// running fleet instance that has none, stops the reconciler's clients whose
// instance is no longer running (or restarts them if they crashed), and
// refills maintain fleets that have been below target (or below their
// capacity limit, when that is lower) for Config.RefillDelay. It also queues
// the state-change notifications of every transition it sees (see the
// package doc). The reconciler started by Config.Reconcile calls it every
// ReconcileInterval, and at once after SetCapacityLimit, SetTargetCapacity,
// SetRefillDelay, TerminateInstance, StopInstance and an interruption's
// action.
func (c *Cloud) Reconcile(ctx context.Context) error {
	st := &c.rec
	st.mu.Lock()
	defer st.mu.Unlock()
	if c.isClosed() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()

	err := c.reconcile(ctx, st)
	if err != nil && ctx.Err() == nil && !c.isClosed() {
		if msg := err.Error(); msg != st.lastErr {
			st.lastErr = msg
			c.record(Event{Kind: EventReconcileError, Message: msg})
		}
	} else if err == nil {
		st.lastErr = ""
	}
	return err
}

func (c *Cloud) reconcile(ctx context.Context, st *reconcilerState) error {
	fleets, err := c.describeFleets(ctx)
	if err != nil {
		return fmt.Errorf("localcloud: reconcile: %w", err)
	}
	want := map[string]listedInstance{}
	listed := map[string]listedInstance{}
	now := time.Now()
	for _, f := range fleets {
		run, err := c.runningInstances(ctx, st, f.id, listed)
		if err != nil {
			return fmt.Errorf("localcloud: reconcile: %w", err)
		}
		if run, err = c.enforceCapacity(ctx, st, f.id, run); err != nil {
			return fmt.Errorf("localcloud: reconcile: %w", err)
		}
		launched, err := c.maybeRefill(ctx, st, f, len(run), now)
		if err != nil {
			return fmt.Errorf("localcloud: reconcile: %w", err)
		}
		if launched { // see the new instances now; drop what exceeds a limit before any client starts
			if run, err = c.runningInstances(ctx, st, f.id, listed); err != nil {
				return fmt.Errorf("localcloud: reconcile: %w", err)
			}
			if run, err = c.enforceCapacity(ctx, st, f.id, run); err != nil {
				return fmt.Errorf("localcloud: reconcile: %w", err)
			}
		}
		for _, in := range run {
			want[in.ID] = listedInstance{in, f.id}
		}
	}
	for id := range st.belowSince { // forget fleets that are gone
		if !slices.ContainsFunc(fleets, func(f fleetInfo) bool { return f.id == id }) {
			delete(st.belowSince, id)
		}
	}
	for id := range st.seen { // and instances moto no longer lists
		if _, ok := listed[id]; !ok {
			delete(st.seen, id)
			delete(st.capTerminated, id)
		}
	}

	// Stop what should not run; note crashed clients.
	type stopReq struct{ id, reason string }
	var stops []stopReq
	c.mu.Lock()
	have := map[string]bool{}
	for id, cl := range c.clients {
		have[id] = true
		if !cl.managed || cl.stopping || cl.proc == nil {
			continue
		}
		if _, ok := want[id]; !ok {
			stops = append(stops, stopReq{id, "instance no longer running"})
		} else if cl.proc.exited() {
			stops = append(stops, stopReq{id, fmt.Sprintf("client exited (%v); restarting", cl.proc.exitErr())})
		}
	}
	c.mu.Unlock()
	// The clients of instances that stopped running are stopped before
	// their state changes are announced: AWS reports "terminated" or
	// "stopped" once the machine is down, and a plugin may purge its node
	// on that word.
	var stopping sync.WaitGroup
	for _, s := range stops {
		if s.reason != "instance no longer running" {
			c.record(Event{Kind: EventClientFailed, InstanceID: s.id, Message: s.reason})
		}
		stopping.Add(1)
		if !c.goBackground(func() {
			defer stopping.Done()
			if err := c.stopClient(s.id, s.reason); err != nil {
				c.logf("%v", err)
			}
		}) {
			stopping.Done()
		}
	}
	stopping.Wait()

	// State-change notifications; a failed send is retried next pass.
	stateErr := c.reconcileStates(ctx, listed, want)

	for id, w := range want {
		if have[id] {
			continue
		}
		c.mu.Lock()
		opts := c.fleetClients[w.fleetID]
		c.mu.Unlock()
		opts.InstanceType = w.inst.Type
		if err := c.startClient(ctx, id, opts, true); err != nil {
			return fmt.Errorf("localcloud: reconcile: %w", err)
		}
		c.startBootCallback(w.inst)
	}
	if stateErr != nil {
		return fmt.Errorf("localcloud: reconcile: %w", stateErr)
	}
	return nil
}

// runningInstances lists a fleet's instances, numbers the ones seen for the
// first time, puts every listed one in listed, and returns the running ones
// (in moto's listing order) that no capacity limit has terminated. Stopped
// instances, which moto keeps listing, are not running.
func (c *Cloud) runningInstances(ctx context.Context, st *reconcilerState, fleetID string, listed map[string]listedInstance) ([]Instance, error) {
	insts, err := c.fleetInstances(ctx, fleetID)
	if err != nil {
		return nil, err
	}
	var run []Instance
	for _, in := range insts {
		listed[in.ID] = listedInstance{in, fleetID}
		if _, ok := st.seen[in.ID]; !ok {
			st.seq++
			st.seen[in.ID] = st.seq
		}
		if in.State == string(types.InstanceStateNameRunning) && !st.capTerminated[in.ID] {
			run = append(run, in)
		}
	}
	return run, nil
}

// maybeRefill emulates AWS's maintain behaviour for one fleet: when running
// instances stay below TargetCapacity (or below the fleet's capacity limit,
// when that is lower) for RefillDelay, launch the missing ones. It reports
// whether it launched any.
//
// Under a capacity limit below the target, restoring TargetCapacity after the
// launch makes moto launch the rest up to the target at once; the caller
// removes those with enforceCapacity in the same pass, so they never get a
// client agent (as EC2 would fail them with InsufficientInstanceCapacity).
func (c *Cloud) maybeRefill(ctx context.Context, st *reconcilerState, f fleetInfo, running int, now time.Time) (bool, error) {
	goal, limited := c.effectiveTarget(f.id, f.target)
	delay := c.RefillDelay()
	if delay < 0 || f.fleetType != FleetTypeMaintain ||
		f.state != string(types.BatchStateActive) || int32(running) >= goal {
		delete(st.belowSince, f.id)
		return false, nil
	}
	since, ok := st.belowSince[f.id]
	if !ok {
		st.belowSince[f.id] = now
		return false, nil
	}
	if now.Sub(since) < delay {
		return false, nil
	}
	delete(st.belowSince, f.id) // a new countdown starts if still short later

	// Read the fleet again right before acting: never overwrite a target that
	// someone (the plugin) changed since the pass began.
	out, err := c.ec2.DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{f.id}})
	if err != nil {
		return false, fmt.Errorf("refill %s: re-read fleet: %w", f.id, err)
	}
	if len(out.SpotFleetRequestConfigs) != 1 || out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig == nil {
		return false, nil
	}
	cur := out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig
	if aws.ToInt32(cur.TargetCapacity) != f.target {
		return false, nil
	}
	missing := goal - int32(running)
	fulfilled := int32(math.Round(aws.ToFloat64(cur.FulfilledCapacity)))
	launchTo := fulfilled + missing
	modify := func(target int32) error {
		_, err := c.ec2.ModifySpotFleetRequest(ctx, &ec2.ModifySpotFleetRequestInput{
			SpotFleetRequestId:              aws.String(f.id),
			TargetCapacity:                  aws.Int32(target),
			ExcessCapacityTerminationPolicy: types.ExcessCapacityTerminationPolicyNoTermination,
		})
		if err != nil {
			return fmt.Errorf("refill %s: modify target to %d: %w", f.id, target, err)
		}
		return nil
	}
	if err := modify(launchTo); err != nil {
		return true, err
	}
	if launchTo != f.target {
		if err := modify(f.target); err != nil {
			return true, err
		}
	}
	msg := fmt.Sprintf("running %d < target %d for %s: launched %d (fulfilled capacity was %d)",
		running, f.target, delay, missing, fulfilled)
	if limited {
		msg = fmt.Sprintf("running %d < capacity limit %d (target %d) for %s: launched %d up to the limit (fulfilled capacity was %d)",
			running, goal, f.target, delay, missing, fulfilled)
		if launchTo < f.target {
			msg += fmt.Sprintf("; restoring the target made moto launch %d more, terminated for the limit", f.target-launchTo)
		}
	}
	c.record(Event{Kind: EventRefill, FleetID: f.id, Message: msg})
	return true, nil
}
