package plugin

// Eighth review: spot interruption handling (commit 2524b9d "target-spotfleet: spot
// interruption handling ..."). Every test in this file failed on that commit
// and passes since the fixes; each one is a defect that would hurt a production fleet.

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// r8Restart replaces the plugin with a new process on the same EC2 and
// Nomad, as an agent restart does: only what is on EC2 (tags) survives.
func r8Restart(r *rig) {
	fresh := newWithClients(r.plugin.logger, r.plugin.fleet, r.nomad, nil)
	fresh.now, fresh.pollInterval, fresh.drainPoll, fresh.capacityRetry = r.plugin.now, r.plugin.pollInterval, r.plugin.drainPoll, r.plugin.capacityRetry
	fresh.startupGrace, fresh.surplusSettle = 0, 0
	r.plugin = fresh
}

// r8Settle lets the dust settle: new instances join Nomad, the agent reads
// the status (surplus removals run to their end), the follow-up runs.
func r8Settle(t *testing.T, r *rig) {
	t.Helper()
	for range 4 {
		r.joinNewInstances()
		r.status(t)
		r.plugin.removals.Wait()
		r.tend(t)
	}
	r.status(t)
	r.plugin.removals.Wait()
}

func r8Rebalance(t *testing.T, r *rig, id string) interruption.Outcome {
	t.Helper()
	return r.event(t, interruption.Event{ID: "rb-" + id, Kind: interruption.KindRebalance, InstanceID: id, Time: r.now})
}

// --- 1. rebalance_action = cordon, then the warning: two replacements ------

// With rebalance_action = cordon the at-risk node takes no new work and is
// no longer counted as ready, so the agent's strategy scales out to keep the
// wanted ready nodes (the plugin's own doc: "a scale-out the load asks for
// adds capacity in its place"): the target becomes 3 + 1 held. EC2 usually
// follows a rebalance recommendation with the interruption warning for the
// same instance (that is the point of cordon mode). depart then raises the
// target again for a replacement the scale-out has already launched, and
// when the instance is gone the held unit is still in the target: the fleet
// ends one node too big. The strategy then scales in, draining a healthy
// node: every cordon-then-interruption costs an extra instance launched and
// a healthy node drained, i.e. the strategy scales twice for one
// interruption (the agent simulation in regression_test.go shows the
// 4 -> Scale(3) scale-in after each cycle).
func TestACordonedAtRiskNodeThatIsThenInterruptedIsReplacedOnlyOnce(t *testing.T) {
	r, ids := interruptRig(t)
	r.config = r.with(configKeyRebalanceAction, rebalanceCordon)
	r.status(t)
	atRisk := ids[0]
	require.Equal(t, interruption.Done, r8Rebalance(t, r, atRisk).Disposition)

	// The agent: two ready nodes, the load needs three.
	require.EqualValues(t, 2, r.status(t))
	require.NoError(t, r.plugin.Scale(action(3), r.config))
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "the scale-out launched a stand-in for the cordoned node")
	r.joinNewInstances()
	require.EqualValues(t, 3, r.status(t))

	// Minutes later EC2 warns of the interruption of the cordoned node.
	r.now = r.now.Add(5 * time.Minute)
	node := r.nodeOf[atRisk]
	r.nomad.setHold(node, true)
	require.Equal(t, interruption.Done, r.warn(t, atRisk).Disposition)
	r.tend(t)
	r.joinNewInstances()
	r.nomad.setHold(node, false)
	r.ec2.Kill(atRisk)
	r8Settle(t, r)

	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID),
		"one at-risk node was replaced twice (the scale-out's stand-in and the warning's replacement): the fleet ends a node too big and the strategy must drain a healthy node")
	require.Len(t, r.ec2.Running(r.fleetID), 3)
}

// --- 2. rebalance_action = cordon has no way back ---------------------------

