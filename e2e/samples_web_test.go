//go:build e2e

package e2e

// The sample web job (agent-config/jobs/web.nomad.hcl) runs on the local
// cloud as it is, its driver-specific parts given as the job's HCL2
// variables (the local clients have raw_exec, not Docker): its tasks are a
// CPU burner, a load balancer in the test spreads a fixed CPU demand over
// the running tasks, and its scaling block (strategy-cpu-target, stock
// nomad-apm and Nomad target) raises the count while the demand is on and
// lowers it again once it is off.

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

const (
	sampleWebRel   = "jobs/web.nomad.hcl"
	sampleWebJob   = "web"
	sampleWebGroup = "web"

	// sampleWebDemand is the load the balancer spreads over the running
	// tasks, in percent of one task's CPU reservation: at the sample's first
	// count (2) each task uses 130% of what it reserves, above the 78.75%
	// the strategy scales out at; at ceil(2 x 130/75) = 4 tasks, 65%, in the
	// band where it holds.
	sampleWebDemand = 260.0
)

// sampleBurner is the raw_exec task's program: it uses the share of one
// core written in the file named by its argument (read four times a
// second): that share of every 100 ms in CPU time, not wall time, so that
// it gets its share on a busy host too (it then runs longer, not less).
const sampleBurner = `import sys, time
path = sys.argv[1]
share, checked = 0.0, -1.0
while True:
    start = time.monotonic()
    if start - checked >= 0.25:
        checked = start
        try:
            with open(path) as f:
                share = min(1.0, max(0.0, float(f.read().strip() or "0")))
        except (OSError, ValueError):
            share = 0.0
    used = time.process_time()
    while time.process_time() - used < share * 0.1:
        pass
    time.sleep(max(0.0, 0.1 - (time.monotonic() - start)))
`

// sampleWeb runs the sample job with the burner and balances its load.
type sampleWeb struct {
	t        *testing.T
	nc       *api.Client
	loadFile string
	reserved float64 // MHz one task reserves (the sample's resources.cpu)
	coreMHz  float64 // MHz of one core on the local cloud's nodes

	mu      sync.Mutex
	demand  float64 // percent of one task's reservation, over all tasks
	running int
	counts  []int // every group count seen, in order, without repeats
	errs    []string
}

// sampleWebVariables are the job variables of the local run: the raw_exec
// driver and the burner as the service's command.
func sampleWebVariables(t *testing.T, dir string) (vars, loadFile string) {
	t.Helper()
	script := filepath.Join(dir, "burner.py")
	loadFile = filepath.Join(dir, "load")
	if err := os.WriteFile(script, []byte(sampleBurner), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loadFile, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The system python3: the client's PATH may hold another one.
	vars = fmt.Sprintf("driver  = \"raw_exec\"\ncommand = [%q, %q, %q]\n", "/usr/bin/python3", script, loadFile)
	return vars, loadFile
}

// parseSampleWeb has Nomad parse the sample with the variables and checks
// what the test relies on: the gate constraint, the scaling block with
// strategy-cpu-target, and the task's reservation.
func parseSampleWeb(t *testing.T, nc *api.Client, vars string) (*api.Job, float64) {
	t.Helper()
	job, err := nc.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: readSample(t, sampleWebRel), Variables: vars, Canonicalize: true})
	if err != nil {
		t.Fatalf("Nomad cannot parse %s with variables %q: %v", sampleWebRel, vars, err)
	}
	gated := false
	for _, c := range job.Constraints {
		gated = gated || (c.LTarget == "${meta."+sampleGateKey+"}" && c.Operand == "==" && c.RTarget == "admitted")
	}
	if !gated {
		t.Errorf("%s lost the admission gate constraint ${meta.%s} == admitted: %+v", sampleWebRel, sampleGateKey, job.Constraints)
	}
	if len(job.TaskGroups) != 1 || len(job.TaskGroups[0].Tasks) != 1 || job.TaskGroups[0].Scaling == nil {
		t.Fatalf("%s: want one group %q with one task and a scaling block", sampleWebRel, sampleWebGroup)
	}
	tg := job.TaskGroups[0]
	if policy := fmt.Sprint(tg.Scaling.Policy); !strings.Contains(policy, "strategy-cpu-target") || !strings.Contains(policy, "nomad-apm") {
		t.Errorf("%s: the scaling policy does not use nomad-apm and strategy-cpu-target: %s", sampleWebRel, policy)
	}
	if *tg.Count != 2 || *tg.Scaling.Min != 2 {
		t.Fatalf("%s: count %d, min %d; the test's demand (%g%%) is sized for 2 and 2", sampleWebRel, *tg.Count, *tg.Scaling.Min, sampleWebDemand)
	}
	task := tg.Tasks[0]
	if task.Driver != "raw_exec" || task.Resources == nil || task.Resources.CPU == nil {
		t.Fatalf("%s with %q: task driver %q, resources %+v", sampleWebRel, vars, task.Driver, task.Resources)
	}
	return job, float64(*task.Resources.CPU)
}

