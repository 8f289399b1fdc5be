//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// noLostAllocs fails the test for every lost allocation of the job.
func noLostAllocs(t *testing.T, nc *api.Client, jobID string) map[string]int {
	t.Helper()
	counts, allocs, err := jobAllocs(nc, jobID)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range allocs {
		if a.ClientStatus == api.AllocClientStatusLost {
			t.Errorf("allocation %s of %s on node %s is lost", a.ID, jobID, a.NodeID)
		}
	}
	return counts
}

// drainedPoolNodes returns the instance ids of the nodes with a drain of any kind.
func drainedPoolNodes(t *testing.T, nc *api.Client) []string {
	t.Helper()
	stubs, _, err := nc.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range stubs {
		if s.LastDrain != nil || s.Drain {
			n, _, err := nc.Nodes().Info(s.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, n.Meta["ec2_instance_id"])
		}
	}
	slices.Sort(out)
	return out
}

// TestShortFleetShrinksWithoutLosingARunningNode: a fleet whose spot
// capacity ran out (target 4, two instances run) and whose load then falls to
// a third. The agent is given the two that run as the count (no drain while
// the load fits them); the scale-in to one removes exactly one of the two,
// with its work moved first, where the old target-minus-desired rule drained
// both.
func TestShortFleetShrinksWithoutLosingARunningNode(t *testing.T) {
	const (
		nodeCPU, taskCPU = 1000, 400 // two tasks per node
		jobID            = "e2e-short"
	)
	cloud := startCloud(t, localcloud.Config{Client: localcloud.ClientOptions{CPUTotalCompute: nodeCPU}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	limit := 2
	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 4, CapacityLimit: &limit}, 2)
	target, running, err := fleetState(ctx, cloud, fleetID)
	if err != nil || target != 4 || len(running) != 2 {
		t.Fatalf("short fleet: target %d, running %v, %v; want 4 and two", target, running, err)
	}
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	// Three tasks on the two nodes: 60% allocated, which target-value 70
	// holds at two nodes, so the policy wants 2 once the shortage counts.
	if _, _, err := nc.Jobs().Register(sleeperJob(jobID, "spot", 3, taskCPU), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "three tasks run", func() (bool, string) {
		counts, _, err := jobAllocs(nc, jobID)
		return err == nil && counts["running"] == 3, formatCounts(counts)
	})
	watch := watchFleet(t, cloud, fleetID)
	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		ExtraHCL: cloud.SpotfleetTargetHCL(),
		Policies: map[string]string{"spot.hcl": clusterPolicy(fleetID, 1, 4, `launch_timeout = "5s"`)},
	})
	if err != nil {
		t.Fatal(err)
	}

	// The shortage is reported and the count is what runs, so target-value
	// (60% of 70%) holds at two: nothing is drained, the target stays raised
	// for EC2 to fill.
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	if _, err := agent.WaitLog(wctx, "capacity shortage: 2 of 4 instances running"); err != nil {
		t.Errorf("agent log does not report the shortage: %v", err)
	}
	wcancel()
	if _, err := agent.WaitLog(ctx, "current count=2"); err != nil {
		t.Errorf("the agent was not given the running count: %v", err)
	}
	time.Sleep(10 * time.Second) // a few more evaluations
	if d := drainedPoolNodes(t, nc); len(d) > 0 {
		t.Fatalf("nodes %v were drained while no more ran than desired", d)
	}
	target, now, err := fleetState(ctx, cloud, fleetID)
	if err != nil || target != 4 || !slices.Equal(now, running) {
		t.Fatalf("target %d, running %v (%v); want 4 and the original %v", target, now, err, running)
	}
	if counts := noLostAllocs(t, nc, jobID); counts["running"] != 3 {
		t.Errorf("job allocations %s, want 3 running", formatCounts(counts))
	}

	// The load falls to one task: one node goes, after its drain.
	scaleJob(t, nc, jobID, "work", 1)
	waitFor(t, 3*time.Minute, "fleet shrinks to 1 with the task running", func() (bool, string) {
		target, now, err := fleetState(ctx, cloud, fleetID)
		counts, _, aerr := jobAllocs(nc, jobID)
		if err != nil || aerr != nil {
			return false, fmt.Sprint(err, aerr)
		}
		return target == 1 && len(now) == 1 && counts["running"] == 1,
			fmt.Sprintf("target=%d running=%v allocs: %s", target, now, formatCounts(counts))
	})
	time.Sleep(6 * time.Second) // more evaluations: nothing else may happen
	target, now, err = fleetState(ctx, cloud, fleetID)
	if err != nil || target != 1 || len(now) != 1 {
		t.Fatalf("after settling: target %d, running %v, %v", target, now, err)
	}
	drained := drainedPoolNodes(t, nc)
	gone := slices.DeleteFunc(slices.Clone(running), func(id string) bool { return slices.Contains(now, id) })
	if !slices.Equal(drained, gone) {
		t.Errorf("drained %v, terminated %v: want the same single instance", drained, gone)
	}
	if _, err := cloud.WaitNodesReady(ctx, 1); err != nil {
		t.Errorf("no ready node left: %v", err)
	}
	noLostAllocs(t, nc, jobID)
	if !hasLogLine(agent.Logs(), "scaled in:", "from=2", "to=1", "target_capacity=1", "terminated=") {
		t.Errorf("agent log has no scale-in from the 2 running to 1")
	}
	lo, hi, samples := watch.bounds()
	t.Logf("target ranged %d..%d over %d samples; drained %v", lo, hi, samples, drained)
}

