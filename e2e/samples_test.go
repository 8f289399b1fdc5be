//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

func readSample(t *testing.T, rel string) string {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "agent-config", rel))
	if err != nil {
		t.Fatalf("reading sample %s: %v", rel, err)
	}
	return string(b)
}

// TestSampleConfigsWork runs the samples the README points operators to, as
// they are, on the local cloud: the real agent on agent-config/agent.hcl
// with the cluster policy agent-config/policies/spot-pool.hcl (hooks on, an
// AWX stand-in running the sample playbooks with ansible-playbook, nodes
// that register gated), and the sample web job, whose scaling block uses
// strategy-cpu-target. The node must be admitted only after its AWX job, the
// fleet must settle where the policy puts an idle pool (min 1), the job's
// count must rise with its load and fall after it, and the agent must log
// no error but the ones it gives while there is nothing to measure yet.
// Last, the node is interrupted: the sample's terminate hook must run
// forget.yml for it exactly once, and its replacement must be admitted
// through the launch hooks as the first node was.
func TestSampleConfigsWork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	dir := t.TempDir()
	vars, loadFile := sampleWebVariables(t, dir)
	var web *sampleWeb
	r := startSampleRig(ctx, t, func(nc *api.Client) {
		// The other sample jobs parse; the agent's own job is run by
		// another test.
		for _, rel := range []string{"jobs/autoscaler.nomad.hcl", sampleWebRel} {
			if job, err := nc.Jobs().ParseHCL(readSample(t, rel), true); err != nil || job.ID == nil || *job.ID == "" {
				t.Errorf("Nomad cannot parse %s with its defaults: %v", rel, err)
			}
		}
		// The web job exists before any node: the gate keeps it off
		// nodes whose hooks have not run.
		job, reserved := parseSampleWeb(t, nc, vars)
		web = startSampleWeb(t, nc, job, reserved, loadFile)
	})

	var early []string
	inst, node := r.waitAdmitted(nil, func(n *api.Node) {
		if n.Meta[sampleGateKey] == "admitted" {
			return
		}
		allocs, _, err := r.nc.Nodes().Allocations(n.ID, nil)
		if err != nil {
			t.Errorf("listing the allocations of node %s: %v", n.Name, err)
			return
		}
		for _, a := range allocs {
			early = append(early, a.JobID+" "+a.ID)
		}
	})
	if len(early) > 0 {
		t.Errorf("allocations were placed on node %s while its gate was not open: %v", node.Name, early)
	}
	t.Logf("node %s admitted %s after the start (AWX job %s)", node.Name, time.Since(r.begin).Round(time.Second), node.Meta["awx_job_id"])
	r.waitCounted()

	r.checkConfigured()

	web.checkWebScaling(r.agent)
	measured := time.Now()

	r.checkClusterHeld(web.policyID())
	checkSampleAgentErrors(t, r.agent.Logs(), measured)

	// The sample's terminate hook runs for real: the one instance is
	// interrupted, forget.yml runs for it, the fleet replaces it. The web
	// job stops first (its checks are done): its allocations, drained off
	// the leaving node with no other node to go to, would wait unplaced,
	// and the policy's unplaced check would rightly grow the pool.
	if _, _, err := r.nc.Jobs().Deregister(sampleWebJob, false, nil); err != nil {
		t.Fatalf("stopping %s: %v", sampleWebJob, err)
	}
	r.checkForgotten(inst, node)
}

// checkSampleAgentErrors fails the test for every ERROR line of the agent
// up to until, except the two the agent (v0.5.0) gives while a policy has
// nothing to measure yet, and those only before both policies were first
// evaluated: the cluster policy's "no metrics available" (apm-node returns
// no datapoint while no pool node counts: the node waits for its hooks, then
// warms up) and the job policy's "metric not found" (nomad-apm finds no
// running allocation before the node is admitted). They are start-up noise
// of any gated pool; after start-up the log must hold no error at all.
func checkSampleAgentErrors(t *testing.T, logs string, until time.Time) {
	t.Helper()
	lines := parseAgentLog(logs)
	first := map[string]time.Time{} // policy ID -> its first evaluation
	for _, l := range lines {
		if id := logField(l.text, "policy_id"); id != "" && strings.Contains(l.text, "calculating scaling target") {
			if _, ok := first[id]; !ok {
				first[id] = l.at
			}
		}
	}
	if len(first) != 2 {
		t.Errorf("the agent evaluated %d policies, want 2 (the cluster policy and the job's): %v", len(first), first)
	}
	var settled time.Time
	for _, at := range first {
		if at.After(settled) {
			settled = at
		}
	}
	startup := 0
	for _, l := range lines {
		if !strings.Contains(l.text, "[ERROR]") || l.at.After(until) {
			continue
		}
		noData := strings.Contains(l.text, "failed to query source: no metrics available") ||
			strings.Contains(l.text, "failed to query source: metric not found")
		if noData && l.at.Before(settled) {
			startup++
			continue
		}
		t.Errorf("the agent logged an error: %s", compactLine(l.text))
	}
	t.Logf("the agent logged %d errors before both policies had something to measure (%s) and no other error",
		startup, settled.Format("15:04:05.000"))
}
