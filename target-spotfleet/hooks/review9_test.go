package hooks

// Ninth review: the hook pipeline. Every test in this file fails on the
// reviewed code; each one shows a defect that would hurt a production fleet.

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// --- A. The callback job of an earlier instance admits a new one ------------

// runCallback accepts any successful callback job of the template for the
// host created up to 30 minutes (callbackLookback) before the step started.
// The host is the private IP by default, and EC2 hands a released private
// address to the next instance of the subnet quickly (spot fleets churn
// instances in the same few subnets). A new instance that got the address of
// one that was provisioned 10 minutes ago and then reclaimed finds that
// instance's successful job and is admitted at once, although its own
// provisioning callback never ran (its user-data failed, or it has not
// called back yet): an unconfigured node takes work. The instance's launch
// time bounds which jobs can be its own.
func TestR9ACallbackJobOfAnEarlierInstanceAtTheSameAddressDoesNotAdmit(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(8, "enroll")
	// The previous instance at 10.0.0.5, launched 25 minutes ago, called
	// back and was configured 10 minutes ago; it was reclaimed since.
	f.addJob(8, "10.0.0.5", "callback", time.Now().UTC().Add(-10*time.Minute), jobSuccessful)
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)
	cfg := callbackPolicy()
	cfg["hook_enroll_timeout"] = "300ms"

	// The new instance at the same address just booted; it never calls back.
	out := r.Launch(context.Background(), mustPolicy(t, cfg, agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK, "the new instance was admitted on the callback job (%d) of the instance that had its address before",
		out.Record.Steps["enroll"].JobID)
}

// --- B. A limit that is not one host runs the job against many --------------

// ParsePolicy refuses an empty limit ("an empty limit would run the job
// against the whole inventory") but accepts any other host pattern: "all",
// "*", a group name, or a union that adds them ("{{private_ip}},all",
// "{{private_ip}}:webservers"). Every new instance then runs the playbook
// against the whole inventory (or group): the provisioning playbook,
// typically one that restarts services, runs on every production host at
// each scale-out. A limit should name the instance: contain an expression
// about it and no host-pattern operator.
func TestR9ALimitThatIsNotOneHostIsRefused(t *testing.T) {
	f := newFakeAWX(t)
	agent, _ := agentFor(t, f)
	for _, limit := range []string{"all", "*", "webservers", "{{private_ip}},all", "{{private_ip}}:webservers", "!{{private_ip}}"} {
		t.Run(limit, func(t *testing.T) {
			_, err := ParsePolicy(awxPolicy("7", "hook_configure_limit", limit), agent)
			require.Error(t, err, "limit %q is accepted: the job would run against more than the instance", limit)
		})
	}
}

// --- C. A rendered limit that is a host pattern ------------------------------

// The limit is rendered at run time and only an empty result is refused.
// {{node.meta.<key>}} comes from the node's client config (the launch
// template's user-data, which whoever can edit the template controls, or a
// typo there): a value such as "all" or "web01,all" is sent to AWX as is,
// and the job runs against the whole inventory.
func TestR9ARenderedLimitMustNameOneHost(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("7", "hook_configure_limit", "{{node.meta.awx_host}}"), agent)
	r, _ := newTestRunner(t, agent)
	in := testInstance()
	in.NodeMeta = map[string]string{"awx_host": "ip-10-0-0-5,all"}

	out := r.Launch(context.Background(), spec.Launch, in, Record{}, (&memSaver{}).save)

	require.False(t, out.OK, "a limit rendered from node meta to a host pattern was sent to AWX and the job ran")
	launches := f.callsTo(`launch/$`)
	require.Empty(t, launches, "a job was launched with limit %v", func() any {
		if len(launches) > 0 {
			return launches[0].Body["limit"]
		}
		return nil
	}())
}

// --- D. A resumed awx hook launches its job again under clock skew ----------

// A restart after the launch but before the job id was saved resumes by
// looking for the job of the template and limit created since the step's
// start minus resumeSlack (5 s). The step's time is the plugin host's clock,
// the job's "created" AWX's: with AWX's clock 10 s behind (a VM whose NTP
// broke, a container host drifting), the job is not found and the playbook
// is launched a second time against the new instance. The job carries the
// instance id in its extra_vars: that, not the clocks, says which job is
// the instance's.
func TestR9AResumedAWXHookFindsItsJobDespiteClockSkew(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("7"), agent)
	r, _ := newTestRunner(t, agent)
	skew := 10 * time.Second
	r.Now = func() time.Time { return time.Now().Add(skew) } // AWX's clock is behind the plugin's

	// The interrupted run saved its step, launched the job (AWX stamped it
	// with its own clock) and stopped before saving the job id.
	startedAt := r.now().UTC().Truncate(time.Second)
	f.addJob(7, "10.0.0.5", "manual", time.Now().UTC(), "running", jobSuccessful)
	rec := Record{Steps: map[string]Step{"configure": {State: StateStarted, At: startedAt}}}

	out := r.Launch(context.Background(), spec.Launch, testInstance(), rec, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	require.Empty(t, f.callsTo(`launch/$`), "the resumed hook launched the playbook a second time")
}