// batchOnEveryNode is a batch job of count sleeping tasks (100 MHz), one per
// node: a drain does not migrate batch work, it waits for it until the
// drain's deadline.
func batchOnEveryNode(id string, count int) *api.Job {
	job := sleeperJob(id, "spot", count, 100)
	job.Type = pointer(api.JobTypeBatch)
	job.Update = nil
	job.TaskGroups[0].Migrate = nil
	job.Constrain(api.NewConstraint("", "distinct_hosts", "true"))
	return job
}

// apmNodeHCL declares apm-node with short sampling for the tests.
const apmNodeHCL = `
apm "apm-node" {
  driver = "apm-node"
  config = {
    sample_interval  = "1s"
    sample_retention = "2m"
    node_warmup      = "0s"
  }
}
`

// TestScaleOutWhileAnotherNodeDrains: an operator drains a node for
// maintenance (a batch task pins the drain open for minutes). The pool must
// still scale out when work does not fit, and scale in later without
// touching the operator's node or counting it as serving.
func TestScaleOutWhileAnotherNodeDrains(t *testing.T) {
	const (
		nodeCPU, taskCPU = 1000, 400
		jobID, pinID     = "e2e-work", "e2e-pin"
	)
	cloud := startCloud(t, localcloud.Config{Client: localcloud.ClientOptions{CPUTotalCompute: nodeCPU}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 2}, 2)
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := cloud.WaitNodesReady(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	maint := nodes[0]
	// A batch task on the maintenance node: a drain waits for it until the
	// deadline, so the drain stays in progress for the whole test.
	pin := batchOnEveryNode(pinID, 1)
	pin.Constrain(api.NewConstraint("${node.unique.id}", "=", maint.ID))
	if _, _, err := nc.Jobs().Register(pin, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().Register(sleeperJob(jobID, "spot", 1, taskCPU), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "both jobs run", func() (bool, string) {
		w, _, err1 := jobAllocs(nc, jobID)
		p, _, err2 := jobAllocs(nc, pinID)
		return err1 == nil && err2 == nil && w["running"] == 1 && p["running"] == 1, formatCounts(w) + " / " + formatCounts(p)
	})
	if _, err := nc.Nodes().UpdateDrainOpts(maint.ID, &api.DrainOptions{
		DrainSpec: &api.DrainSpec{Deadline: 30 * time.Minute},
		Meta:      map[string]string{"message": "kernel upgrade"},
	}, nil); err != nil {
		t.Fatal(err)
	}

	policy := clusterPolicyWith(fleetID, 1, 4, `
    check "allocated_cpu" {
      source       = "apm-node"
      query        = "allocated_cpu node_class=spot"
      query_window = "3s"
      strategy "target-value" {
        target = 70
      }
    }`, "")
	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		ExtraHCL: apmNodeHCL + cloud.SpotfleetTargetHCL(),
		Policies: map[string]string{"spot.hcl": policy},
	})
	if err != nil {
		t.Fatal(err)
	}

	// Three tasks: the one serving node holds two; the third needs a node.
	scaleJob(t, nc, jobID, "work", 3)
	waitFor(t, 4*time.Minute, "fleet grows to 3 and every task runs, the maintenance drain still on", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		counts, _, aerr := jobAllocs(nc, jobID)
		if err != nil || aerr != nil {
			return false, fmt.Sprint(err, aerr)
		}
		return target == 3 && len(running) == 3 && counts["running"] == 3,
			fmt.Sprintf("target=%d running=%d allocs: %s", target, len(running), formatCounts(counts))
	})
	n, _, err := nc.Nodes().Info(maint.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.DrainStrategy == nil {
		t.Fatalf("the maintenance drain ended early (last drain %+v); the test did not scale out during a drain", n.LastDrain)
	}

	// The load falls to one task: one serving node stays, and the
	// operator's node is neither chosen nor counted as serving.
	scaleJob(t, nc, jobID, "work", 1)
	waitFor(t, 4*time.Minute, "the pool shrinks to one serving node", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		if err != nil {
			return false, err.Error()
		}
		return target == 1 && len(running) == 2, fmt.Sprintf("target=%d running=%d", target, len(running))
	})
	time.Sleep(6 * time.Second)
	n, _, err = nc.Nodes().Info(maint.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n.DrainStrategy == nil || n.LastDrain == nil || n.LastDrain.Meta["message"] != "kernel upgrade" {
		t.Errorf("the operator's drain was touched: %+v", n.LastDrain)
	}
	ready, err := cloud.WaitNodesReady(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	serving := 0
	for _, r := range ready {
		if r.SchedulingEligibility == api.NodeSchedulingEligible && r.DrainStrategy == nil {
			serving++
		}
	}
	if serving != 1 {
		t.Errorf("%d serving nodes, want 1", serving)
	}
	if counts := noLostAllocs(t, nc, jobID); counts["running"] != 1 {
		t.Errorf("job allocations %s, want 1 running", formatCounts(counts))
	}
	if !hasLogLine(agent.Logs(), "scaled out", "from=1", "to=2", "target_capacity=3") {
		t.Errorf("agent log has no scale-out from the 1 serving node to 2 (target 3 with the draining one)")
	}
}

// TestDrainSurvivesNomadLeaderElection: while the plugin's drain runs, Nomad
// answers the drain monitor's reads with 500 "No cluster leader" for several
// seconds (through the local cloud's Nomad proxy). The drain must still be
// followed to its end and the instance removed once, not abandoned and
// redone.
func TestDrainSurvivesNomadLeaderElection(t *testing.T) {
	const (
		nodeCPU, taskCPU = 1000, 400
		jobID            = "e2e-election"
	)
	cloud := startCloud(t, localcloud.Config{Client: localcloud.ClientOptions{CPUTotalCompute: nodeCPU}})
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 2}, 2)
	_, before, err := fleetState(ctx, cloud, fleetID)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	// One task on two nodes, and a batch task on each node that a drain
	// waits for until its deadline (30s): 30% allocated, the policy wants
	// one node, and the drain runs long enough for the fault to hit it.
	if _, _, err := nc.Jobs().Register(sleeperJob(jobID, "spot", 1, taskCPU), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().Register(batchOnEveryNode("e2e-hold", 2), nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the tasks run", func() (bool, string) {
		w, _, err1 := jobAllocs(nc, jobID)
		b, _, err2 := jobAllocs(nc, "e2e-hold")
		return err1 == nil && err2 == nil && w["running"] == 1 && b["running"] == 2, formatCounts(w) + " / " + formatCounts(b)
	})
	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		ExtraHCL:      cloud.SpotfleetTargetHCL(),
		Policies:      map[string]string{"spot.hcl": clusterPolicy(fleetID, 1, 4, "")},
		NomadViaProxy: true,
	})
	if err != nil {
		t.Fatal(err)
	}

	// When the drain begins, Nomad "loses its leader" for 8 seconds.
	var rule *localcloud.NomadFaultRule
	waitFor(t, 3*time.Minute, "the plugin starts a drain", func() (bool, string) {
		stubs, _, err := nc.Nodes().List(nil)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range stubs {
			if s.Drain {
				rule = cloud.FailNomad(localcloud.NomadFault{Method: "GET", PathPrefix: "/v1/node/", Duration: 8 * time.Second})
				return true, "draining " + s.ID
			}
		}
		return false, "no drain yet"
	})
	waitFor(t, 3*time.Minute, "fleet shrinks to 1", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		if err != nil {
			return false, err.Error()
		}
		return target == 1 && len(running) == 1, fmt.Sprintf("target=%d running=%v", target, running)
	})
	time.Sleep(6 * time.Second)

	if rule.Failed() == 0 {
		t.Fatalf("the fault answered no request: the test did not exercise a leader election during the drain")
	}
	_, after, err := fleetState(ctx, cloud, fleetID)
	if err != nil || len(after) != 1 {
		t.Fatalf("running %v (%v), want one instance", after, err)
	}
	drained := drainedPoolNodes(t, nc)
	gone := slices.DeleteFunc(slices.Clone(before), func(id string) bool { return slices.Contains(after, id) })
	if !slices.Equal(drained, gone) {
		t.Errorf("drained %v, terminated %v: want the same single instance (no drain abandoned and redone)", drained, gone)
	}
	logs := agent.Logs()
	if strings.Count(logs, "draining node") != 1 {
		t.Errorf("%d drains started, want 1", strings.Count(logs, "draining node"))
	}
	if !strings.Contains(logs, "drain monitor: Nomad did not answer; still waiting") {
		t.Errorf("agent log does not show the drain monitor riding out the fault")
	}
	if counts := noLostAllocs(t, nc, jobID); counts["running"] != 1 {
		t.Errorf("job allocations %s, want 1 running", formatCounts(counts))
	}
	t.Logf("the fault failed %d requests; drained and terminated %v", rule.Failed(), gone)
}
