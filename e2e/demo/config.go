package main

import (
	"fmt"
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
// the fleet small.
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

// agentPluginsHCL declares our three plugins in the agent configuration;
// targetHCL is the local cloud's target-spotfleet block.
func agentPluginsHCL(targetHCL string) string {
	return fmt.Sprintf(`apm "node" {
  driver = "apm-node"
  config = {
    sample_interval  = %q
    sample_retention = "5m"
    node_warmup      = %q
  }
}

strategy "cpu-target" {
  driver = "strategy-cpu-target"
}
`, sampleInterval, nodeWarmup) + targetHCL
}

// clusterPolicyHCL is the cluster scaling policy of the demo.
func clusterPolicyHCL(fleetID string) string {
	return fmt.Sprintf(`# Demo policy: hold %[1]d%% mean workload CPU on the %[2]s pool (short
# windows and cooldowns so that the demo runs in minutes).
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
      }
    }

    target "spotfleet" {
      spot_fleet_request_id = %[11]q
      node_class            = %[2]q
      node_id_attribute     = "meta.ec2_instance_id"
      node_drain_deadline   = %[12]q
    }
  }
}
`, targetCPU, nodeClass, policyMin, policyMax, evaluationInterval, cooldown, cooldownOnScaleUp,
		queryWindow, scaleOutWindow, maxDataAge, fleetID, drainTimeout)
}
