package plugin

// Second pass of the ninth review (provisioning hooks, farewells, warm-up).
// Every test in this file fails on the reviewed code; each one shows a
// defect that would hurt a production fleet.

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// --- b1. A Nomad leader election during a nomad launch hook costs the instance

// The nomad hook sets its metadata with one ApplyMeta call, and any error is
// the hook's failure. A leader election (500 "No cluster leader": seconds,
// at every Nomad server upgrade or restart) at that moment applies the
// failure policy: with the default on_failure = terminate, a healthy,
// configured instance is drained (if anything runs there), terminated and
// replaced, its 20-minute AWX configure run thrown away. The admission a
// moment later rides out the very same error (withNomadRetry). A 403 (the
// agent's token lacks node:write) is treated the same way: every new
// instance is terminated in turn, the churn that configuration errors are
// meant to prevent.
func TestR9bANomadLaunchHookRidesOutALeaderElection(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"leader election", errNoLeader},
		{"no node:write", nomadError{code: 403, msg: "Permission denied"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
			r.plugin.admitWait = 5 * time.Second
			gated := sortedRunning(r)[2]
			r.gate(t, gated)
			r.config = r.with("launch_hooks", "label", "hook_label_type", "nomad", "hook_label_meta", "role=web")
			require.EqualValues(t, 2, r.status(t))

			r.nomad.failNext("ApplyMeta", tc.err)
			r.scan(t)
			require.Contains(t, r.ec2.Running(r.fleetID), gated,
				"one ApplyMeta answer (%v) terminated a healthy instance: %s", tc.err, r.ec2.InstanceTags(gated)[tagHookFailed])
		})
	}
}

// --- b2. A farewell record left on the fleet request for an instance that stays

// resumeFarewells runs every farewell record it finds on the fleet request,
// without asking whether its instance is gone. A record outlives a removal
// that did not happen when the process dies between the claim and the
// TerminateInstances call (kill -9, OOM, the node of the autoscaler job
// lost), or when EC2 refuses the termination and dropFarewell's DeleteTags
// fails too (both are throttled in the same storm; the log line "could not
// remove the record of terminate hooks that are not needed" is all that is
// left). The scale-in is then abandoned and the node put back into service,
// but the next process runs its terminate hooks: AWX removes a node that
// still serves from the inventory and from monitoring. And since its
// instance keeps the claim tag (or this process's claim), its real
// departure later runs them no more.
func TestR9bARecordedFarewellOfAnInstanceThatStillServesIsNotRun(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID\" >> "+out+"'")
	stays := sortedRunning(r)[0]
	// What an earlier process left: the claim on the instance and the
	// record on the fleet request; the instance was never terminated and
	// its node serves (no scale-in mark).
	r.ec2.SetInstanceTag(stays, tagFarewell, "claimed at="+r.now.Add(-time.Minute).UTC().Format(time.RFC3339))
	h := hookInstance(r.fleetID, fleet.Instance{ID: stays, Type: "c5.large", PrivateIP: r.ec2.PrivateIP(stays)}, nil)
	h.NodeID = r.nodeOf[stays]
	require.NoError(t, r.plugin.fleet.Tag(context.Background(), []string{r.fleetID},
		map[string]string{farewellTagPrefix + stays: encodeFarewell(h, hooks.Record{})}))

	require.EqualValues(t, 3, r.status(t), "the instance serves")
	r.plugin.pipelines.Wait()
	require.Empty(t, lines(t, out), "the terminate hooks of an instance that still runs and serves were run")
}

// --- b3. Terminate hooks of an instance terminated by someone else ----------