// startSampleWeb registers the parsed job and starts the balancer, which
// runs until the test ends.
func startSampleWeb(t *testing.T, nc *api.Client, job *api.Job, reserved float64, loadFile string) *sampleWeb {
	t.Helper()
	w := &sampleWeb{t: t, nc: nc, loadFile: loadFile, reserved: reserved,
		coreMHz: float64(localcloud.DefaultCPUTotalCompute) / float64(runtime.NumCPU())}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatalf("registering %s: %v", sampleWebRel, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w.balance(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// balance reads the job's running allocations and group count and writes
// each task's share of one core: the demand divided over the running tasks.
func (w *sampleWeb) balance(ctx context.Context) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	allocs, _, err := w.nc.Jobs().Allocations(sampleWebJob, false, q)
	if err == nil {
		var job *api.Job
		job, _, err = w.nc.Jobs().Info(sampleWebJob, q)
		if err == nil {
			running := 0
			for _, a := range allocs {
				if a.ClientStatus == api.AllocClientStatusRunning && a.DesiredStatus == api.AllocDesiredStatusRun {
					running++
				}
			}
			w.mu.Lock()
			w.running = running
			if c := *job.TaskGroups[0].Count; len(w.counts) == 0 || w.counts[len(w.counts)-1] != c {
				w.counts = append(w.counts, c)
			}
			share := 0.0
			if running > 0 {
				share = w.demand / 100 * w.reserved / float64(running) / w.coreMHz
			}
			w.mu.Unlock()
			err = writeFileAtomic(w.loadFile, strconv.FormatFloat(share, 'f', 4, 64)+"\n")
		}
	}
	if err != nil && ctx.Err() == nil {
		w.mu.Lock()
		w.errs = append(w.errs, err.Error())
		w.mu.Unlock()
	}
}

func writeFileAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (w *sampleWeb) setDemand(percent float64) {
	w.mu.Lock()
	w.demand = percent
	w.mu.Unlock()
}

// state returns the running tasks, the latest group count and every count
// seen so far.
func (w *sampleWeb) state() (running, count int, counts []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.counts) > 0 {
		count = w.counts[len(w.counts)-1]
	}
	return w.running, count, append([]int(nil), w.counts...)
}

// policyID returns the ID Nomad gave the job's scaling policy, which the
// agent's evaluation lines carry.
func (w *sampleWeb) policyID() string {
	w.t.Helper()
	stubs, _, err := w.nc.Scaling().ListPolicies(nil)
	if err != nil {
		w.t.Fatal(err)
	}
	for _, s := range stubs {
		if s.Target["Job"] == sampleWebJob && s.Target["Group"] == sampleWebGroup {
			return s.ID
		}
	}
	w.t.Fatalf("Nomad has no scaling policy for %s/%s: %+v", sampleWebJob, sampleWebGroup, stubs)
	return ""
}

// decisionRe matches strategy-cpu-target's reasons as the agent logs them
// in its evaluation line ("calculating scaling target"), in reason or, once
// the agent capped the count to min or max, in meta's reason history.
var decisionRe = regexp.MustCompile(`(scale out|scale in) (\d+) -> (\d+): (?:recent mean|window peak) CPU ([0-9.]+)%`)

// webDecision is one scaling decision of strategy-cpu-target for the job.
type webDecision struct {
	at             time.Time
	dir            string // "scale out" or "scale in"
	from, want, to int    // the strategy's from and count, the agent's (capped) count
	cpu            float64
	line           string
}

// webDecisions returns the agent's evaluations of the job's policy that
// strategy-cpu-target decided to scale.
func webDecisions(logs, policyID string) []webDecision {
	var out []webDecision
	for _, l := range parseAgentLog(logs) {
		if !strings.Contains(l.text, "calculating scaling target") || !strings.Contains(l.text, "policy_id="+policyID) {
			continue
		}
		m := decisionRe.FindStringSubmatch(l.text)
		to := askedCount.FindStringSubmatch(l.text)
		if m == nil || to == nil {
			continue
		}
		d := webDecision{at: l.at, dir: m[1], line: compactLine(l.text)}
		d.from, _ = strconv.Atoi(m[2])
		d.want, _ = strconv.Atoi(m[3])
		d.to, _ = strconv.Atoi(to[1])
		d.cpu, _ = strconv.ParseFloat(m[4], 64)
		out = append(out, d)
	}
	return out
}

// checkStrategyLogged checks that strategy-cpu-target itself logged the
// decision the agent acted on.
func (w *sampleWeb) checkStrategyLogged(agent *localcloud.Autoscaler, d webDecision) {
	w.t.Helper()
	want := fmt.Sprintf("external_plugin.strategy-cpu-target: %s %d -> %d: ", d.dir, d.from, d.want)
	if !strings.Contains(agent.Logs(), want) {
		w.t.Errorf("strategy-cpu-target's own log has no line %q for the agent's decision %s", want, d.line)
	}
}

// checkWebScaling drives the job through a rise and a fall of its load and
// checks that its count followed, each step decided by strategy-cpu-target.
func (w *sampleWeb) checkWebScaling(agent *localcloud.Autoscaler) {
	t := w.t
	t.Helper()
	policyID := w.policyID()
	waitFor(t, 30*time.Second, "the sample job's first 2 tasks run", func() (bool, string) {
		running, count, _ := w.state()
		return running == 2 && count == 2, fmt.Sprintf("running %d, count %d", running, count)
	})

	w.setDemand(sampleWebDemand)
	began := time.Now()
	var up webDecision
	waitFor(t, 60*time.Second, "strategy-cpu-target scales the job out and the Nomad target applies it", func() (bool, string) {
		_, count, counts := w.state()
		for _, d := range webDecisions(agent.Logs(), policyID) {
			if d.dir == "scale out" && d.at.After(began) && count == d.to && d.to > 2 {
				up = d
				return true, fmt.Sprintf("count %d; %s", count, d.line)
			}
		}
		return false, fmt.Sprintf("counts %v", counts)
	})
	t.Logf("scaled out after %s: %s", time.Since(began).Round(time.Second), up.line)
	if up.from != 2 || up.cpu <= 75*1.05 {
		t.Errorf("the first scale-out went from %d at %.1f%% CPU, want from 2 above 78.75%%: %s", up.from, up.cpu, up.line)
	}
	// The log rounds the figure to 0.1: either neighbour may be the count.
	lo, hi := int(math.Ceil(float64(up.from)*(up.cpu-0.05)/75)), int(math.Ceil(float64(up.from)*(up.cpu+0.05)/75))
	if up.want < lo || up.want > hi || up.to != min(up.want, 20) {
		t.Errorf("scale-out to %d (agent %d), want ceil(%d x %.1f/75) = %d..%d: %s", up.want, up.to, up.from, up.cpu, lo, hi, up.line)
	}
	w.checkStrategyLogged(agent, up)
	waitFor(t, 45*time.Second, "the new tasks run", func() (bool, string) {
		running, count, _ := w.state()
		return running == count, fmt.Sprintf("running %d, count %d", running, count)
	})

	w.setDemand(0)
	idleFrom := time.Now()
	var down webDecision
	waitFor(t, 60*time.Second, "strategy-cpu-target scales the idle job in to its min (2)", func() (bool, string) {
		_, count, counts := w.state()
		for _, d := range webDecisions(agent.Logs(), policyID) {
			if d.dir == "scale in" && d.at.After(idleFrom) && d.from > 2 && d.to == 2 && count == 2 {
				down = d
				return true, fmt.Sprintf("counts %v; %s", counts, d.line)
			}
		}
		return false, fmt.Sprintf("counts %v", counts)
	})
	t.Logf("scaled in %s after the load stopped: %s", time.Since(idleFrom).Round(time.Second), down.line)
	if down.cpu >= 75*0.95 || down.want >= down.from {
		t.Errorf("the scale-in went %d -> %d at %.1f%% CPU, want fewer tasks below 71.25%%: %s", down.from, down.want, down.cpu, down.line)
	}
	w.checkStrategyLogged(agent, down)
	_, _, counts := w.state()
	if counts[0] != 2 || counts[len(counts)-1] != 2 || slices.Max(counts) < up.to {
		t.Errorf("the group counts went %v, want 2, up to %d, back to 2", counts, up.to)
	}
	for _, d := range webDecisions(agent.Logs(), policyID) {
		if d.to < 2 || d.to > 20 {
			t.Errorf("the agent set a count outside the sample's min and max: %s", d.line)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Errorf("the load balancer could not read the job or write the load %d times, first: %s", len(w.errs), w.errs[0])
	}
}
