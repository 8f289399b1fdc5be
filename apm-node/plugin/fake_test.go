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
	fail       map[string]error
	calls      map[string]int
}

func newFakeNomad() *fakeNomad {
	return &fakeNomad{
		info:       map[string]*api.Node{},
		hostStats:  map[string]*api.HostStats{},
		allocStats: map[string]*api.AllocResourceUsage{},
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
		run:    newLimiter(4).run,
		now:    clock.now,
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
