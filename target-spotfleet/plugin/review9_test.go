package plugin

// Ninth review: provisioning hooks (launch hooks, admission gate, terminate
// hooks). Every test in this file fails on the reviewed code; each one shows
// a defect that would hurt a production fleet.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

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

// r9EC2 wraps the in-memory EC2 so that tag writes can fail the way EC2's
// do: a CreateTags refused (throttled past the client's retries, a transient
// fault) and EC2's limit of 50 tags per resource.
type r9EC2 struct {
	*ec2fake.EC2
	mu sync.Mutex
	// failTags, when set, decides whether a CreateTags call fails.
	failTags func(in *ec2.CreateTagsInput) error
	// tagLimit is the most tags one resource may carry; 0 means no limit.
	tagLimit int
}

func (w *r9EC2) CreateTags(ctx context.Context, in *ec2.CreateTagsInput, opts ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	w.mu.Lock()
	fail, limit := w.failTags, w.tagLimit
	w.mu.Unlock()
	if fail != nil {
		if err := fail(in); err != nil {
			return nil, err
		}
	}
	if limit > 0 {
		for _, id := range in.Resources {
			out, err := w.EC2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("resource-id"), Values: []string{id}}}})
			if err != nil {
				return nil, err
			}
			keys := map[string]bool{}
			for _, tg := range out.Tags {
				keys[aws.ToString(tg.Key)] = true
			}
			for _, tg := range in.Tags {
				keys[aws.ToString(tg.Key)] = true
			}
			if len(keys) > limit {
				return nil, ec2fake.APIError("TagLimitExceeded") // resource id would have more than limit tags
			}
		}
	}
	return w.EC2.CreateTags(ctx, in, opts...)
}

// r9Wrap puts the wrapper between the plugin and the rig's EC2.
func r9Wrap(r *rig) *r9EC2 {
	w := &r9EC2{EC2: r.ec2}
	noWait := fleet.Retry{Attempts: 4, Sleep: func(context.Context, time.Duration) error { return nil }}
	r.plugin.fleet = fleet.NewClient(w, fleet.WithRetry(noWait))
	return w
}

func (w *r9EC2) set(fail func(in *ec2.CreateTagsInput) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failTags = fail
}

// r9TagOf returns the value of key in a CreateTags input.
func r9TagOf(in *ec2.CreateTagsInput, key func(string) bool) (string, bool) {
	for _, tg := range in.Tags {
		if key(aws.ToString(tg.Key)) {
			return aws.ToString(tg.Value), true
		}
	}
	return "", false
}

// r9Failing fails the first n CreateTags calls that match (every attempt
// of the client's retries counts), with EC2's throttling error.
func r9Failing(n int, match func(in *ec2.CreateTagsInput) bool) func(in *ec2.CreateTagsInput) error {
	var mu sync.Mutex
	return func(in *ec2.CreateTagsInput) error {
		mu.Lock()
		defer mu.Unlock()
		if n > 0 && match(in) {
			n--
			return ec2fake.APIError("RequestLimitExceeded")
		}
		return nil
	}
}

// r9Wait waits (at most 3 s) until cond holds.
func r9Wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// r9AWXAgent returns agent-level AWX settings pointing at url.
func r9AWXAgent(t *testing.T, url string) *hooks.Agent {
	t.Helper()
	a, err := hooks.ParseAgent(map[string]string{"awx_url": url, "awx_token": "tok-9f8e7d6c5b4a"})
	require.NoError(t, err)
	return a
}

// --- 1. An admitting node lost without warning is not refilled ------------

