package plugin

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
)

// gate makes the instance's node a fresh gated node: meta pending, nothing
// placed on it (the pool's jobs constrain on the gate).
func (r *rig) gate(t *testing.T, instanceID string) string {
	t.Helper()
	node := r.nodeOf[instanceID]
	r.nomad.update(node, func(n *api.Node) { n.Meta[nomadnode.DefaultGateKey] = nomadnode.GatePending })
	r.nomad.mu.Lock()
	r.nomad.allocs[node] = nil
	r.nomad.mu.Unlock()
	return node
}

// scan runs one provisioning scan of the rig's fleet and waits for the
// pipelines it started.
func (r *rig) scan(t *testing.T) {
	t.Helper()
	fs := r.plugin.state(r.fleetID)
	cfg := fs.config()
	require.NotNil(t, cfg, "a Status or Scale must have given the fleet its policy")
	_, err := r.plugin.provisionFleet(context.Background(), context.Background(), cfg, fs)
	require.NoError(t, err)
	r.plugin.pipelines.Wait()
}

// hookRig is a fleet of three ready nodes, the newest gated, with an exec
// launch hook that appends the instance id to a file.
func hookRig(t *testing.T, extra ...string) (*rig, string, string) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.plugin.admitWait = 5 * time.Second
	ids := sortedRunning(r)
	gated := ids[2]
	r.gate(t, gated)
	out := filepath.Join(t.TempDir(), "ran")
	kv := append([]string{
		"launch_hooks", "configure",
		"hook_configure_type", "exec",
		"hook_configure_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID $SPOTFLEET_NODE_ID\" >> " + out + "'",
	}, extra...)
	r.config = r.with(kv...)
	return r, gated, out
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Fields(strings.TrimSpace(string(b)))
}

func TestGatedNodeIsCapacityComingUntilItsLaunchHooksSucceed(t *testing.T) {
	r, gated, out := hookRig(t)
	r.nomad.metaLag = 2 // the client reports dynamic meta to the servers later

	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.True(t, st.Ready, "a node waiting for its hooks never makes the fleet not ready: %v", st.Meta)
	require.EqualValues(t, 2, st.Count, "a node waiting for its hooks takes no work: not counted")
	require.Contains(t, st.Meta[metaPhases], "admitting=1")
	require.Contains(t, st.Meta[metaAdmitting], gated)

	// The agent asks for the third node it does not see: no second one.
	err = r.plugin.Scale(action(3), r.config)
	require.Error(t, err)
	require.Contains(t, err.Error(), "already covers")
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID))

	r.scan(t)
	require.Equal(t, []string{gated, r.nodeOf[gated]}, lines(t, out), "the hook ran once, with the instance's details")
	n := r.nomad.node(r.nodeOf[gated])
	require.Equal(t, nomadnode.GateAdmitted, n.Meta[nomadnode.DefaultGateKey])
	require.NotEmpty(t, n.Meta[nomadnode.DefaultGateKey+nomadnode.AdmittedAtSuffix])
	require.Contains(t, r.ec2.InstanceTags(gated)[tagLaunchHooks], "configure=ok")

	// Admitted: it serves, but apm-node measures it only after its
	// warm-up, so the count takes it in only then (no second scale-out
	// meanwhile either).
	st, err = r.plugin.Status(r.config)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Count, "a node apm-node does not measure yet is not multiplied by the strategy")
	require.Contains(t, st.Meta[metaPhases], "warming=1")
	err = r.plugin.Scale(action(3), r.config)
	require.Error(t, err)
	require.Contains(t, err.Error(), "already covers")
	r.now = r.now.Add(defaultNodeWarmup)
	require.EqualValues(t, 3, r.status(t))

	// Nothing runs twice.
	r.scan(t)
	require.Len(t, lines(t, out), 2)
}

