//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// nomadAPMCheck is a policy check on the pool's allocated CPU with the stock
// nomad-apm and target-value plugins.
const nomadAPMCheck = `
    check "allocated_cpu" {
      source = "nomad-apm"
      query  = "node_percentage-allocated_cpu/spot/class"

      strategy "target-value" {
        target = 70
      }
    }`

// clusterPolicy is a cluster scaling policy for the fleet with the stock
// nomad-apm (allocated CPU of the pool) and target-value strategy.
//
// The selector picks the oldest node, which always runs tasks here, so the
// drains have work to move.
func clusterPolicy(fleetID string, min, max int, targetExtra string) string {
	return clusterPolicyWith(fleetID, min, max, nomadAPMCheck, targetExtra)
}

// clusterPolicyWith is clusterPolicy with another check block.
func clusterPolicyWith(fleetID string, min, max int, check, targetExtra string) string {
	return fmt.Sprintf(`
scaling "spot_pool" {
  enabled = true
  min     = %d
  max     = %d

  policy {
    cooldown            = "5s"
    evaluation_interval = "3s"
%s

    target "spotfleet" {
      spot_fleet_request_id  = %q
      node_class             = "spot"
      node_id_attribute      = "meta.ec2_instance_id"
      node_drain_deadline    = "30s"
      node_selector_strategy = "oldest_create_index"
      %s
    }
  }
}
`, min, max, check, fleetID, targetExtra)
}

