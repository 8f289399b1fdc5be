//go:build e2e

package e2e

// End-to-end tests of target-spotfleet's hook pipeline: a new instance's
// node registers gated (client meta spotfleet_admission = "pending"), the
// plugin runs its launch hooks (an AWX job template, played by the local
// cloud's AWX stand-in running the real ansible-playbook) and only then
// admits the node through dynamic node metadata; a failed hook applies its
// failure policy; an instance that leaves gets its terminate hooks. Every
// test runs the real autoscaler agent v0.5.0 with the plugins from plugins/.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// Sizes and names of the hook tests. A node has 1000 MHz; a load task
// reserves 240 MHz (four fill a node to 96%), the check task on every
// admitted node 20 MHz (2%).
const (
	hookNodeCPU  = 1000
	hookTaskCPU  = 240
	hookCheckCPU = 20

	hookGateKey      = "spotfleet_admission"
	hookConfigureID  = 21
	hookConfigure    = "configure"
	hookForgetID     = 22
	hookForget       = "forget"
	hookLoadJob      = "e2e-hooks-load"
	hookCheckJob     = "e2e-hooks-check"
	hookCheckTask    = "check"
	hookMonitorFile  = "monitoring-installed"
	hookTokenEnvName = "E2E_AWX_TOKEN"

	// hookEvalInterval is the policy's evaluation interval.
	hookEvalInterval = 2 * time.Second
	// hookPoll is how often the observer samples nodes and allocations.
	hookPoll = 200 * time.Millisecond
)

// hookLogDir keeps each hook test's agent logs, local cloud timeline and
// AWX jobs for the report.
const hookLogDir = "/tmp/e2e-hooks-logs"

// hookOptions shapes a hook rig.
type hookOptions struct {
	size     int     // the fleet's first target capacity
	min, max int     // the policy's bounds
	target   float64 // target-value's target, in % of allocated CPU
	load     int     // first count of the load job
	// gated makes the configure template run the test's gate playbook
	// (fail flag, release file) before monitoring.yml.
	gated     bool
	failFirst bool // the fail flag exists at the start (the release file always does)
	onFailure string
	forget    bool // terminate hook "forget" (awx)
	queue     bool // interruption handling on
	// agentToken is what the agent sends to AWX; empty: the right token.
	agentToken string
	// tokenSource is how the agent gets its token: "env" (awx_token_env,
	// the default) or "file" (awx_token_file).
	tokenSource string
	refillDelay time.Duration
	targetExtra []string
	// warmup is apm-node's node_warmup (default 0s).
	warmup time.Duration
	// callback makes the configure hook an awx_callback one: the configure
	// template gets a host_config_key, and every new fleet instance calls
	// its provisioning callback once its node is ready (the local cloud's
	// BootCallback, host = the instance's private IP), with the extra vars
	// callbackVars returns (nil: instance_id and the node's node_dir).
	callback     bool
	callbackVars func(r *hookRig, instanceID string) map[string]any
	// hookTimeout is hook_configure_timeout (default 3m).
	hookTimeout time.Duration
}

// hookAPMHCL declares apm-node with 1 s samples and the given warm-up.
func hookAPMHCL(warmup time.Duration) string {
	return fmt.Sprintf(`
apm "apm-node" {
  driver = "apm-node"
  config = {
    sample_interval  = "1s"
    sample_retention = "2m"
    node_warmup      = %q
  }
}
`, warmup.String())
}

// hookRig is a local cloud with an AWX stand-in, one maintain fleet of
// gated nodes, a load job and a check job that only admitted nodes take, and
// the real agent with the configure hook (and optionally forget).
type hookRig struct {
	t       *testing.T
	ctx     context.Context
	began   time.Time
	dir     string
	o       hookOptions
	awx     *localcloud.AWX
	cloud   *localcloud.Cloud
	nc      *api.Client
	fleetID string
	spec    localcloud.AutoscalerSpec
	agents  []*localcloud.Autoscaler
	obs     *hookObserver
	token   string // what AWX accepts
	hostKey string // the configure template's host_config_key (callback rigs)

	failFlag, release, forgetDir string
}

func newHookToken() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "e2e-awx-" + hex.EncodeToString(b)
}

// hookGatePlaybook is run by the configure template of gated rigs: it
// fails while the fail flag exists, waits for the release file, then plays
// the product's monitoring.yml.
func hookGatePlaybook(failFlag, release, monitoring string) string {
	return fmt.Sprintf(`---
- name: Gate of the e2e hook tests
  hosts: all
  gather_facts: false
  tasks:
    - name: Look for the fail flag
      ansible.builtin.stat:
        path: %[1]q
      register: fail_flag
    - name: Refuse on purpose while the flag exists
      ansible.builtin.fail:
        msg: "e2e: configuration of {{ instance_id }} refused on purpose"
      when: fail_flag.stat.exists
    - name: Wait for the release file
      ansible.builtin.wait_for:
        path: %[2]q
        timeout: 150
        sleep: 1

- name: The product's monitoring playbook
  ansible.builtin.import_playbook: %[3]q
`, failFlag, release, monitoring)
}

// hookForgetPlaybook is run by the forget template: it checks the fixed
// extra vars and writes one file per instance into dir.
func hookForgetPlaybook(dir string) string {
	return fmt.Sprintf(`---
- name: Forget a node that leaves the fleet (e2e)
  hosts: all
  gather_facts: false
  tasks:
    - name: Check the extra variables
      ansible.builtin.assert:
        that:
          - instance_id is defined
          - instance_id | string | length > 0
          - private_ip is defined
        quiet: true
    - name: Record the farewell
      ansible.builtin.copy:
        dest: "%s/{{ instance_id }}"
        content: "{{ private_ip }} {{ nomad_node_id }}\n"
        mode: "0644"
`, dir)
}

// hookTargetHCL is the agent's target block with the AWX settings (and the
// interruption queue) added to its config map.
func (r *hookRig) hookTargetHCL(tokenFile string) (string, []string) {
	r.t.Helper()
	base := r.cloud.SpotfleetTargetHCL()
	const anchor = `aws_secret_access_key = "test"`
	if strings.Count(base, anchor) != 1 {
		r.t.Fatalf("cannot add the AWX settings: the target block has no single line %q:\n%s", anchor, base)
	}
	tok := r.o.agentToken
	if tok == "" {
		tok = r.token
	}
	var env []string
	extra := "\n    awx_url = " + strconv.Quote(r.awx.URL())
	switch r.o.tokenSource {
	case "file":
		if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
			r.t.Fatal(err)
		}
		extra += "\n    awx_token_file = " + strconv.Quote(tokenFile)
	default:
		extra += "\n    awx_token_env = " + strconv.Quote(hookTokenEnvName)
		env = append(env, hookTokenEnvName+"="+tok)
	}
	if r.o.queue {
		extra += "\n    interruption_queue_url = " + strconv.Quote(r.cloud.QueueURL())
	}
	return strings.Replace(base, anchor, anchor+extra, 1), env
}

// hookPolicy is the cluster policy of the rig: allocated CPU of the
// admitted pool nodes (apm-node leaves gated ones out) against target-value,
// and the target with the hooks.
func (r *hookRig) hookPolicy() string {
	onFailure := r.o.onFailure
	if onFailure == "" {
		onFailure = "terminate"
	}
	timeout := "3m"
	if r.o.hookTimeout > 0 {
		timeout = r.o.hookTimeout.String()
	}
	lines := []string{
		`launch_hooks                = "configure"`,
		`hook_configure_type         = "awx"`,
		`hook_configure_job_template = "configure"`,
		`hook_configure_extra_vars   = "node_dir={{node.meta.node_dir}}"`,
		fmt.Sprintf(`hook_configure_timeout      = %q`, timeout),
		fmt.Sprintf(`hook_configure_on_failure   = %q`, onFailure),
	}
	if r.o.callback {
		// The instance asks AWX itself; the hook only waits for that job
		// (limit: the default {{private_ip}}; an awx_callback hook has no
		// extra_vars, the instance sends them).
		lines = []string{
			`launch_hooks                = "configure"`,
			`hook_configure_type         = "awx_callback"`,
			`hook_configure_job_template = "configure"`,
			fmt.Sprintf(`hook_configure_timeout      = %q`, timeout),
			fmt.Sprintf(`hook_configure_on_failure   = %q`, onFailure),
		}
	}
	if r.o.forget {
		lines = append(lines,
			`terminate_hooks             = "forget"`,
			`hook_forget_type            = "awx"`,
			fmt.Sprintf(`hook_forget_job_template    = "%d"`, hookForgetID),
			`hook_forget_timeout         = "2m"`)
	}
	// The target leaves an admitted node out of its count for as long as
	// apm-node leaves it out of its figure (warm-up plus a sample).
	lines = append(lines, fmt.Sprintf(`node_warmup                 = %q`, (r.o.warmup+2*time.Second).String()))
	lines = append(lines, r.o.targetExtra...)
	return fmt.Sprintf(`
scaling "spot_pool" {
  enabled = true
  min     = %d
  max     = %d

  policy {
    cooldown            = "4s"
    evaluation_interval = %q

    check "allocated_cpu" {
      source       = "apm-node"
      query        = "allocated_cpu node_class=spot"
      query_window = "3s"

      strategy "target-value" {
        target = %g
      }
    }

    target "spotfleet" {
      spot_fleet_request_id  = %q
      node_class             = "spot"
      node_id_attribute      = "meta.ec2_instance_id"
      node_drain_deadline    = "15s"
      node_selector_strategy = "oldest_create_index"
      restart_cooldown       = "3s"
      launch_timeout         = "30s"
      admission_meta_key     = %q
      %s
    }
  }
}
`, r.o.min, r.o.max, hookEvalInterval.String(), r.o.target, r.fleetID, hookGateKey, strings.Join(lines, "\n      "))
}

// hookLoadJobSpec is the pool's load: count tasks of 240 MHz, only on
// admitted nodes, each checking the monitoring file before it sleeps.
func hookLoadJobSpec(count int) *api.Job {
	job := sleeperJob(hookLoadJob, localcloud.DefaultNodeClass, count, hookTaskCPU)
	job.Constrain(api.NewConstraint("${meta."+hookGateKey+"}", "=", "admitted"))
	job.Spreads = []*api.Spread{{Attribute: "${node.unique.id}", Weight: pointer(int8(100))}}
	task := job.TaskGroups[0].Tasks[0]
	task.Config["args"] = []string{"-c", `test -s "${meta.node_dir}/` + hookMonitorFile + `" || { echo "no monitoring on ${node.unique.name}" >&2; exit 3; }; exec sleep 86400`}
	return job
}

