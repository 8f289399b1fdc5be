package plugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// fakeNomad is an in-memory nomadAPI. Failures are set per call key
// ("HostStats:<node>", "AllocStats:<alloc>", "Node:<node>", "Nodes",
// "Allocations"); every call is counted under the same key.
type fakeNomad struct {
	mu         sync.Mutex
	nodes      []*api.NodeListStub
	info       map[string]*api.Node
	hostStats  map[string]*api.HostStats
	allocs     []*api.AllocationListStub
	allocStats map[string]*api.AllocResourceUsage
	evals      []*api.Evaluation
	jobs       map[string]*api.Job        // by "namespace/id"
	summaries  map[string]*api.JobSummary // by "namespace/id"
	fail       map[string]error
	calls      map[string]int
}

func newFakeNomad() *fakeNomad {
	return &fakeNomad{
		info:       map[string]*api.Node{},
		hostStats:  map[string]*api.HostStats{},
		allocStats: map[string]*api.AllocResourceUsage{},
		jobs:       map[string]*api.Job{},
		summaries:  map[string]*api.JobSummary{},
		fail:       map[string]error{},
		calls:      map[string]int{},
	}
}

func (f *fakeNomad) call(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[key]++
	return f.fail[key]
}

func (f *fakeNomad) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[key]
}

func (f *fakeNomad) Nodes(ctx context.Context) ([]*api.NodeListStub, error) {
	if err := f.call("Nodes"); err != nil {
		return nil, err
	}
	return f.nodes, nil
}

func (f *fakeNomad) Node(ctx context.Context, id string) (*api.Node, error) {
	if err := f.call("Node:" + id); err != nil {
		return nil, err
	}
	n, ok := f.info[id]
	if !ok {
		return nil, fmt.Errorf("node %s not found", id)
	}
	return n, nil
}

func (f *fakeNomad) HostStats(ctx context.Context, id string) (*api.HostStats, error) {
	if err := f.call("HostStats:" + id); err != nil {
		return nil, err
	}
	s, ok := f.hostStats[id]
	if !ok {
		return nil, fmt.Errorf("no stats for node %s", id)
	}
	return s, nil
}

func (f *fakeNomad) Allocations(ctx context.Context) ([]*api.AllocationListStub, error) {
	if err := f.call("Allocations"); err != nil {
		return nil, err
	}
	return f.allocs, nil
}

func (f *fakeNomad) AllocStats(ctx context.Context, id string) (*api.AllocResourceUsage, error) {
	if err := f.call("AllocStats:" + id); err != nil {
		return nil, err
	}
	s, ok := f.allocStats[id]
	if !ok {
		return nil, errAllocGone
	}
	return s, nil
}

// BlockedEvaluations returns the blocked evaluations, as the server's
// filtered list does: evaluations of other statuses are not listed.
func (f *fakeNomad) BlockedEvaluations(ctx context.Context) ([]*api.Evaluation, error) {
	if err := f.call("BlockedEvaluations"); err != nil {
		return nil, err
	}
	var out []*api.Evaluation
	for _, e := range f.evals {
		if e.Status == api.EvalStatusBlocked {
			out = append(out, e)
		}
	}
	return out, nil
}

