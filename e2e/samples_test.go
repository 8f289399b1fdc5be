//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// ourPluginsHCL declares the three plugins of this project for the agent,
// with the target pointed at the local cloud.
func ourPluginsHCL(cloud *localcloud.Cloud) string {
	return cloud.SpotfleetTargetHCL() + `
apm "apm-node" {
  driver = "apm-node"
  config = {
    sample_interval = "2s"
    node_warmup     = "1s"
  }
}

strategy "strategy-cpu-target" {
  driver = "strategy-cpu-target"
}
`
}

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

// TestSampleConfigsWork loads the sample cluster policy the README points
// users to into the real agent with our three plugins, and has Nomad parse
// the sample job files, so that the samples cannot drift from what works.
func TestSampleConfigsWork(t *testing.T) {
	cloud := startCloud(t, localcloud.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 1}, 1)

	policy := readSample(t, "policies/spot-pool.hcl")
	for old, repl := range map[string]string{
		`"sfr-0123456789abcdef0"`:           `"` + fleetID + `"`,
		`"unique.platform.aws.instance-id"`: `"meta.ec2_instance_id"`, // the local cloud has no AWS fingerprint
		`evaluation_interval  = "10s"`:      `evaluation_interval  = "2s"`,
	} {
		if !strings.Contains(policy, old) {
			t.Fatalf("sample policy no longer contains %s", old)
		}
		policy = strings.Replace(policy, old, repl, 1)
	}
	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		ExtraHCL: ourPluginsHCL(cloud),
		Policies: map[string]string{"spot-pool.hcl": policy},
	})
	if err != nil {
		t.Fatalf("starting the agent with the sample policy: %v", err)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`target-spotfleet: fleet status: ready`),
		regexp.MustCompile(`strategy-cpu-target: (hold|scale)`),
	} {
		wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
		if _, err := agent.WaitLogRegexp(wctx, re); err != nil {
			t.Errorf("agent log has no line matching %q: %v", re, err)
		}
		wcancel()
	}
	if m := regexp.MustCompile(`(?m)^.*\[ERROR\].*policy.*$`).FindString(agent.Logs()); m != "" {
		t.Errorf("the agent reported a policy error: %s", m)
	}

	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"jobs/web.nomad.hcl", "jobs/autoscaler.nomad.hcl"} {
		job, err := nc.Jobs().ParseHCL(readSample(t, file), true)
		if err != nil {
			t.Errorf("Nomad cannot parse %s: %v", file, err)
			continue
		}
		if job.ID == nil || *job.ID == "" {
			t.Errorf("%s parsed to a job without an id", file)
		}
	}
}