// forgetHeldUnit lowers the target when an instance that "did not serve" goes
// without a warning. It treats every phase but ready and joining as "held",
// so a node in PhaseAdmitting (gated, waiting for its hooks: capacity that
// is coming and counted as serving) is taken for a held one. The most common
// case is the plugin's own removal after a failed launch hook
// (on_failure=terminate): it terminates the instance keeping the target so
// that the maintain fleet replaces it, EventBridge then delivers the
// instance's "terminated" state change, and the handler lowers the target:
// the replacement never comes, the fleet runs one node short of what the
// agent asked for. The same happens to any admitting node whose instance
// dies during its hooks.
func TestR9AnAdmittingNodeLostWithoutWarningIsRefilled(t *testing.T) {
	t.Run("removed after a failed launch hook", func(t *testing.T) {
		r, gated, _ := hookRig(t, "hook_configure_command", "/bin/sh -c 'echo boom; exit 3'")
		r.plugin.startupGrace = 0
		require.EqualValues(t, 2, r.status(t))
		r.ec2.NoRefill = true // EC2's refill comes a while after the state change
		r.scan(t)
		require.NotContains(t, r.ec2.Running(r.fleetID), gated)
		require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID), "the removal keeps the target for the replacement")

		out := r.event(t, interruption.Event{ID: "sc-" + gated, Kind: interruption.KindStateChange, InstanceID: gated, State: "terminated", Time: r.now})
		require.Equal(t, interruption.Done, out.Disposition, out.Why)
		require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID),
			"the state change of the instance removed after its failed hook lowered the target: its replacement never launches")
	})
	t.Run("lost while its hooks run", func(t *testing.T) {
		r, gated, _ := hookRig(t)
		r.plugin.startupGrace = 0
		require.EqualValues(t, 2, r.status(t))
		r.ec2.NoRefill = true
		r.ec2.Kill(gated) // hardware failure, or a reclaim whose warning was missed
		out := r.event(t, interruption.Event{ID: "sc-" + gated, Kind: interruption.KindStateChange, InstanceID: gated, State: "terminated", Time: r.now})
		require.Equal(t, interruption.Done, out.Disposition, out.Why)
		require.Equal(t, 3, r.ec2.TargetCapacity(r.fleetID),
			"capacity that was coming (an admitting node) was lost and the target lowered: it is never replaced")
	})
}

// --- 2. A failed-hook instance that drains is replaced twice ----------------

// A node whose launch hook failed (on_failure=terminate) is drained first
// when something runs there: system jobs do not constrain on the admission
// gate, so in practice nearly always. While it drains it is PhaseDraining,
// which capacity counts as "held" (going, not serving); a scale-out in that
// window adds a unit for it (to + held). But removeRefused terminates it
// keeping the target, so the maintain fleet replaces it as well: one
// interruption of provisioning becomes two new instances, and the fleet runs
// one more than the agent asked for until a scale-in drains a healthy node.
func TestR9AFailedHookInstanceThatDrainsIsNotReplacedTwice(t *testing.T) {
	r, gated, _ := hookRig(t, "hook_configure_command", "/bin/sh -c 'exit 3'")
	node := r.nodeOf[gated]
	r.nomad.mu.Lock()
	r.nomad.allocs[node] = []*api.Allocation{{ID: "alloc-logshipper", NodeID: node, ClientStatus: api.AllocClientStatusRunning,
		Job: &api.Job{Type: stringPtr(api.JobTypeSystem)}}}
	r.nomad.mu.Unlock()
	r.nomad.setHold(node, true)
	require.EqualValues(t, 2, r.status(t))

	fs := r.plugin.state(r.fleetID)
	_, err := r.plugin.provisionFleet(context.Background(), context.Background(), fs.config(), fs)
	require.NoError(t, err)
	r9Wait(t, "the drain of the node whose hook failed", func() bool { return r.nomad.node(node).DrainStrategy != nil })

	// The agent's evaluation during the drain: 3 ready nodes wanted, 2 ready.
	require.EqualValues(t, 2, r.status(t))
	err = r.plugin.Scale(action(3), r.config)
	target := r.ec2.TargetCapacity(r.fleetID)
	r.nomad.setHold(node, false)
	r.plugin.pipelines.Wait()
	t.Logf("scale: %v", err)
	require.Equal(t, 3, target,
		"a scale-out during the drain of the failed-hook node raised the target for it, although the maintain fleet replaces it too")
}

func stringPtr(s string) *string { return &s }