// Most rebalance recommendations are never followed by an interruption. The
// cordoned node keeps its allocations, takes no new work and counts as held
// (the scale-out puts a stand-in beside it). Nothing ever reads tagRebalance
// again: the node is never made eligible, never drained, never removed. A
// scale-in only chooses ready nodes, so when the load falls the plugin drains
// a healthy node and keeps the at-risk one; the fleet then runs more
// instances than its target, for good. Each recommendation leaks one
// instance (paid for, serving nothing new), and they add up.
func TestAnAtRiskNodeCordonedOnARebalanceRecommendationIsNotKeptForever(t *testing.T) {
	r, ids := interruptRig(t)
	r.config = r.with(configKeyRebalanceAction, rebalanceCordon)
	r.status(t)
	atRisk := ids[0]
	require.Equal(t, interruption.Done, r8Rebalance(t, r, atRisk).Disposition)
	require.EqualValues(t, 2, r.status(t))
	require.NoError(t, r.plugin.Scale(action(3), r.config))

	// Six quiet hours: no interruption comes.
	for range 6 {
		r.joinNewInstances()
		r.now = r.now.Add(time.Hour)
		r.status(t)
		r.plugin.removals.Wait()
		r.tend(t)
	}
	// The load falls: the agent asks for two ready nodes.
	require.EqualValues(t, 3, r.status(t))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	r8Settle(t, r)

	running := sortedRunning(r)
	if contains(running, atRisk) {
		require.Equal(t, api.NodeSchedulingEligible, r.nomad.node(r.nodeOf[atRisk]).SchedulingEligibility,
			"six hours after a rebalance recommendation that no interruption followed, the plugin's cordon is still on: the node can never take work again")
	}
	require.Len(t, running, r.ec2.TargetCapacity(r.fleetID),
		"the cordoned instance outlives every scale-in: the fleet runs more instances than its target, for good")
}

// --- 3. A rebalance drain of an instance without a Nomad node leaks it ------

// rebalance_action = drain on an instance whose node has not registered (it
// is still booting, or it is broken and never will): drainLeaving finds no
// node and returns without setting drained, and drainedOrDown answers false
// for a departure that is not drained, so shouldTerminate never terminates
// it. EC2 does not reclaim an instance on a mere recommendation. Being
// "leaving", it is also skipped by replaceBroken, by scale-in and by the
// surplus check: it runs for ever beside its replacement, uncounted.
func TestARebalanceDrainOfAnInstanceWithoutANodeStillRemovesIt(t *testing.T) {
	r, _ := interruptRig(t)
	r.config = r.with(configKeyRebalanceAction, rebalanceDrain)
	r.status(t)
	require.NoError(t, r.plugin.Scale(action(4), r.config))
	var booting string
	for _, id := range sortedRunning(r) {
		if _, ok := r.nodeOf[id]; !ok {
			booting = id
		}
	}
	require.NotEmpty(t, booting)
	r.status(t)
	require.Equal(t, interruption.Done, r8Rebalance(t, r, booting).Disposition)

	for range 6 {
		r.now = r.now.Add(10 * time.Minute)
		r.tend(t)
		r.status(t)
		r.plugin.removals.Wait()
	}
	require.NotContains(t, sortedRunning(r), booting, "the rebalance-drained instance without a node is never terminated")
	require.Len(t, r.ec2.Running(r.fleetID), r.ec2.TargetCapacity(r.fleetID), "an instance leaked beside its replacement")
}

// --- 4. Two events for one instance at once: two raises ---------------------

// slowModifyEC2 holds the first ModifySpotFleetRequest until release is
// closed: EC2 answering slowly (or throttled and retried) is common during an
// interruption wave.
type slowModifyEC2 struct {
	*ec2fake.EC2
	once             sync.Once
	entered, release chan struct{}
}

func (s *slowModifyEC2) ModifySpotFleetRequest(ctx context.Context, in *ec2.ModifySpotFleetRequestInput, opts ...func(*ec2.Options)) (*ec2.ModifySpotFleetRequestOutput, error) {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.entered)
		select {
		case <-s.release:
		case <-ctx.Done():
		}
	}
	return s.EC2.ModifySpotFleetRequest(ctx, in, opts...)
}

