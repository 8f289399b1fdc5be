//go:build e2e

package e2e

// The operator's samples run as they are: agent-config/agent.hcl is the real
// agent's configuration file and agent-config/policies/spot-pool.hcl its
// cluster policy, hooks enabled, against an AWX stand-in that runs the
// sample playbooks with the real ansible-playbook and a fleet of gated
// nodes. Only what must differ on the local cloud is changed, by the named
// substitutions below (each must match exactly once, so a changed sample
// fails loudly here), or by the agent's command-line flags, which it merges
// over its file (plugin_dir, the Nomad address, the policy dir, the HTTP
// port, the log level and the policy defaults: see
// localcloud.StartAutoscalerWithConfig).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

const (
	// sampleGateKey is the admission gate's meta key of the samples.
	sampleGateKey = "spotfleet_admission"
	// sampleEvalInterval is the evaluation interval the tests give the
	// sample policy and, as the agent's default, the sample job.
	sampleEvalInterval = 2 * time.Second
	// sampleCooldown is the agent's default cooldown in the tests (the
	// sample job's scaling block sets none).
	sampleCooldown = 10 * time.Second
)

// substitution replaces one exact string of a sample; why says why the
// local cloud needs it.
type substitution struct{ old, repl, why string }

// substitute applies subs to a sample's text. Each old string must occur
// exactly once: a sample that no longer holds it fails the test, naming it,
// rather than running with the sample's value.
func substitute(t *testing.T, rel, text string, subs []substitution) string {
	t.Helper()
	for _, s := range subs {
		if n := strings.Count(text, s.old); n != 1 {
			t.Fatalf("sample %s holds %q %d times, want exactly once (substituted locally: %s); update the test with the sample",
				rel, s.old, n, s.why)
		}
		text = strings.Replace(text, s.old, s.repl, 1)
	}
	return text
}

// sampleSetting returns the quoted value of `key = "..."` in a sample, and
// fails the test unless the key is set exactly once.
func sampleSetting(t *testing.T, rel, text, key string) string {
	t.Helper()
	ms := regexp.MustCompile(`(?m)^\s*`+regexp.QuoteMeta(key)+`\s*=\s*"([^"]*)"`).FindAllStringSubmatch(text, -1)
	if len(ms) != 1 {
		t.Fatalf("sample %s sets %s %d times, want exactly once", rel, key, len(ms))
	}
	return ms[0][1]
}

// sampleRig is the local cloud running the samples: an AWX stand-in with
// the job templates the sample policy names, a maintain fleet whose nodes
// register gated, and the real agent on the sample agent.hcl and policy.
type sampleRig struct {
	t       *testing.T
	ctx     context.Context
	cloud   *localcloud.Cloud
	awx     *localcloud.AWX
	nc      *api.Client
	agent   *localcloud.Autoscaler
	fleetID string
	// configure and forget are the sample's job template names.
	configure, forget string
	begin             time.Time
	token, tokenFile  string
}