// JobSummary answers errJobGone for a job it does not know, as the client
// does for Nomad's 404 "job not found".
func (f *fakeNomad) JobSummary(ctx context.Context, namespace, id string) (*api.JobSummary, error) {
	if err := f.call("JobSummary:" + namespace + "/" + id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.summaries[namespace+"/"+id]
	if !ok {
		return nil, errJobGone
	}
	return s, nil
}

// Job answers errJobGone for a job it does not know.
func (f *fakeNomad) Job(ctx context.Context, namespace, id string) (*api.Job, error) {
	if err := f.call("Job:" + namespace + "/" + id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[namespace+"/"+id]
	if !ok {
		return nil, errJobGone
	}
	return j, nil
}

// addJob registers a service job in dc1 and the default node pool with one
// task group of one task asking cpu MHz and mem MB, and a blocked
// evaluation with queued of its allocations unplaced, as Nomad records
// them: the blocked eval names the group in FailedTGAllocs and the summary
// counts them as Queued. It returns the job to adjust.
func (f *fakeNomad) addJob(ns, id string, count, queued, cpu, mem int) *api.Job {
	job := &api.Job{
		ID: pointer(id), Namespace: pointer(ns), Type: pointer(api.JobTypeService),
		Datacenters: []string{"dc1"}, NodePool: pointer(api.NodePoolDefault), Stop: pointer(false),
		TaskGroups: []*api.TaskGroup{{
			Name: pointer("web"), Count: pointer(count),
			Tasks: []*api.Task{{Name: "main", Driver: "raw_exec",
				Resources: &api.Resources{CPU: pointer(cpu), MemoryMB: pointer(mem)}}},
		}},
	}
	f.jobs[ns+"/"+id] = job
	f.summaries[ns+"/"+id] = &api.JobSummary{JobID: id, Namespace: ns,
		Summary: map[string]api.TaskGroupSummary{"web": {Queued: queued, Running: count - queued}}}
	if queued > 0 {
		f.evals = append(f.evals, &api.Evaluation{
			ID: "eval-" + id, Namespace: ns, JobID: id, Type: api.JobTypeService, Status: api.EvalStatusBlocked,
			FailedTGAllocs: map[string]*api.AllocationMetric{"web": {NodesEvaluated: 1, NodesExhausted: 1,
				DimensionExhausted: map[string]int{"cpu": 1}, CoalescedFailures: queued - 1}},
		})
	}
	return job
}

func pointer[T any](v T) *T { return &v }

// addNode adds a ready, eligible node of the given class with cpu MHz
// (100 reserved) and 4 GiB of memory (256 MiB reserved), ready since since.
func (f *fakeNomad) addNode(id, class string, cpu int64, since time.Time) *api.NodeListStub {
	n := &api.NodeListStub{
		ID: id, Name: "node-" + id, NodeClass: class, Datacenter: "dc1", NodePool: "default",
		Status: api.NodeStatusReady, SchedulingEligibility: api.NodeSchedulingEligible,
		NodeResources: &api.NodeResources{
			Cpu:    api.NodeCpuResources{CpuShares: cpu + 100},
			Memory: api.NodeMemoryResources{MemoryMB: 4096 + 256},
		},
		ReservedResources: &api.NodeReservedResources{
			Cpu:    api.NodeReservedCpuResources{CpuShares: 100},
			Memory: api.NodeReservedMemoryResources{MemoryMB: 256},
		},
		ModifyIndex: 10,
	}
	f.nodes = append(f.nodes, n)
	f.info[id] = &api.Node{ID: id, StatusUpdatedAt: since.Unix(),
		Events: []*api.NodeEvent{{Message: "Node registered", Timestamp: since}}}
	return n
}

// setHostCPU gives the node host stats with the given busy percentage on
// each core and memory used out of 8 GiB.
func (f *fakeNomad) setHostCPU(id string, usedMiB uint64, busyPerCore ...float64) {
	s := &api.HostStats{Memory: &api.HostMemoryStats{Total: 8 << 30, Used: usedMiB << 20}}
	for i, b := range busyPerCore {
		s.CPU = append(s.CPU, &api.HostCPUStats{CPU: fmt.Sprintf("cpu%d", i), Idle: 100 - b})
	}
	f.hostStats[id] = s
}

// addAlloc places a running allocation on the node that was given cpu MHz
// and mem MB and uses usedCPU MHz and usedMiB of RSS.
func (f *fakeNomad) addAlloc(id, node string, cpu, mem int64, usedCPU float64, usedMiB uint64) {
	f.allocs = append(f.allocs, &api.AllocationListStub{
		ID: id, NodeID: node, DesiredStatus: api.AllocDesiredStatusRun, ClientStatus: api.AllocClientStatusRunning,
		AllocatedResources: &api.AllocatedResources{Tasks: map[string]*api.AllocatedTaskResources{
			"main": {Cpu: api.AllocatedCpuResources{CpuShares: cpu}, Memory: api.AllocatedMemoryResources{MemoryMB: mem}},
		}},
	})
	f.allocStats[id] = &api.AllocResourceUsage{ResourceUsage: &api.ResourceUsage{
		CpuStats:    &api.CpuStats{TotalTicks: usedCPU},
		MemoryStats: &api.MemoryStats{RSS: usedMiB << 20, Measured: []string{"RSS"}},
	}}
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 11, 26, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer captures log output from many goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger(t *testing.T) (hclog.Logger, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	return hclog.New(&hclog.LoggerOptions{Name: "apm-node", Level: hclog.Trace, Output: buf}), buf
}

// newTestCollector wires a collector to the fake with the given warm-up and
// the default admission gate.
func newTestCollector(f *fakeNomad, clock *fakeClock, warm time.Duration) *collector {
	return &collector{
		api:    f,
		nodes:  newNodeReader(f, nomadnode.Gate{}),
		warmup: warm,
		// target-spotfleet's node_warmup as docs/hooks.md sets it, with
		// the default sample_interval.
		countWarmup: countWarmup(config{nodeWarmup: warm, sampleInterval: defaultSampleInterval}),
		run:         newLimiter(4).run,
		now:         clock.now,
	}
}

// setMeta sets the full node's meta (what GET /v1/node/:id returns) and
// bumps the node's ModifyIndex in the list, as a meta change does in Nomad.
func (f *fakeNomad) setMeta(id string, meta map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.info[id].Meta = meta
	for _, n := range f.nodes {
		if n.ID == id {
			n.ModifyIndex++
		}
	}
}

var errBoom = errors.New("connection refused")
