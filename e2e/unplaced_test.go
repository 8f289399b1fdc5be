//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// cpuTargetStrategyHCL declares strategy-cpu-target; its settings live in
// each check's strategy block.
const cpuTargetStrategyHCL = `
strategy "strategy-cpu-target" {
  driver = "strategy-cpu-target"
}
`

// unplacedPolicy is the cluster policy of TestUnplacedWorkScalesOut: a CPU
// check on the CPU the allocations really use and an unplaced_nodes check,
// both strategy-cpu-target, in one group so that the unplaced check's
// "nothing waits" (none) does not veto the CPU check's scale-in.
//
// The CPU check's query_window (30s) with the default
// scale_in_min_coverage (0.8) keeps it from scaling in during the first
// 24 s of samples after the agent starts, while the pool first grows and
// every allocation runs (a CPU scale-in then would drain nodes whose
// reserved work would wait again: docs/unplaced.md, limits).
func unplacedPolicy(fleetID string, min, max int) string {
	return fmt.Sprintf(`
scaling "spot_pool" {
  enabled = true
  min     = %d
  max     = %d

  policy {
    evaluation_interval  = "2s"
    cooldown             = "4s"
    cooldown_on_scale_up = "6s"

    check "cpu" {
      source       = "apm-node"
      query        = "workload_cpu node_class=spot"
      query_window = "30s"
      group        = "pool"
      strategy "strategy-cpu-target" {
        target = "75"
      }
    }

    check "unplaced" {
      source       = "apm-node"
      query        = "unplaced_nodes node_class=spot"
      query_window = "10s"
      group        = "pool"
      strategy "strategy-cpu-target" {
        signal = "unplaced"
      }
    }

    target "spotfleet" {
      spot_fleet_request_id  = %q
      node_class             = "spot"
      node_id_attribute      = "meta.ec2_instance_id"
      node_drain_deadline    = "20s"
      node_selector_strategy = "least_busy"
    }
  }
}
`, min, max, fleetID)
}

