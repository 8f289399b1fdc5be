//go:build e2e

package localcloud_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

const refillDelay = 4 * time.Second

// TestLocalCloud drives the local cloud end to end: fleet -> nodes, scale-out,
// deliberate scale-in without refill, undrained termination with refill,
// interruption warning, and a clean Close.
func TestLocalCloud(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()

	work := t.TempDir()
	cloud, err := localcloud.Start(ctx, localcloud.Config{
		WorkDir:     work,
		Reconcile:   true,
		RefillDelay: refillDelay,
		Logf:        t.Logf,
	})
	if err != nil {
		t.Fatalf("start local cloud: %v", err)
	}
	closeOnCleanup(t, cloud)
	t.Logf("cloud up after %s: moto %s, nomad %s", time.Since(began).Round(time.Millisecond), cloud.MotoURL(), cloud.NomadAddr())

	// Every PID seen in a tree of ours, checked after Close.
	seen := map[int]bool{}
	taskCgroups := map[string]bool{}
	snapshot := func() {
		for _, pid := range cloud.StartedPIDs() {
			for _, p := range localcloud.ProcessTree(pid) {
				seen[p] = true
				for _, d := range nomadCgroups(p) {
					taskCgroups[d] = true
				}
			}
		}
	}

	// A fleet of 2 -> 2 ready nodes carrying the instance IDs.
	fleetID, err := cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	insts := running(ctx, t, cloud, fleetID, 2)
	nodes, err := cloud.WaitNodesReady(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	checkNodesMatch(t, nodes, insts)
	t.Logf("2 nodes ready after %s", time.Since(began).Round(time.Millisecond))

	// Scale out: moto launches at once on a higher target.
	if err := cloud.SetTargetCapacity(ctx, fleetID, 3); err != nil {
		t.Fatal(err)
	}
	insts = running(ctx, t, cloud, fleetID, 3)
	if nodes, err = cloud.WaitNodesReady(ctx, 3); err != nil {
		t.Fatal(err)
	}
	checkNodesMatch(t, nodes, insts)

	// Give every node a raw_exec task so that stopping a client has logmon,
	// executor and task processes (and secrets mounts) to clean up.
	runSleepers(ctx, t, cloud, 3)
	snapshot()

	// Deliberate scale-in: lower the target with noTermination (nothing is
	// terminated), then terminate exactly one instance.
	if err := cloud.SetTargetCapacity(ctx, fleetID, 2); err != nil {
		t.Fatal(err)
	}
	insts = running(ctx, t, cloud, fleetID, 3) // noTermination: still 3
	victim := insts[0].ID
	tree := localcloud.ProcessTree(cloud.ClientPID(victim))
	if len(tree) < 3 {
		t.Fatalf("client tree of %s has %d processes, want agent+logmon+executor+task: %v", victim, len(tree), tree)
	}
	scaleIn := time.Now()
	if err := cloud.TerminateInstance(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitGone(ctx, t, tree)
	if _, err := cloud.WaitNodeStatus(ctx, victim, api.NodeStatusDown); err != nil {
		t.Fatal(err)
	}
	t.Logf("node of %s down %s after termination", victim, time.Since(scaleIn).Round(time.Millisecond))
	if d := time.Since(scaleIn); d < refillDelay+2*time.Second {
		time.Sleep(refillDelay + 2*time.Second - d)
	}
	if n := countEvents(cloud, localcloud.EventRefill); n != 0 {
		t.Fatalf("refill after a deliberate scale-in: %d refill events", n)
	}
	insts = running(ctx, t, cloud, fleetID, 2)
	victimDir := filepath.Join(work, "clients", victim)
	checkMounts(t, victimDir)
	if _, err := os.Stat(victimDir); !os.IsNotExist(err) {
		t.Fatalf("client dir %s still there (%v)", victimDir, err)
	}

	// Undrained termination below target -> refill after the delay.
	lost := insts[0].ID
	lostAt := time.Now()
	if err := cloud.TerminateInstance(ctx, lost); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(ctx, t, cloud, localcloud.EventRefill, 1)
	if d := ev.Time.Sub(lostAt); d < refillDelay {
		t.Fatalf("refill %s after the termination, before the %s delay", d, refillDelay)
	}
	t.Logf("refill %s after the termination: %s", ev.Time.Sub(lostAt).Round(time.Millisecond), ev.Message)
	insts = running(ctx, t, cloud, fleetID, 2)
	if _, err := cloud.WaitNodeStatus(ctx, lost, api.NodeStatusDown); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(insts, func(i localcloud.Instance) bool { return i.ID == lost }) {
		t.Fatalf("terminated instance %s still running", lost)
	}
	if nodes, err = cloud.WaitNodesReady(ctx, 2); err != nil {
		t.Fatal(err)
	}
	checkNodesMatch(t, nodes, insts)
	snapshot()

	// Interruption: a parseable warning now, termination after the notice.
	// The queue also holds the state-change notifications so far: drop them.
	q := &queue{cloud: cloud}
	for len(q.receive(ctx, t, 0)) > 0 { // until the queue is empty
	}
	target := insts[1].ID
	notice := 3 * time.Second
	sent := time.Now()
	if err := cloud.Interrupt(ctx, target, notice); err != nil {
		t.Fatal(err)
	}
	var warnings []message
	for _, m := range q.collect(ctx, t, 2*time.Second) {
		if m.Event.DetailType != localcloud.StateChangeDetailType {
			warnings = append(warnings, m)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("got %d messages other than state changes on the queue, want 1: %v", len(warnings), warnings)
	}
	var warn localcloud.SpotInterruptionWarning
	if err := json.Unmarshal([]byte(warnings[0].Body), &warn); err != nil {
		t.Fatalf("parse warning %q: %v", warnings[0].Body, err)
	}
	if warn.DetailType != localcloud.SpotInterruptionDetailType || warn.Source != "aws.ec2" ||
		warn.Detail.InstanceID != target || warn.Detail.InstanceAction != "terminate" ||
		len(warn.Resources) != 1 || !strings.HasSuffix(warn.Resources[0], ":instance/"+target) {
		t.Fatalf("unexpected warning: %+v", warn)
	}
	if st := instanceState(ctx, t, cloud, target); st != "running" {
		t.Fatalf("instance %s is %s right after the warning, want running", target, st)
	}
	for instanceState(ctx, t, cloud, target) != "terminated" {
		if ctx.Err() != nil {
			t.Fatal("instance not terminated after the notice")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if d := time.Since(sent); d < notice {
		t.Fatalf("terminated %s after the warning, before the %s notice", d, notice)
	}
	waitEvent(ctx, t, cloud, localcloud.EventInterruptionTerminated, 1)
	snapshot()

	// Close leaves nothing behind.
	if err := cloud.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	var left []int
	for pid := range seen {
		if localcloud.Alive(pid) {
			left = append(left, pid)
		}
	}
	if len(left) > 0 {
		t.Fatalf("processes left after Close: %v", left)
	}
	checkMounts(t, work)
	checkCgroups(t)
	for d := range taskCgroups {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("task cgroup left: %s", d)
		}
	}
	if n := len(seen); n < 10 {
		t.Fatalf("only %d processes tracked; expected the clients' trees too", n)
	}
	for _, e := range cloud.Events() {
		t.Log(e.String())
	}
	t.Logf("%d processes tracked and gone; test took %s", len(seen), time.Since(began).Round(time.Millisecond))
}

// running waits until the fleet has n running instances and returns them.
func running(ctx context.Context, t *testing.T, c *localcloud.Cloud, fleetID string, n int) []localcloud.Instance {
	t.Helper()
	last := -1
	for {
		insts, err := c.RunningFleetInstances(ctx, fleetID)
		if err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		if err == nil && len(insts) == n {
			return insts
		}
		if err == nil {
			last = len(insts)
		}
		if ctx.Err() != nil {
			t.Fatalf("fleet %s has %d running instances, want %d", fleetID, last, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkNodesMatch checks that the nodes are exactly the instances, by meta.
func checkNodesMatch(t *testing.T, nodes []*api.Node, insts []localcloud.Instance) {
	t.Helper()
	var got, want []string
	for _, n := range nodes {
		got = append(got, n.Meta[localcloud.MetaInstanceID])
		if n.Name != n.Meta[localcloud.MetaInstanceID] || n.NodeClass != localcloud.DefaultNodeClass {
			t.Fatalf("node %s: name %s, class %s, meta %v", n.ID, n.Name, n.NodeClass, n.Meta)
		}
	}
	for _, i := range insts {
		want = append(want, i.ID)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("ready nodes carry instance IDs %v, running instances are %v", got, want)
	}
}

// runSleepers runs a raw_exec job with one long sleep per node.
func runSleepers(ctx context.Context, t *testing.T, c *localcloud.Cloud, n int) {
	t.Helper()
	nc, err := c.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	job := api.NewServiceJob("sleeper", "sleeper", "global", 50)
	job.Datacenters = []string{localcloud.DefaultDatacenter}
	job.Constrain(api.NewConstraint("", "distinct_hosts", "true"))
	task := api.NewTask("sleep", "raw_exec").
		SetConfig("command", "/bin/sleep").
		SetConfig("args", []string{"3600"}).
		Require(&api.Resources{CPU: aws.Int(50), MemoryMB: aws.Int(32)})
	tg := api.NewTaskGroup("sleep", n).AddTask(task)
	tg.RestartPolicy = &api.RestartPolicy{Attempts: aws.Int(0), Mode: aws.String("fail")}
	job.AddTaskGroup(tg)
	if _, _, err := nc.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatalf("register job: %v", err)
	}
	for {
		allocs, _, err := nc.Jobs().Allocations("sleeper", false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		run := 0
		for _, a := range allocs {
			if a.ClientStatus == api.AllocClientStatusRunning {
				run++
			}
		}
		if run == n {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d sleeper allocations running", run, n)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitGone waits until every process of tree is gone.
func waitGone(ctx context.Context, t *testing.T, tree []int) {
	t.Helper()
	for {
		var alive []int
		for _, p := range tree {
			if localcloud.Alive(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("client processes still alive: %v", alive)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func countEvents(c *localcloud.Cloud, kind localcloud.EventKind) int {
	n := 0
	for _, e := range c.Events() {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// waitEvent waits for the n-th event of a kind and returns it.
func waitEvent(ctx context.Context, t *testing.T, c *localcloud.Cloud, kind localcloud.EventKind, n int) localcloud.Event {
	t.Helper()
	for {
		i := 0
		for _, e := range c.Events() {
			if e.Kind == kind {
				if i++; i == n {
					return e
				}
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no %s event #%d", kind, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func instanceState(ctx context.Context, t *testing.T, c *localcloud.Cloud, id string) string {
	t.Helper()
	out, err := c.EC2().DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return string(out.Reservations[0].Instances[0].State.Name)
}

// checkMounts fails if anything is still mounted below dir.
func checkMounts(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			t.Errorf("still mounted: %s", f[4])
		}
	}
}

// checkCgroups fails if a client cgroup of this process is left behind.
func checkCgroups(t *testing.T) {
	t.Helper()
	prefix := "localcloud-" + strconv.Itoa(os.Getpid()) + "-"
	for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/*"} {
		matches, _ := filepath.Glob(filepath.Join(root, prefix+"*"))
		for _, m := range matches {
			t.Errorf("cgroup left: %s", m)
		}
	}
}

// nomadCgroups returns the cgroup dirs below a "nomad" cgroup that pid is in
// (cgroup v1 freezer cgroups of raw_exec tasks, for example).
func nomadCgroups(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && f[1] != "" && strings.HasPrefix(f[2], "/nomad/") {
			out = append(out, filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(f[1], "name="), f[2]))
		}
	}
	return out
}

// TestAutoscalerAgent starts the real agent with the built-in plugins only,
// then one that names a missing plugin and must exit.
func TestAutoscalerAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cloud, err := localcloud.Start(ctx, localcloud.Config{WorkDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	plugins := t.TempDir() // empty: only the agent's built-in plugins
	a, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		PluginDir: plugins,
		Policies: map[string]string{"cluster.hcl": `scaling "cluster" {
  enabled = true
  min     = 1
  max     = 3
  policy {
    check "cpu" {
      source   = "nomad-apm"
      query    = "node_percentage-allocated_cpu/spot/class"
      strategy "target-value" {
        target = 70
      }
    }
    target "nomad-target" {}
  }
}
`},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.WaitLog(ctx, "found policy in file"); err != nil {
		t.Fatal(err)
	}
	pid := a.PID()
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if localcloud.Alive(pid) || !a.Exited() {
		t.Fatal("agent still running after Stop")
	}

	b, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		PluginDir: plugins,
		ExtraHCL:  "target \"missing\" {\n  driver = \"target-missing\"\n}\n",
	})
	if !errors.Is(err, localcloud.ErrAutoscalerExited) || b == nil || !b.Exited() {
		t.Fatalf("agent with a missing plugin: err=%v", err)
	}
	if !strings.Contains(b.Logs(), "failed to setup plugins") {
		t.Fatalf("log does not say why the agent exited:\n%s", b.Logs())
	}
}

// TestStartFailureCleansUp checks that a failed Start leaves no process.
func TestStartFailureCleansUp(t *testing.T) {
	work := t.TempDir()
	_, err := localcloud.Start(context.Background(), localcloud.Config{WorkDir: work, NomadBin: filepath.Join(work, "no-nomad")})
	if err == nil || !strings.Contains(err.Error(), "no-nomad") {
		t.Fatalf("Start with a missing nomad binary: %v", err)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err == nil && strings.HasPrefix(cwd, work) {
			t.Errorf("process %s left running in %s", e.Name(), cwd)
		}
	}
}

// closeOnCleanup closes the cloud when the test ends, logging its tails first
// if the test failed.
func closeOnCleanup(t *testing.T, cloud *localcloud.Cloud) {
	t.Cleanup(func() {
		if t.Failed() {
			var b strings.Builder
			cloud.DumpLogs(&b, 40)
			t.Log(b.String())
		}
		if err := cloud.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}