// The watcher hands events to Handle concurrently (MaxInFlight 32); only
// copies of one event id are serialised. EC2 typically sends a rebalance
// recommendation and, shortly after, the interruption warning for the same
// instance: with rebalance_action = drain both go to depart.
// raiseForReplacement checks the step (pending) before it takes targetMu and
// does not check it again once it holds it, so the second event, arriving
// while the first one's raise is in flight, raises the target a second time.
// Only one departure exists, so only one unit is ever given back: the fleet
// keeps one extra instance for good (and the strategy must drain a node).
func TestTwoEventsForOneInstanceHandledAtOnceRaiseTheTargetOnce(t *testing.T) {
	r, ids := interruptRig(t)
	r.config = r.with(configKeyRebalanceAction, rebalanceDrain)
	r.status(t)
	slow := &slowModifyEC2{EC2: r.ec2, entered: make(chan struct{}), release: make(chan struct{})}
	noWait := fleet.Retry{Attempts: 4, Sleep: func(context.Context, time.Duration) error { return nil }}
	r.plugin.fleet = fleet.NewClient(slow, fleet.WithRetry(noWait))
	victim := ids[0]
	r.nomad.setHold(r.nodeOf[victim], true)

	handle := func(ev interruption.Event, wg *sync.WaitGroup) {
		defer wg.Done()
		r.plugin.Handle(context.Background(), ev, interruption.Message{ID: "m-" + ev.ID, ReceiveCount: 1, FirstReceived: r.now, Sent: r.now})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go handle(interruption.Event{ID: "rb", Kind: interruption.KindRebalance, InstanceID: victim, Time: r.now}, &wg)
	select {
	case <-slow.entered:
	case <-time.After(5 * time.Second):
		close(slow.release)
		wg.Done()
		wg.Wait()
		t.Fatal("the rebalance recommendation never raised the target")
	}
	go handle(interruption.Event{ID: "warn", Kind: interruption.KindSpotInterruption, InstanceID: victim, Action: "terminate", Time: r.now}, &wg)
	// The warning takes the drain over (deadline inside the notice), then
	// reaches its raise while the first raise is in flight.
	deadline := time.Now().Add(5 * time.Second)
	for r.nomad.callCount("StartDrain") < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(slow.release)
	wg.Wait()

	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "one leaving instance, two replacement units raised")
}

// --- 5. A restart after the reclaim never gives the unit back ---------------

// The replacement unit is recorded only on the leaving instance's tag, and a
// new process reads tags of running instances only (observe skips the
// others; Instances lists active instances only). If the plugin restarts
// (agent deploy, crash, reload of the plugin process) while a unit is raised,
// and EC2 reclaims the instance meanwhile (the notice is two minutes; when
// spot capacity is short the unit stays raised until the reclaim), the new
// process never learns of the unit: EC2 refills the reclaimed slot and the
// replacement slot, and the fleet stays one instance above what the agent
// asked for, with running == target so no surplus is ever seen.
func TestAPluginRestartedAfterTheReclaimStillGivesTheReplacementUnitBack(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[0]
	r.ec2.Unavailable = true // the replacement cannot launch yet
	r.nomad.setHold(r.nodeOf[victim], true)
	require.Equal(t, interruption.Done, r.warn(t, victim).Disposition)
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))

	r8Restart(r)
	r.ec2.Kill(victim) // reclaimed while the agent was restarting
	r.status(t)
	r.ec2.Unavailable = false
	r8Settle(t, r)

	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "the replacement unit of an instance reclaimed during a restart is never given back")
	require.Len(t, r.ec2.Running(r.fleetID), 3)
}

// --- 6. A restart between the raise and the tag: a second raise -------------

// depart raises the target first and tags the instance afterwards; a failed
// tag is only logged and the event answered Done. If the process dies in
// between (or the tag fails, e.g. throttled in an interruption wave, and the
// process restarts before the reclaim), nothing durable says the target
// holds a replacement unit. SQS redelivers the unacknowledged warning to the
// new process, which finds no departure, no tag and a running instance, and
// raises again: two replacements for one interruption, and neither unit is
// ever given back by the new process as the first one is unknown to it.
func TestAWarningRedeliveredAfterARestartBetweenRaiseAndTagRaisesNoSecondReplacement(t *testing.T) {
	r, ids := interruptRig(t)
	victim := ids[0]
	r.nomad.setHold(r.nodeOf[victim], true)
	r.ec2.FailNext("CreateTags", 10, ec2fake.APIError("RequestLimitExceeded")) // the tag does not get written
	out := r.warn(t, victim)
	require.Equal(t, interruption.Retry, out.Disposition, "an interruption that cannot be recorded is retried")
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "no raise before the interruption is recorded")
	r.ec2.FailNext("CreateTags", 0, nil)

	r8Restart(r)
	r.status(t)
	r.warn(t, victim) // SQS delivers the warning again: the first process never deleted it
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID), "a redelivered warning raised a second replacement")

	r.tend(t)
	r.joinNewInstances()
	r.ec2.Kill(victim)
	r8Settle(t, r)
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))
	require.Len(t, r.ec2.Running(r.fleetID), 3)
}