// --- 3. A failed tag write terminates a healthy instance ---------------------

// The runner reports a failing save of the hook record as a failure of the
// hook: before the hook ("its start could not be recorded, so it was not
// run") and after it succeeded ("it succeeded but its state could not be
// recorded ... it resumes at the next attempt"). launch() applies the
// failure policy to both: with the default on_failure=terminate one
// throttled CreateTags (a scale-out of many instances tags them all at once)
// terminates an instance whose hook never failed, after a 20-minute
// playbook succeeded or before anything ran.
func TestR9ATagWriteFailureAroundALaunchHookDoesNotTerminateAHealthyInstance(t *testing.T) {
	for _, tc := range []struct{ name, state string }{
		{"before the hook starts", "=started/"},
		{"after the hook succeeded", "=ok/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, gated, out := hookRig(t)
			w := r9Wrap(r)
			require.EqualValues(t, 2, r.status(t))
			w.set(r9Failing(4, func(in *ec2.CreateTagsInput) bool {
				v, ok := r9TagOf(in, func(k string) bool { return k == tagLaunchHooks })
				return ok && strings.Contains(v, tc.state)
			}))
			r.scan(t)
			require.Contains(t, r.ec2.Running(r.fleetID), gated,
				"a hook record that could not be written terminated the instance (hook-failed tag: %q)", r.ec2.InstanceTags(gated)[tagHookFailed])
			r.now = r.now.Add(time.Minute) // past the pause before the retry
			r.scan(t)
			require.Equal(t, nomadnode.GateAdmitted, r.nomad.node(r.nodeOf[gated]).Meta[nomadnode.DefaultGateKey])
			require.Len(t, lines(t, out), 2, "the hook ran once")
		})
	}
}

// --- 4. A terminate hook is lost when its record cannot be written ----------

// For a terminate hook a failing save before it starts means "not run", and
// that is final: runList records it as the hook's failure, runFarewell
// reports it and removes the farewell record, nothing runs it later. One
// throttled CreateTags on the fleet request (scale-ins and interruption
// waves tag it for every instance at once) and the host stays in AWX's
// inventory for good.
func TestR9ATerminateHookIsNotLostWhenItsRecordCannotBeWritten(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	w := r9Wrap(r)
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID\" >> "+out+"'")
	require.EqualValues(t, 3, r.status(t))
	// The farewell record and the hook's start record fail (4 attempts each).
	w.set(r9Failing(8, func(in *ec2.CreateTagsInput) bool {
		_, ok := r9TagOf(in, func(k string) bool { return strings.HasPrefix(k, farewellTagPrefix) })
		return ok
	}))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	r.plugin.pipelines.Wait()
	// Later evaluations and follow-ups.
	for range 3 {
		r.status(t)
		r.plugin.pipelines.Wait()
	}
	require.Len(t, lines(t, out), 1, "the terminate hook of the removed instance never ran: a failed tag write lost it")
}

// --- 5. Terminate hooks run twice across a restart ---------------------------

// startFarewellOnce is in memory only, and the farewell record is removed
// once the hooks end. The EC2 state change "terminated" of an instance this
// plugin removed arrives seconds later (SQS redelivers it after a failed or
// slow handling, and it waits in the queue while the agent restarts): the
// new process finds the instance (DescribeInstances lists terminated ones
// for an hour, with their tags) and its node (not purged yet), and runs its
// terminate hooks a second time.
func TestR9TerminateHooksDoNotRunTwiceAfterARestart(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.plugin.startupGrace = 0
	for _, id := range r.ec2.Running(r.fleetID) {
		r.ec2.SetInstanceTag(id, fleetTag, r.fleetID) // as EC2 tags spot fleet instances
	}
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID\" >> "+out+"'")
	require.EqualValues(t, 3, r.status(t))
	require.NoError(t, r.plugin.Scale(action(2), r.config))
	r.plugin.pipelines.Wait()
	ran := lines(t, out)
	require.Len(t, ran, 1)
	gone := ran[0]

	r8Restart(r)
	require.EqualValues(t, 2, r.status(t))
	ev := interruption.Event{ID: "sc-" + gone, Kind: interruption.KindStateChange, InstanceID: gone, State: "terminated", Time: r.now}
	res := r.event(t, ev)
	require.NotEqual(t, interruption.Retry, res.Disposition, res.Why)
	r.plugin.pipelines.Wait()
	require.Len(t, lines(t, out), 1, "the terminate hooks of an instance ran again after a restart")
}

