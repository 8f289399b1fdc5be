//go:build e2e

package localcloud_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// TestInterruptionMessages checks the messages of the interruption queue: a
// 3 s interruption sends exactly one warning, then shutting-down and
// terminated after the notice; Duplicates=1 with the stop action sends two
// identical warnings, then stopping and stopped; a rebalance recommendation
// is one message and leaves the instance running; raw messages count in
// QueueDepth; a plugin-like TerminateInstances through the EC2 API yields
// shutting-down and terminated within a reconcile pass; and over all of it,
// and several quiet passes, no state-change message is sent twice.
func TestInterruptionMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	cloud, err := localcloud.Start(ctx, localcloud.Config{
		WorkDir: t.TempDir(), Reconcile: true, RefillDelay: localcloud.RefillDisabled, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	q := &queue{cloud: cloud}

	fleetID, err := cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 3})
	if err != nil {
		t.Fatal(err)
	}
	ids := instanceIDs(running(step(ctx, t), t, cloud, fleetID, 3))
	waitClients(step(ctx, t), t, cloud, ids...)
	a, b, c := ids[0], ids[1], ids[2]
	q.until(step(ctx, t), t, func() bool { return q.has(a, "running") && q.has(b, "running") && q.has(c, "running") })
	t.Logf("running notifications for %v after %s", ids, time.Since(began).Round(time.Millisecond))

	// Interruption with a 3 s notice: one warning now, nothing else until the
	// notice ends, then shutting-down and terminated.
	const notice = 3 * time.Second
	sent := time.Now()
	body, err := cloud.InterruptWith(ctx, a, localcloud.InterruptSpec{Notice: notice})
	if err != nil {
		t.Fatal(err)
	}
	early := q.collect(ctx, t, notice-time.Second)
	if len(early) != 1 || early[0].Body != body || early[0].Event.DetailType != localcloud.SpotInterruptionDetailType ||
		early[0].Event.Detail.InstanceID != a || early[0].Event.Detail.Action != "terminate" {
		t.Fatalf("during the notice: %v, want exactly the warning %s", early, body)
	}
	if st := instanceState(ctx, t, cloud, a); st != "running" {
		t.Fatalf("instance %s is %s during the notice", a, st)
	}
	q.until(step(ctx, t), t, func() bool { return q.has(a, "terminated") })
	down, term := q.find(a, "shutting-down"), q.find(a, "terminated")
	if down < 0 || down > term {
		t.Fatalf("shutting-down (#%d) not before terminated (#%d)", down, term)
	}
	if d := q.msgs[down].Received.Sub(sent); d < notice {
		t.Fatalf("shutting-down %s after the warning, before the %s notice", d, notice)
	}
	t.Logf("terminated notification %s after the warning", q.msgs[term].Received.Sub(sent).Round(time.Millisecond))
	if st := instanceState(ctx, t, cloud, a); st != "terminated" {
		t.Fatalf("instance %s is %s after the notice", a, st)
	}
	waitClients(step(ctx, t), t, cloud, b, c)

	// Duplicates=1 with the stop action: two identical warnings, then a stop.
	body, err = cloud.InterruptWith(ctx, b, localcloud.InterruptSpec{Notice: time.Second, Action: "stop", Duplicates: 1})
	if err != nil {
		t.Fatal(err)
	}
	q.until(step(ctx, t), t, func() bool { return q.has(b, "stopped") })
	var warnings []message
	for _, m := range q.msgs {
		if m.Event.DetailType == localcloud.SpotInterruptionDetailType && m.Event.Detail.InstanceID == b {
			warnings = append(warnings, m)
		}
	}
	if len(warnings) != 2 || warnings[0].Body != body || warnings[1].Body != body || warnings[0].Event.Detail.Action != "stop" {
		t.Fatalf("warnings for %s: %v, want twice %s", b, warnings, body)
	}
	if q.find(b, "stopping") > q.find(b, "stopped") || q.has(b, "terminated") {
		t.Fatalf("stop notifications out of order: %v", q.msgs)
	}
	if st := instanceState(ctx, t, cloud, b); st != "stopped" {
		t.Fatalf("instance %s is %s after a stop interruption", b, st)
	}
	waitClients(step(ctx, t), t, cloud, c)
	waitEvent(step(ctx, t), t, cloud, localcloud.EventInterruptionStopped, 1)

	// A rebalance recommendation: one message, the instance keeps running.
	n := len(q.msgs)
	body, err = cloud.Rebalance(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	rebal := q.collect(ctx, t, 2*time.Second) // two reconcile passes
	if len(rebal) != 1 || rebal[0].Body != body || rebal[0].Event.DetailType != localcloud.RebalanceDetailType ||
		rebal[0].Event.Detail.InstanceID != c || len(rebal[0].Event.Resources) != 1 || rebal[0].Event.Resources[0] != "arn:aws:ec2:"+instanceAZ(ctx, t, cloud, c)+":instance/"+c {
		t.Fatalf("after Rebalance: %v", q.msgs[n:])
	}
	if st := instanceState(ctx, t, cloud, c); st != "running" || !slices.Equal(cloud.Clients(), []string{c}) {
		t.Fatalf("after Rebalance: instance %s is %s, clients %v", c, st, cloud.Clients())
	}

	// Raw messages and the queue's depth.
	foreign := localcloud.ForeignInterruptionBody(localcloud.ForeignInstanceID)
	for _, m := range []string{foreign, "{not json"} {
		if err := cloud.SendMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	checkDepth(ctx, t, cloud, 2, 0)
	out, err := cloud.SQS().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(cloud.QueueURL()), MaxNumberOfMessages: 10, WaitTimeSeconds: 1, VisibilityTimeout: 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Messages) != 2 {
		t.Fatalf("received %d raw messages, want 2", len(out.Messages))
	}
	checkDepth(ctx, t, cloud, 0, 2)
	var w localcloud.SpotInterruptionWarning
	if err := json.Unmarshal([]byte(foreign), &w); err != nil || w.Detail.InstanceID != localcloud.ForeignInstanceID ||
		w.DetailType != localcloud.SpotInterruptionDetailType || w.Detail.InstanceAction != "terminate" {
		t.Fatalf("foreign body %s: %+v %v", foreign, w, err)
	}
	for _, m := range out.Messages {
		if b := aws.ToString(m.Body); b != foreign && b != "{not json" {
			t.Fatalf("unexpected raw message %s", b)
		}
		q.delete(ctx, t, m.ReceiptHandle)
	}
	checkDepth(ctx, t, cloud, 0, 0)
	if n := countEvents(cloud, localcloud.EventMessageSent); n != 2 {
		t.Fatalf("%d message-sent events, want 2", n)
	}

	// A plugin-like termination through the EC2 API: the reconciler's pass.
	killed := time.Now()
	if _, err := cloud.EC2().TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{c}}); err != nil {
		t.Fatal(err)
	}
	q.until(step(ctx, t), t, func() bool { return q.has(c, "terminated") })
	if d := time.Since(killed); d > 3*time.Second {
		t.Errorf("terminated notification %s after TerminateInstances, want within about one reconcile pass", d)
	}
	if q.find(c, "shutting-down") > q.find(c, "terminated") {
		t.Fatal("shutting-down after terminated")
	}
	waitClients(step(ctx, t), t, cloud)

	// Quiet passes: nothing more; every state exactly once.
	if extra := q.collect(ctx, t, 3*time.Second); len(extra) != 0 {
		t.Fatalf("messages after everything settled: %v", extra)
	}
	want := map[string][]string{
		a: {"running", "shutting-down", "terminated"},
		b: {"running", "stopping", "stopped"},
		c: {"running", "shutting-down", "terminated"},
	}
	q.checkStates(t, want)
	if n, m := countEvents(cloud, localcloud.EventStateChange), q.count(localcloud.StateChangeDetailType); n != m || n != 9 {
		t.Fatalf("%d state-change events, %d state-change messages, want 9 each", n, m)
	}
	for _, e := range cloud.Events() {
		t.Log(e.String())
	}
	t.Logf("test took %s", time.Since(began).Round(time.Millisecond))
}