// startSampleRig starts the rig with a fleet of one gated node and the
// agent; before the fleet exists, register is called with the Nomad client
// (to register the pool's jobs, which no node may take yet).
func startSampleRig(ctx context.Context, t *testing.T, register func(nc *api.Client)) *sampleRig {
	t.Helper()
	r := &sampleRig{t: t, ctx: ctx, begin: time.Now()}
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const policyRel, agentRel = "policies/spot-pool.hcl", "agent.hcl"
	policySrc := readSample(t, policyRel)
	r.configure = sampleSetting(t, policyRel, policySrc, "hook_configure_job_template")
	r.forget = sampleSetting(t, policyRel, policySrc, "hook_forget_job_template")

	dir := t.TempDir()
	r.token = newHookToken()
	playbooks := filepath.Join(root, "agent-config", "playbooks")
	// The stand-in closes after the cloud (cleanups run last-in first-out).
	r.awx, err = localcloud.StartAWX(ctx, localcloud.AWXConfig{
		Token: r.token,
		// Both prompt for Limit and Variables on launch, as the sample
		// policy's comments ask of the operator's templates.
		Templates: []localcloud.AWXTemplate{
			{ID: 31, Name: r.configure, Playbook: filepath.Join(playbooks, "monitoring.yml"), AskLimitOnLaunch: true, AskVariablesOnLaunch: true},
			{ID: 32, Name: r.forget, Playbook: filepath.Join(playbooks, "forget.yml"), AskLimitOnLaunch: true, AskVariablesOnLaunch: true},
		},
		WorkDir:     filepath.Join(dir, "awx"),
		RunPlaybook: true,
		StepDelay:   20 * time.Millisecond,
		Logf:        t.Logf,
	})
	if err != nil {
		t.Fatalf("starting the AWX stand-in: %v", err)
	}
	t.Cleanup(func() {
		if err := r.awx.Close(); err != nil {
			t.Errorf("stopping the AWX stand-in: %v", err)
		}
	})

	// Every node registers gated, as the sample user-data makes it.
	r.cloud = startCloud(t, localcloud.Config{
		Client:      localcloud.ClientOptions{Meta: map[string]string{sampleGateKey: "pending"}},
		RefillDelay: 2 * time.Second,
	})
	if r.nc, err = r.cloud.NomadClient(); err != nil {
		t.Fatal(err)
	}
	if register != nil {
		register(r.nc)
	}
	if r.fleetID, err = r.cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 1}); err != nil {
		t.Fatalf("creating the fleet: %v", err)
	}

	r.tokenFile = filepath.Join(dir, "awx-token")
	if err := os.WriteFile(r.tokenFile, []byte(r.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agentHCL := substitute(t, agentRel, readSample(t, agentRel), []substitution{
		{`aws_region = "eu-west-1"`, `aws_region = ` + strconv.Quote(localcloud.DefaultRegion), "moto's region (endpoint and credentials come from the agent's AWS_* environment)"},
		{`"https://sqs.eu-west-1.amazonaws.com/123456789012/nomad-spot-interruptions"`, strconv.Quote(r.cloud.QueueURL()), "the local cloud's queue"},
		{`"https://awx.example.com"`, strconv.Quote(r.awx.URL()), "the AWX stand-in"},
		{`"/etc/nomad-autoscaler/awx-token"`, strconv.Quote(r.tokenFile), "the stand-in's token"},
		{`sample_interval    = "10s"`, `sample_interval    = "1s"`, "e2e time settings are seconds"},
		{`node_warmup        = "60s"`, `node_warmup        = "1s"`, "e2e time settings are seconds"},
	})
	policy := substitute(t, policyRel, policySrc, []substitution{
		{`"sfr-0123456789abcdef0"`, strconv.Quote(r.fleetID), "the local cloud's fleet"},
		{`"unique.platform.aws.instance-id"`, `"meta.ec2_instance_id"`, "the local cloud has no AWS fingerprint; it puts the id in client meta"},
		// Every node of the local cloud shares one host, so host CPU says
		// nothing about the pool (and moves with every other build).
		{`query        = "host_cpu node_class=spot"`, `query        = "workload_cpu node_class=spot"`, "the nodes share one host"},
		{`evaluation_interval  = "10s"`, `evaluation_interval  = "` + sampleEvalInterval.String() + `"`, "e2e time settings are seconds"},
		{`node_warmup                   = "70s"`, `node_warmup                   = "2s"`, "apm-node's node_warmup plus sample_interval, as above"},
	})
	r.agent, err = r.cloud.StartAutoscalerWithConfig(ctx, localcloud.AgentConfigSpec{
		Config:             agentHCL,
		Policies:           map[string]string{"spot-pool.hcl": policy},
		EvaluationInterval: sampleEvalInterval,
		Cooldown:           sampleCooldown,
	})
	if err != nil {
		if r.agent != nil {
			t.Logf("agent log:\n%s", r.agent.Logs())
		}
		t.Fatalf("starting the agent on the sample agent.hcl and policy: %v", err)
	}
	t.Cleanup(r.keepLogs) // runs before the cloud closes
	return r
}

// keepLogs copies the agent's log and the AWX jobs next to the hook tests'.
func (r *sampleRig) keepLogs() {
	if err := os.MkdirAll(hookLogDir, 0o755); err != nil {
		r.t.Logf("keeping logs: %v", err)
		return
	}
	base := filepath.Join(hookLogDir, r.t.Name())
	var jobs strings.Builder
	for _, j := range r.awx.Jobs() {
		jobs.WriteString(j.Name + " " + strconv.Itoa(j.ID) + " " + j.Status + " limit=" + j.Limit + "\n" + j.Stdout + "\n")
	}
	for path, content := range map[string]string{base + "-agent-1.log": r.agent.Logs(), base + "-awx.log": jobs.String()} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			r.t.Logf("keeping logs: %v", err)
		}
	}
	r.t.Logf("agent log and AWX jobs kept in %s-*.log", base)
}

