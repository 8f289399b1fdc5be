package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"
)

// The benchmark samples a 1,000-node pool from a fake Nomad API that answers
// every call after a fixed latency. The fake runs in a child process (this
// test binary re-executed), so the allocations the benchmark reports are the
// plugin's alone.
//
//	go test -run '^$' -bench Sample -benchtime 20x ./apm-node/plugin/
//
// APM_NODE_BENCH_NODES and APM_NODE_BENCH_LATENCY change the pool size and
// the per-call latency (default 1000 and 3ms).
const benchServerEnv = "APM_NODE_BENCH_SERVER"

func BenchmarkSample(b *testing.B) {
	nodes := envInt("APM_NODE_BENCH_NODES", 1000)
	latency := envDuration("APM_NODE_BENCH_LATENCY", 3*time.Millisecond)
	addr := startBenchServer(b, nodes, latency)

	for _, metric := range []string{metricHostCPU, metricWorkloadCPU, metricAllocatedCPU} {
		b.Run(fmt.Sprintf("%s/nodes=%d/latency=%s", metric, nodes, latency), func(b *testing.B) {
			cfg, err := parseConfig(map[string]string{})
			if err != nil {
				b.Fatal(err)
			}
			nomad, err := newNomadAPI(map[string]string{"nomad_address": addr}, cfg)
			if err != nil {
				b.Fatal(err)
			}
			coll := &collector{
				api:    nomad,
				nodes:  newNodeReader(nomad, cfg.gate),
				warmup: cfg.nodeWarmup,
				run:    newLimiter(cfg.concurrency).run,
				now:    time.Now,
			}
			q, err := parseQuery(metric + " node_class=spot-worker")
			if err != nil {
				b.Fatal(err)
			}
			log := hclog.NewNullLogger()

			// The first sample reads every node once for its admission
			// gate and warm-up start; measure the steady state after it.
			if o := coll.collect(context.Background(), q, log); o.err != nil || o.sample.nodes != nodes {
				b.Fatalf("warm-up sample: %+v", o)
			}

			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				o := coll.collect(context.Background(), q, log)
				if o.err != nil || o.sample.nodes != nodes {
					b.Fatalf("sample: %+v", o)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/sample")
		})
	}
}

// startBenchServer starts the fake Nomad in a child process and returns its
// address.
func startBenchServer(b *testing.B, nodes int, latency time.Duration) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		benchServerEnv+"=1",
		"APM_NODE_BENCH_NODES="+strconv.Itoa(nodes),
		"APM_NODE_BENCH_LATENCY="+latency.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close() // the child exits when its stdin closes
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("fake Nomad did not start: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if !ok {
		b.Fatalf("fake Nomad said %q", line)
	}
	return addr
}

// TestMain runs the tests and benchmarks, or, when BenchmarkSample starts
// this test binary as its child, serves the fake Nomad API instead, so that
// the benchmark's allocation counts are the plugin's own.
func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) == "1" {
		serveBenchNomad()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveBenchNomad serves the fake Nomad until the parent closes stdin.
func serveBenchNomad() {
	nodes := envInt("APM_NODE_BENCH_NODES", 1000)
	latency := envDuration("APM_NODE_BENCH_LATENCY", 3*time.Millisecond)
	srv := httptest.NewServer(benchNomadHandler(nodes, latency))
	defer srv.Close()
	fmt.Println("listening " + srv.URL)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
}

// benchNomadHandler answers like a Nomad server with n ready client nodes,
// each running one allocation, every call after latency.
func benchNomadHandler(n int, latency time.Duration) http.Handler {
	mustJSON := func(v any) []byte {
		body, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		return body
	}
	stubs := make([]*api.NodeListStub, n)
	allocs := make([]*api.AllocationListStub, n)
	for i := range n {
		id := fmt.Sprintf("%08d-0000-0000-0000-000000000000", i)
		stubs[i] = &api.NodeListStub{
			ID: id, Name: fmt.Sprintf("node-%d", i), NodeClass: "spot-worker", Datacenter: "dc1", NodePool: "default",
			Status: api.NodeStatusReady, SchedulingEligibility: api.NodeSchedulingEligible, ModifyIndex: 10,
			NodeResources:     &api.NodeResources{Cpu: api.NodeCpuResources{CpuShares: 4000}, Memory: api.NodeMemoryResources{MemoryMB: 8192}},
			ReservedResources: &api.NodeReservedResources{Cpu: api.NodeReservedCpuResources{CpuShares: 200}},
		}
		allocs[i] = &api.AllocationListStub{
			ID: fmt.Sprintf("%08d-aaaa-0000-0000-000000000000", i), NodeID: id, Namespace: "default", JobID: "web",
			DesiredStatus: api.AllocDesiredStatusRun, ClientStatus: api.AllocClientStatusRunning,
			AllocatedResources: &api.AllocatedResources{Tasks: map[string]*api.AllocatedTaskResources{
				"web": {Cpu: api.AllocatedCpuResources{CpuShares: 1000}, Memory: api.AllocatedMemoryResources{MemoryMB: 512}},
			}},
		}
	}
	nodeList, allocList := mustJSON(stubs), mustJSON(allocs)
	node := mustJSON(&api.Node{StatusUpdatedAt: time.Now().Add(-time.Hour).Unix(), Status: api.NodeStatusReady})
	cpu := make([]*api.HostCPUStats, 4)
	for i := range cpu {
		cpu[i] = &api.HostCPUStats{CPU: fmt.Sprintf("cpu%d", i), User: 50, System: 10, Idle: 40}
	}
	hostStats := mustJSON(&api.HostStats{CPU: cpu, Memory: &api.HostMemoryStats{Total: 8 << 30, Used: 4 << 30}, Uptime: 3600})
	allocStats := mustJSON(&api.AllocResourceUsage{
		ResourceUsage: &api.ResourceUsage{
			CpuStats:    &api.CpuStats{TotalTicks: 1900, Percent: 95, Measured: []string{"System Mode", "User Mode", "Percent"}},
			MemoryStats: &api.MemoryStats{RSS: 300 << 20, Measured: []string{"RSS", "Swap"}},
		},
		Tasks: map[string]*api.TaskResourceUsage{"web": {ResourceUsage: &api.ResourceUsage{
			CpuStats:    &api.CpuStats{TotalTicks: 1900, Percent: 95},
			MemoryStats: &api.MemoryStats{RSS: 300 << 20},
		}}},
	})

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(latency)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Nomad-Index", "100")
		switch p := r.URL.Path; {
		case p == "/v1/nodes":
			_, _ = w.Write(nodeList)
		case p == "/v1/allocations":
			_, _ = w.Write(allocList)
		case p == "/v1/client/stats":
			_, _ = w.Write(hostStats)
		case strings.HasPrefix(p, "/v1/client/allocation/"):
			_, _ = w.Write(allocStats)
		case strings.HasPrefix(p, "/v1/node/"):
			_, _ = w.Write(node)
		default:
			http.NotFound(w, r)
		}
	})
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(key string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}