// TestStopInstance stops a fleet instance: stopping and stopped are queued
// before StopInstance returns, the instance's client agent stops, it no
// longer counts as running but stays in the fleet's listing and fulfilled
// capacity; with refill disabled nothing replaces it, SetRefillDelay turns
// refill on at run time and a replacement comes; terminating the stopped
// instance yields shutting-down and terminated; Close leaves no process.
func TestStopInstance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	cloud, err := localcloud.Start(ctx, localcloud.Config{
		WorkDir: t.TempDir(), Reconcile: true, RefillDelay: localcloud.RefillDisabled, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	q := &queue{cloud: cloud}
	fleetID, err := cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	ids := instanceIDs(running(step(ctx, t), t, cloud, fleetID, 2))
	waitClients(step(ctx, t), t, cloud, ids...)
	a, b := ids[0], ids[1]
	q.until(step(ctx, t), t, func() bool { return q.has(a, "running") && q.has(b, "running") })
	tree := localcloud.ProcessTree(cloud.ClientPID(a))
	if len(tree) == 0 {
		t.Fatalf("no client process for %s", a)
	}

	if err := cloud.StopInstance(ctx, a); err != nil {
		t.Fatal(err)
	}
	var viaStop []string // queued by StopInstance itself, not by a later pass
	for _, e := range cloud.Events() {
		if e.Kind == localcloud.EventStateChange && e.InstanceID == a && strings.Contains(e.Message, "StopInstance") {
			viaStop = append(viaStop, strings.Fields(e.Message)[0])
		}
	}
	if !slices.Equal(viaStop, []string{"stopping", "stopped"}) {
		t.Fatalf("state changes queued by StopInstance: %v", viaStop)
	}
	q.until(step(ctx, t), t, func() bool { return q.has(a, "stopped") })
	if q.find(a, "stopping") > q.find(a, "stopped") {
		t.Fatal("stopping after stopped")
	}
	waitGone(step(ctx, t), t, tree)
	waitClients(step(ctx, t), t, cloud, b)
	if run := instanceIDs(running(step(ctx, t), t, cloud, fleetID, 1)); run[0] != b {
		t.Fatalf("running %v, want only %s", run, b)
	}
	if listed := spotFleetInstances(ctx, t, cloud, fleetID); !slices.Contains(listed, a) {
		t.Fatalf("moto no longer lists the stopped %s in the fleet: %v", a, listed)
	}
	checkFleet(ctx, t, cloud, fleetID, 2, 2) // moto still counts the stopped one
	if err := cloud.StopInstance(ctx, a); err != nil {
		t.Fatalf("stopping a stopped instance: %v", err)
	}

	// Refill off: nothing replaces the stopped instance ...
	time.Sleep(2 * time.Second)
	if n := countEvents(cloud, localcloud.EventRefill); n != 0 {
		t.Fatalf("%d refills with refill disabled", n)
	}
	// ... until refill is turned on at run time.
	cloud.SetRefillDelay(time.Second)
	if d := cloud.RefillDelay(); d != time.Second {
		t.Fatalf("refill delay %s after SetRefillDelay(1s)", d)
	}
	ev := waitEvent(step(ctx, t), t, cloud, localcloud.EventRefill, 1)
	t.Logf("refill: %s", ev.Message)
	run := instanceIDs(running(step(ctx, t), t, cloud, fleetID, 2))
	waitClients(step(ctx, t), t, cloud, run...)
	fresh := run[slices.IndexFunc(run, func(id string) bool { return id != b })]
	q.until(step(ctx, t), t, func() bool { return q.has(fresh, "running") })
	checkFleet(ctx, t, cloud, fleetID, 2, 3) // the stopped one still counts
	if st := instanceState(ctx, t, cloud, a); st != "stopped" {
		t.Fatalf("the stopped instance %s is %s after the refill", a, st)
	}

	// Terminating the stopped instance: shutting-down and terminated.
	cloud.SetRefillDelay(localcloud.RefillDisabled)
	if err := cloud.TerminateInstance(ctx, a); err != nil {
		t.Fatal(err)
	}
	q.until(step(ctx, t), t, func() bool { return q.has(a, "terminated") })
	checkFleet(ctx, t, cloud, fleetID, 2, 2)
	if err := cloud.StopInstance(ctx, a); err == nil {
		t.Fatal("stopping a terminated instance succeeded")
	}
	if extra := q.collect(ctx, t, 2*time.Second); len(extra) != 0 {
		t.Fatalf("messages after everything settled: %v", extra)
	}
	q.checkStates(t, map[string][]string{
		a:     {"running", "stopping", "stopped", "shutting-down", "terminated"},
		b:     {"running"},
		fresh: {"running"},
	})

	// Close leaves no process of ours.
	var seen []int
	for _, pid := range cloud.StartedPIDs() {
		seen = append(seen, localcloud.ProcessTree(pid)...)
	}
	if err := cloud.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range seen {
		if localcloud.Alive(pid) {
			t.Errorf("process %d still alive after Close", pid)
		}
	}
	t.Logf("test took %s", time.Since(began).Round(time.Millisecond))
}

// TestStateChangeEventsOff checks Config.NoStateChangeEvents: a fleet's
// launch and a termination queue nothing.
func TestStateChangeEventsOff(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cloud, err := localcloud.Start(ctx, localcloud.Config{
		WorkDir: t.TempDir(), Reconcile: true, RefillDelay: localcloud.RefillDisabled,
		NoStateChangeEvents: true, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	fleetID, err := cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := instanceIDs(running(step(ctx, t), t, cloud, fleetID, 1))[0]
	waitClients(step(ctx, t), t, cloud, id)
	if err := cloud.TerminateInstance(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitClients(step(ctx, t), t, cloud)
	time.Sleep(1500 * time.Millisecond) // another pass
	checkDepth(ctx, t, cloud, 0, 0)
	if n := countEvents(cloud, localcloud.EventStateChange); n != 0 {
		t.Fatalf("%d state-change events with NoStateChangeEvents", n)
	}
}

// message is one message received from the interruption queue.
type message struct {
	Body     string
	Received time.Time
	Event    struct {
		ID         string   `json:"id"`
		DetailType string   `json:"detail-type"`
		Source     string   `json:"source"`
		Resources  []string `json:"resources"`
		Detail     struct {
			InstanceID string `json:"instance-id"`
			State      string `json:"state"`
			Action     string `json:"instance-action"`
		} `json:"detail"`
	}
}

func (m message) String() string {
	if m.Event.DetailType == localcloud.StateChangeDetailType {
		return fmt.Sprintf("{%s %s}", m.Event.Detail.InstanceID, m.Event.Detail.State)
	}
	return fmt.Sprintf("{%s %s %s}", m.Event.DetailType, m.Event.Detail.InstanceID, m.Event.Detail.Action)
}

// queue receives (and deletes) the interruption queue's messages and keeps
// them in order of arrival.
type queue struct {
	cloud *localcloud.Cloud
	msgs  []message
}

// receive does one receive call and returns what it got.
func (q *queue) receive(ctx context.Context, t *testing.T, wait int32) []message {
	t.Helper()
	out, err := q.cloud.SQS().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(q.cloud.QueueURL()), MaxNumberOfMessages: 10, WaitTimeSeconds: wait,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		t.Fatal(err)
	}
	var got []message
	for _, m := range out.Messages {
		msg := message{Body: aws.ToString(m.Body), Received: time.Now()}
		if err := json.Unmarshal([]byte(msg.Body), &msg.Event); err != nil {
			t.Fatalf("message is no JSON event: %s: %v", msg.Body, err)
		}
		if msg.Event.Source != "aws.ec2" || msg.Event.ID == "" {
			t.Fatalf("message without source or id: %s", msg.Body)
		}
		if msg.Event.DetailType == localcloud.StateChangeDetailType {
			var sc localcloud.InstanceStateChange
			if err := json.Unmarshal([]byte(msg.Body), &sc); err != nil || len(sc.Resources) != 1 ||
				sc.Resources[0] != "arn:aws:ec2:us-east-1:123456789012:instance/"+sc.Detail.InstanceID {
				t.Fatalf("malformed state change %s (%v)", msg.Body, err)
			}
		}
		got = append(got, msg)
		q.delete(ctx, t, m.ReceiptHandle)
	}
	q.msgs = append(q.msgs, got...)
	return got
}

func (q *queue) delete(ctx context.Context, t *testing.T, handle *string) {
	t.Helper()
	if _, err := q.cloud.SQS().DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl: aws.String(q.cloud.QueueURL()), ReceiptHandle: handle,
	}); err != nil {
		t.Fatal(err)
	}
}

// until receives until cond holds.
func (q *queue) until(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("condition not met; received %v", q.msgs)
		}
		q.receive(ctx, t, 1)
	}
}