// waitAdmitted waits until the fleet has one running instance not in gone
// (the instances that left) with a Nomad node that the plugin admitted, and
// checks how it got there: one configure job of the sample template for it,
// run by ansible-playbook against its private IP, which wrote the
// monitoring file; one configure job in all for every instance seen; the
// label hook's meta. It returns the instance and its node.
func (r *sampleRig) waitAdmitted(gone []string, onPoll func(node *api.Node)) (localcloud.Instance, *api.Node) {
	t := r.t
	t.Helper()
	var inst localcloud.Instance
	var node *api.Node
	waitFor(t, 90*time.Second, "the fleet's node is admitted through its launch hooks", func() (bool, string) {
		insts, err := r.cloud.RunningFleetInstances(r.ctx, r.fleetID)
		var fresh []localcloud.Instance
		for _, in := range insts {
			if !slices.Contains(gone, in.ID) {
				fresh = append(fresh, in)
			}
		}
		if err != nil || len(fresh) != 1 {
			return false, fmt.Sprintf("running instances %d, not gone %d, %v", len(insts), len(fresh), err)
		}
		inst = fresh[0]
		n, err := r.cloud.NodeByInstance(r.ctx, inst.ID)
		if err != nil || n == nil {
			return false, "no node yet for " + inst.ID
		}
		node = n
		if onPoll != nil {
			onPoll(n)
		}
		return n.Meta[sampleGateKey] == "admitted", inst.ID + ": " + sampleGateKey + "=" + n.Meta[sampleGateKey]
	})

	var jobs []localcloud.AWXJob
	all := 0
	for _, j := range r.awx.Jobs() {
		if j.Name != r.configure {
			continue
		}
		all++
		if fmt.Sprint(j.ExtraVars["instance_id"]) == inst.ID {
			jobs = append(jobs, j)
		}
	}
	if len(jobs) != 1 || all != len(gone)+1 {
		t.Fatalf("%d jobs of template %q for instance %s, %d in all; want exactly one for it and one for each of the %d before it",
			len(jobs), r.configure, inst.ID, all, len(gone))
	}
	j := jobs[0]
	if j.Status != localcloud.AWXSuccessful || !strings.Contains(j.Stdout, "PLAY RECAP") {
		t.Errorf("configure job %d ended %s without a playbook run's recap: %s %s", j.ID, j.Status, j.Explanation, j.Stdout)
	}
	if j.Limit != inst.PrivateIP || inst.PrivateIP == "" {
		t.Errorf("configure job %d has limit %q, want the instance's private IP %q (hook_configure_limit)", j.ID, j.Limit, inst.PrivateIP)
	}
	if got, want := j.ExtraVars["node_dir"], r.cloud.NodeDir(inst.ID); got != want {
		t.Errorf("configure job %d has extra var node_dir %v, want the node's meta.node_dir %s (hook_configure_extra_vars)", j.ID, got, want)
	}
	if b, err := os.ReadFile(filepath.Join(r.cloud.NodeDir(inst.ID), hookMonitorFile)); err != nil || strings.TrimSpace(string(b)) != inst.ID {
		t.Errorf("monitoring.yml did not write %s into the node's dir: %q, %v", hookMonitorFile, b, err)
	}
	if got := node.Meta["awx_job_id"]; got != strconv.Itoa(j.ID) {
		t.Errorf("the label hook set meta.awx_job_id = %q, want the configure job's id %d", got, j.ID)
	}
	return inst, node
}

