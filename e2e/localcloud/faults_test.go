//go:build e2e

package localcloud_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// TestCapacityLimit drives a maintain fleet through a capacity shortage: the
// instances moto launches above the limit are terminated within about one
// reconcile interval, before any client agent starts for them, with one
// insufficient-capacity event each; the target stays above what runs; refill
// under the limit launches only up to it and does not loop; lifting the limit
// lets refill bring the fleet up to its target after the refill delay.
func TestCapacityLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	const delay = 3 * time.Second
	cloud, err := localcloud.Start(ctx, localcloud.Config{
		WorkDir: t.TempDir(), Reconcile: true, RefillDelay: delay, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)

	// Created with a limit of 1 and a target of 2: moto launches 2, one stays.
	fleetID, err := cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 2, CapacityLimit: new(1)})
	if err != nil {
		t.Fatal(err)
	}
	insts := running(step(ctx, t), t, cloud, fleetID, 1)
	first := insts[0].ID
	waitClients(step(ctx, t), t, cloud, first)
	ev := waitEvent(step(ctx, t), t, cloud, localcloud.EventInsufficientCapacity, 1)
	if ev.FleetID != fleetID || ev.InstanceID == "" || ev.InstanceID == first ||
		!strings.Contains(ev.Message, "InsufficientInstanceCapacity") {
		t.Fatalf("unexpected event: %s", ev)
	}
	checkFleet(ctx, t, cloud, fleetID, 2, 1)

	// Capped: no refill, no new launch, nothing else terminated.
	time.Sleep(delay + 2*time.Second)
	if n := countEvents(cloud, localcloud.EventRefill); n != 0 {
		t.Fatalf("%d refills while running == capacity limit", n)
	}
	if n := countEvents(cloud, localcloud.EventInsufficientCapacity); n != 1 {
		t.Fatalf("%d insufficient-capacity events, want 1", n)
	}
	running(step(ctx, t), t, cloud, fleetID, 1)

	// Limit 2, target 4: moto launches 3 (target - fulfilled); the 2 newest go
	// within about one reconcile interval.
	cloud.SetCapacityLimit(fleetID, 2)
	raised := time.Now()
	if err := cloud.SetTargetCapacity(ctx, fleetID, 4); err != nil {
		t.Fatal(err)
	}
	waitEvent(step(ctx, t), t, cloud, localcloud.EventInsufficientCapacity, 3)
	gone := time.Since(raised)
	insts = running(step(ctx, t), t, cloud, fleetID, 2)
	t.Logf("excess terminated %s after the raise", gone.Round(time.Millisecond))
	if gone > 1500*time.Millisecond {
		t.Errorf("the excess took %s to go, want about one reconcile interval", gone)
	}
	if !slices.ContainsFunc(insts, func(i localcloud.Instance) bool { return i.ID == first }) {
		t.Fatalf("the oldest instance %s was terminated, not the newest: running %v", first, insts)
	}
	ids := instanceIDs(insts)
	waitClients(step(ctx, t), t, cloud, ids...)
	checkFleet(ctx, t, cloud, fleetID, 4, 2)

	// One lost under the cap: refill after the delay, only up to the limit
	// (restoring the target makes moto launch the rest, removed at once).
	lost := ids[1]
	lostAt := time.Now()
	if err := cloud.TerminateInstance(ctx, lost); err != nil {
		t.Fatal(err)
	}
	ev = waitEvent(step(ctx, t), t, cloud, localcloud.EventRefill, 1)
	if d := ev.Time.Sub(lostAt); d < delay {
		t.Fatalf("refill %s after the loss, before the %s delay", d, delay)
	}
	if !strings.Contains(ev.Message, "capacity limit 2") {
		t.Fatalf("refill does not say it aimed at the limit: %s", ev)
	}
	insts = running(step(ctx, t), t, cloud, fleetID, 2)
	waitClients(step(ctx, t), t, cloud, instanceIDs(insts)...)
	checkFleet(ctx, t, cloud, fleetID, 4, 2)
	capped := countEvents(cloud, localcloud.EventInsufficientCapacity)
	time.Sleep(delay + 2*time.Second)
	if n := countEvents(cloud, localcloud.EventRefill); n != 1 {
		t.Fatalf("%d refills under the limit, want 1 (refill/terminate loop?)", n)
	}
	if n := countEvents(cloud, localcloud.EventInsufficientCapacity); n != capped {
		t.Fatalf("insufficient-capacity events went from %d to %d while capped and full", capped, n)
	}

	// Lifted: refill to the target after the delay.
	cloud.ClearCapacityLimit(fleetID)
	if _, ok := cloud.CapacityLimit(fleetID); ok {
		t.Fatal("limit still set after ClearCapacityLimit")
	}
	lifted := time.Now()
	ev = waitEvent(step(ctx, t), t, cloud, localcloud.EventRefill, 2)
	if d := ev.Time.Sub(lifted); d < delay {
		t.Fatalf("refill %s after the limit was lifted, before the %s delay", d, delay)
	}
	insts = running(step(ctx, t), t, cloud, fleetID, 4)
	waitClients(step(ctx, t), t, cloud, instanceIDs(insts)...)
	checkFleet(ctx, t, cloud, fleetID, 4, 4)

	// No instance terminated for capacity ever had a client agent.
	started := map[string]bool{}
	for _, e := range cloud.Events() {
		if e.Kind == localcloud.EventClientStarted {
			started[e.InstanceID] = true
		}
	}
	for _, e := range cloud.Events() {
		if e.Kind == localcloud.EventInsufficientCapacity && started[e.InstanceID] {
			t.Errorf("instance %s got a client agent before it was terminated for capacity", e.InstanceID)
		}
	}
	for _, e := range cloud.Events() {
		t.Log(e.String())
	}
	t.Logf("test took %s", time.Since(began).Round(time.Millisecond))
}