// TestUnplacedWorkScalesOut runs the real agent with apm-node and
// strategy-cpu-target on the local cloud. A job reserves 600 of each
// node's 1000 MHz and uses almost none of it, so the CPU check alone never
// scales out; the unplaced check adds the nodes the waiting allocations
// need, stops at the policy's max with work still waiting and keeps the
// CPU check from scaling in meanwhile, and once the job stops the CPU
// check scales the pool in again.
func TestUnplacedWorkScalesOut(t *testing.T) {
	const (
		policyMin, policyMax = 1, 4
		nodeCPU, taskCPU     = 1000, 600 // one task per node
		jobID                = "e2e-reserve"
	)
	start := time.Now()
	cloud := startCloud(t, localcloud.Config{Client: localcloud.ClientOptions{CPUTotalCompute: nodeCPU}})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 1}, 1)
	watch := watchFleet(t, cloud, fleetID)
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	// Three allocations, one node: two wait unplaced before the agent starts.
	if _, _, err := nc.Jobs().Register(sleeperJob(jobID, "spot", 3, taskCPU), nil); err != nil {
		t.Fatalf("registering job: %v", err)
	}
	queued := func() (int, error) {
		s, _, err := nc.Jobs().Summary(jobID, nil)
		if err != nil {
			return 0, err
		}
		return s.Summary["work"].Queued, nil
	}
	waitFor(t, 30*time.Second, "two allocations wait unplaced", func() (bool, string) {
		q, err := queued()
		return err == nil && q == 2, fmt.Sprintf("queued=%d err=%v", q, err)
	})

	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		ExtraHCL: apmNodeHCL + cpuTargetStrategyHCL + cloud.SpotfleetTargetHCL(),
		Policies: map[string]string{"spot.hcl": unplacedPolicy(fleetID, policyMin, policyMax)},
	})
	if err != nil {
		t.Fatalf("starting the autoscaler agent: %v", err)
	}

	// 1. The unplaced check adds the two nodes; every allocation is placed.
	placed := func(want int) func() (bool, string) {
		return func() (bool, string) {
			target, running, err := fleetState(ctx, cloud, fleetID)
			counts, _, aerr := jobAllocs(nc, jobID)
			q, qerr := queued()
			if err != nil || aerr != nil || qerr != nil {
				return false, fmt.Sprint(err, aerr, qerr)
			}
			return target == want && len(running) == want && counts["running"] == want && q == 0,
				fmt.Sprintf("target=%d running=%d queued=%d allocs: %s", target, len(running), q, formatCounts(counts))
		}
	}
	waitFor(t, 45*time.Second, "fleet grows to 3 and all three allocations run", placed(3))
	if _, err := agent.WaitLogRegexp(ctx, regexp.MustCompile(`strategy-cpu-target: hold 3: nothing waits unplaced`)); err != nil {
		t.Fatalf("the unplaced check never saw the queue empty: %v", err)
	}

	// 2. Six allocations need six nodes; max is 4. Two stay unplaced, the
	// fleet stops at 4 and stays there.
	scaleJob(t, nc, jobID, "work", 6)
	waitFor(t, 45*time.Second, "fleet grows to the max with two allocations waiting", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		counts, _, aerr := jobAllocs(nc, jobID)
		q, qerr := queued()
		if err != nil || aerr != nil || qerr != nil {
			return false, fmt.Sprint(err, aerr, qerr)
		}
		return target == policyMax && len(running) == policyMax && counts["running"] == policyMax && q == 2,
			fmt.Sprintf("target=%d running=%d queued=%d allocs: %s", target, len(running), q, formatCounts(counts))
	})
	capped := regexp.MustCompile(`strategy-cpu-target: scale out 4 -> 6: unplaced work needs 2 more node`)
	if _, err := agent.WaitLogRegexp(ctx, capped); err != nil {
		t.Fatalf("the unplaced check did not ask for the two missing nodes at the max: %v", err)
	}
	// Once its window is covered the CPU check wants to scale in (the tasks
	// use almost no CPU); the waiting work's capped scale-out wins in the
	// group, so the fleet stays at the max.
	cpuScaleIn := regexp.MustCompile(`strategy-cpu-target: scale in 4 -> 1: .*signal=cpu`)
	if _, err := agent.WaitLogRegexp(ctx, cpuScaleIn); err != nil {
		t.Fatalf("the CPU check never asked to scale in at the max: %v", err)
	}
	time.Sleep(5 * time.Second) // two more evaluations
	target, _, err := fleetState(ctx, cloud, fleetID)
	q, qerr := queued()
	if err != nil || qerr != nil || target != policyMax || q != 2 {
		t.Fatalf("fleet target %d, queued %d (errors %v, %v) after the CPU check asked to scale in while work waits; want %d and 2",
			target, q, err, qerr, policyMax)
	}

	// 3. The job stops: nothing waits, the CPU check's scale-in wins.
	if _, _, err := nc.Jobs().Deregister(jobID, false, nil); err != nil {
		t.Fatalf("stopping the job: %v", err)
	}
	waitFor(t, 60*time.Second, "the pool scales in to the min once the job stops", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		if err != nil {
			return false, err.Error()
		}
		return target == policyMin && len(running) == policyMin, fmt.Sprintf("target=%d running=%d", target, len(running))
	})

	// The CPU check never asked for a node, and the fleet never went past max.
	logs := agent.Logs()
	var cpuLines, cpuIns, unplacedUps int
	for _, line := range strings.Split(logs, "\n") {
		_, decision, ok := strings.Cut(line, "external_plugin.strategy-cpu-target: ")
		if !ok {
			continue
		}
		switch {
		case strings.Contains(line, "signal=cpu"):
			cpuLines++
			if strings.HasPrefix(decision, "scale out") {
				t.Errorf("the CPU check asked for nodes, so the test proves nothing about the unplaced signal: %s", line)
			}
			if strings.HasPrefix(decision, "scale in") {
				cpuIns++
			}
		case strings.Contains(line, "signal=unplaced") && strings.HasPrefix(decision, "scale out"):
			if unplacedUps == 0 {
				t.Logf("first unplaced decision: %s", decision)
			}
			unplacedUps++
		}
	}
	t.Logf("strategy decisions: CPU check %d (%d of them scale-ins), unplaced check %d scale-outs", cpuLines, cpuIns, unplacedUps)
	if cpuLines == 0 || unplacedUps == 0 {
		t.Errorf("found %d CPU check lines and %d unplaced scale-outs in the agent log, want both", cpuLines, unplacedUps)
	}
	if !strings.Contains(logs, "capped count from 6 to 4") {
		t.Errorf("the agent never capped the unplaced check's count at the max")
	}
	lo, hi, samples := watch.bounds()
	if hi > policyMax || lo < policyMin || samples == 0 {
		t.Errorf("fleet target ranged %d..%d over %d samples, want within %d..%d", lo, hi, samples, policyMin, policyMax)
	}
	t.Logf("took %s; fleet target %d..%d over %d samples", time.Since(start).Round(time.Second), lo, hi, samples)
}