// sampleNotice is the interruption notice of the sample test: the forget
// job runs at the warning, the replacement only after the notice.
const sampleNotice = 3 * time.Second

// checkForgotten interrupts the fleet's one instance and checks the sample's
// terminate hook: exactly one job of the forget template, run by
// ansible-playbook on forget.yml to its recap, for that instance, limited to
// its private IP (the hook's default limit) with the instance's extra
// variables, which the playbook printed back; then the maintain fleet's
// replacement goes through the launch hooks and is admitted as the first
// instance was, and gets no forget job.
func (r *sampleRig) checkForgotten(inst localcloud.Instance, node *api.Node) {
	t := r.t
	t.Helper()
	forgetJobs := func() []localcloud.AWXJob {
		var out []localcloud.AWXJob
		for _, j := range r.awx.Jobs() {
			if j.Name == r.forget {
				out = append(out, j)
			}
		}
		return out
	}
	if jobs := forgetJobs(); len(jobs) != 0 {
		t.Fatalf("%d jobs of template %q ran before any instance left: %+v", len(jobs), r.forget, jobs)
	}
	sent := time.Now()
	if _, err := r.cloud.InterruptWith(r.ctx, inst.ID, localcloud.InterruptSpec{Notice: sampleNotice}); err != nil {
		t.Fatalf("interrupting %s: %v", inst.ID, err)
	}
	waitFor(t, 30*time.Second, "the interrupted instance's forget job ends", func() (bool, string) {
		jobs := forgetJobs()
		return len(jobs) > 0 && localcloud.AWXFinal(jobs[0].Status), fmt.Sprintf("%d forget jobs", len(jobs))
	})
	repl, _ := r.waitAdmitted([]string{inst.ID}, nil)
	admitted := time.Since(sent)

	jobs := forgetJobs()
	if len(jobs) != 1 {
		t.Fatalf("%d jobs of template %q, want exactly one (for %s): %+v", len(jobs), r.forget, inst.ID, jobs)
	}
	j := jobs[0]
	if j.Status != localcloud.AWXSuccessful || !strings.Contains(j.Stdout, "PLAY RECAP") {
		t.Errorf("forget job %d ended %s without a playbook run's recap: %s %s", j.ID, j.Status, j.Explanation, j.Stdout)
	}
	if j.Limit != inst.PrivateIP || inst.PrivateIP == "" {
		t.Errorf("forget job %d has limit %q, want the instance's private IP %q (the hook's default limit)", j.ID, j.Limit, inst.PrivateIP)
	}
	for k, want := range map[string]string{
		"instance_id": inst.ID, "private_ip": inst.PrivateIP, "spot_fleet_request_id": r.fleetID,
		"instance_type": inst.Type, "availability_zone": inst.AvailabilityZone, "private_dns_name": inst.PrivateDNSName,
		"nomad_node_id": node.ID, "nomad_node_name": node.Name,
	} {
		if got := fmt.Sprint(j.ExtraVars[k]); got != want || want == "" {
			t.Errorf("forget job %d: extra var %s = %q, want %q", j.ID, k, got, want)
		}
	}
	// forget.yml's debug task prints what it got; Ansible may fold the
	// message, so compare it with the whitespace collapsed.
	said := strings.Join(strings.Fields(j.Stdout), " ")
	if want := fmt.Sprintf("would remove host %s (instance %s, node %s, fleet %s)", inst.PrivateIP, inst.ID, node.Name, r.fleetID); !strings.Contains(said, want) {
		t.Errorf("forget.yml did not print %q: %s", want, j.Stdout)
	}
	logs := r.agent.Logs()
	for _, what := range []string{"instance leaves: running its terminate hooks", "terminate hooks done"} {
		if n := countEntries(logs, what, "instance_id="+inst.ID); n != 1 {
			t.Errorf("%d agent log lines %q for %s, want 1", n, what, inst.ID)
		}
	}
	if hasEntry(logs, "terminate hook failed") {
		t.Errorf("the agent logged a failed terminate hook")
	}
	t.Logf("interrupted %s (notice %s): forget job %d created after %s, took %s; replacement %s admitted after %s",
		inst.ID, sampleNotice, j.ID, j.Created.Sub(sent).Round(time.Millisecond), j.Finished.Sub(j.Created).Round(time.Millisecond),
		repl.ID, admitted.Round(time.Millisecond))
}

