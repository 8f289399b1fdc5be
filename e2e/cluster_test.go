//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// startCloud starts a local cloud with the reconciler for one test and stops
// every process it started when the test ends, dumping logs on failure.
func startCloud(t *testing.T, cfg localcloud.Config) *localcloud.Cloud {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	cfg.Reconcile = true
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	cloud, err := localcloud.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("starting local cloud: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			cloud.DumpLogs(os.Stderr, 60)
		}
		if err := cloud.Close(); err != nil {
			t.Errorf("stopping local cloud: %v", err)
		}
	})
	return cloud
}

// createFleet creates a fleet on the local cloud and waits until the cloud
// has wantReady ready Nomad nodes in all.
func createFleet(ctx context.Context, t *testing.T, cloud *localcloud.Cloud, spec localcloud.FleetSpec, wantReady int) string {
	t.Helper()
	id, err := cloud.CreateFleet(ctx, spec)
	if err != nil {
		t.Fatalf("creating fleet: %v", err)
	}
	if _, err := cloud.WaitNodesReady(ctx, wantReady); err != nil {
		t.Fatalf("waiting for %d ready nodes: %v", wantReady, err)
	}
	return id
}

// sleeperJob is a service job of count tasks that each reserve cpu MHz on the
// pool's nodes and do nothing. Its updates and migrations are quick so that
// tests can change its count often.
func sleeperJob(id, class string, count, cpu int) *api.Job {
	job := api.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{"dc1"}
	job.Constrain(api.NewConstraint("${node.class}", "=", class))
	job.Update = &api.UpdateStrategy{MaxParallel: pointer(0)}
	tg := api.NewTaskGroup("work", count)
	tg.Migrate = &api.MigrateStrategy{MaxParallel: pointer(4), HealthCheck: pointer("task_states"),
		MinHealthyTime: pointer(time.Second), HealthyDeadline: pointer(time.Minute)}
	tg.EphemeralDisk = &api.EphemeralDisk{SizeMB: pointer(150)}
	task := api.NewTask("sleep", "raw_exec").
		SetConfig("command", "/bin/sh").
		SetConfig("args", []string{"-c", "exec sleep 86400"}).
		Require(&api.Resources{CPU: pointer(cpu), MemoryMB: pointer(16)})
	task.KillTimeout = pointer(time.Second)
	task.LogConfig = &api.LogConfig{MaxFiles: pointer(1), MaxFileSizeMB: pointer(1)}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

func pointer[T any](v T) *T { return &v }

// scaleJob sets the job's group count through the Nomad API.
func scaleJob(t *testing.T, nc *api.Client, job, group string, count int) {
	t.Helper()
	if _, _, err := nc.Jobs().Scale(job, group, &count, fmt.Sprintf("e2e: count %d", count), false, nil, nil); err != nil {
		t.Fatalf("scaling job %s to %d: %v", job, count, err)
	}
}

// waitFor polls cond every 500ms until it returns true or the timeout ends.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			t.Logf("ok: %s (%s)", what, state)
			return
		}
		if state != last {
			t.Logf("waiting: %s: %s", what, state)
			last = state
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// fleetState reads a fleet's target capacity and running instance ids.
func fleetState(ctx context.Context, cloud *localcloud.Cloud, fleetID string) (target int, running []string, err error) {
	out, err := cloud.EC2().DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{fleetID}})
	if err != nil {
		return 0, nil, err
	}
	if len(out.SpotFleetRequestConfigs) != 1 {
		return 0, nil, fmt.Errorf("fleet %s not found", fleetID)
	}
	target = int(aws.ToInt32(out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig.TargetCapacity))
	insts, err := cloud.RunningFleetInstances(ctx, fleetID)
	if err != nil {
		return 0, nil, err
	}
	for _, in := range insts {
		running = append(running, in.ID)
	}
	sort.Strings(running)
	return target, running, nil
}

// fleetWatch samples a fleet in the background for the whole test, so that
// tests can assert on bounds that must hold at every moment and on every
// instance that ever belonged to the fleet.
type fleetWatch struct {
	mu        sync.Mutex
	minTarget int
	maxTarget int
	seen      map[string]bool
	samples   int
	errs      []string
}

func watchFleet(t *testing.T, cloud *localcloud.Cloud, fleetID string) *fleetWatch {
	w := &fleetWatch{minTarget: 1 << 30, seen: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			target, running, err := fleetState(cctx, cloud, fleetID)
			ccancel()
			w.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					w.errs = append(w.errs, err.Error())
				}
			} else {
				w.samples++
				w.minTarget = min(w.minTarget, target)
				w.maxTarget = max(w.maxTarget, target)
				for _, id := range running {
					w.seen[id] = true
				}
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *fleetWatch) bounds() (lo, hi, samples int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.minTarget, w.maxTarget, w.samples
}

func (w *fleetWatch) instances() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id := range w.seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// jobAllocs counts the job's allocations by client status.
func jobAllocs(nc *api.Client, job string) (map[string]int, []*api.AllocationListStub, error) {
	allocs, _, err := nc.Jobs().Allocations(job, true, nil)
	if err != nil {
		return nil, nil, err
	}
	counts := map[string]int{}
	for _, a := range allocs {
		counts[a.ClientStatus]++
	}
	return counts, allocs, nil
}

func formatCounts(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