// collect receives for d and returns what arrived.
func (q *queue) collect(ctx context.Context, t *testing.T, d time.Duration) []message {
	t.Helper()
	var got []message
	end := time.Now().Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		got = append(got, q.receive(ctx, t, 0)...)
		time.Sleep(100 * time.Millisecond)
	}
	return got
}

// find returns the index of the state change of instance to state, -1 if none.
func (q *queue) find(instanceID, state string) int {
	return slices.IndexFunc(q.msgs, func(m message) bool {
		return m.Event.DetailType == localcloud.StateChangeDetailType &&
			m.Event.Detail.InstanceID == instanceID && m.Event.Detail.State == state
	})
}

func (q *queue) has(instanceID, state string) bool { return q.find(instanceID, state) >= 0 }

func (q *queue) count(detailType string) int {
	n := 0
	for _, m := range q.msgs {
		if m.Event.DetailType == detailType {
			n++
		}
	}
	return n
}

// checkStates checks that the state changes received are exactly want, per
// instance and in order.
func (q *queue) checkStates(t *testing.T, want map[string][]string) {
	t.Helper()
	got := map[string][]string{}
	for _, m := range q.msgs {
		if m.Event.DetailType == localcloud.StateChangeDetailType {
			got[m.Event.Detail.InstanceID] = append(got[m.Event.Detail.InstanceID], m.Event.Detail.State)
		}
	}
	for id, states := range want {
		if !slices.Equal(got[id], states) {
			t.Errorf("state changes of %s: %v, want %v", id, got[id], states)
		}
	}
	for id, states := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("unexpected state changes of %s: %v", id, states)
		}
	}
}

// checkDepth checks QueueDepth.
func checkDepth(ctx context.Context, t *testing.T, c *localcloud.Cloud, visible, inFlight int) {
	t.Helper()
	v, f, err := c.QueueDepth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v != visible || f != inFlight {
		t.Fatalf("queue depth: %d visible, %d in flight; want %d, %d", v, f, visible, inFlight)
	}
}

// spotFleetInstances returns what DescribeSpotFleetInstances lists.
func spotFleetInstances(ctx context.Context, t *testing.T, c *localcloud.Cloud, fleetID string) []string {
	t.Helper()
	out, err := c.EC2().DescribeSpotFleetInstances(ctx, &ec2.DescribeSpotFleetInstancesInput{SpotFleetRequestId: aws.String(fleetID)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range out.ActiveInstances {
		ids = append(ids, aws.ToString(a.InstanceId))
	}
	return ids
}

func instanceAZ(ctx context.Context, t *testing.T, c *localcloud.Cloud, id string) string {
	t.Helper()
	out, err := c.EC2().DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Reservations[0].Instances[0].Placement.AvailabilityZone)
}
