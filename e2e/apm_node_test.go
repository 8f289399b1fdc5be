//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"

	apmnode "github.com/nomad-spotfleet/nomad-spotfleet/apm-node/plugin"
	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// Tolerances of TestAPMNodeReportsRealCPU, in percentage points of the
// node's (or host's) CPU. The workload figure is compared with the CPU the
// burner process really used (read from /proc/<pid>/stat) over the same
// interval; the host figure with /proc/stat over the same interval. The host
// tolerance is wider: the host is shared with other builds whose load moves
// between Nomad's 1 s host-stats windows.
const (
	apmWorkloadTolerance = 5.0
	apmHostTolerance     = 10.0

	// apmBurnShare is the share of one core the burner is designed to use.
	apmBurnShare = 0.5
	// apmMeasure is how long the figures are compared over.
	apmMeasure = 20 * time.Second

	apmBurnerEnvShare   = "APM_NODE_E2E_BURN_SHARE"
	apmBurnerEnvPIDFile = "APM_NODE_E2E_PIDFILE"
)

// TestMain runs the tests, or, when raw_exec starts this test binary as the
// burner task of TestAPMNodeReportsRealCPU, burns CPU instead.
func TestMain(m *testing.M) {
	if os.Getenv(apmBurnerEnvShare) != "" {
		os.Exit(apmBurn(os.Getenv(apmBurnerEnvShare), os.Getenv(apmBurnerEnvPIDFile)))
	}
	os.Exit(m.Run())
}

// apmBurn writes its PID to pidFile, then uses the given share of one core
// (busy for that share of every 100 ms) until it is killed.
func apmBurn(shareText, pidFile string) int {
	share, err := strconv.ParseFloat(shareText, 64)
	if err != nil || share <= 0 || share > 1 || pidFile == "" {
		fmt.Fprintf(os.Stderr, "burner: want %s in (0, 1] and %s set, got %q and %q\n", apmBurnerEnvShare, apmBurnerEnvPIDFile, shareText, pidFile)
		return 2
	}
	runtime.GOMAXPROCS(1)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "burner: %v\n", err)
		return 1
	}
	const period = 100 * time.Millisecond
	busy := time.Duration(share * float64(period))
	for {
		start := time.Now()
		for time.Since(start) < busy {
		}
		time.Sleep(period - time.Since(start))
	}
}