// EC2 describes a terminated instance without its private IP address or DNS
// name (its network interface is gone). The state change "terminated"
// arrives a minute or more after the termination call (shutting-down comes
// first), by which time the agent's evaluations (every 10 s) have observed
// the fleet without the instance, so farewellOf takes the instance from
// DescribeInstances: {{private_ip}}, the default limit of every awx hook,
// renders empty and the terminate hook fails ("{{private_ip}} is empty").
// The documented way to remove a kept node (terminate it by hand, the state
// change runs its terminate hooks) thus never runs them, nor does any
// termination made outside the plugin.
func TestR9bTerminateHooksOfAnInstanceTerminatedBySomeoneElseKnowItsAddress(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.plugin.startupGrace = 0
	r.plugin.fleet = fleet.NewClient(r9bEC2{r.ec2}, fleet.WithRetry(fleet.Retry{Attempts: 4, Sleep: func(context.Context, time.Duration) error { return nil }}))
	for _, id := range r.ec2.Running(r.fleetID) {
		r.ec2.SetInstanceTag(id, fleetTag, r.fleetID)
	}
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$1 $2\" >> "+out+"' forget {{instance_id}} {{private_ip}}")
	require.EqualValues(t, 3, r.status(t))

	gone := sortedRunning(r)[0]
	ip := r.ec2.PrivateIP(gone)
	r.ec2.NoRefill = true
	r.ec2.Kill(gone) // an operator's aws ec2 terminate-instances
	_ = r.status(t)  // the next evaluation no longer lists it
	res := r.event(t, interruption.Event{ID: "sc-" + gone, Kind: interruption.KindStateChange, InstanceID: gone, State: "terminated", Time: r.now})
	require.Equal(t, interruption.Done, res.Disposition, res.Why)
	r.plugin.pipelines.Wait()
	require.Equal(t, []string{gone, ip}, lines(t, out),
		"the terminate hook of an instance terminated by someone else did not run: %v", r.plugin.state(r.fleetID).recentFarewellFailures(r.now))
}

// r9bEC2 describes terminated instances as EC2 does: without their private
// address and DNS name.
type r9bEC2 struct{ *ec2fake.EC2 }

func (w r9bEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	out, err := w.EC2.DescribeInstances(ctx, in, opts...)
	if err != nil || out == nil {
		return out, err
	}
	for i := range out.Reservations {
		for j := range out.Reservations[i].Instances {
			x := &out.Reservations[i].Instances[j]
			if x.State != nil && x.State.Name == types.InstanceStateNameTerminated {
				x.PrivateIpAddress, x.PrivateDnsName = nil, aws.String("")
			}
		}
	}
	return out, nil
}

// --- b4. The admission deadline counts the time Nomad refused the admission

// A refusal of the admission's metadata for want of rights (403) is a
// configuration error: "no failure policy, no deadline; the node waits
// un-admitted". But the deadline runs from when this process first saw the
// hooks succeed (hooksDoneAt), refusals included. Once the operator fixes
// the token, half an hour later, the first admission that does not show at
// once (the client reports its metadata late, a leader election during the
// retries) finds node_join_timeout long passed: the failure policy applies
// to a node that did nothing wrong, and with the default terminate it is
// destroyed right when it could have been admitted.
func TestR9bTheAdmissionDeadlineDoesNotCountTheTimeNomadRefusedIt(t *testing.T) {
	r, gated, _ := hookRig(t, configKeyJoinTimeout, "10m")
	r.plugin.admitWait = 50 * time.Millisecond
	denied := nomadError{code: 403, msg: "Permission denied"}
	r.nomad.failNext("ApplyMeta", denied, denied, denied, denied)
	require.EqualValues(t, 2, r.status(t))
	for range 4 { // 24 minutes of refusals, each retried after its pause
		r.scan(t)
		r.now = r.now.Add(6 * time.Minute)
	}
	require.Contains(t, r.ec2.Running(r.fleetID), gated)
	require.NotContains(t, r.ec2.InstanceTags(gated), tagHookFailed)

	// The token is fixed; this once the client reports the gate a little
	// later than the wait.
	r.nomad.metaLag = 1 << 30
	r.scan(t)
	require.NotContains(t, r.ec2.InstanceTags(gated), tagHookFailed,
		"the first slow admission after the refusals ended applied the failure policy: the deadline counted the refusals")
	require.Contains(t, r.ec2.Running(r.fleetID), gated)
}

// --- b5. dry-run does not stop the pipelines that run --------------------------

