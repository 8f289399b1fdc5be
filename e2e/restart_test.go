//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// TestCooldownSurvivesAgentRestart scales the fleet out through the real
// agent, restarts the agent while more capacity is wanted, and checks that
// the new agent waits out the cooldown of the earlier action (known only from
// the time target-spotfleet keeps on the fleet request) before scaling out
// again. Agent v0.5.0 alone would not: it drops that cooldown at its first
// evaluation, so target-spotfleet reports the fleet not ready for
// restart_cooldown after an action made before the restart.
func TestCooldownSurvivesAgentRestart(t *testing.T) {
	const (
		nodeCPU, taskCPU = 1000, 400
		jobID            = "e2e-restart"
		cooldown         = 75 * time.Second
	)
	cloud := startCloud(t, localcloud.Config{Client: localcloud.ClientOptions{CPUTotalCompute: nodeCPU}})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 1}, 1)
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	// Two tasks fill 80% of the one node: the policy wants a second node.
	if _, _, err := nc.Jobs().Register(sleeperJob(jobID, "spot", 2, taskCPU), nil); err != nil {
		t.Fatal(err)
	}
	policy := strings.Replace(clusterPolicy(fleetID, 1, 4, fmt.Sprintf("restart_cooldown = %q", cooldown)), `cooldown            = "5s"`,
		fmt.Sprintf("cooldown = %q\n    cooldown_on_scale_up = %q", cooldown, cooldown), 1)
	spec := localcloud.AutoscalerSpec{ExtraHCL: cloud.SpotfleetTargetHCL(), Policies: map[string]string{"spot.hcl": policy}}
	first, err := cloud.StartAutoscaler(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "first scale-out to 2", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		if err != nil {
			return false, err.Error()
		}
		return target == 2 && len(running) == 2, fmt.Sprintf("target=%d running=%d", target, len(running))
	})
	scaledAt := time.Now()
	if err := first.Stop(); err != nil {
		t.Fatalf("stopping the first agent: %v", err)
	}

	// Five tasks need three nodes; the new agent must wait out the cooldown.
	scaleJob(t, nc, jobID, "work", 5)
	second, err := cloud.StartAutoscaler(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	if _, err := second.WaitLog(wctx, "made before the agent restarted; waiting out restart_cooldown=1m15s"); err != nil {
		t.Errorf("the restarted agent's target did not report the cooldown: %v", err)
	}
	wcancel()
	for time.Since(scaledAt) < cooldown-10*time.Second {
		target, _, err := fleetState(ctx, cloud, fleetID)
		if err != nil {
			t.Fatal(err)
		}
		if target != 2 {
			t.Fatalf("the restarted agent scaled to %d %s after the last action, within its %s cooldown", target, time.Since(scaledAt).Round(time.Second), cooldown)
		}
		time.Sleep(time.Second)
	}
	// Once the cooldown is over, the pending work gets its node.
	waitFor(t, 2*time.Minute, "scale-out to 3 after the cooldown", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		if err != nil {
			return false, err.Error()
		}
		return target == 3 && len(running) == 3, fmt.Sprintf("target=%d running=%d", target, len(running))
	})
	if elapsed := time.Since(scaledAt); elapsed < cooldown-5*time.Second {
		t.Errorf("second scale-out came %s after the first, inside the %s cooldown", elapsed.Round(time.Second), cooldown)
	}
}