// TestSpotFleetFollowsJobThroughRealAgent drives the real autoscaler agent
// with the stock nomad-apm and target-value plugins and our target: raising a
// job's count grows the fleet until its allocations are placed; lowering it
// shrinks the fleet by draining nodes first.
func TestSpotFleetFollowsJobThroughRealAgent(t *testing.T) {
	const (
		policyMin, policyMax = 1, 4
		nodeCPU, taskCPU     = 1000, 400 // two tasks per node
		jobID                = "e2e-sleepers"
	)
	cloud := startCloud(t, localcloud.Config{Client: localcloud.ClientOptions{CPUTotalCompute: nodeCPU}})
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()

	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 1}, 1)
	watch := watchFleet(t, cloud, fleetID)
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().Register(sleeperJob(jobID, "spot", 1, taskCPU), nil); err != nil {
		t.Fatalf("registering job: %v", err)
	}

	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		ExtraHCL: cloud.SpotfleetTargetHCL(),
		Policies: map[string]string{"spot.hcl": clusterPolicy(fleetID, policyMin, policyMax, "")},
	})
	if err != nil {
		t.Fatalf("starting the autoscaler agent: %v", err)
	}

	// Scale out: five tasks need three nodes; they start pending.
	scaleJob(t, nc, jobID, "work", 5)
	waitFor(t, 5*time.Minute, "fleet grows to 3 and every task runs", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		counts, _, aerr := jobAllocs(nc, jobID)
		if err != nil || aerr != nil {
			return false, fmt.Sprint(err, aerr)
		}
		return target == 3 && len(running) == 3 && counts["running"] == 5,
			fmt.Sprintf("target=%d running=%d allocs: %s", target, len(running), formatCounts(counts))
	})
	nodes, err := cloud.WaitNodesReady(ctx, 3)
	if err != nil {
		t.Fatalf("new instances did not become Nomad nodes: %v", err)
	}
	for _, n := range nodes {
		if n.Meta["ec2_instance_id"] == "" {
			t.Errorf("node %s carries no instance id", n.ID)
		}
	}

	// Scale in, twice: three tasks fit on two nodes, then one on one. The
	// nodes chosen still run tasks, which the drain must move elsewhere.
	scaleJob(t, nc, jobID, "work", 3)
	waitFor(t, 5*time.Minute, "fleet shrinks to 2 with every task running", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		counts, _, aerr := jobAllocs(nc, jobID)
		if err != nil || aerr != nil {
			return false, fmt.Sprint(err, aerr)
		}
		return target == 2 && len(running) == 2 && counts["running"] == 3,
			fmt.Sprintf("target=%d running=%d allocs: %s", target, len(running), formatCounts(counts))
	})
	scaleJob(t, nc, jobID, "work", 1)
	waitFor(t, 5*time.Minute, "fleet shrinks to 1", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		if err != nil {
			return false, err.Error()
		}
		return target == 1 && len(running) == 1, fmt.Sprintf("target=%d running=%v", target, running)
	})
	// Let the agent evaluate a few more times: nothing else may happen.
	time.Sleep(8 * time.Second)

	// The terminated instances are exactly the nodes the autoscaler drained.
	target, running, err := fleetState(ctx, cloud, fleetID)
	if err != nil {
		t.Fatal(err)
	}
	var terminated []string
	for _, id := range watch.instances() {
		if !slices.Contains(running, id) {
			terminated = append(terminated, id)
		}
	}
	allNodes, _, err := nc.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	var drained []string
	drainDone := map[string]time.Time{}
	for _, stub := range allNodes {
		n, _, err := nc.Nodes().Info(stub.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n.LastDrain != nil && n.LastDrain.Meta["drained_by"] == "nomad-autoscaler" {
			id := n.Meta["ec2_instance_id"]
			drained = append(drained, id)
			drainDone[id] = n.LastDrain.UpdatedAt
			if n.LastDrain.Status != api.DrainStatusComplete {
				t.Errorf("drain of node %s (%s) ended %s, want complete", n.ID, id, n.LastDrain.Status)
			}
		}
	}
	sort.Strings(drained)
	if len(terminated) != 2 || !slices.Equal(terminated, drained) {
		t.Errorf("terminated instances %v, drained nodes' instances %v: want the same two", terminated, drained)
	}
	// Each instance was stopped only after its node's drain had finished.
	for _, ev := range cloud.Events() {
		if ev.Kind == localcloud.EventClientStopped && slices.Contains(terminated, ev.InstanceID) {
			if done := drainDone[ev.InstanceID]; done.IsZero() || ev.Time.Before(done) {
				t.Errorf("instance %s stopped at %s, before its drain completed at %s", ev.InstanceID, ev.Time, done)
			}
		}
	}

	// No allocation was lost.
	counts, allocs, err := jobAllocs(nc, jobID)
	if err != nil {
		t.Fatal(err)
	}
	if counts["lost"] > 0 {
		for _, a := range allocs {
			if a.ClientStatus == "lost" {
				t.Errorf("allocation %s on node %s is lost", a.ID, a.NodeID)
			}
		}
	}
	if counts["running"] != 1 {
		t.Errorf("job allocations: %s, want exactly 1 running", formatCounts(counts))
	}
	// Allocations that ran on a removed node were replaced elsewhere.
	migrated := 0
	for _, a := range allocs {
		if slices.Contains(terminated, a.NodeName) && a.NextAllocation != "" {
			migrated++
		}
	}
	if migrated == 0 {
		t.Errorf("no allocation was migrated off a drained node; the test did not exercise a drain with work on it")
	}
	t.Logf("allocations: %s; %d migrated by drains", formatCounts(counts), migrated)

	// TargetCapacity equals the running nodes.
	ready, err := cloud.WaitNodesReady(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if target != len(running) || len(ready) != len(running) {
		t.Errorf("target capacity %d, running instances %d, ready nodes %d: want all equal", target, len(running), len(ready))
	}

	// The policy's bounds held at every sample.
	lo, hi, samples := watch.bounds()
	if lo < policyMin || hi > policyMax {
		t.Errorf("target capacity ranged %d..%d over %d samples, outside the policy's %d..%d", lo, hi, samples, policyMin, policyMax)
	}

	// Each action was explained in one line with its numbers (the plugin's
	// log fields reach the agent's log in any order).
	logs := agent.Logs()
	for _, want := range [][]string{
		{"scaled out:", "from=1", "to=2", "reason="},
		{"scaled in:", "from=3", "to=2", "terminated=", "reason="},
		{"scaled in:", "from=2", "to=1", "terminated=", "reason="},
	} {
		if !hasLogLine(logs, want...) {
			t.Errorf("agent log has no line with all of %q", want)
		}
	}
	t.Logf("fleet %s: target ranged %d..%d over %d samples; terminated %v", fleetID, lo, hi, samples, terminated)
}

// TestSpotFleetBadConfigTakesNoAction shows that a policy with a missing fleet
// id, a bad duration or a fleet of one instance family is refused with a clear
// message in the agent log and that the fleets are left alone.
func TestSpotFleetBadConfigTakesNoAction(t *testing.T) {
	cloud := startCloud(t, localcloud.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 2}, 2)
	single := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 1, SingleFamily: true}, 3)
	_, before, err := fleetState(ctx, cloud, fleetID)
	if err != nil {
		t.Fatal(err)
	}
	_, singleBefore, err := fleetState(ctx, cloud, single)
	if err != nil {
		t.Fatal(err)
	}

	// Both policies would scale the pool in to 1 (nothing is allocated).
	missingID := strings.Replace(clusterPolicy(fleetID, 1, 4, ""), fmt.Sprintf("spot_fleet_request_id  = %q", fleetID), "", 1)
	badDuration := strings.Replace(clusterPolicy(fleetID, 1, 4, ""), `node_drain_deadline    = "30s"`, `node_drain_deadline    = "soon"`, 1)
	badDuration = strings.Replace(badDuration, `scaling "spot_pool"`, `scaling "spot_pool_2"`, 1)
	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		ExtraHCL: cloud.SpotfleetTargetHCL(),
		Policies: map[string]string{
			"missing.hcl": missingID,
			"bad.hcl":     badDuration,
			"single.hcl":  strings.Replace(clusterPolicy(single, 1, 4, ""), `scaling "spot_pool"`, `scaling "spot_pool_3"`, 1),
		},
	})
	if err != nil {
		t.Fatalf("starting the autoscaler agent: %v", err)
	}
	for _, want := range []string{
		"spot_fleet_request_id is required",
		// hclog quotes the error, so its inner quotes appear escaped.
		`invalid node_drain_deadline \"soon\": want a positive duration`,
		fmt.Sprintf("spot fleet request %s is not diversified: its launch specifications and overrides use instance families [c5]", single),
	} {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		if _, err := agent.WaitLog(wctx, want); err != nil {
			t.Errorf("agent log does not say %q: %v", want, err)
		}
		wcancel()
	}
	// Give the agent several more evaluations to misbehave.
	time.Sleep(10 * time.Second)
	target, after, err := fleetState(ctx, cloud, fleetID)
	if err != nil {
		t.Fatal(err)
	}
	if target != 2 || !slices.Equal(before, after) {
		t.Errorf("fleet changed: target %d, instances %v -> %v", target, before, after)
	}
	target, singleAfter, err := fleetState(ctx, cloud, single)
	if err != nil {
		t.Fatal(err)
	}
	if target != 1 || !slices.Equal(singleBefore, singleAfter) {
		t.Errorf("single-family fleet changed: target %d, instances %v -> %v", target, singleBefore, singleAfter)
	}
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	nodes, _, err := nc.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Drain || n.SchedulingEligibility != api.NodeSchedulingEligible {
			t.Errorf("node %s was touched: drain=%t eligibility=%s", n.ID, n.Drain, n.SchedulingEligibility)
		}
	}
	if agent.Exited() {
		t.Errorf("the agent exited: %v", agent.ExitErr())
	}
}

// hasLogLine reports whether one line of logs contains every part.
func hasLogLine(logs string, parts ...string) bool {
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}
