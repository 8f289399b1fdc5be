package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The pool and its nodes.
//
// Every node of the local cloud runs on this one 2-core host, so the demo
// scales on apm-node's workload_cpu: the CPU used by a node's own
// allocations over its schedulable CPU. Nomad reports a task burning a share
// s of one core as s × cpu_total_compute / cores MHz, so without a
// reservation a node would need 1.5 real cores of work to reach 75%. A large
// reserved CPU leaves each node a small schedulable share, so that a light
// burner stands for a big slice of a node:
//
//	burner:  0.06 core × 2000 MHz / 2 cores = 60 MHz
//	node:    2000 − 1860 reserved            = 140 MHz schedulable
//	one burner on one node                   ≈ 43% workload CPU
//
// On a host with another core count the burner's share of a core scales
// with cores/2, so the figures Nomad reports stay the same.
const (
	nodeClass       = "spot-worker"
	cpuTotalCompute = 2000 // MHz, the client's cpu_total_compute
	reservedCPU     = 1860 // MHz, the client's reserved.cpu
	schedulableCPU  = cpuTotalCompute - reservedCPU
	designCores     = 2 // host cores the figures above assume

	// baseBurnShare is the share of one core each burner task uses on a
	// 2-core host.
	baseBurnShare = 0.06
	// burnerAskMHz is what a burner asks the scheduler for: less than it
	// uses (raw_exec has no CPU limit), so placement never holds the load
	// back; the point of apm-node is to scale on CPU used, not reserved.
	burnerAskMHz = 20
)

// burnShare is the share of one core a burner uses on a host with cores
// cores, so that Nomad reports the same MHz whatever the core count.
func burnShare(cores int) float64 {
	return min(baseBurnShare*float64(max(cores, 1))/designCores, 0.9)
}

// burnerPercent is the workload CPU one burner adds to a node, in percent of
// its schedulable CPU.
func burnerPercent(cores int) float64 {
	return 100 * burnShare(cores) * cpuTotalCompute / float64(max(cores, 1)) / schedulableCPU
}

// The policy.
//
// The bounds are 1..20 as in production. With burners of ~43% the load steps
// below need at most 5 nodes (8 × 43% / 75% → 5), which this 2-core machine
// holds comfortably (each Nomad client agent idles at a few percent of a
// core); the policy's max stays 20 because the strategy, not the max, keeps
// the fleet small, and max_scale_up (maxScaleUp) bounds how many nodes come
// up, and run their playbook, at once.
const (
	policyMin    = 1
	policyMax    = 20
	targetCPU    = 75
	drainTimeout = 20 * time.Second

	// Demo time scale. Production uses ~10 s samples, a 5 m window and 2 m
	// cooldowns (strategy-cpu-target/README.md); the local cloud's nodes are
	// ready within seconds, so everything is shortened to fit a few minutes.
	sampleInterval     = 2 * time.Second
	nodeWarmup         = 4 * time.Second
	evaluationInterval = 5 * time.Second
	queryWindow        = 30 * time.Second
	scaleOutWindow     = 10 * time.Second
	maxDataAge         = 20 * time.Second
	cooldown           = 15 * time.Second // after a scale-in
	cooldownOnScaleUp  = 20 * time.Second // boot-to-ready + warm-up + scale_out_window

	// trendLead is how far ahead the strategy projects a saturated pool's
	// rise: the time from launch to a node taking work, here boot, the
	// playbook and the admission (~15 s; production default 90 s), over a
	// trendWindow as short as the query window is here.
	trendLead   = 15 * time.Second
	trendWindow = 20 * time.Second
	// maxScaleUp caps the nodes one scale-out adds: every new node runs
	// ansible-playbook and a Nomad client on this one 2-core host, so a
	// burst of many at once would slow every node's configuration down.
	maxScaleUp = 3

	// targetWarmup is the target's node_warmup: apm-node's warm-up plus a
	// sample, so that the target counts an admitted node once apm-node
	// measures it (docs/hooks.md, "Counting while nodes wait").
	targetWarmup = nodeWarmup + sampleInterval
)