// --- 7. Status waits for a raise on a modifying fleet -------------------------

// raiseForReplacement (like giveBackUnits in the follow-up) holds the fleet's
// targetMu across ChangeTargetCapacity, which first waits for the request to
// leave state modifying (up to the client's 5-minute modify wait, bounded
// only by the watcher's 45 s Handle timeout, after which the Retry comes back
// 3 s later and waits again). observe takes targetMu, so Status blocks as
// long. A fleet is "modifying" after every target change, and for long when
// spot capacity is short: exactly during an interruption wave. The agent's
// Status call has a gRPC deadline of 75% of evaluation_interval (7.5 s with
// the sample policy): the policy's evaluations fail while interruptions are
// handled. Status must answer in seconds.
func TestStatusAnswersWhileAWarningWaitsForAModifyingFleet(t *testing.T) {
	r, ids := interruptRig(t)
	release := make(chan struct{})
	var sleeping sync.Once
	waiting := make(chan struct{})
	patient := fleet.Retry{Attempts: 4, Sleep: func(ctx context.Context, _ time.Duration) error {
		sleeping.Do(func() { close(waiting) })
		select { // the fleet stays modifying until release
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	r.plugin.fleet = fleet.NewClient(r.ec2, fleet.WithRetry(patient))
	r.ec2.SetFleetState(r.fleetID, types.BatchStateModifying) // after the last change (a scale-out, another raise)

	handled := make(chan struct{})
	go func() {
		defer close(handled)
		r.plugin.Handle(context.Background(), interruption.Event{ID: "w", Kind: interruption.KindSpotInterruption, InstanceID: ids[0], Action: "terminate", Time: r.now},
			interruption.Message{ID: "m", ReceiveCount: 1, FirstReceived: r.now, Sent: r.now})
	}()
	<-waiting // the warning's raise waits for the fleet to be modifiable
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		_, _ = r.plugin.Status(r.config)
	}()
	blocked := false
	select {
	case <-answered:
	case <-time.After(2 * time.Second):
		blocked = true
	}
	r.ec2.SetFleetState(r.fleetID, types.BatchStateActive)
	close(release)
	<-handled
	<-answered
	require.False(t, blocked, "Status did not answer for 2s: it waits for targetMu, held by a raise that waits for a modifying fleet")
}

// --- 8. A reload waits for a surplus removal's whole drain --------------------

// The agent calls SetConfig again on every reload (plugins/manager
// PluginManager.Reload, v0.5.0), holding its pluginInstancesLock, which every
// policy evaluation needs (Dispense). SetConfig -> startBackground ->
// StopBackground cancels the watcher and the follow-up, then waits on t.bg,
// which also counts surplus removals. Those run on context.Background with a
// timeout of node_drain_deadline + capacityRetry + 5m, which StopBackground
// cannot cancel. A reload during a surplus removal therefore blocks for up to
// the whole drain (~22 minutes by default): every policy of the agent stands
// still, and the interruption watcher is already stopped, so warnings that
// arrive meanwhile are not acted on before their two-minute notice ends.
func TestAReloadDoesNotWaitForASurplusRemovalToFinishItsDrain(t *testing.T) {
	r, _ := interruptRig(t)
	r.plugin.startBackground(nil) // as SetConfig does
	t.Cleanup(r.plugin.StopBackground)
	for _, node := range r.nodeOf {
		r.nomad.setHold(node, true) // drains take their time, as real ones do
	}
	// Someone lowers the target with noTermination: a surplus of one.
	_, _, err := r.plugin.fleet.ChangeTargetCapacity(context.Background(), r.fleetID, -1)
	require.NoError(t, err)
	r.status(t)
	deadline := time.Now().Add(5 * time.Second)
	for r.nomad.callCount("StartDrain") == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.Equal(t, 1, r.nomad.callCount("StartDrain"), "the surplus removal drains a node")

	reloaded := make(chan struct{})
	go func() {
		defer close(reloaded)
		r.plugin.startBackground(nil) // SetConfig on an agent reload
	}()
	blocked := false
	select {
	case <-reloaded:
	case <-time.After(2 * time.Second):
		blocked = true
	}
	for _, node := range r.nodeOf {
		r.nomad.setHold(node, false)
	}
	<-reloaded
	require.False(t, blocked, "SetConfig (reload) waited for a surplus removal's drain: the agent's plugin lock is held and the interruption watcher is down meanwhile")
}