// step bounds one step of a test, so that a missing reaction fails in
// seconds, not at the test's deadline.
func step(ctx context.Context, t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitClients waits until the cloud's client agents are exactly those of ids.
func waitClients(ctx context.Context, t *testing.T, c *localcloud.Cloud, ids ...string) {
	t.Helper()
	want := slices.Sorted(slices.Values(ids))
	for {
		got := c.Clients()
		if slices.Equal(got, want) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("client agents %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func instanceIDs(insts []localcloud.Instance) []string {
	ids := make([]string, len(insts))
	for i, in := range insts {
		ids[i] = in.ID
	}
	return ids
}

// checkFleet checks the fleet's target and fulfilled capacity in moto.
func checkFleet(ctx context.Context, t *testing.T, c *localcloud.Cloud, fleetID string, target int32, fulfilled float64) {
	t.Helper()
	out, err := c.EC2().DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{fleetID}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig
	if got := aws.ToInt32(cfg.TargetCapacity); got != target {
		t.Fatalf("fleet target %d, want %d", got, target)
	}
	if got := aws.ToFloat64(cfg.FulfilledCapacity); got != fulfilled {
		t.Fatalf("fleet fulfilled capacity %v, want %v", got, fulfilled)
	}
}

// TestNomadProxy checks the fault-injecting proxy in front of the Nomad API:
// plain forwarding, rules by count, duration and query parameter (with their
// failure counts), a blocking query and the event stream passing through
// unharmed, while the server itself is never affected.
func TestNomadProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	cloud, err := localcloud.Start(ctx, localcloud.Config{WorkDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	addr := cloud.NomadProxyAddr()
	if addr == "" || addr == cloud.NomadAddr() || !strings.HasPrefix(addr, "http://127.0.0.1:") {
		t.Fatalf("proxy address %q (server %s)", addr, cloud.NomadAddr())
	}
	pc, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	direct, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Status().Leader(); err != nil {
		t.Fatalf("leader through the proxy: %v", err)
	}

	// By count: two failures, then through again; the server never sees them.
	byCount := cloud.FailNomad(localcloud.NomadFault{Method: "GET", PathPrefix: "/v1/status/leader", Count: 2})
	if _, err := direct.Status().Leader(); err != nil {
		t.Fatalf("direct call during a proxy fault: %v", err)
	}
	for i := range 2 {
		_, err := pc.Status().Leader()
		if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "No cluster leader") {
			t.Fatalf("proxied call %d during the fault: %v", i+1, err)
		}
	}
	if _, err := pc.Status().Leader(); err != nil {
		t.Fatalf("proxied call after the count: %v", err)
	}
	if n := byCount.Failed(); n != 2 || byCount.Active() {
		t.Fatalf("count rule failed %d requests (active %v), want 2 and done", n, byCount.Active())
	}
	if _, _, err := pc.Nodes().List(nil); err != nil { // other paths never matched
		t.Fatal(err)
	}

	// By duration, with an own status and body.
	byTime := cloud.FailNomad(localcloud.NomadFault{PathPrefix: "/v1/jobs", Status: 503, Body: "maintenance", Duration: time.Second})
	if _, _, err := pc.Jobs().List(nil); err == nil || !strings.Contains(err.Error(), "503 (maintenance)") {
		t.Fatalf("jobs during the timed fault: %v", err)
	}
	time.Sleep(1200 * time.Millisecond)
	if _, _, err := pc.Jobs().List(nil); err != nil {
		t.Fatalf("jobs after the timed fault: %v", err)
	}
	if byTime.Failed() != 1 || byTime.Active() {
		t.Fatalf("timed rule failed %d (active %v)", byTime.Failed(), byTime.Active())
	}

	// By query parameter: only blocking queries (?index=) of /v1/jobs fail.
	blockingOnly := cloud.FailNomad(localcloud.NomadFault{Method: "GET", PathPrefix: "/v1/jobs", Query: map[string]string{"index": ""}})
	_, meta, err := pc.Jobs().List(nil)
	if err != nil {
		t.Fatalf("plain list with a blocking-only fault: %v", err)
	}
	idx := max(meta.LastIndex, 1) // 0 without any job; index=0 is no blocking query
	if _, _, err := pc.Jobs().List(&api.QueryOptions{WaitIndex: idx, WaitTime: time.Second}); err == nil {
		t.Fatal("blocking list passed a blocking-only fault")
	}
	blockingOnly.Remove()
	if blockingOnly.Failed() != 1 {
		t.Fatalf("query rule failed %d, want 1", blockingOnly.Failed())
	}

	// An unrelated rule stays installed: what it does not match goes through.
	other := cloud.FailNomad(localcloud.NomadFault{Method: "DELETE", PathPrefix: "/v1/job/"})

	// A blocking query through the proxy waits for the change and returns it.
	type listed struct {
		jobs []*api.JobListStub
		meta *api.QueryMeta
		err  error
	}
	res := make(chan listed, 1)
	go func() {
		jobs, m, err := pc.Jobs().List(&api.QueryOptions{WaitIndex: idx, WaitTime: 30 * time.Second})
		res <- listed{jobs, m, err}
	}()
	// The event stream through the proxy delivers events as they happen.
	lines := streamLines(ctx, t, addr+"/v1/event/stream?topic=Job")
	time.Sleep(time.Second)
	select {
	case r := <-res:
		t.Fatalf("blocking query returned before any change: %+v", r)
	default:
	}
	registered := time.Now()
	if _, _, err := direct.Jobs().Register(sleeperJob("proxied", 0), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatalf("blocking query through the proxy: %v", r.err)
		}
		if r.meta.LastIndex <= idx || len(r.jobs) != 1 || r.jobs[0].ID != "proxied" {
			t.Fatalf("blocking query returned index %d (was %d), jobs %v", r.meta.LastIndex, idx, r.jobs)
		}
		t.Logf("blocking query returned %s after the change", time.Since(registered).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("blocking query through the proxy did not return after the change")
	}
	waitLine(t, lines, `"proxied"`, 10*time.Second)
	t.Logf("event stream delivered the job's event %s after the change", time.Since(registered).Round(time.Millisecond))
	if other.Failed() != 0 {
		t.Fatalf("unrelated rule failed %d requests", other.Failed())
	}
	cloud.ClearNomadFaults()
	if other.Active() {
		t.Fatal("rule active after ClearNomadFaults")
	}

	// Records and counts.
	st := cloud.NomadProxyStats()
	if st.Failed != 4 || st.Forwarded < 6 {
		t.Fatalf("proxy stats %+v, want 4 failed and at least 6 forwarded", st)
	}
	if n := countEvents(cloud, localcloud.EventNomadFault); n != 4 {
		t.Fatalf("%d nomad-fault events, want 4", n)
	}
	var blocking bool
	for _, r := range cloud.NomadProxyRequests() {
		if r.Path == "/v1/jobs" && strings.Contains(r.RawQuery, "index=") && !r.Fault && r.Status == http.StatusOK && r.Duration > 500*time.Millisecond {
			blocking = true
		}
	}
	if !blocking {
		t.Fatalf("no completed blocking query in the proxy's records: %+v", cloud.NomadProxyRequests())
	}
	t.Logf("test took %s", time.Since(began).Round(time.Millisecond))
}

// streamLines GETs url and sends each line of the streamed body to the
// returned channel until the test ends.
func streamLines(ctx context.Context, t *testing.T, url string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	out := make(chan string, 100)
	go func() {
		defer close(out)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			out <- "error: " + resp.Status
			return
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64*1024), 8*1024*1024)
		for sc.Scan() {
			select {
			case out <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// waitLine waits for a line that contains substr.
func waitLine(t *testing.T, lines <-chan string, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before a line with %s", substr)
			}
			if strings.HasPrefix(l, "error: ") {
				t.Fatalf("stream: %s", l)
			}
			if strings.Contains(l, substr) {
				return
			}
		case <-deadline:
			t.Fatalf("no line with %s on the stream within %s", substr, timeout)
		}
	}
}

// sleeperJob is a raw_exec service job of count sleeping tasks; count 0
// places nothing.
func sleeperJob(id string, count int) *api.Job {
	job := api.NewServiceJob(id, id, "global", 50)
	job.Datacenters = []string{localcloud.DefaultDatacenter}
	task := api.NewTask("sleep", "raw_exec").
		SetConfig("command", "/bin/sleep").
		SetConfig("args", []string{"3600"}).
		Require(&api.Resources{CPU: aws.Int(50), MemoryMB: aws.Int(32)})
	job.AddTaskGroup(api.NewTaskGroup(id, count).AddTask(task))
	return job
}

// TestAutoscalerViaNomadProxy runs the real agent with NomadViaProxy: its
// nomad block and a plugin's explicit nomad_address both point at the proxy;
// the agent's blocking query for scaling policies passes through it, and an
// injected fault reaches the nomad-apm plugin (and ends).
func TestAutoscalerViaNomadProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	cloud, err := localcloud.Start(ctx, localcloud.Config{WorkDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	if err := cloud.StartClient(ctx, "i-proxy", localcloud.ClientOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cloud.WaitNodesReady(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// The fault is in place before the agent starts: the first two
	// allocation listings of nomad-apm fail.
	apmFault := cloud.FailNomad(localcloud.NomadFault{Method: "GET", PathPrefix: "/v1/job/web/allocations", Count: 2})
	a, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		PluginDir:     t.TempDir(), // the agent's built-in plugins only
		NomadViaProxy: true,
		ExtraHCL: fmt.Sprintf(`
apm "nomad-apm" {
  driver = "nomad-apm"
  config = {
    nomad_address = %q
  }
}
`, cloud.NomadAddr()),
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(a.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(cfg), cloud.NomadProxyAddr()); n != 2 || strings.Contains(string(cfg), cloud.NomadAddr()) {
		t.Fatalf("agent config has the proxy address %d times (want 2) or the server's %s:\n%s", n, cloud.NomadAddr(), cfg)
	}

	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	job := sleeperJob("web", 1)
	job.TaskGroups[0].Scaling = &api.ScalingPolicy{
		Enabled: aws.Bool(true),
		Min:     aws.Int64(1),
		Max:     aws.Int64(2),
		Policy: map[string]any{
			"evaluation_interval": "1s",
			"cooldown":            "1s",
			"check": []any{map[string]any{"cpu": []any{map[string]any{
				"source":   "nomad-apm",
				"query":    "avg_cpu-allocated",
				"strategy": []any{map[string]any{"target-value": []any{map[string]any{"target": 1000}}}},
			}}}},
		},
	}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatalf("register job: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	line, err := a.WaitLog(wctx, "No cluster leader")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agent: %s", line)
	for apmFault.Failed() < 2 {
		if wctx.Err() != nil {
			t.Fatalf("the apm fault failed %d requests, want 2", apmFault.Failed())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// After the fault, nomad-apm's listings go through and succeed.
	var policiesBlocking, allocsOK bool
	for !(policiesBlocking && allocsOK) {
		for _, r := range cloud.NomadProxyRequests() {
			if r.Path == "/v1/scaling/policies" && strings.Contains(r.RawQuery, "index=") && r.Status == http.StatusOK {
				policiesBlocking = true // the agent's own client, answered when the job came
			}
			if r.Path == "/v1/job/web/allocations" && !r.Fault && r.Status == http.StatusOK {
				allocsOK = true
			}
		}
		if wctx.Err() != nil {
			t.Fatalf("proxy records: blocking policy query %v, allocation listing after the fault %v:\n%+v",
				policiesBlocking, allocsOK, cloud.NomadProxyRequests())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if a.Exited() {
		t.Fatalf("agent exited: %v", a.ExitErr())
	}
	st := cloud.NomadProxyStats()
	t.Logf("proxy: %d forwarded, %d failed; test took %s", st.Forwarded, st.Failed, time.Since(began).Round(time.Millisecond))
	if st.Failed != 2 {
		t.Fatalf("proxy failed %d requests, want 2", st.Failed)
	}
}