// waitCounted waits until the target reports the fleet as the policy wants
// it with the pool idle: the one admitted node ready and counted (min = 1),
// target capacity 1, and the agent holding at 1.
func (r *sampleRig) waitCounted() {
	r.t.Helper()
	re := regexp.MustCompile(`(?m)^.*target-spotfleet: fleet status.*$`)
	waitFor(r.t, 30*time.Second, "the target counts the admitted node", func() (bool, string) {
		lines := re.FindAllString(r.agent.Logs(), -1)
		if len(lines) == 0 {
			return false, "no fleet status yet"
		}
		last := lines[len(lines)-1]
		return logField(last, "count") == "1" && logField(last, "ready_nodes") == "1" && logField(last, "target_capacity") == "1", last
	})
	target, running, err := fleetState(r.ctx, r.cloud, r.fleetID)
	if err != nil {
		r.t.Fatal(err)
	}
	if target != 1 || len(running) != 1 {
		r.t.Errorf("fleet at target %d with %d running, want 1 and 1 (the policy's min, the pool idle)", target, len(running))
	}
}

// checkConfigured checks the target's start-up line: the sample's
// interruption queue and AWX settings took effect (the queue and the AWX
// stand-in of the local cloud, the token from the file), and the token
// itself appears nowhere in the agent's log.
func (r *sampleRig) checkConfigured() {
	t := r.t
	t.Helper()
	logs := r.agent.Logs()
	line := ""
	for _, l := range parseAgentLog(logs) {
		if strings.Contains(l.text, "target-spotfleet: configured") {
			line = l.text
		}
	}
	for _, want := range []string{
		"queue_url=" + r.cloud.QueueURL(),
		"AWX " + r.awx.URL() + ", token from file " + r.tokenFile,
	} {
		if !strings.Contains(line, want) {
			t.Errorf("the target's start-up line lacks %q: %q", want, line)
		}
	}
	if strings.Contains(logs, r.token) {
		t.Errorf("the AWX token appears in the agent's log")
	}
}

// checkClusterHeld checks every evaluation of the cluster policy (the
// policy that is not the job's): strategy-cpu-target held the idle pool at
// the policy's min, 1 node, and nothing was scaled. Before the target first
// counts the admitted node (its node_warmup), an evaluation may see count 0
// with apm-node's first figures; it may only ask for the min then.
func (r *sampleRig) checkClusterHeld(jobPolicyID string) {
	t := r.t
	t.Helper()
	n, counted := 0, false
	for _, l := range parseAgentLog(r.agent.Logs()) {
		if !strings.Contains(l.text, "calculating scaling target") || strings.Contains(l.text, "policy_id="+jobPolicyID) {
			continue
		}
		n++
		to := askedCount.FindStringSubmatch(l.text)
		held := to != nil && to[1] == "1" && strings.Contains(l.text, " from=1 ") && strings.Contains(l.text, `reason="hold 1: `)
		counted = counted || held
		if !held && (counted || to == nil || to[1] != "1") {
			t.Errorf("an evaluation of the cluster policy did not hold the idle pool at 1 node: %s", compactLine(l.text))
		}
	}
	if n < 3 {
		t.Errorf("the cluster policy was evaluated %d times once its node counted, want 3 or more", n)
	}
	target, running, err := fleetState(r.ctx, r.cloud, r.fleetID)
	if err != nil {
		t.Fatal(err)
	}
	if target != 1 || len(running) != 1 {
		t.Errorf("the fleet ended at target %d with %d running, want 1 and 1", target, len(running))
	}
}