// --- 6. A terminate hook cannot use the job id of a launch hook --------------

// ParsePolicy accepts {{hook.<launch hook>.job_id}} in a terminate hook ("a
// terminate hook may name such a launch hook"), and the hooks package says
// the caller must merge the launch steps into the record given to Terminate.
// farewell() always passes an empty record, so such a terminate hook always
// fails to render ("hook configure has not run"): it never runs.
func TestR9ATerminateHookCanUseTheJobIDOfALaunchHook(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.plugin.hookAgent = r9AWXAgent(t, "http://127.0.0.1:9")
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with(
		"launch_hooks", "configure", "hook_configure_type", "awx", "hook_configure_job_template", "7",
		"terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo {{hook.configure.job_id}} >> "+out+"'")
	rec := hooks.Record{Steps: map[string]hooks.Step{"configure": {State: hooks.StateOK, JobID: 1001, At: r.now.Add(-time.Hour).Truncate(time.Second)}}}
	for _, id := range r.ec2.Running(r.fleetID) {
		r.ec2.SetInstanceTag(id, tagLaunchHooks, rec.String()) // configured and admitted long ago
	}
	// Resolution: a terminate hook only sees its own list (its record
	// travels with it on the fleet request), so the reference is refused
	// when the policy is read rather than failing at every removal.
	_, err := parsePolicyConfigWith(r.config, r.plugin.hookAgent)
	require.Error(t, err, "a terminate hook that can never render is accepted")
	require.Contains(t, err.Error(), "hook.configure.job_id")
}

// --- 7. The farewell record of an accepted policy does not fit its tag -------