func TestFailedLaunchHookTerminatesTheInstanceAndKeepsTheTarget(t *testing.T) {
	r, gated, _ := hookRig(t, "hook_configure_command", "/bin/sh -c 'echo boom; exit 3'")
	require.EqualValues(t, 2, r.status(t))
	r.scan(t)
	require.NotContains(t, r.ec2.Running(r.fleetID), gated, "the instance whose hook failed is terminated")
	require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "the target stays: the maintain fleet replaces the instance")
	require.Empty(t, r.nomad.drainedNodes(), "nothing ran there: nothing to drain")
	require.Contains(t, r.ec2.InstanceTags(gated)[tagHookFailed], "terminate configure:")
	require.Contains(t, r.ec2.InstanceTags(gated)[tagHookFailed], "3", "the exit code is in the recorded failure")
	_, ok := r.nomad.node(r.nodeOf[gated]).Meta[nomadnode.DefaultGateKey]
	require.True(t, ok)
	require.Equal(t, nomadnode.GatePending, r.nomad.node(r.nodeOf[gated]).Meta[nomadnode.DefaultGateKey], "never admitted")
}

func TestFailedLaunchHookWithKeepLeavesTheNodeUnadmittedAndNotCounted(t *testing.T) {
	r, gated, _ := hookRig(t, "hook_configure_command", "/bin/false", "hook_configure_on_failure", "keep")
	require.EqualValues(t, 2, r.status(t))
	r.scan(t)
	require.Contains(t, r.ec2.Running(r.fleetID), gated, "kept for debugging")
	require.Equal(t, nomadnode.GateFailed, r.nomad.node(r.nodeOf[gated]).Meta[nomadnode.DefaultGateKey])

	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Count)
	require.Contains(t, st.Meta[metaHookFailed], gated)
	require.Equal(t, "1", st.Meta[metaHeld], "a kept node holds a unit without serving")

	// A scale-out to three serving nodes adds one beside the kept node.
	require.NoError(t, r.plugin.Scale(action(3), r.config))
	require.Equal(t, 4, r.ec2.TargetCapacity(r.fleetID))
	// The kept node is not run again.
	r.joinNewInstances()
	r.scan(t)
	require.Equal(t, nomadnode.GateFailed, r.nomad.node(r.nodeOf[gated]).Meta[nomadnode.DefaultGateKey])
}

func TestRestartDuringAnExecHookDoesNotRunItAgain(t *testing.T) {
	r, gated, out := hookRig(t, "hook_configure_on_failure", "keep")
	// An earlier process started the hook and died.
	rec := hooks.Record{Steps: map[string]hooks.Step{"configure": {State: hooks.StateStarted, At: r.now.Add(-time.Minute)}}}
	r.ec2.SetInstanceTag(gated, tagLaunchHooks, rec.String())

	require.EqualValues(t, 2, r.status(t))
	r.scan(t)
	require.Empty(t, lines(t, out), "a command whose outcome is unknown is not run a second time")
	require.Contains(t, r.ec2.InstanceTags(gated)[tagHookFailed], "keep configure:")
	require.Equal(t, nomadnode.GateFailed, r.nomad.node(r.nodeOf[gated]).Meta[nomadnode.DefaultGateKey])
}

func TestUngatedNodeIsServingAndReportedWhenLaunchHooksAreSet(t *testing.T) {
	r, gated, out := hookRig(t)
	r.nomad.update(r.nodeOf[gated], func(n *api.Node) { delete(n.Meta, nomadnode.DefaultGateKey) })
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.EqualValues(t, 3, st.Count, "an ungated node takes work at once")
	require.Contains(t, st.Meta[metaUngated], gated)
	r.scan(t)
	require.Empty(t, lines(t, out), "hooks are not run on a node that already takes work")
}

func TestAdmissionWaitsUntilTheServersShowIt(t *testing.T) {
	r, gated, _ := hookRig(t, configKeyNodeWarmup, "0s")
	r.nomad.metaLag = 1 << 30 // the client never reports it
	r.plugin.admitWait = 200 * time.Millisecond
	require.EqualValues(t, 2, r.status(t))
	r.scan(t)
	require.EqualValues(t, 2, r.status(t), "not counted before the scheduler may place work there")
	require.Contains(t, r.ec2.Running(r.fleetID), gated)
	require.NotContains(t, r.ec2.InstanceTags(gated), tagHookFailed, "a slow admission is not a failed hook")
	r.nomad.metaLag = 0
	r.scan(t) // hooks done: only the admission is retried
	require.EqualValues(t, 3, r.status(t))
}