// dry-run is the brake an operator pulls during an incident ("the plugin
// runs no hook, admits no node"). provision() honours it only when it starts
// pipelines: one already running (an AWX playbook runs for many minutes)
// goes on with the configuration it started with, and when its hook fails
// it drains and terminates the instance; when it succeeds it admits the
// node.
func TestR9bDryRunStopsTheLaunchPipelinesThatRun(t *testing.T) {
	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	r, gated, _ := hookRig(t, "hook_configure_command",
		"/bin/sh -c 'echo go > "+started+"; while [ ! -e "+release+" ]; do sleep 0.02; done; exit 3'")
	require.EqualValues(t, 2, r.status(t))
	fs := r.plugin.state(r.fleetID)
	_, err := r.plugin.provisionFleet(context.Background(), context.Background(), fs.config(), fs)
	require.NoError(t, err)
	r9Wait(t, "the hook's command to start", func() bool { _, err := os.Stat(started); return err == nil })

	// The operator sets dry-run = "true" on the policy.
	_, err = r.plugin.Status(r.with(configKeyDryRun, "true"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(release, nil, 0o600)) // the playbook fails
	r.plugin.pipelines.Wait()
	require.Contains(t, r.ec2.Running(r.fleetID), gated, "in dry-run the plugin terminated an instance")
	require.Empty(t, r.ec2.Calls("TerminateInstances"))
}

// --- b6. A node whose admission stamp is in the future stays out of the count

// warming() compares the admission stamp (meta <gate>_at) with the plugin's
// clock and leaves the node out of the count while now - at < node_warmup.
// A stamp in the future makes that negative: the node stays out until the
// stamp plus node_warmup, however far that is. The stamp comes from the
// clock of whichever process admitted the node (the autoscaler rescheduled
// on another host, a host whose clock was wrong at boot), or from an
// operator admitting a node by hand with a mistyped time or zone. The node
// serves and counts as serving, so a scale-out does not replace it, but the
// agent never sees it: the pool runs one node short of the load for as long.
func TestR9bANodeAdmittedWithAStampInTheFutureIsCountedAfterTheWarmUp(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	node := r.nodeOf[sortedRunning(r)[2]]
	at := r.now.Add(12 * time.Hour).UTC().Format(time.RFC3339) // admitted by a clock 12 h ahead
	r.nomad.update(node, func(n *api.Node) {
		n.Meta[nomadnode.DefaultGateKey] = nomadnode.GateAdmitted
		n.Meta[nomadnode.DefaultGateKey+nomadnode.AdmittedAtSuffix] = at
	})
	// Resolution: a stamp more than a minute ahead of the plugin's clock is
	// not trusted (it would hold the node out for as long as the clocks
	// differ): the node is not held back by it at all.
	require.EqualValues(t, 3, r.status(t), "a stamp far in the future holds the node out of the count")
	r.now = r.now.Add(2 * defaultNodeWarmup)
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.EqualValues(t, 3, st.Count,
		"a node serving for twice node_warmup is still left out of the count (%s): its stamp %s is in the future", st.Meta[metaPhases], at)
	require.False(t, strings.Contains(st.Meta[metaPhases], "warming"))
}

// --- b7. An agent reload drops the terminate hooks that run --------------------

// On SIGHUP (a policy file edited, the agent's config re-rendered) the agent
// calls SetConfig again on the running plugin; SetConfig restarts the
// background, and StopBackground cancels every running terminate hook (an
// exec command is killed, its step reset so that "the next run runs it
// again"). runFarewell then returns, "the next process resumes them if they
// are recorded", but there is no next process: this one goes on, its claim
// (startFarewellOnce) and its one-time resume (claimResume) are spent, so
// the hook never runs again, and its record stays on the fleet request for
// good, using up one of the tags that later farewells need.
func TestR9bAnAgentReloadDoesNotDropTheTerminateHooksThatRun(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.plugin.tendInterval = time.Hour // no background scan during the test
	dir := t.TempDir()
	release, out := filepath.Join(dir, "awx-answers"), filepath.Join(dir, "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'while [ ! -e "+release+" ]; do sleep 0.02; done; echo \"$SPOTFLEET_INSTANCE_ID\" >> "+out+"'")
	r.plugin.startBackground(nil) // SetConfig
	t.Cleanup(r.plugin.StopBackground)
	require.EqualValues(t, 3, r.status(t))
	require.NoError(t, r.plugin.Scale(action(2), r.config)) // the forget hook of the removed instance runs

	r.plugin.startBackground(nil) // SIGHUP: SetConfig again
	require.NoError(t, os.WriteFile(release, nil, 0o600))
	for range 3 { // the evaluations that follow
		r.status(t)
		r.plugin.pipelines.Wait()
		r.plugin.retryFarewells(r.plugin.state(r.fleetID))
		r.plugin.pipelines.Wait()
	}
	tags, err := r.plugin.fleet.Tags(context.Background(), r.fleetID)
	require.NoError(t, err)
	var left []string
	for k := range tags {
		if strings.HasPrefix(k, farewellTagPrefix) {
			left = append(left, k)
		}
	}
	require.Len(t, lines(t, out), 1, "the terminate hook stopped by the reload never ran again (records left on the fleet request: %v)", left)
}