// ParsePolicy bounds the raw record of the terminate hooks by 256
// characters, but encodeFarewell stores it URL-escaped ('=', '/' and ';'
// become three characters each) after the instance's type, zone, address
// and node id. With five terminate hooks of ordinary names, once they have
// all started the value passes 256, truncateTag cuts the record, and a
// restarted plugin cannot read it ("not running them on a guess"): the
// terminate hooks of every instance that left while the plugin restarted
// are lost.
func TestR9TheFarewellRecordOfAnAcceptedPolicyFitsItsTag(t *testing.T) {
	agent := r9AWXAgent(t, "http://127.0.0.1:9")
	cfg := map[string]string{
		configKeyFleetID: "sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c", "node_class": "spot",
		"terminate_hooks":                    "deregisterawx, removedns, cmdbdecommission, revokecerts, notifyslack",
		"hook_deregisterawx_type":            "awx",
		"hook_deregisterawx_job_template":    "12",
		"hook_removedns_type":                "exec",
		"hook_removedns_command":             "/usr/local/bin/dns-remove {{private_dns_name}}",
		"hook_cmdbdecommission_type":         "awx",
		"hook_cmdbdecommission_job_template": "13",
		"hook_revokecerts_type":              "exec",
		"hook_revokecerts_command":           "/usr/local/bin/revoke {{node_id}}",
		"hook_notifyslack_type":              "exec",
		"hook_notifyslack_command":           "/usr/local/bin/notify {{instance_id}}",
	}
	p, err := parsePolicyConfigWith(cfg, agent)
	if err != nil {
		// Resolution: a terminate list whose record could not fit beside
		// the instance's details is refused when the policy is read.
		require.Contains(t, err.Error(), "terminate_hooks")
		return
	}

	at := time.Unix(1733100000, 0)
	rec := hooks.Record{Steps: map[string]hooks.Step{}}
	for _, h := range p.Hooks.Terminate {
		st := hooks.Step{State: hooks.StateOK, At: at}
		if h.Type == hooks.TypeAWX {
			st.JobID = 4812345
		}
		rec.Steps[h.Name] = st
	}
	last := p.Hooks.Terminate[len(p.Hooks.Terminate)-1].Name
	rec.Steps[last] = hooks.Step{State: hooks.StateStarted, At: at} // the plugin stops while it runs
	require.LessOrEqual(t, len(rec.String()), hooks.MaxRecordLen)

	h := hooks.Instance{ID: "i-0123456789abcdef0", Type: "c5.large", Zone: "us-east-1a", PrivateIP: "10.123.234.111",
		PrivateDNS: "ip-10-123-234-111.ec2.internal", NodeID: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", NodeName: "client-1", FleetID: p.FleetID}
	v := encodeFarewell(h, rec)
	require.LessOrEqual(t, len(v), 256)
	_, back, err := decodeFarewell(h.ID, p.FleetID, v)
	require.NoError(t, err, "the farewell record written for an accepted policy cannot be read back: %q", v)
	require.Equal(t, rec.String(), back.String())
}

// --- 8. An AWX that refuses the token terminates every new instance ---------

// A 401 (token expired or rotated without the file being updated), a 403, a
// 404 template, ignored_fields, or an AWX outage longer than the hook's
// timeout say nothing about the instance, but they are hook failures like
// any other: with the default on_failure=terminate every new instance is
// terminated and replaced, and the replacement meets the same AWX. The fleet
// churns instances (each billed) for as long as AWX is broken and never
// gains capacity.
func TestR9AnAWXThatRefusesTheTokenDoesNotTerminateEveryNewInstance(t *testing.T) {
	var calls int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"detail": "Authentication credentials were not provided."})
	}))
	t.Cleanup(srv.Close)

	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	r.plugin.admitWait = time.Second
	r.plugin.hookAgent = r9AWXAgent(t, srv.URL)
	r.config = r.with("launch_hooks", "configure", "hook_configure_type", "awx", "hook_configure_job_template", "7")
	first := sortedRunning(r)[2]
	r.gate(t, first)
	require.EqualValues(t, 2, r.status(t))

	terminated := 0
	for round := 0; round < 3; round++ {
		for _, id := range r.ec2.Running(r.fleetID) {
			if _, ok := r.nodeOf[id]; !ok {
				r.nodeOf[id] = r.nomad.addNode(id, "spot", r.ec2.PrivateIP(id))
				r.gate(t, id)
			}
		}
		before := len(r.ec2.Calls("TerminateInstances"))
		r.status(t)
		r.scan(t)
		terminated += len(r.ec2.Calls("TerminateInstances")) - before
	}
	mu.Lock()
	require.Positive(t, calls)
	mu.Unlock()
	require.Zero(t, terminated, "AWX refused the token and the plugin terminated %d new instances in 3 scans, one after the other", terminated)
	require.Contains(t, r.ec2.Running(r.fleetID), first)
}

// --- 9. The plugin's own stop during an exec hook costs the instance ---------

// StopBackground (agent reload, shutdown, a new SetConfig) cancels the
// pipelines: an exec hook's process group is killed (SIGTERM) and its step
// stays started. The next scan resumes the step and, for exec, fails it
// ("its outcome is unknown, so it is not run a second time"), so with the
// default on_failure=terminate the instance is terminated. The plugin itself
// killed the command: its outcome is known (it did not complete). Every
// restart of the autoscaler during a scale-out (deploying it as a Nomad job
// restarts it) destroys the nodes being provisioned.
func TestR9AnExecHookInterruptedByThePluginsOwnStopDoesNotCostTheInstance(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	// The first run blocks until stopped; a run again from the start ends
	// at once.
	r, gated, _ := hookRig(t, "hook_configure_command", "/bin/sh -c 'if test -e "+started+"; then exit 0; fi; echo go >> "+started+"; exec sleep 30'")
	require.EqualValues(t, 2, r.status(t))
	fs := r.plugin.state(r.fleetID)
	bg, stop := context.WithCancel(context.Background())
	_, err := r.plugin.provisionFleet(context.Background(), bg, fs.config(), fs)
	require.NoError(t, err)
	r9Wait(t, "the hook's command to start", func() bool { _, err := os.Stat(started); return err == nil })
	stop() // StopBackground
	r.plugin.pipelines.Wait()

	// The next background (or the next process) scans again.
	r.scan(t)
	require.Contains(t, r.ec2.Running(r.fleetID), gated,
		"the instance whose hook the plugin's own stop interrupted was terminated: %s", r.ec2.InstanceTags(gated)[tagHookFailed])
	require.Equal(t, nomadnode.GateAdmitted, r.nomad.node(r.nodeOf[gated]).Meta[nomadnode.DefaultGateKey], "the hook ran again and the node was admitted")
}