// hookCheckJobSpec is a system job of the pool: one task on every admitted
// node that prints the monitoring file the playbook wrote (and fails if it
// is missing), then sleeps.
func hookCheckJobSpec() *api.Job {
	job := api.NewSystemJob(hookCheckJob, hookCheckJob, "global", 50)
	job.Datacenters = []string{"dc1"}
	job.Constrain(api.NewConstraint("${node.class}", "=", localcloud.DefaultNodeClass))
	job.Constrain(api.NewConstraint("${meta."+hookGateKey+"}", "=", "admitted"))
	tg := api.NewTaskGroup("check", 1)
	tg.RestartPolicy = &api.RestartPolicy{Attempts: pointer(0), Mode: pointer("fail")}
	tg.EphemeralDisk = &api.EphemeralDisk{SizeMB: pointer(10)}
	task := api.NewTask(hookCheckTask, "raw_exec").
		SetConfig("command", "/bin/sh").
		SetConfig("args", []string{"-c", `cat "${meta.node_dir}/` + hookMonitorFile + `" || exit 3; exec sleep 86400`}).
		Require(&api.Resources{CPU: pointer(hookCheckCPU), MemoryMB: pointer(16)})
	task.KillTimeout = pointer(time.Second)
	task.LogConfig = &api.LogConfig{MaxFiles: pointer(1), MaxFileSizeMB: pointer(1)}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

// startHookRig starts the rig; the agent runs when it returns and has
// evaluated the policy once.
func startHookRig(ctx context.Context, t *testing.T, o hookOptions) *hookRig {
	t.Helper()
	r := &hookRig{t: t, ctx: ctx, began: time.Now(), dir: t.TempDir(), o: o, token: newHookToken()}
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	monitoring := filepath.Join(root, "agent-config", "playbooks", "monitoring.yml")
	r.failFlag = filepath.Join(r.dir, "fail-configure")
	r.release = filepath.Join(r.dir, "release-configure")
	r.forgetDir = filepath.Join(r.dir, "forgotten")
	if err := os.MkdirAll(r.forgetDir, 0o755); err != nil {
		t.Fatal(err)
	}
	configure := monitoring
	if o.gated {
		configure = filepath.Join(r.dir, "gate.yml")
		if err := os.WriteFile(configure, []byte(hookGatePlaybook(r.failFlag, r.release, monitoring)), 0o644); err != nil {
			t.Fatal(err)
		}
		if o.failFirst {
			r.touch(r.failFlag)
		}
		r.touch(r.release)
	}
	forget := filepath.Join(r.dir, "forget.yml")
	if err := os.WriteFile(forget, []byte(hookForgetPlaybook(r.forgetDir)), 0o644); err != nil {
		t.Fatal(err)
	}

	configureTmpl := localcloud.AWXTemplate{ID: hookConfigureID, Name: hookConfigure, Playbook: configure, AskLimitOnLaunch: true, AskVariablesOnLaunch: true}
	if o.callback {
		r.hostKey = "e2e-host-key-" + newHookToken()
		configureTmpl.HostConfigKey = r.hostKey
	}
	// The AWX stand-in closes after the cloud (cleanups run last-in first-out).
	r.awx, err = localcloud.StartAWX(ctx, localcloud.AWXConfig{
		Token: r.token,
		Templates: []localcloud.AWXTemplate{
			configureTmpl,
			{ID: hookForgetID, Name: hookForget, Playbook: forget, AskLimitOnLaunch: true, AskVariablesOnLaunch: true},
		},
		WorkDir:     filepath.Join(r.dir, "awx"),
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

	refill := o.refillDelay
	if refill == 0 {
		refill = 2 * time.Second
	}
	r.cloud = startCloud(t, localcloud.Config{
		Client:      localcloud.ClientOptions{CPUTotalCompute: hookNodeCPU, Meta: map[string]string{hookGateKey: "pending"}},
		RefillDelay: refill,
	})
	t.Cleanup(r.keepLogs) // runs before the cloud closes
	if r.nc, err = r.cloud.NomadClient(); err != nil {
		t.Fatal(err)
	}
	if o.callback {
		// Set before the fleet exists, so that every instance calls back
		// (Host nil: the instance's private IP from moto, as user-data's
		// `hostname -I` gives).
		vars := o.callbackVars
		if vars == nil {
			vars = func(r *hookRig, id string) map[string]any {
				return map[string]any{"instance_id": id, "node_dir": r.cloud.NodeDir(id)}
			}
		}
		if err := r.cloud.SetBootCallback(&localcloud.BootCallback{
			URL: r.awx.URL(), TemplateID: hookConfigureID, HostConfigKey: r.hostKey,
			ExtraVars: func(id string) map[string]any { return vars(r, id) },
		}); err != nil {
			t.Fatalf("setting the boot callback: %v", err)
		}
	}
	// The pool's jobs exist before any node: nothing may run anywhere until
	// a node is admitted.
	for _, job := range []*api.Job{hookLoadJobSpec(o.load), hookCheckJobSpec()} {
		if _, _, err := r.nc.Jobs().Register(job, nil); err != nil {
			t.Fatalf("registering job %s: %v", *job.ID, err)
		}
	}
	if r.fleetID, err = r.cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: int32(o.size)}); err != nil {
		t.Fatalf("creating the fleet: %v", err)
	}
	r.obs = startHookObserver(t, r.cloud, r.nc, r.fleetID)
	if _, err := r.cloud.WaitNodesReady(ctx, o.size); err != nil {
		t.Fatalf("waiting for %d nodes: %v", o.size, err)
	}
	r.waitSettled(30*time.Second, "the observer sees the fleet's first instances", func(s hookSnapshot) (bool, string) {
		return len(s.runningIDs()) == o.size, fmt.Sprintf("running %v", s.runningIDs())
	})

	targetHCL, env := r.hookTargetHCL(filepath.Join(r.dir, "awx-token"))
	r.spec = localcloud.AutoscalerSpec{
		ExtraHCL:           hookAPMHCL(o.warmup) + targetHCL,
		Policies:           map[string]string{"spot.hcl": r.hookPolicy()},
		Env:                env,
		EvaluationInterval: hookEvalInterval,
	}
	r.startAgent()
	return r
}

// startAgent starts an agent with the rig's spec and waits for the
// plugin's first fleet status.
func (r *hookRig) startAgent() *localcloud.Autoscaler {
	r.t.Helper()
	a, err := r.cloud.StartAutoscaler(r.ctx, r.spec)
	if a != nil {
		r.agents = append(r.agents, a)
	}
	if err != nil {
		r.t.Fatalf("starting the autoscaler agent: %v", err)
	}
	wctx, cancel := context.WithTimeout(r.ctx, time.Minute)
	defer cancel()
	if _, err := a.WaitLog(wctx, "fleet status"); err != nil {
		r.t.Fatalf("the agent's target never reported the fleet's status: %v", err)
	}
	return a
}

func (r *hookRig) agent() *localcloud.Autoscaler { return r.agents[len(r.agents)-1] }

// logs returns the output of every agent the rig started, in order.
func (r *hookRig) logs() string {
	var b strings.Builder
	for _, a := range r.agents {
		b.WriteString(a.Logs())
	}
	return b.String()
}

func (r *hookRig) touch(path string) {
	r.t.Helper()
	if err := os.WriteFile(path, []byte("e2e\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

func (r *hookRig) keepLogs() {
	if err := os.MkdirAll(hookLogDir, 0o755); err != nil {
		r.t.Logf("keeping logs: %v", err)
		return
	}
	base := filepath.Join(hookLogDir, r.t.Name())
	var events, jobs strings.Builder
	for _, e := range r.cloud.Events() {
		events.WriteString(e.String() + "\n")
	}
	for _, j := range r.awx.Jobs() {
		fmt.Fprintf(&jobs, "job %d %s %s limit=%q created=%s started=%s finished=%s vars=%v explanation=%q\n--- output:\n%s\n",
			j.ID, j.Name, j.Status, j.Limit, j.Created.Format("15:04:05.000"), j.Started.Format("15:04:05.000"),
			j.Finished.Format("15:04:05.000"), j.ExtraVars, j.Explanation, j.Stdout)
	}
	files := map[string]string{base + "-events.log": events.String(), base + "-awx.log": jobs.String()}
	for i, a := range r.agents {
		files[fmt.Sprintf("%s-agent-%d.log", base, i+1)] = a.Logs()
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			r.t.Logf("keeping logs: %v", err)
		}
	}
	r.t.Logf("agent logs, AWX jobs and local cloud events kept in %s-*.log", base)
}

// jobsFor returns the jobs of a template run for an instance (by their
// instance_id extra var), oldest first.
func (r *hookRig) jobsFor(template int, instanceID string) []localcloud.AWXJob {
	var out []localcloud.AWXJob
	for _, j := range r.awx.Jobs() {
		if j.TemplateID == template && fmt.Sprint(j.ExtraVars["instance_id"]) == instanceID {
			out = append(out, j)
		}
	}
	return out
}

// launchCalls counts the launches of a template the stand-in answered.
func (r *hookRig) launchCalls(template int) int {
	n := 0
	for _, c := range r.awx.Calls() {
		if c.Method == "POST" && c.Path == fmt.Sprintf("/api/v2/job_templates/%d/launch/", template) {
			n++
		}
	}
	return n
}

// waitSettled waits until cond holds for the observer's latest snapshot and
// returns that snapshot.
func (r *hookRig) waitSettled(timeout time.Duration, what string, cond func(s hookSnapshot) (bool, string)) hookSnapshot {
	r.t.Helper()
	var snap hookSnapshot
	waitFor(r.t, timeout, what, func() (bool, string) {
		snap = r.obs.snapshot()
		return cond(snap)
	})
	return snap
}

// instanceTags reads an instance's tags from EC2 (terminated ones too).
func (r *hookRig) instanceTags(id string) map[string]string {
	r.t.Helper()
	out, err := r.cloud.EC2().DescribeInstances(r.ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		r.t.Fatalf("describing %s: %v", id, err)
	}
	tags := map[string]string{}
	for _, res := range out.Reservations {
		for _, in := range res.Instances {
			for _, tg := range in.Tags {
				tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
			}
		}
	}
	return tags
}

// checkConfigureJobs checks that each instance got exactly one configure
// launch, against its private IP, with the right fixed extra vars and
// node_dir, and returns the jobs by instance.
func (r *hookRig) checkConfigureJobs(snap hookSnapshot, ids []string, wantStatus string) map[string]localcloud.AWXJob {
	t := r.t
	t.Helper()
	out := map[string]localcloud.AWXJob{}
	for _, id := range ids {
		jobs := r.jobsFor(hookConfigureID, id)
		if len(jobs) != 1 {
			t.Errorf("instance %s got %d configure jobs, want exactly 1: %v", id, len(jobs), jobIDs(jobs))
			if len(jobs) == 0 {
				continue
			}
		}
		j := jobs[0]
		out[id] = j
		in, ok := snap.instances[id]
		if !ok {
			t.Errorf("instance %s was never seen running in the fleet", id)
			continue
		}
		node := snap.nodeByName(id)
		if j.LaunchType != "manual" {
			t.Errorf("configure job %d of %s was launched as %q, want manual (a launch by the plugin)", j.ID, id, j.LaunchType)
		}
		if j.Limit != in.PrivateIP || in.PrivateIP == "" {
			t.Errorf("configure job %d of %s has limit %q, want the instance's private IP %q", j.ID, id, j.Limit, in.PrivateIP)
		}
		want := map[string]string{
			"instance_id":           id,
			"instance_type":         in.Type,
			"availability_zone":     in.AvailabilityZone,
			"spot_fleet_request_id": r.fleetID,
			"private_ip":            in.PrivateIP,
			"private_dns_name":      in.PrivateDNSName,
		}
		if node != nil {
			want["nomad_node_id"] = node.ID
			want["nomad_node_name"] = node.Name
			want["node_dir"] = node.NodeDir
		} else {
			t.Errorf("instance %s has no Nomad node", id)
		}
		for k, v := range want {
			if got := fmt.Sprint(j.ExtraVars[k]); got != v || v == "" {
				t.Errorf("configure job %d of %s: extra var %s = %q, want %q", j.ID, id, k, got, v)
			}
		}
		if wantStatus != "" && j.Status != wantStatus {
			t.Errorf("configure job %d of %s ended %s, want %s (%s)", j.ID, id, j.Status, wantStatus, j.Explanation)
		}
		if node != nil && !node.Admitted.IsZero() && !node.Admitted.After(j.Finished) {
			t.Errorf("the node of %s was admitted at %s, before its configure job %d finished at %s",
				id, node.Admitted.Format("15:04:05.000"), j.ID, j.Finished.Format("15:04:05.000"))
		}
	}
	return out
}

func jobIDs(jobs []localcloud.AWXJob) []string {
	var out []string
	for _, j := range jobs {
		out = append(out, fmt.Sprintf("%d:%s", j.ID, j.Status))
	}
	return out
}

// checkNothingPlacedEarly fails the test for every allocation of the pool's
// jobs ever seen on a node before its instance's configure job had ended
// successfully, or on a node whose gate the server did not show admitted
// when the allocation was first seen.
func (r *hookRig) checkNothingPlacedEarly(snap hookSnapshot) int {
	t := r.t
	t.Helper()
	checked := 0
	for _, a := range snap.allocs {
		if a.JobID != hookLoadJob && a.JobID != hookCheckJob {
			continue
		}
		checked++
		var ok *localcloud.AWXJob
		for _, j := range r.jobsFor(hookConfigureID, a.NodeName) {
			if j.Status == localcloud.AWXSuccessful {
				j := j
				ok = &j
			}
		}
		switch {
		case ok == nil:
			t.Errorf("allocation %s of %s was placed on node %s (%s), whose instance never had a successful configure job", a.ID[:8], a.JobID, a.NodeName, a.NodeID[:8])
		case !a.Created.After(ok.Finished):
			t.Errorf("allocation %s of %s was created on %s at %s, before its configure job %d finished at %s",
				a.ID[:8], a.JobID, a.NodeName, a.Created.Format("15:04:05.000"), ok.ID, ok.Finished.Format("15:04:05.000"))
		}
		if a.GateAtSeen != "admitted" {
			t.Errorf("allocation %s of %s was seen on %s while the server showed its gate %s=%q", a.ID[:8], a.JobID, a.NodeName, hookGateKey, a.GateAtSeen)
		}
		if a.Status == api.AllocClientStatusFailed {
			t.Errorf("allocation %s of %s on %s failed: its task could not read the monitoring file?", a.ID[:8], a.JobID, a.NodeName)
		}
	}
	return checked
}

// checkMonitoringOnNodes checks, for each instance, that the playbook wrote
// its monitoring file and that the check task on its node printed it.
func (r *hookRig) checkMonitoringOnNodes(ids []string) {
	t := r.t
	t.Helper()
	for _, id := range ids {
		dir := r.cloud.NodeDir(id)
		b, err := os.ReadFile(filepath.Join(dir, hookMonitorFile))
		if err != nil || strings.TrimSpace(string(b)) != id {
			t.Errorf("%s/%s of %s holds %q (%v), want the instance id written by monitoring.yml", dir, hookMonitorFile, id, b, err)
		}
		out, err := r.checkOutput(id)
		if err != nil {
			t.Errorf("the check task on %s: %v", id, err)
		} else if strings.TrimSpace(out) != id {
			t.Errorf("the check task on %s printed %q, want the monitoring file's content %q", id, out, id)
		}
	}
}

// checkOutput returns the stdout of the running check task on the
// instance's node.
func (r *hookRig) checkOutput(instanceID string) (string, error) {
	allocs, _, err := r.nc.Jobs().Allocations(hookCheckJob, false, nil)
	if err != nil {
		return "", err
	}
	for _, stub := range allocs {
		if stub.NodeName != instanceID || stub.ClientStatus != api.AllocClientStatusRunning {
			continue
		}
		alloc, _, err := r.nc.Allocations().Info(stub.ID, nil)
		if err != nil {
			return "", err
		}
		rc, err := r.nc.AllocFS().Cat(alloc, "alloc/logs/"+hookCheckTask+".stdout.0", nil)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	return "", fmt.Errorf("no running allocation of %s on %s", hookCheckJob, instanceID)
}

// running counts the allocations of a job that run, by node name.
func (s hookSnapshot) running(job string) (int, map[string]int) {
	n, by := 0, map[string]int{}
	for _, a := range s.allocs {
		if a.JobID == job && a.Status == api.AllocClientStatusRunning && a.Desired == api.AllocDesiredStatusRun {
			n++
			by[a.NodeName]++
		}
	}
	return n, by
}

// hookObserver samples the pool's nodes (gate included), every allocation
// and the fleet for the whole test.
type hookObserver struct {
	cloud   *localcloud.Cloud
	nc      *api.Client
	fleetID string

	mu        sync.Mutex
	nodes     map[string]*seenNode
	allocs    map[string]*seenAlloc
	instances map[string]*seenInstance
	targets   []targetSample
	errs      map[string]int
	wg        sync.WaitGroup // the node followers
}

type seenNode struct {
	ID, Name, NodeDir string
	Registered        time.Time
	Gate              string
	Gates             []string  // every gate value seen, in order
	Admitted          time.Time // first seen admitted at the server
	AdmittedAt        string    // meta <gate>_at
	Status            string
}

type seenAlloc struct {
	ID, JobID, NodeID, NodeName string
	Status, Desired             string
	Created, Seen               time.Time
	GateAtSeen                  string
}

type seenInstance struct {
	localcloud.Instance
	Seen, Gone time.Time
}

type targetSample struct {
	at      time.Time
	target  int
	running int
}

// hookSnapshot is a copy of what the observer saw.
type hookSnapshot struct {
	nodes     map[string]seenNode
	allocs    map[string]seenAlloc
	instances map[string]seenInstance
	targets   []targetSample
}

func (s hookSnapshot) nodeByName(name string) *seenNode {
	for _, n := range s.nodes {
		if n.Name == name {
			n := n
			return &n
		}
	}
	return nil
}

// runningIDs returns the instances running now, sorted.
func (s hookSnapshot) runningIDs() []string {
	var out []string
	for id, in := range s.instances {
		if in.Gone.IsZero() {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

func (s hookSnapshot) lastTarget() int {
	if len(s.targets) == 0 {
		return -1
	}
	return s.targets[len(s.targets)-1].target
}

func (s hookSnapshot) targetRange(from time.Time) (lo, hi int) {
	lo, hi = 1<<30, -1
	for _, ts := range s.targets {
		if ts.at.Before(from) {
			continue
		}
		lo, hi = min(lo, ts.target), max(hi, ts.target)
	}
	return lo, hi
}

func (s hookSnapshot) admitted(id string) bool {
	n := s.nodeByName(id)
	return n != nil && n.Gate == "admitted"
}

func startHookObserver(t *testing.T, cloud *localcloud.Cloud, nc *api.Client, fleetID string) *hookObserver {
	o := &hookObserver{cloud: cloud, nc: nc, fleetID: fleetID, nodes: map[string]*seenNode{}, allocs: map[string]*seenAlloc{},
		instances: map[string]*seenInstance{}, errs: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			o.samplePool(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(hookPoll):
			}
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			o.sampleFleet(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(400 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		o.wg.Wait()
		o.mu.Lock()
		defer o.mu.Unlock()
		if len(o.errs) > 0 {
			t.Logf("observer errors (counts): %v", o.errs)
		}
	})
	return o
}

func (o *hookObserver) fail(what string, err error) {
	o.mu.Lock()
	o.errs[what+": "+err.Error()]++
	o.mu.Unlock()
}

// samplePool reads the allocations first, then the nodes' latest state:
// an allocation seen on a node whose gate the server does not show admitted
// afterwards was placed while the node was not admitted (a gate never goes
// back to pending). Each node is followed by its own blocking query, so that
// its gate changes are seen within milliseconds.
func (o *hookObserver) samplePool(ctx context.Context) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	allocs, _, err := o.nc.Allocations().List(q)
	if err != nil {
		if ctx.Err() == nil {
			o.fail("allocations", err)
		}
		return
	}
	stubs, _, err := o.nc.Nodes().List(q)
	if err != nil {
		if ctx.Err() == nil {
			o.fail("nodes", err)
		}
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range stubs {
		n := o.nodes[s.ID]
		if n == nil {
			n = &seenNode{ID: s.ID, Name: s.Name, Registered: now}
			o.nodes[s.ID] = n
			o.wg.Add(1)
			go o.followNode(ctx, s.ID)
		}
		n.Status = s.Status
	}
	for _, a := range allocs {
		sa := o.allocs[a.ID]
		if sa == nil {
			sa = &seenAlloc{ID: a.ID, JobID: a.JobID, NodeID: a.NodeID, NodeName: a.NodeName,
				Created: time.Unix(0, a.CreateTime), Seen: now}
			if n := o.nodes[a.NodeID]; n != nil {
				sa.GateAtSeen = n.Gate
			}
			o.allocs[a.ID] = sa
		}
		sa.Status, sa.Desired = a.ClientStatus, a.DesiredStatus
	}
}

// followNode records every change of a node's gate as it happens.
func (o *hookObserver) followNode(ctx context.Context, id string) {
	defer o.wg.Done()
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx)
		full, meta, err := o.nc.Nodes().Info(id, q)
		if err != nil {
			if ctx.Err() == nil {
				o.fail("node info", err)
				time.Sleep(hookPoll)
			}
			continue
		}
		now := time.Now()
		index = meta.LastIndex
		o.mu.Lock()
		n := o.nodes[id]
		n.NodeDir = full.Meta[localcloud.MetaNodeDir]
		g := full.Meta[hookGateKey]
		if g != n.Gate || len(n.Gates) == 0 {
			n.Gates = append(n.Gates, g)
		}
		n.Gate = g
		if g == "admitted" && n.Admitted.IsZero() {
			n.Admitted = now
			n.AdmittedAt = full.Meta[hookGateKey+"_at"]
		}
		o.mu.Unlock()
	}
}

func (o *hookObserver) sampleFleet(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := o.cloud.EC2().DescribeSpotFleetRequests(cctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{o.fleetID}})
	if err == nil && len(out.SpotFleetRequestConfigs) != 1 {
		err = fmt.Errorf("%d fleet configs", len(out.SpotFleetRequestConfigs))
	}
	if err != nil {
		if ctx.Err() == nil {
			o.fail("fleet", err)
		}
		return
	}
	target := int(aws.ToInt32(out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig.TargetCapacity))
	insts, err := o.cloud.RunningFleetInstances(cctx, o.fleetID)
	if err != nil {
		if ctx.Err() == nil {
			o.fail("fleet instances", err)
		}
		return
	}
	now := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.targets = append(o.targets, targetSample{at: now, target: target, running: len(insts)})
	running := map[string]bool{}
	for _, in := range insts {
		running[in.ID] = true
		if o.instances[in.ID] == nil {
			o.instances[in.ID] = &seenInstance{Instance: in, Seen: now}
		}
	}
	for id, si := range o.instances {
		if !running[id] && si.Gone.IsZero() {
			si.Gone = now
		}
	}
}

func (o *hookObserver) snapshot() hookSnapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := hookSnapshot{nodes: map[string]seenNode{}, allocs: map[string]seenAlloc{}, instances: map[string]seenInstance{},
		targets: slices.Clone(o.targets)}
	for k, v := range o.nodes {
		c := *v
		c.Gates = slices.Clone(v.Gates)
		s.nodes[k] = c
	}
	for k, v := range o.allocs {
		s.allocs[k] = *v
	}
	for k, v := range o.instances {
		s.instances[k] = *v
	}
	return s
}

// logLine is one line of an agent log with its time.
type logLine struct {
	at   time.Time
	text string
}

// parseAgentLog splits an agent log into entries: a line that starts with a
// timestamp, with the continuation lines of its multi-line values (hclog
// writes "key=" then "  | line" lines) joined to it.
func parseAgentLog(logs string) []logLine {
	var out []logLine
	for _, line := range strings.Split(logs, "\n") {
		ts, _, ok := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil {
			if len(out) > 0 && line != "" {
				out[len(out)-1].text += "\n" + line
			}
			continue
		}
		out = append(out, logLine{at: at, text: line})
	}
	return out
}

// countEntries counts the log entries that contain every part.
func countEntries(logs string, parts ...string) int {
	return len(linesBetween(parseAgentLog(logs), time.Time{}, time.Now().Add(time.Hour), parts...))
}

// loudEntries counts the log entries above debug level that contain every
// part.
func loudEntries(logs string, parts ...string) int {
	n := 0
	for _, l := range linesBetween(parseAgentLog(logs), time.Time{}, time.Now().Add(time.Hour), parts...) {
		if !strings.Contains(l.text, "[DEBUG]") && !strings.Contains(l.text, "[TRACE]") {
			n++
		}
	}
	return n
}

// hasEntry reports whether a log entry contains every part.
func hasEntry(logs string, parts ...string) bool { return countEntries(logs, parts...) > 0 }

// linesBetween returns the lines within [from, to] that contain every part.
func linesBetween(lines []logLine, from, to time.Time, parts ...string) []logLine {
	var out []logLine
	for _, l := range lines {
		if l.at.Before(from) || l.at.After(to) {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l.text, p)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

// firstAlloc returns the creation time of the first allocation of the
// pool's jobs on the node.
func (s hookSnapshot) firstAlloc(nodeID string) time.Time {
	var first time.Time
	for _, a := range s.allocs {
		if a.NodeID == nodeID && (a.JobID == hookLoadJob || a.JobID == hookCheckJob) && (first.IsZero() || a.Created.Before(first)) {
			first = a.Created
		}
	}
	return first
}

func formatSteps(ds []time.Duration) string {
	med, mx := medianMax(ds)
	return fmt.Sprintf("median %s max %s", med, mx)
}

// TestScaleOutRunsAWXOnceAndAdmitsOnlyAfterThePlaybook: a fleet of one
// gated node (admitted through the hooks), a load whose count rises so that
// the agent scales out to three. Each new instance gets exactly one AWX
// launch against its private IP with the right extra vars, the real
// monitoring.yml writes the node's monitoring file, no allocation of the
// pool's jobs is ever placed on a node before its playbook ended, a task on
// every node reads the monitoring file, the agent keeps evaluating while
// nodes wait, and the fleet's target never exceeds the three the load needs:
// not while the new nodes wait for their playbooks, and not when they are
// admitted and warm up (apm-node leaves a node out of its figure for
// node_warmup after its admission, as it does by default for 60s). The steps
// from launch to first allocation are FIGURES.
func TestScaleOutRunsAWXOnceAndAdmitsOnlyAfterThePlaybook(t *testing.T) {
	const want = 3
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// One node: 1 task + check = 26% (target-value 45 holds 1). Five tasks:
	// four fit (98%, ceil(98/45) = 3 nodes), one waits for an admitted node;
	// at three nodes the pool averages 42%, which holds 3.
	// apm-node's warm-up starts at the admission time the plugin stamps
	// (meta spotfleet_admission_at) when it applies the gate, and the
	// servers show the gate 2-10 s later: 15 s leaves a warm-up window after
	// every admission whatever Nomad's delay.
	const warmup = 15 * time.Second
	r := startHookRig(ctx, t, hookOptions{size: 1, min: 1, max: 5, target: 45, load: 1, warmup: warmup})
	first := r.waitSettled(2*time.Minute, "the first node is admitted and runs the load and the check", func(s hookSnapshot) (bool, string) {
		ids := s.runningIDs()
		load, _ := s.running(hookLoadJob)
		check, _ := s.running(hookCheckJob)
		return len(ids) == 1 && s.admitted(ids[0]) && load == 1 && check == 1,
			fmt.Sprintf("running %v admitted=%v load=%d check=%d target=%d", ids, len(ids) == 1 && s.admitted(ids[0]), load, check, s.lastTarget())
	})
	firstID := first.runningIDs()[0]

	raised := time.Now()
	scaleJob(t, r.nc, hookLoadJob, "work", 5)
	// The instances of the scale-out: the first ones seen after the raise.
	var ids []string
	r.waitSettled(time.Minute, "the agent scales out to 3", func(s hookSnapshot) (bool, string) {
		var fresh []seenInstance
		for id, in := range s.instances {
			if id != firstID {
				fresh = append(fresh, in)
			}
		}
		sort.Slice(fresh, func(i, j int) bool { return fresh[i].Seen.Before(fresh[j].Seen) })
		ids = []string{firstID}
		for _, in := range fresh[:min(len(fresh), want-1)] {
			ids = append(ids, in.ID)
		}
		return len(ids) == want, fmt.Sprintf("target=%d running=%v", s.lastTarget(), s.runningIDs())
	})
	sort.Strings(ids)
	fresh := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == firstID })
	final := r.waitSettled(2*time.Minute, "the 3 nodes are admitted and run 5 load tasks and 3 checks", func(s hookSnapshot) (bool, string) {
		admitted := 0
		for _, id := range ids {
			if s.admitted(id) {
				admitted++
			}
		}
		load, _ := s.running(hookLoadJob)
		_, checks := s.running(hookCheckJob)
		onAll := true
		for _, id := range ids {
			onAll = onAll && checks[id] == 1
		}
		return admitted == want && load == 5 && onAll,
			fmt.Sprintf("target=%d running=%v admitted=%d of %v load=%d checks=%v awx jobs=%v", s.lastTarget(), s.runningIDs(), admitted, ids, load, checks, jobIDs(r.awx.Jobs()))
	})
	settled := time.Now()

	jobs := r.checkConfigureJobs(final, ids, localcloud.AWXSuccessful)
	checked := r.checkNothingPlacedEarly(final)
	r.checkMonitoringOnNodes(ids)
	load, byNode := final.running(hookLoadJob)
	moved := 0
	for _, id := range fresh {
		moved += byNode[id]
	}
	if moved == 0 {
		t.Errorf("no load task was placed on a new node (%v): the test did not place pending work on a node that became admitted", byNode)
	}

	// Admission is in the logs and the status; the agent kept evaluating
	// while nodes were admitting, and the target stayed ready.
	// The plugin logs an admission once it has seen the servers show it
	// (it polls): give the line a moment after the observer saw the meta.
	logs := r.logs()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); logs = r.logs() {
		all := true
		for _, id := range fresh {
			all = all && hasEntry(logs, "node admitted: it takes work now", "instance_id="+id)
		}
		if all {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	lines := parseAgentLog(logs)
	var regFirst, admLast time.Time
	for _, id := range fresh {
		if !hasEntry(logs, "node admitted: it takes work now", "instance_id="+id) {
			t.Errorf("the agent log has no admission line for %s", id)
		}
		n := final.nodeByName(id)
		if n == nil {
			continue
		}
		if regFirst.IsZero() || n.Registered.Before(regFirst) {
			regFirst = n.Registered
		}
		if n.Admitted.After(admLast) {
			admLast = n.Admitted
		}
		if !slices.Equal(n.Gates, []string{"pending", "admitted"}) {
			t.Errorf("node of %s went through gate values %v, want [pending admitted]", id, n.Gates)
		}
	}
	admitting := linesBetween(lines, regFirst, admLast, "fleet status", "admitting=")
	evals := linesBetween(lines, regFirst, admLast, "calculating scaling target")
	notReady := linesBetween(lines, regFirst, admLast, "fleet status: not ready")
	skipped := linesBetween(lines, regFirst, admLast, "skipping evaluation, target not ready")
	window := admLast.Sub(regFirst)
	if len(admitting) == 0 {
		t.Errorf("no fleet status line showed a node admitting between %s and %s", regFirst.Format("15:04:05.000"), admLast.Format("15:04:05.000"))
	}
	if need := max(1, int(window/hookEvalInterval)/2); len(evals) < need {
		t.Errorf("the agent evaluated %d times in the %s nodes were admitting, want at least %d: scaling froze", len(evals), window.Round(time.Millisecond), need)
	}
	if len(notReady) > 0 {
		t.Errorf("the target reported not ready while nodes were admitting: %q", notReady[0].text)
	}

	// Figures per new node.
	var launchReg, regCreated, createdDone, doneAdmitted, admittedAlloc, total, admitCall []time.Duration
	t.Logf("%-20s %-10s %-10s %-10s %-10s %-10s %s", "instance", "run>reg", "reg>awx", "awx job", "done>adm", "adm>alloc", "run>alloc")
	for _, id := range fresh {
		in, n, j := final.instances[id], final.nodeByName(id), jobs[id]
		if n == nil || j.ID == 0 {
			continue
		}
		alloc := final.firstAlloc(n.ID)
		steps := []time.Duration{n.Registered.Sub(in.Seen), j.Created.Sub(n.Registered), j.Finished.Sub(j.Created),
			n.Admitted.Sub(j.Finished), alloc.Sub(n.Admitted), alloc.Sub(in.Seen)}
		launchReg, regCreated, createdDone = append(launchReg, steps[0]), append(regCreated, steps[1]), append(createdDone, steps[2])
		doneAdmitted, admittedAlloc, total = append(doneAdmitted, steps[3]), append(admittedAlloc, steps[4]), append(total, steps[5])
		if d, err := time.ParseDuration(logField(logs, "admission_took", "node admitted: it takes work now", "instance_id="+id)); err == nil {
			admitCall = append(admitCall, d)
		}
		t.Logf("%-20s %-10s %-10s %-10s %-10s %-10s %s (admitted_at meta %s; EC2 launch time %s)", id,
			steps[0].Round(time.Millisecond), steps[1].Round(time.Millisecond), steps[2].Round(time.Millisecond),
			steps[3].Round(time.Millisecond), steps[4].Round(time.Millisecond), steps[5].Round(time.Millisecond),
			n.AdmittedAt, in.LaunchTime.Format(time.RFC3339))
	}
	t.Logf("%d allocations of the pool's jobs checked against their node's configure job; evaluations while admitting: %d in %s, %d skipped as not ready",
		checked, len(evals), window.Round(time.Millisecond), len(skipped))
	t.Logf("FIGURES hooks-scale-out n=%d: instance running->node registered %s; registered->AWX job created %s; AWX job created->finished %s; AWX finished->node admitted (meta at the server) %s (of which the plugin's admission_took, meta applied->shown by the servers, %s); admitted->first allocation %s; running->first allocation %s; load raised->settled %s; test took %s",
		len(fresh), formatSteps(launchReg), formatSteps(regCreated), formatSteps(createdDone),
		formatSteps(doneAdmitted), formatSteps(admitCall), formatSteps(admittedAlloc), formatSteps(total),
		settled.Sub(raised).Round(time.Millisecond), time.Since(r.began).Round(time.Second))

	// A few more evaluations, past the warm-up: nothing else may happen.
	time.Sleep(warmup + 3*hookEvalInterval)
	end := r.obs.snapshot()
	for id := range end.instances {
		if n := len(r.jobsFor(hookConfigureID, id)); n > 1 {
			t.Errorf("instance %s got %d configure jobs, want at most 1", id, n)
		}
	}
	if n, jobs := r.launchCalls(hookConfigureID), len(r.awx.Jobs()); n != jobs {
		t.Errorf("the AWX stand-in answered %d launches but ran %d jobs", n, jobs)
	}
	if load != 5 {
		t.Errorf("%d load tasks ran at the settle, want 5 (%v)", load, byNode)
	}
	lo, hi := end.targetRange(raised)
	if hi > want || len(end.instances) != want {
		var asked []string
		for _, l := range linesBetween(parseAgentLog(r.logs()), raised, time.Now(), "calculating scaling target") {
			if m := askedCount.FindStringSubmatch(l.text); m != nil {
				if n, _ := strconv.Atoi(m[1]); n > want {
					asked = append(asked, compactLine(l.text))
				}
			}
		}
		t.Errorf("target capacity ranged %d..%d after the load rose and %d instances ran, want at most %d: a second scale-out for capacity that had come (the count included nodes whose load apm-node did not measure yet); evaluations that asked for another count: %s",
			lo, hi, len(end.instances), want, strings.Join(asked, " | "))
	}
}

// logField returns the value of key=value in the first log entry that
// contains every part, "" if none.
func logField(logs, key string, parts ...string) string {
	for _, l := range linesBetween(parseAgentLog(logs), time.Time{}, time.Now().Add(time.Hour), parts...) {
		for _, f := range strings.Fields(l.text) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return strings.Trim(v, `"`)
			}
		}
	}
	return ""
}

// askedCount finds the count an agent evaluation asked for.
var askedCount = regexp.MustCompile(` from=\d+ to=(\d+) `)

// compactLine drops the long target_config field of an agent log line.
func compactLine(s string) string {
	if i := strings.Index(s, ` target_config="`); i >= 0 {
		if j := strings.Index(s[i+16:], `"`); j >= 0 {
			s = s[:i] + s[i+16+j+1:]
		}
	}
	return s
}

// TestFailingPlaybookReplacesTheInstanceWithNothingPlacedOnIt: the
// configure playbook fails for the fleet's first instance (on_failure =
// terminate): that instance is terminated with nothing ever placed on it,
// the maintain fleet replaces it, the replacement gets its playbook and is
// admitted, and the fleet ends at its one instance with nothing leaked.
func TestFailingPlaybookReplacesTheInstanceWithNothingPlacedOnIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := startHookRig(ctx, t, hookOptions{size: 1, min: 1, max: 1, target: 70, load: 1, gated: true, failFirst: true})
	first := r.obs.snapshot().runningIDs()
	if len(first) != 1 {
		t.Fatalf("running instances %v, want one", first)
	}
	victim := first[0]

	// The first job fails; then the flag goes, so later jobs succeed.
	var failedJob localcloud.AWXJob
	waitFor(t, 90*time.Second, "the first configure job fails", func() (bool, string) {
		jobs := r.jobsFor(hookConfigureID, victim)
		if len(jobs) > 0 && localcloud.AWXFinal(jobs[0].Status) {
			failedJob = jobs[0]
			return true, fmt.Sprint(jobIDs(jobs))
		}
		return false, fmt.Sprint(jobIDs(jobs))
	})
	if err := os.Remove(r.failFlag); err != nil {
		t.Fatal(err)
	}
	if failedJob.Status != localcloud.AWXFailed {
		t.Errorf("the first configure job ended %s, want failed", failedJob.Status)
	}

	final := r.waitSettled(2*time.Minute, "the failed instance is gone and its replacement is admitted and runs the load", func(s hookSnapshot) (bool, string) {
		ids := s.runningIDs()
		load, _ := s.running(hookLoadJob)
		check, _ := s.running(hookCheckJob)
		ok := len(ids) == 1 && ids[0] != victim && s.admitted(ids[0]) && load == 1 && check == 1
		return ok, fmt.Sprintf("running %v (victim %s) load=%d check=%d target=%d", ids, victim, load, check, s.lastTarget())
	})
	time.Sleep(3 * hookEvalInterval)
	final = r.obs.snapshot()
	ids := final.runningIDs()
	if len(ids) != 1 || ids[0] == victim {
		t.Fatalf("running %v at the end, want one replacement of %s", ids, victim)
	}
	replacement := ids[0]

	r.checkConfigureJobs(final, []string{victim}, localcloud.AWXFailed)
	r.checkConfigureJobs(final, []string{replacement}, localcloud.AWXSuccessful)
	if !strings.Contains(failedJob.Stdout, "refused on purpose") {
		t.Errorf("the failed job's output does not show the playbook's failure:\n%s", failedJob.Stdout)
	}
	r.checkNothingPlacedEarly(final)
	r.checkMonitoringOnNodes([]string{replacement})
	for _, a := range final.allocs {
		if a.NodeName == victim {
			t.Errorf("allocation %s of %s was placed on the instance whose playbook failed", a.ID[:8], a.JobID)
		}
	}
	if n := final.nodeByName(victim); n == nil {
		t.Errorf("the failed instance %s never had a Nomad node", victim)
	} else if slices.Contains(n.Gates, "admitted") {
		t.Errorf("the node of %s, whose playbook failed, was admitted (gates %v)", victim, n.Gates)
	}

	// The failure is recorded on the instance and reported.
	tag := r.instanceTags(victim)["nomad-autoscaler:hook-failed"]
	if !strings.HasPrefix(tag, "terminate configure: ") || !strings.Contains(tag, fmt.Sprintf("AWX job %d ended failed", failedJob.ID)) {
		t.Errorf("tag nomad-autoscaler:hook-failed of %s is %q, want \"terminate configure: AWX job %d ended failed ...\"", victim, tag, failedJob.ID)
	}
	logs := r.logs()
	if !hasEntry(logs, "launch hook failed: the instance is removed and the fleet replaces it (on_failure=terminate)", "instance_id="+victim, "refused on purpose") {
		t.Errorf("the agent log has no line reporting the failed hook of %s with the playbook's message", victim)
	}
	if !hasEntry(logs, "terminated the instance whose launch hook failed", "instance_id="+victim) {
		t.Errorf("the agent log does not show %s terminated after its failed hook", victim)
	}
	// The status meta spot_fleet.hook_failed (repeated in the status log
	// lines: Warn when it changes, Debug at every evaluation) must report the
	// failure, not only in the instant between the tag and the termination:
	// the statuses of the next seconds, while the replacement comes, say why
	// the fleet lost an instance.
	lines := parseAgentLog(logs)
	failedAt := time.Time{}
	if l := linesBetween(lines, time.Time{}, time.Now(), "launch hook failed: the instance is removed"); len(l) > 0 {
		failedAt = l[0].at
	}
	during := linesBetween(lines, failedAt, failedAt.Add(time.Hour), "fleet status")
	later := linesBetween(lines, failedAt.Add(2*time.Second), failedAt.Add(time.Hour), "fleet status")
	reported := linesBetween(lines, failedAt.Add(2*time.Second), failedAt.Add(time.Hour), "fleet status", victim, "configure")
	t.Logf("fleet status entries after the failure: %d, of which %d showed it (%d in the 2 s after it)",
		len(during), len(linesBetween(lines, failedAt, failedAt.Add(time.Hour), "fleet status", victim, "configure")), len(during)-len(later))
	if failedAt.IsZero() || len(later) == 0 || len(reported) == 0 {
		t.Errorf("none of the %d fleet statuses logged from 2 s after the failure on reports the failed launch hook of %s (meta spot_fleet.hook_failed): the failure is visible in the status only while the failed instance still runs, which is well under a second",
			len(later), victim)
	}

	// Nothing leaked: one instance, one client, the target held at one.
	lo, hi := final.targetRange(r.began)
	if lo != 1 || hi != 1 {
		t.Errorf("target capacity ranged %d..%d, want 1 throughout (the removal keeps the target; the fleet refills)", lo, hi)
	}
	if clients := r.cloud.Clients(); len(clients) != 1 || clients[0] != replacement {
		t.Errorf("client agents run for %v, want only the replacement %s", clients, replacement)
	}
	if n := len(final.instances); n != 2 {
		t.Errorf("%d instances ever ran in the fleet, want 2 (the failed one and its replacement)", n)
	}
	if n := len(r.awx.Jobs()); n != 2 {
		t.Errorf("AWX ran %d jobs, want 2: %v", n, jobIDs(r.awx.Jobs()))
	}
	gone := final.instances[victim].Gone
	repl, rj := final.nodeByName(replacement), r.jobsFor(hookConfigureID, replacement)
	if repl != nil && !gone.IsZero() && len(rj) == 1 {
		in := final.instances[replacement]
		t.Logf("FIGURES hooks-failed-playbook: failed job finished->instance gone %s; gone->replacement running %s (refill delay 2s); replacement running->node registered %s; registered->AWX job created %s (the provisioning scan finds an instance it did not launch within 15s); AWX job %s; finished->admitted %s; failed job finished->replacement admitted %s; test took %s",
			gone.Sub(failedJob.Finished).Round(time.Millisecond), in.Seen.Sub(gone).Round(time.Millisecond),
			repl.Registered.Sub(in.Seen).Round(time.Millisecond), rj[0].Created.Sub(repl.Registered).Round(time.Millisecond),
			rj[0].Finished.Sub(rj[0].Created).Round(time.Millisecond), repl.Admitted.Sub(rj[0].Finished).Round(time.Millisecond),
			repl.Admitted.Sub(failedJob.Finished).Round(time.Millisecond), time.Since(r.began).Round(time.Second))
	}
}

// TestTerminateHooksRunOnScaleInAndOnInterruption: a terminate hook (the AWX
// template "forget") runs exactly once for the instance a scale-in removes
// and once for an interrupted instance, against the instance's private IP
// with its id and node id, and never for an instance that stays.
func TestTerminateHooksRunOnScaleInAndOnInterruption(t *testing.T) {
	const notice = 12 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Two nodes, one task: 14% on average, so target-value 70 wants one.
	r := startHookRig(ctx, t, hookOptions{size: 2, min: 1, max: 2, target: 70, load: 1, forget: true, queue: true,
		targetExtra: []string{`interruption_drain_deadline = "6s"`}})
	start := r.obs.snapshot().runningIDs()
	if len(start) != 2 {
		t.Fatalf("running %v, want two instances", start)
	}

	// Both are admitted, then the scale-in removes one of them.
	var scaledIn string
	r.waitSettled(2*time.Minute, "the scale-in to one has removed an instance and its forget job has ended", func(s hookSnapshot) (bool, string) {
		ids := s.runningIDs()
		scaledIn = ""
		for _, id := range start {
			if !slices.Contains(ids, id) {
				scaledIn = id
			}
		}
		var forgot []localcloud.AWXJob
		if scaledIn != "" {
			forgot = r.jobsFor(hookForgetID, scaledIn)
		}
		done := len(forgot) > 0 && localcloud.AWXFinal(forgot[0].Status)
		return s.lastTarget() == 1 && len(ids) == 1 && done,
			fmt.Sprintf("target=%d running=%v removed=%q forget jobs=%v", s.lastTarget(), ids, scaledIn, jobIDs(forgot))
	})
	mid := r.obs.snapshot()
	for _, id := range start {
		if n := mid.nodeByName(id); n == nil || n.Admitted.IsZero() {
			t.Errorf("instance %s was never admitted before the scale-in", id)
		}
	}
	survivor := mid.runningIDs()[0]

	// The survivor is interrupted: drained, replaced, and forgotten.
	sent := time.Now()
	if _, err := r.cloud.InterruptWith(ctx, survivor, localcloud.InterruptSpec{Notice: notice}); err != nil {
		t.Fatalf("interrupting %s: %v", survivor, err)
	}
	final := r.waitSettled(2*time.Minute, "the interrupted instance is gone, forgotten, and its replacement admitted", func(s hookSnapshot) (bool, string) {
		ids := s.runningIDs()
		forgot := r.jobsFor(hookForgetID, survivor)
		done := len(forgot) > 0 && localcloud.AWXFinal(forgot[0].Status)
		ok := len(ids) == 1 && ids[0] != survivor && s.admitted(ids[0]) && done && s.lastTarget() == 1
		return ok, fmt.Sprintf("target=%d running=%v forget jobs of %s=%v", s.lastTarget(), ids, survivor, jobIDs(forgot))
	})
	time.Sleep(2 * hookEvalInterval) // a second run would show by now
	final = r.obs.snapshot()
	replacement := final.runningIDs()[0]

	for _, victim := range []string{scaledIn, survivor} {
		jobs := r.jobsFor(hookForgetID, victim)
		if len(jobs) != 1 {
			t.Errorf("instance %s got %d forget jobs, want exactly 1: %v", victim, len(jobs), jobIDs(jobs))
			if len(jobs) == 0 {
				continue
			}
		}
		j := jobs[0]
		in := final.instances[victim]
		if j.Status != localcloud.AWXSuccessful {
			t.Errorf("forget job %d of %s ended %s: %s", j.ID, victim, j.Status, j.Explanation)
		}
		if j.Limit != in.PrivateIP || in.PrivateIP == "" {
			t.Errorf("forget job %d of %s has limit %q, want its private IP %q", j.ID, victim, j.Limit, in.PrivateIP)
		}
		n := final.nodeByName(victim)
		for k, want := range map[string]string{"instance_id": victim, "private_ip": in.PrivateIP, "instance_type": in.Type,
			"availability_zone": in.AvailabilityZone, "spot_fleet_request_id": r.fleetID} {
			if got := fmt.Sprint(j.ExtraVars[k]); got != want {
				t.Errorf("forget job %d of %s: extra var %s = %q, want %q", j.ID, victim, k, got, want)
			}
		}
		if n != nil && fmt.Sprint(j.ExtraVars["nomad_node_id"]) != n.ID {
			t.Errorf("forget job %d of %s: nomad_node_id = %v, want %s", j.ID, victim, j.ExtraVars["nomad_node_id"], n.ID)
		}
		b, err := os.ReadFile(filepath.Join(r.forgetDir, victim))
		if err != nil || !strings.HasPrefix(string(b), in.PrivateIP+" ") {
			t.Errorf("the forget playbook's record of %s holds %q (%v)", victim, b, err)
		}
	}
	if jobs := r.jobsFor(hookForgetID, replacement); len(jobs) != 0 {
		t.Errorf("the replacement %s, which stays, got forget jobs %v", replacement, jobIDs(jobs))
	}
	if n := r.launchCalls(hookForgetID); n != 2 {
		t.Errorf("the AWX stand-in answered %d launches of the forget template, want 2", n)
	}
	r.checkConfigureJobs(final, []string{scaledIn, survivor, replacement}, localcloud.AWXSuccessful)
	r.checkNothingPlacedEarly(final)
	logs := r.logs()
	if !hasEntry(logs, "scaled in:", "from=2", "to=1", "terminated=["+scaledIn+"]") {
		t.Errorf("the agent log has no scale-in from 2 to 1 that terminated %s", scaledIn)
	}
	for _, victim := range []string{scaledIn, survivor} {
		if n := countEntries(logs, "instance leaves: running its terminate hooks", "instance_id="+victim); n != 1 {
			t.Errorf("%d lines start the terminate hooks of %s, want 1", n, victim)
		}
		if n := countEntries(logs, "terminate hooks done", "instance_id="+victim); n != 1 {
			t.Errorf("%d lines end the terminate hooks of %s, want 1", n, victim)
		}
	}
	if hasEntry(logs, "terminate hook failed") {
		t.Errorf("a terminate hook failed")
	}
	fj := r.jobsFor(hookForgetID, survivor)
	if len(fj) > 0 {
		t.Logf("FIGURES hooks-terminate: interruption warning->forget job created %s (notice %s); forget job took %s; test took %s",
			fj[0].Created.Sub(sent).Round(time.Millisecond), notice, fj[0].Finished.Sub(fj[0].Created).Round(time.Millisecond),
			time.Since(r.began).Round(time.Second))
	}
}

// TestWrongAWXTokenGivesOneClearErrorAndAdmitsNothing: the agent's AWX token
// is wrong. That is a configuration error, not the instance's: one clear
// error names the 401 and the token settings, never the token; no failure
// policy applies (terminating instances would only churn them), so the node
// stays un-admitted (gate pending), nothing is placed on it, the status says
// so, and the hook is retried with a growing pause, not in a loop.
func TestWrongAWXTokenGivesOneClearErrorAndAdmitsNothing(t *testing.T) {
	const quiet = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wrong := newHookToken()
	r := startHookRig(ctx, t, hookOptions{size: 1, min: 1, max: 1, target: 70, load: 1, onFailure: "keep",
		agentToken: wrong, tokenSource: "file"})
	ids := r.obs.snapshot().runningIDs()
	if len(ids) != 1 {
		t.Fatalf("running %v, want one instance", ids)
	}
	id := ids[0]
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	line, err := r.agent().WaitLog(wctx, "launch hook cannot run")
	wcancel()
	if err != nil {
		t.Fatalf("the hook's failure never showed in the agent log: %v", err)
	}
	t.Logf("failure line: %s", line)
	wctx, wcancel = context.WithTimeout(ctx, 30*time.Second)
	if _, err := r.agent().WaitLog(wctx, "fleet status: launch hook failed"); err != nil {
		t.Errorf("no fleet status reported the refused hook: %v", err)
	}
	wcancel()
	// Nothing to record on the node: the gate stays pending.
	r.waitSettled(30*time.Second, "the node's gate is pending at the server", func(s hookSnapshot) (bool, string) {
		n := s.nodeByName(id)
		if n == nil {
			return false, "no node"
		}
		return n.Gate == "pending", fmt.Sprintf("gates %v", n.Gates)
	})
	callsBefore := len(r.awx.Calls())
	logsBefore := r.logs()
	time.Sleep(quiet)
	snap := r.obs.snapshot()
	calls := r.awx.Calls()
	logs := r.logs()

	// Retried after 5 s, then 10 s, ...: at most two attempts in the quiet
	// window, one call each (the template lookup that AWX refuses).
	if more := len(calls) - callsBefore; more > 2 {
		t.Errorf("AWX got %d more calls in the %s after the failure: retried in a loop (%v)", more, quiet, calls[callsBefore:])
	}
	if callsBefore > 3 {
		t.Errorf("AWX got %d calls for one refused hook, want at most 3", callsBefore)
	}
	for _, c := range calls {
		if c.Status != 401 {
			t.Errorf("AWX answered %s %s with %d, want only 401s", c.Method, c.Path, c.Status)
		}
	}
	if len(r.awx.Jobs()) != 0 {
		t.Errorf("AWX ran jobs with a wrong token: %v", jobIDs(r.awx.Jobs()))
	}
	if n := countEntries(logs, "launch hook cannot run", "instance_id="+id); n != 1 {
		t.Errorf("%d lines report the refused launch hook of %s, want exactly 1", n, id)
	}
	if !hasEntry(logs, "launch hook cannot run", "instance_id="+id, "401", "awx_token") {
		t.Errorf("the failure line does not name the 401 and the token setting: %s", line)
	}
	// At info level and above the failure is told once by each part: the
	// hook runner, the provisioning, the status (only the status repeats it
	// at debug level, at every evaluation).
	if before, after := loudEntries(logsBefore, "401"), loudEntries(logs, "401"); after != before || after > 3 {
		t.Errorf("%d log entries above debug level name the 401 (%d when the failure was first seen): want at most 3, none repeated", after, before)
	}
	if !hasEntry(logs, "fleet status: launch hook failed", id, "configuration error", "401") {
		t.Errorf("no fleet status reported the failure of %s (meta spot_fleet.hook_failed)", id)
	}
	if strings.Contains(logs, wrong) {
		t.Errorf("the agent log contains the token")
	}
	for _, c := range calls {
		if strings.Contains(c.Path+c.Query+c.Body, wrong) {
			t.Errorf("an AWX call carries the token outside its Authorization header: %s %s", c.Method, c.Path)
		}
	}

	// Kept, never admitted, nothing placed, nothing else launched.
	if got := snap.runningIDs(); !slices.Equal(got, []string{id}) {
		t.Errorf("running %v, want the kept instance %s only", got, id)
	}
	if n := snap.nodeByName(id); n == nil || slices.Contains(n.Gates, "admitted") || n.Gate != "pending" {
		t.Errorf("the node of %s: %+v, want its gate pending, never admitted", id, n)
	}
	for _, a := range snap.allocs {
		t.Errorf("allocation %s of %s was placed on %s", a.ID[:8], a.JobID, a.NodeName)
	}
	if lo, hi := snap.targetRange(r.began); lo != 1 || hi != 1 {
		t.Errorf("target capacity ranged %d..%d, want 1", lo, hi)
	}
	if tag, ok := r.instanceTags(id)["nomad-autoscaler:hook-failed"]; ok {
		t.Errorf("tag nomad-autoscaler:hook-failed is %q: a configuration error is not the instance's failure", tag)
	}
	t.Logf("FIGURES hooks-wrong-token: AWX calls %d (all 401), log entries above debug naming the 401 %d, AWX calls in the %s after it %d; test took %s",
		callsBefore, loudEntries(logs, "401"), quiet, len(calls)-callsBefore, time.Since(r.began).Round(time.Second))
}

// TestPluginRestartMidHookNeitherRunsItTwiceNorForgetsTheNode: the new
// instance's configure job waits; meanwhile the agent (and its plugins) is
// stopped and started again. The new plugin follows the job the old one
// launched (one AWX launch for the instance), admits the node once the job
// succeeds, and the agent, which keeps evaluating while the node waits, never
// asks for more than the two nodes it wanted.
func TestPluginRestartMidHookNeitherRunsItTwiceNorForgetsTheNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// One node: 26% holds 1 at target 65. Five tasks: four fit (98%,
	// ceil(98/65) = 2), one waits; at two nodes the pool averages 62%. max
	// is 2, so the agent never asks for more: any target above 2 is the
	// plugin's (a waiting node counted as not serving would make it raise
	// the target for "held" capacity).
	r := startHookRig(ctx, t, hookOptions{size: 1, min: 1, max: 2, target: 65, load: 1, gated: true})
	first := r.waitSettled(2*time.Minute, "the first node is admitted and runs the load", func(s hookSnapshot) (bool, string) {
		ids := s.runningIDs()
		load, _ := s.running(hookLoadJob)
		return len(ids) == 1 && s.admitted(ids[0]) && load == 1, fmt.Sprintf("running %v load=%d", ids, load)
	})
	firstID := first.runningIDs()[0]

	if err := os.Remove(r.release); err != nil {
		t.Fatal(err)
	}
	raised := time.Now()
	scaleJob(t, r.nc, hookLoadJob, "work", 5)
	var newID string
	var job localcloud.AWXJob
	r.waitSettled(2*time.Minute, "the new instance's configure job runs (and waits)", func(s hookSnapshot) (bool, string) {
		for _, id := range s.runningIDs() {
			if id != firstID {
				newID = id
			}
		}
		if newID == "" {
			return false, fmt.Sprintf("target=%d running=%v", s.lastTarget(), s.runningIDs())
		}
		jobs := r.jobsFor(hookConfigureID, newID)
		if len(jobs) == 1 {
			job = jobs[0]
		}
		return len(jobs) == 1 && job.Status == localcloud.AWXRunning && time.Since(job.Started) > time.Second,
			fmt.Sprintf("new %s jobs %v", newID, jobIDs(jobs))
	})

	// The restart, while the job runs.
	old := r.agent()
	stopAt := time.Now()
	if err := old.Stop(); err != nil {
		t.Fatalf("stopping the agent: %v", err)
	}
	if j, _ := r.awx.Job(job.ID); localcloud.AWXFinal(j.Status) {
		t.Fatalf("the configure job %d ended (%s) before the restart; the test did not restart mid-hook", j.ID, j.Status)
	}
	second := r.startAgent()
	restarted := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	if _, err := second.WaitLog(wctx, "resuming: following the AWX job the interrupted run launched"); err != nil {
		if _, err2 := second.WaitLog(wctx, "resuming: found the AWX job the interrupted run launched"); err2 != nil {
			t.Errorf("the restarted plugin did not resume the running job: %v", err)
		}
	}
	wcancel()
	// Let the new agent evaluate while the node still waits.
	time.Sleep(3 * hookEvalInterval)
	if s := r.obs.snapshot(); s.admitted(newID) {
		t.Fatalf("%s was admitted before its job was released", newID)
	}
	released := time.Now()
	r.touch(r.release)

	final := r.waitSettled(2*time.Minute, "the new node is admitted and the fifth task runs on it", func(s hookSnapshot) (bool, string) {
		load, by := s.running(hookLoadJob)
		return s.admitted(newID) && load == 5 && by[newID] == 1 && len(s.runningIDs()) == 2,
			fmt.Sprintf("admitted=%t load=%d %v running=%v target=%d", s.admitted(newID), load, by, s.runningIDs(), s.lastTarget())
	})
	time.Sleep(3 * hookEvalInterval)
	final = r.obs.snapshot()

	jobs := r.checkConfigureJobs(final, []string{firstID, newID}, localcloud.AWXSuccessful)
	if n := r.launchCalls(hookConfigureID); n != 2 {
		t.Errorf("the AWX stand-in answered %d launches of the configure template, want 2 (the restart must not launch again)", n)
	}
	if j := jobs[newID]; j.ID != 0 && j.Finished.Before(released) {
		t.Errorf("the configure job of %s finished at %s, before the release at %s", newID, j.Finished.Format("15:04:05.000"), released.Format("15:04:05.000"))
	}
	r.checkNothingPlacedEarly(final)
	r.checkMonitoringOnNodes([]string{firstID, newID})
	if lo, hi := final.targetRange(raised); hi != 2 || lo < 1 {
		t.Errorf("target capacity ranged %d..%d after the load rose, want at most 2 (no extra scale-out while the node waited)", lo, hi)
	}
	if got := final.runningIDs(); len(got) != 2 {
		t.Errorf("running %v at the end, want two", got)
	}
	secondLogs := second.Logs()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !hasEntry(secondLogs, "node admitted: it takes work now", "instance_id="+newID); secondLogs = second.Logs() {
		time.Sleep(200 * time.Millisecond)
	}
	if n := countEntries(secondLogs, "target-spotfleet: scaled out"); n != 0 {
		t.Errorf("the restarted agent scaled out %d times while the node waited", n)
	}
	if !hasEntry(secondLogs, "node admitted: it takes work now", "instance_id="+newID) {
		t.Errorf("the restarted agent's log has no admission line for %s", newID)
	}
	lines := parseAgentLog(secondLogs)
	adm := final.nodeByName(newID).Admitted
	evals := linesBetween(lines, restarted, adm, "calculating scaling target")
	waiting := linesBetween(lines, restarted, adm, "calculating scaling target", "from=1", "to=2")
	if len(evals) < 2 {
		t.Errorf("the restarted agent evaluated %d times while %s waited for its playbook, want at least 2 (scaling froze)", len(evals), newID)
	}
	if len(waiting) == 0 {
		t.Errorf("the restarted agent never evaluated from=1 to=2 while %s waited: the waiting node is not counted as the ready nodes' complement", newID)
	}
	if !hasEntry(secondLogs, "already covers 2 ready nodes") && len(waiting) > 0 {
		t.Errorf("the restarted agent wanted 2 while one node waited, but the target did not answer that its capacity already covers them")
	}
	if notReady := linesBetween(lines, restarted.Add(5*time.Second), adm, "fleet status: not ready"); len(notReady) > 0 {
		t.Errorf("the target reported not ready while the node waited: %q", notReady[0].text)
	}
	t.Logf("FIGURES hooks-restart: agent stopped->started %s; started->job followed again %s; release->admitted %s; evaluations while waiting after the restart %d; test took %s",
		restarted.Sub(stopAt).Round(time.Millisecond), logTimeAfter(second.Logs(), "resuming:", restarted), adm.Sub(released).Round(time.Millisecond),
		len(evals), time.Since(r.began).Round(time.Second))
}

// logTimeAfter returns how long after since the first line containing part
// was logged.
func logTimeAfter(logs, part string, since time.Time) string {
	for _, l := range parseAgentLog(logs) {
		if strings.Contains(l.text, part) {
			return l.at.Sub(since).Round(time.Millisecond).String()
		}
	}
	return "never"
}

// TestProvisioningCallbackStyleAdmitsAfterTheInstancesOwnJob: the configure
// hook is awx_callback. Each new instance asks AWX for its configuration
// itself (the local cloud plays its user-data: once the node is ready it
// POSTs the template's provisioning callback with the host_config_key, its
// private IP and the extra vars instance_id and node_dir, and the stand-in
// runs the real monitoring.yml), and the plugin launches nothing: it only
// lists and reads the template's jobs for the instance's private IP (the
// default limit) until the newest one ends. The fleet's first instance calls
// back with a node_dir that does not exist, so its playbook fails: with
// on_failure = terminate, once the hook's timeout passes without a newer
// job, the instance is terminated with nothing placed on it. Its replacement
// calls back with its own node_dir; its node is admitted only after that
// job succeeded, and only then takes the pool's work.
func TestProvisioningCallbackStyleAdmitsAfterTheInstancesOwnJob(t *testing.T) {
	const hookTimeout = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var mu sync.Mutex
	broken := "" // the instance whose callback sends a wrong node_dir: the first to call
	vars := func(r *hookRig, id string) map[string]any {
		mu.Lock()
		defer mu.Unlock()
		dir := r.cloud.NodeDir(id)
		if broken == "" || broken == id {
			broken = id
			dir = filepath.Join(r.dir, "no-such-node-dir")
		}
		return map[string]any{"instance_id": id, "node_dir": dir}
	}
	r := startHookRig(ctx, t, hookOptions{size: 1, min: 1, max: 1, target: 70, load: 1, onFailure: "terminate",
		callback: true, callbackVars: vars, hookTimeout: hookTimeout})
	first := r.obs.snapshot().runningIDs()
	if len(first) != 1 {
		t.Fatalf("running instances %v, want one", first)
	}
	victim := first[0]

	var failedJob localcloud.AWXJob
	waitFor(t, time.Minute, "the first instance's callback job ends", func() (bool, string) {
		jobs := r.jobsFor(hookConfigureID, victim)
		if len(jobs) > 0 && localcloud.AWXFinal(jobs[0].Status) {
			failedJob = jobs[0]
			return true, fmt.Sprint(jobIDs(jobs))
		}
		return false, fmt.Sprint(jobIDs(r.awx.Jobs()))
	})
	mu.Lock()
	calledFirst := broken
	mu.Unlock()
	if calledFirst != victim {
		t.Fatalf("the first callback came from %q, want the fleet's first instance %s", calledFirst, victim)
	}
	if failedJob.Status != localcloud.AWXFailed {
		t.Errorf("the first instance's callback job %d ended %s, want failed (its node_dir does not exist)", failedJob.ID, failedJob.Status)
	}

	r.waitSettled(90*time.Second, "the failed instance is gone and its replacement is admitted and runs the load and the check", func(s hookSnapshot) (bool, string) {
		ids := s.runningIDs()
		load, _ := s.running(hookLoadJob)
		check, _ := s.running(hookCheckJob)
		ok := len(ids) == 1 && ids[0] != victim && s.admitted(ids[0]) && load == 1 && check == 1
		return ok, fmt.Sprintf("running %v (victim %s) load=%d check=%d target=%d awx jobs=%v", ids, victim, load, check, s.lastTarget(), jobIDs(r.awx.Jobs()))
	})
	time.Sleep(2 * hookEvalInterval) // a second job, launch or removal would show by now
	final := r.obs.snapshot()
	ids := final.runningIDs()
	if len(ids) != 1 || ids[0] == victim {
		t.Fatalf("running %v at the end, want one replacement of %s", ids, victim)
	}
	replacement := ids[0]

	// The plugin launched nothing: the only POSTs are the instances' own
	// callbacks; the plugin's calls are reads.
	callbackPath := fmt.Sprintf("/api/v2/job_templates/%d/callback/", hookConfigureID)
	callbacks, reads := 0, 0
	for _, c := range r.awx.Calls() {
		switch {
		case c.Method == "POST" && strings.HasSuffix(c.Path, "/launch/"):
			t.Errorf("AWX got a launch, POST %s (-> %d): an awx_callback hook must launch nothing", c.Path, c.Status)
		case c.Method == "POST" && c.Path == callbackPath:
			callbacks++
			if c.Status != 201 {
				t.Errorf("a provisioning callback got %d, want 201", c.Status)
			}
		case c.Method == "GET":
			reads++
		default:
			t.Errorf("AWX got %s %s (-> %d): the plugin's only calls should be reads (list and get)", c.Method, c.Path, c.Status)
		}
	}
	if callbacks != 2 {
		t.Errorf("AWX got %d provisioning callbacks, want 2 (one per instance)", callbacks)
	}
	if reads == 0 {
		t.Errorf("the plugin never read AWX: it did not wait for the callback jobs")
	}

	// Exactly one callback job per instance, against its private IP.
	jobs := map[string]localcloud.AWXJob{}
	for id, want := range map[string]string{victim: localcloud.AWXFailed, replacement: localcloud.AWXSuccessful} {
		js := r.jobsFor(hookConfigureID, id)
		if len(js) != 1 {
			t.Errorf("instance %s got %d configure jobs, want exactly 1 (its own callback): %v", id, len(js), jobIDs(js))
			if len(js) == 0 {
				continue
			}
		}
		j := js[0]
		jobs[id] = j
		in := final.instances[id]
		if j.LaunchType != "callback" {
			t.Errorf("configure job %d of %s has launch_type %q, want callback", j.ID, id, j.LaunchType)
		}
		if in.PrivateIP == "" || j.Limit != in.PrivateIP {
			t.Errorf("configure job %d of %s has limit %q, want the instance's private IP %q", j.ID, id, j.Limit, in.PrivateIP)
		}
		if j.Status != want {
			t.Errorf("configure job %d of %s ended %s, want %s (%s)", j.ID, id, j.Status, want, j.Explanation)
		}
	}
	if n := len(r.awx.Jobs()); n != 2 {
		t.Errorf("AWX ran %d jobs, want 2: %v", n, jobIDs(r.awx.Jobs()))
	}
	if !strings.Contains(failedJob.Stdout, "no-such-node-dir") {
		t.Errorf("the failed callback job's output does not show the wrong node_dir:\n%s", failedJob.Stdout)
	}

	// The failed instance: never admitted, nothing placed, tagged, removed.
	if n := final.nodeByName(victim); n == nil {
		t.Errorf("the failed instance %s never had a Nomad node", victim)
	} else if slices.Contains(n.Gates, "admitted") {
		t.Errorf("the node of %s, whose callback job failed, was admitted (gates %v)", victim, n.Gates)
	}
	for _, a := range final.allocs {
		if a.NodeName == victim {
			t.Errorf("allocation %s of %s was placed on the instance whose callback job failed", a.ID[:8], a.JobID)
		}
	}
	victimIP := final.instances[victim].PrivateIP
	tag := r.instanceTags(victim)["nomad-autoscaler:hook-failed"]
	wantTag := []string{fmt.Sprintf("the callback job of host %q failed", victimIP), fmt.Sprintf("AWX job %d ended failed", failedJob.ID)}
	if !strings.HasPrefix(tag, "terminate configure: ") || !strings.Contains(tag, wantTag[0]) || !strings.Contains(tag, wantTag[1]) {
		t.Errorf("tag nomad-autoscaler:hook-failed of %s is %q, want \"terminate configure: ...\" with %q", victim, tag, wantTag)
	}
	logs := r.logs()
	if !hasEntry(logs, "launch hook failed: the instance is removed and the fleet replaces it (on_failure=terminate)", "instance_id="+victim) {
		t.Errorf("the agent log has no line reporting the failed callback hook of %s", victim)
	}

	// The replacement: admitted only after its own job succeeded, the
	// pool's work only after that, monitoring installed by the playbook.
	repl, rj := final.nodeByName(replacement), jobs[replacement]
	switch {
	case repl == nil:
		t.Errorf("the replacement %s has no Nomad node", replacement)
	case rj.ID == 0:
	default:
		if !slices.Equal(repl.Gates, []string{"pending", "admitted"}) {
			t.Errorf("node of %s went through gate values %v, want [pending admitted]", replacement, repl.Gates)
		}
		if rj.Finished.IsZero() || !repl.Admitted.After(rj.Finished) {
			t.Errorf("the node of %s was admitted at %s, not after its callback job %d finished at %s",
				replacement, repl.Admitted.Format("15:04:05.000"), rj.ID, rj.Finished.Format("15:04:05.000"))
		}
		if got := fmt.Sprint(rj.ExtraVars["node_dir"]); got != repl.NodeDir || got == "" {
			t.Errorf("the callback job %d of %s ran with node_dir %q, want the node's %q", rj.ID, replacement, got, repl.NodeDir)
		}
	}
	if n := r.checkNothingPlacedEarly(final); n == 0 {
		t.Errorf("no allocation of the pool's jobs was checked: nothing ran on the replacement")
	}
	r.checkMonitoringOnNodes([]string{replacement})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !hasEntry(logs, "node admitted: it takes work now", "instance_id="+replacement); logs = r.logs() {
		time.Sleep(200 * time.Millisecond)
	}
	if !hasEntry(logs, "node admitted: it takes work now", "instance_id="+replacement) {
		t.Errorf("the agent log has no admission line for %s", replacement)
	}
	if lo, hi := final.targetRange(r.began); lo != 1 || hi != 1 {
		t.Errorf("target capacity ranged %d..%d, want 1 throughout", lo, hi)
	}
	if n := len(final.instances); n != 2 {
		t.Errorf("%d instances ever ran in the fleet, want 2 (the failed one and its replacement)", n)
	}

	in, gone := final.instances[replacement], final.instances[victim].Gone
	if repl != nil && rj.ID != 0 && !gone.IsZero() {
		t.Logf("FIGURES hooks-callback: instance running->callback job created %s; callback job created->finished %s; finished->node admitted (meta at the server) %s; running->admitted %s; failed callback job finished->failed instance gone %s (hook timeout %s); test took %s",
			rj.Created.Sub(in.Seen).Round(time.Millisecond), rj.Finished.Sub(rj.Created).Round(time.Millisecond),
			repl.Admitted.Sub(rj.Finished).Round(time.Millisecond), repl.Admitted.Sub(in.Seen).Round(time.Millisecond),
			gone.Sub(failedJob.Finished).Round(time.Millisecond),
			hookTimeout, time.Since(r.began).Round(time.Second))
	}
}