func TestTerminateHooksRunOnceForAnInstanceAScaleInRemoves(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID\" >> "+out+"'")
	require.EqualValues(t, 3, r.status(t))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	r.plugin.pipelines.Wait()
	running := r.ec2.Running(r.fleetID)
	require.Len(t, running, 2)
	var gone string
	for id := range r.nodeOf {
		if !contains(running, id) {
			gone = id
		}
	}
	require.Equal(t, []string{gone}, lines(t, out))
	tags, err := r.plugin.fleet.Tags(context.Background(), r.fleetID)
	require.NoError(t, err)
	for k := range tags {
		require.False(t, strings.HasPrefix(k, farewellTagPrefix), "finished terminate hooks leave no record: %s", k)
	}
}

func TestTerminateHooksRecordedByAnEarlierProcessAreFinished(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID $SPOTFLEET_PRIVATE_IP\" >> "+out+"'")
	h := hooks.Instance{ID: "i-gone", Type: "c5.large", PrivateIP: "10.1.2.3", NodeID: "node-x"}
	require.NoError(t, r.plugin.fleet.Tag(context.Background(), []string{r.fleetID}, map[string]string{farewellTagPrefix + "i-gone": encodeFarewell(h, hooks.Record{})}))
	require.EqualValues(t, 2, r.status(t))
	r.plugin.pipelines.Wait()
	require.Equal(t, []string{"i-gone", "10.1.2.3"}, lines(t, out))
	tags, err := r.plugin.fleet.Tags(context.Background(), r.fleetID)
	require.NoError(t, err)
	require.NotContains(t, tags, farewellTagPrefix+"i-gone")
	// A later status does not run it again.
	require.EqualValues(t, 2, r.status(t))
	r.plugin.pipelines.Wait()
	require.Len(t, lines(t, out), 2)
}

func TestFarewellEncodingFitsATag(t *testing.T) {
	h := hooks.Instance{ID: "i-0123456789abcdef0", Type: "c5.large", Zone: "us-east-1a", PrivateIP: "10.123.234.111",
		PrivateDNS: "ip-10-123-234-111.us-east-1.compute.internal", NodeID: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
		NodeName: strings.Repeat("n", 80)}
	rec := hooks.Record{Steps: map[string]hooks.Step{"forget": {State: hooks.StateStarted, JobID: 1234567, At: time.Unix(1733100000, 0)}}}
	v := encodeFarewell(h, rec)
	require.LessOrEqual(t, len(v), 256)
	back, brec, err := decodeFarewell(h.ID, "sfr-1", v)
	require.NoError(t, err)
	require.Equal(t, h.PrivateIP, back.PrivateIP)
	require.Equal(t, h.NodeID, back.NodeID)
	require.Equal(t, 1234567, brec.Steps["forget"].JobID)
}

func TestAnInstanceRemovedAfterAFailedHookGetsItsTerminateHooks(t *testing.T) {
	forgot := filepath.Join(t.TempDir(), "forgot")
	r, gated, _ := hookRig(t, "hook_configure_command", "/bin/sh -c 'exit 3'",
		"terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID\" >> "+forgot+"'")
	require.EqualValues(t, 2, r.status(t))
	r.scan(t)
	require.NotContains(t, r.ec2.Running(r.fleetID), gated)
	require.Equal(t, []string{gated}, lines(t, forgot), "AWX (here: a command) forgets the instance removed after its failed hook, once")
	require.Contains(t, r.ec2.InstanceTags(gated), tagFarewell, "claimed on the instance before it was terminated")
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.Contains(t, st.Meta[metaHookFailed], gated, "the failure stays in the status after the instance is gone")
	r.scan(t)
	require.Len(t, lines(t, forgot), 1)
}