// --- 10. A hook can admit the node before the other hooks ran ---------------

// A nomad hook's meta may set any key, the admission gate's included:
// "hook_join_meta = spotfleet_admission=admitted" is accepted, and the node
// takes work as soon as that hook runs, before (or although) later hooks
// fail. The same goes for the gate's _at key and the meta key the instance
// id is read from.
func TestR9AHookCannotSetTheAdmissionGate(t *testing.T) {
	for _, kv := range []string{
		nomadnode.DefaultGateKey + "=admitted",
		nomadnode.DefaultGateKey + nomadnode.AdmittedAtSuffix + "=2024-01-01T00:00:00Z",
		"ec2_instance_id={{node.meta.rack}}",
	} {
		t.Run(kv, func(t *testing.T) {
			cfg := map[string]string{
				configKeyFleetID: "sfr-0123456789abcdef0", "node_class": "spot", configKeyNodeIDAttribute: "meta.ec2_instance_id",
				"launch_hooks":   "join, configure",
				"hook_join_type": "nomad", "hook_join_meta": kv,
				"hook_configure_type": "exec", "hook_configure_command": "/usr/local/bin/configure",
			}
			_, err := parsePolicyConfig(cfg)
			require.Error(t, err, "a launch hook may set %s, which the plugin owns", kv)
		})
	}
}

// --- 11. A secret of the plugin's environment ends up in an EC2 tag ---------

// An exec hook inherits the plugin's whole environment (os.Environ()): AWS
// credentials given to the agent through the environment (the usual way
// for a Nomad job, from Vault), NOMAD_TOKEN, and so on. Only secrets set in
// the agent config are redacted, so a hook's output that shows one (a
// script with set -x, a tool that dumps its environment on error) is
// written verbatim into the instance's hook-failed tag (readable by anyone
// with ec2:DescribeTags) and the logs.
func TestR9SecretsOfThePluginsEnvironmentNeverReachATag(t *testing.T) {
	const secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	r, gated, _ := hookRig(t, "hook_configure_on_failure", "keep",
		"hook_configure_command", "/bin/sh -c 'echo \"+ aws s3 cp --secret $AWS_SECRET_ACCESS_KEY\"; exit 1'")
	require.EqualValues(t, 2, r.status(t))
	r.scan(t)
	v := r.ec2.InstanceTags(gated)[tagHookFailed]
	require.NotEmpty(t, v)
	require.NotContains(t, v, secret, "the AWS secret key of the plugin's environment is in an EC2 tag")
}

// --- 12. A mass scale-in runs out of tags on the fleet request --------------