// TestAPMNodeReportsRealCPU runs two Nomad client nodes on the local cloud,
// one with a raw_exec task burning a known share of a core and one idle, and
// checks what apm-node reports for them: the workload query follows each
// node's own work although both share one host, the host query agrees with
// /proc/stat, and the real autoscaler agent loads apm-node and evaluates a
// policy whose check uses it.
func TestAPMNodeReportsRealCPU(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	pluginBin := apmPluginBinary(t)

	cloud := startCloud(t, localcloud.Config{})
	for _, class := range []string{"apm-busy", "apm-idle"} {
		if err := cloud.StartClient(ctx, "i-"+class, localcloud.ClientOptions{NodeClass: class}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cloud.WaitNodesReady(ctx, 2); err != nil {
		t.Fatal(err)
	}
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	nodeCPU := float64(localcloud.DefaultCPUTotalCompute)

	// The burner: this test binary, pinned to the busy node.
	pidFile := filepath.Join(t.TempDir(), "burner.pid")
	if _, _, err := nc.Jobs().Register(apmBurnerJob(pidFile), nil); err != nil {
		t.Fatalf("registering the burner job: %v", err)
	}
	burnerPID := waitBurner(ctx, t, pidFile)
	t.Logf("burner running as pid %d", burnerPID)

	// apm-node in this process, sampling every second.
	p := apmnode.NewPlugin(hclog.New(&hclog.LoggerOptions{Name: "apm-node", Level: hclog.Info, Output: testWriter{t}}))
	if err := p.SetConfig(map[string]string{
		"nomad_address": cloud.NomadAddr(), "sample_interval": "1s", "node_warmup": "0s",
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop) // before the cloud closes: cleanups run last-in first-out
	queries := map[string]string{
		"busy workload": "workload_cpu node_class=apm-busy",
		"idle workload": "workload_cpu node_class=apm-idle",
		"pool workload": "workload_cpu node_class=apm-busy,apm-idle",
		"busy alloc":    "allocated_cpu node_class=apm-busy",
		"pool host":     "host_cpu node_class=apm-busy,apm-idle",
	}
	for name, q := range queries { // the first query starts each sampler
		if _, err := p.Query(q, sdk.TimeRange{From: time.Now().Add(-time.Minute), To: time.Now()}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Let the executor's CPU figure settle on the burner's steady rate.
	time.Sleep(3 * time.Second)

	from := time.Now()
	hostBefore, burnBefore := readHostCPU(t), readProcessCPU(t, burnerPID)
	time.Sleep(apmMeasure)
	hostAfter, burnAfter := readHostCPU(t), readProcessCPU(t, burnerPID)
	to := time.Now()

	mean := map[string]float64{}
	for name, q := range queries {
		got, err := p.Query(q, sdk.TimeRange{From: from, To: to})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(got) < int(apmMeasure/time.Second)/2 {
			t.Fatalf("%s: %d datapoints over %s of 1 s samples", name, len(got), apmMeasure)
		}
		var sum float64
		for _, m := range got {
			sum += m.Value
		}
		mean[name] = sum / float64(len(got))
		t.Logf("%-13s %q: mean %.2f%% over %d datapoints", name, q, mean[name], len(got))
	}

	// What the burner really used, as Nomad scales it: a core's share of
	// the node's cpu_total_compute, over the node's schedulable CPU.
	cores := burnAfter.Sub(burnBefore).Seconds() / to.Sub(from).Seconds()
	wantBusy := 100 * cores * (nodeCPU / float64(runtime.NumCPU())) / nodeCPU
	wantHost := hostAfter.busySince(hostBefore)
	t.Logf("burner designed for %.0f%% of a core (%.1f%% of the node), used %.0f%% of a core (%.1f%% of the node); host busy %.1f%% per /proc/stat",
		100*apmBurnShare, 100*apmBurnShare/float64(runtime.NumCPU()), 100*cores, wantBusy, wantHost)

	checks := []struct {
		name      string
		got, want float64
		tolerance float64
	}{
		{"busy node workload vs the burner's /proc/<pid>/stat", mean["busy workload"], wantBusy, apmWorkloadTolerance},
		{"idle node workload on the same host", mean["idle workload"], 0, 0},
		{"pool workload is the mean of the two nodes", mean["pool workload"], wantBusy / 2, apmWorkloadTolerance},
		{"busy node allocated cpu (500 of 2000 MHz)", mean["busy alloc"], 100 * 500 / nodeCPU, 1e-9},
		{"host cpu vs /proc/stat", mean["pool host"], wantHost, apmHostTolerance},
	}
	for _, c := range checks {
		if diff := c.got - c.want; diff > c.tolerance || diff < -c.tolerance {
			t.Errorf("%s: got %.2f%%, want %.2f%% ± %.1f", c.name, c.got, c.want, c.tolerance)
		}
	}

	// The real agent loads apm-node from plugins/ and evaluates a policy
	// whose check reads it.
	agent, err := cloud.StartAutoscaler(ctx, localcloud.AutoscalerSpec{
		PluginDir: filepath.Dir(pluginBin),
		ExtraHCL: `apm "node" {
  driver = "apm-node"
  config = {
    sample_interval = "1s"
    node_warmup     = "0s"
  }
}
`,
		Policies: map[string]string{"apm-node.hcl": `scaling "apm_node_e2e" {
  enabled = true
  min     = 1
  max     = 1

  policy {
    evaluation_interval = "2s"

    check "busy_workload" {
      source       = "node"
      query        = "workload_cpu node_class=apm-busy"
      query_window = "10s"

      strategy "target-value" {
        target = 75
      }
    }

    target "nomad-target" {
      Job   = "apm-burn"
      Group = "burn"
    }
  }
}
`},
	})
	if err != nil {
		if agent != nil {
			t.Log(agent.Logs())
		}
		t.Fatalf("starting the autoscaler agent with apm-node: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	line, err := agent.WaitLogRegexp(wctx, regexp.MustCompile(`running strategy.*busy_workload`))
	if err != nil {
		t.Log(agent.Logs())
		t.Fatalf("the agent did not evaluate the apm-node check: %v", err)
	}
	t.Logf("agent evaluated the check: %s", line)
	if logs := agent.Logs(); strings.Contains(logs, "failed to query source") {
		t.Errorf("the agent failed to query apm-node:\n%s", logs)
	}
}

// apmPluginBinary returns plugins/apm-node, which `make build` writes.
func apmPluginBinary(t *testing.T) string {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "plugins", "apm-node")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("apm-node plugin binary missing (run `make build`): %v", err)
	}
	return bin
}

// apmBurnerJob runs this test binary as the CPU burner (see TestMain) on the busy
// node, asking 500 MHz.
func apmBurnerJob(pidFile string) *api.Job {
	job := api.NewServiceJob("apm-burn", "apm-burn", "global", 50)
	job.Datacenters = []string{localcloud.DefaultDatacenter}
	job.Constrain(api.NewConstraint("${node.class}", "=", "apm-busy"))
	tg := api.NewTaskGroup("burn", 1)
	tg.EphemeralDisk = &api.EphemeralDisk{SizeMB: pointer(20)}
	task := api.NewTask("burn", "raw_exec").
		SetConfig("command", os.Args[0]).
		SetConfig("args", []string{"-test.run=^$"}).
		Require(&api.Resources{CPU: pointer(500), MemoryMB: pointer(64)})
	task.Env = map[string]string{
		apmBurnerEnvShare:   strconv.FormatFloat(apmBurnShare, 'f', -1, 64),
		apmBurnerEnvPIDFile: pidFile,
	}
	task.KillTimeout = pointer(time.Second)
	task.LogConfig = &api.LogConfig{MaxFiles: pointer(1), MaxFileSizeMB: pointer(5)}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

// waitBurner waits for the burner to write its PID.
func waitBurner(ctx context.Context, t *testing.T, pidFile string) int {
	t.Helper()
	for {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && localcloud.Alive(pid) {
				return pid
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the burner task did not start: %v", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// hostCPU is a /proc/stat reading of the aggregate CPU line, in ticks.
type hostCPU struct{ idle, total float64 }

// busySince is the host's busy percentage between two readings, computed the
// way Nomad's host stats do: everything but idle counts as busy (iowait too),
// guest time is already inside user time.
func (h hostCPU) busySince(before hostCPU) float64 {
	total := h.total - before.total
	if total <= 0 {
		return 0
	}
	return 100 * (total - (h.idle - before.idle)) / total
}

func readHostCPU(t *testing.T) hostCPU {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	if len(f) < 9 || f[0] != "cpu" {
		t.Fatalf("unexpected /proc/stat line %q", line)
	}
	var h hostCPU
	for i, v := range f[1:9] {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("/proc/stat field %q: %v", v, err)
		}
		h.total += n
		if i == 3 {
			h.idle = n
		}
	}
	return h
}

// processCPU is the CPU time a process has used (user + system).
type processCPU time.Duration

func (p processCPU) Sub(before processCPU) time.Duration { return time.Duration(p - before) }

func readProcessCPU(t *testing.T, pid int) processCPU {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading the burner's CPU time: %v", err)
	}
	// The command name may hold spaces; the fields after it are fixed.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("unexpected /proc/%d/stat: %q", pid, s)
	}
	const clockTicks = 100 // USER_HZ on Linux
	return processCPU((utime + stime) * float64(time.Second) / clockTicks)
}

// testWriter sends the plugin's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