// Hooks and interruptions.
//
// Every node registers gated (client meta spotfleet_admission = "pending",
// as the launch template's user-data does in production); the burner job
// is constrained to admitted nodes. target-spotfleet runs the launch hook
// "configure" (an AWX job template played by the local cloud's AWX
// stand-in with the real ansible-playbook) and admits the node only once
// the job has succeeded. A failed job removes the instance (on_failure =
// terminate) and the maintain fleet replaces it.
//
// The spot interruption is scaled down: the local cloud terminates the
// instance interruptionNotice after the warning (AWS: two minutes), and
// the plugin drains its node with interruptionDrain as the deadline.
const (
	gateKey             = "spotfleet_admission"
	configureHook       = "configure"
	configureTemplate   = "configure-node"
	configureTemplateID = 31
	awxTokenEnv         = "DEMO_AWX_TOKEN"
	hookTimeout         = 2 * time.Minute
	refillDelay         = 2 * time.Second
	interruptionNotice  = 45 * time.Second
	interruptionDrain   = 10 * time.Second
)

// clientExtraHCL is appended to every client agent's configuration; Nomad
// merges it into the client block written by the local cloud.
func clientExtraHCL() string {
	return fmt.Sprintf(`# Demo: leave each node a small schedulable CPU (see e2e/demo/config.go).
client {
  reserved {
    cpu = %d
  }
}
`, reservedCPU)
}

// clientMeta is the static meta of every new node: it registers gated, as
// the launch template's user-data makes it do in production.
func clientMeta() map[string]string {
	return map[string]string{gateKey: "pending"}
}

// targetWithAWX adds the AWX stand-in (its token by environment variable,
// never in a file) and the interruption queue to the local cloud's
// target-spotfleet block.
func targetWithAWX(base, awxURL, queueURL string) (string, error) {
	const anchor = `aws_secret_access_key = "test"`
	if strings.Count(base, anchor) != 1 {
		return "", fmt.Errorf("cannot add the AWX settings: the local cloud's target block has no single line %q", anchor)
	}
	extra := "\n    awx_url                = " + strconv.Quote(awxURL) +
		"\n    awx_token_env          = " + strconv.Quote(awxTokenEnv) +
		"\n    interruption_queue_url = " + strconv.Quote(queueURL)
	return strings.Replace(base, anchor, anchor+extra, 1), nil
}

// agentPluginsHCL declares our three plugins in the agent configuration;
// targetHCL is the target-spotfleet block.
func agentPluginsHCL(targetHCL string) string {
	return fmt.Sprintf(`apm "node" {
  driver = "apm-node"
  config = {
    sample_interval  = %q
    sample_retention   = "5m"
    node_warmup        = %q
    admission_meta_key = %q
  }
}

strategy "cpu-target" {
  driver = "strategy-cpu-target"
}
`, sampleInterval, nodeWarmup, gateKey) + targetHCL
}

// clusterPolicyHCL is the cluster scaling policy of the demo.
func clusterPolicyHCL(fleetID string) string {
	return fmt.Sprintf(`# Demo policy: hold %[1]d%% mean workload CPU on the %[2]s pool (short
# windows and cooldowns so that the demo runs in minutes); every new node
# is configured by AWX before it is admitted; spot interruptions are
# drained and replaced.
scaling "spot_fleet" {
  enabled = true
  min     = %[3]d
  max     = %[4]d

  policy {
    evaluation_interval  = %[5]q
    cooldown             = %[6]q
    cooldown_on_scale_up = %[7]q

    check "cpu" {
      source       = "node"
      query        = "workload_cpu node_class=%[2]s"
      query_window = %[8]q

      strategy "cpu-target" {
        target           = %[1]d
        scale_out_window = %[9]q
        max_data_age     = %[10]q
        trend_lead       = %[19]q
        trend_window     = %[20]q
        max_scale_up     = %[21]d
      }
    }

    target "spotfleet" {
      spot_fleet_request_id       = %[11]q
      node_class                  = %[2]q
      node_id_attribute           = "meta.ec2_instance_id"
      node_drain_deadline         = %[12]q
      node_warmup                 = %[13]q
      admission_meta_key          = %[14]q
      launch_hooks                = %[15]q
      hook_configure_type         = "awx"
      hook_configure_job_template = %[16]q
      hook_configure_extra_vars   = "node_dir={{node.meta.node_dir}}"
      hook_configure_timeout      = %[17]q
      hook_configure_on_failure   = "terminate"
      interruption_drain_deadline = %[18]q
    }
  }
}
`, targetCPU, nodeClass, policyMin, policyMax, evaluationInterval, cooldown, cooldownOnScaleUp,
		queryWindow, scaleOutWindow, maxDataAge, fleetID, drainTimeout,
		targetWarmup, gateKey, configureHook, configureTemplate, hookTimeout, interruptionDrain,
		trendLead, trendWindow, maxScaleUp)
}