// Each instance that leaves gets a farewell tag on the fleet request while
// its terminate hooks run (an AWX playbook: minutes; AWX down: up to the
// hook's 30-minute timeout), and nothing bounds how many. EC2 allows 50 tags
// per resource, the fleet request carries its owners' tags too: a scale-in
// of forty nodes with a slow AWX hits the limit, and the instances past it
// lose their terminate hooks (the record cannot be written, so the hook is
// "not run"); the plugin's own tags (last event, ledger of replacement
// units) fail to write for as long.
func TestR9TerminateHooksOfAMassScaleInAllRun(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 45})
	w := r9Wrap(r)
	w.tagLimit = 50
	owners := map[string]string{}
	for i := range 12 {
		owners[fmt.Sprintf("org:tag%02d", i)] = "x" // Name, team, cost centre, environment, ...
	}
	require.NoError(t, r.plugin.fleet.Tag(context.Background(), []string{r.fleetID}, owners))
	dir := t.TempDir()
	release := filepath.Join(dir, "awx-answers")
	out := filepath.Join(dir, "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'while [ ! -e "+release+" ]; do sleep 0.05; done; echo \"$SPOTFLEET_INSTANCE_ID\" >> "+out+"'")
	require.EqualValues(t, 45, r.status(t))
	require.NoError(t, r.plugin.Scale(action(5), r.config))
	require.Len(t, r.ec2.Running(r.fleetID), 5)
	require.NoError(t, os.WriteFile(release, nil, 0o600))
	r.plugin.pipelines.Wait()
	require.Len(t, lines(t, out), 40, "terminate hooks were lost: the fleet request ran out of tags")
}

// --- 13. A hook-failed tag cut in the middle of a character -----------------

// truncateTag cuts at 253 bytes, which may split a multi-byte character
// (ansible output, localized error messages): the value is not valid UTF-8
// and EC2 refuses the CreateTags, so the failure is not recorded.
func TestR9ATruncatedTagIsValidUTF8(t *testing.T) {
	v := truncateTag("terminate join: " + strings.Repeat("é", 200))
	require.LessOrEqual(t, len(v), 256)
	require.True(t, utf8.ValidString(v), "the truncated tag value is not valid UTF-8: %q", v[len(v)-8:])
}

// --- 14. Terminate hooks recorded before a restart and a dry-run ------------

// resumeFarewells runs only at the first observation of a fleet by a
// process, and not at all when that observation is in dry-run. An operator
// who restarts the agent with the policy in dry-run (a usual precaution
// during an incident) and turns dry-run off later (a policy change, no
// restart) never gets the terminate hooks recorded by the earlier process
// resumed: the hosts stay in the AWX inventory, and their records stay on
// the fleet request, using up its 50 tags.
func TestR9TerminateHooksRecordedBeforeARestartResumeAfterADryRun(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 2})
	out := filepath.Join(t.TempDir(), "forgot")
	r.config = r.with("terminate_hooks", "forget", "hook_forget_type", "exec",
		"hook_forget_command", "/bin/sh -c 'echo \"$SPOTFLEET_INSTANCE_ID\" >> "+out+"'")
	h := hooks.Instance{ID: "i-gone", Type: "c5.large", PrivateIP: "10.1.2.3", NodeID: "node-x"}
	require.NoError(t, r.plugin.fleet.Tag(context.Background(), []string{r.fleetID}, map[string]string{farewellTagPrefix + "i-gone": encodeFarewell(h, hooks.Record{})}))

	dry := r.with(configKeyDryRun, "true")
	_, err := r.plugin.Status(dry)
	require.NoError(t, err)
	r.plugin.pipelines.Wait()
	require.Empty(t, lines(t, out), "dry-run runs nothing")

	for range 3 { // dry-run off again
		require.EqualValues(t, 2, r.status(t))
		r.plugin.pipelines.Wait()
	}
	require.Equal(t, []string{"i-gone"}, lines(t, out), "the terminate hooks recorded by the earlier process never resumed")
}

// --- 15. A broken instance is terminated twice -------------------------------

// A node stuck initializing past node_join_timeout is "not joined", and a
// scale-out terminates it at once (replaceBroken). Its launch pipeline is
// not told (no stopProvisioning, no in-flight mark): the hooks go on
// running against the terminated instance (an AWX playbook against a host
// that is gone, for up to the hook's timeout), then fail, and removeRefused
// terminates the instance a second time (on moto, the local cloud's EC2,
// that decrements the fulfilled capacity twice). A scale-in that chooses
// it (never-joined instances go first) does not hit this, since it stops
// the pipeline.
func TestR9ABrokenInstanceWithARunningPipelineIsTerminatedOnce(t *testing.T) {
	r := newRig(t, ec2fake.Fleet{TargetCapacity: 3})
	stuck := sortedRunning(r)[2]
	node := r.gate(t, stuck)
	r.nomad.update(node, func(n *api.Node) { n.Status = api.NodeStatusInit })
	r.config = r.with(configKeyJoinTimeout, "1s", "launch_hooks", "join", "hook_join_type", "nomad",
		"hook_join_meta", "role=web", "hook_join_timeout", "500ms")
	r.now = r.now.Add(time.Minute) // past node_join_timeout
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.Contains(t, st.Meta[metaNotJoined], stuck)

	fs := r.plugin.state(r.fleetID)
	_, err = r.plugin.provisionFleet(context.Background(), context.Background(), fs.config(), fs)
	require.NoError(t, err) // the nomad hook now waits for the node to be ready
	_ = r.plugin.Scale(action(3), r.config)
	r.plugin.pipelines.Wait()

	n := 0
	for _, c := range r.ec2.Calls("TerminateInstances") {
		in := c.Input.(*ec2.TerminateInstancesInput)
		if !aws.ToBool(in.DryRun) && contains(in.InstanceIds, stuck) {
			n++
		}
	}
	require.Equal(t, 1, n, "the broken instance was terminated %d times", n)
}

// --- 16. A node that can never be admitted freezes scale-out ----------------

// Admission has no deadline. When Nomad refuses the dynamic metadata for
// good (the agent's Nomad token lacks node:write, an ACL change, a client
// that never reports it back), the pipeline logs "retried at the next
// scan" every two seconds forever and the node stays PhaseAdmitting, which
// counts as serving (capacity that is coming). A scale-out answers "target
// capacity already covers ... waiting for them" for as long: the pool never
// gets the node it asked for. Instances that never join have
// node_join_timeout; a node whose hooks ended but that is never admitted
// has nothing.
func TestR9ANodeThatCanNeverBeAdmittedDoesNotFreezeScaleOut(t *testing.T) {
	// Resolution: a refusal for lack of rights (401/403) is a
	// configuration error: every replacement would meet it too, so the
	// plugin neither churns instances nor adds more that cannot be
	// admitted; it reports it (TestR9ANodeRefusedAdmissionForLackOfRightsIsReported).
	// Any other reason (the client never reports the meta back) ends after
	// node_join_timeout with the failure policy: the instance is replaced.
	r, gated, _ := hookRig(t, configKeyJoinTimeout, "10m")
	r.plugin.admitWait = 50 * time.Millisecond
	r.nomad.metaLag = 1 << 30
	require.EqualValues(t, 2, r.status(t))
	for range 24 { // a day of scans
		r.now = r.now.Add(time.Hour)
		r.scan(t)
	}
	if !contains(r.ec2.Running(r.fleetID), gated) {
		return // given up and replaced: fine
	}
	require.EqualValues(t, 2, r.status(t))
	err := r.plugin.Scale(action(3), r.config)
	require.NoError(t, err, "a node refused admission for a day still counts as capacity that is coming: scale-out is frozen")
}

func TestR9ANodeRefusedAdmissionForLackOfRightsIsReported(t *testing.T) {
	r, gated, _ := hookRig(t)
	r.plugin.admitWait = 50 * time.Millisecond
	denied := make([]error, 200)
	for i := range denied {
		denied[i] = nomadError{code: 403, msg: "Permission denied"}
	}
	r.nomad.failNext("ApplyMeta", denied...)
	require.EqualValues(t, 2, r.status(t))
	for range 24 {
		r.now = r.now.Add(time.Hour)
		r.scan(t)
	}
	require.Contains(t, r.ec2.Running(r.fleetID), gated, "a configuration error churns no instance")
	require.Less(t, r.nomad.callCount("ApplyMeta"), 200/4, "retried with a growing pause, not in a loop")
	st, err := r.plugin.Status(r.config)
	require.NoError(t, err)
	require.Contains(t, st.Meta[metaHookFailed], "node:write", "the status says what to fix")
}
