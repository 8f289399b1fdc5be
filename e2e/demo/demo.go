package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	apmnode "github.com/nomad-spotfleet/nomad-spotfleet/apm-node/plugin"
	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// demo is one run of the demo.
type demo struct {
	opts    options
	workDir string

	tl    *timeline
	rec   *record
	quiet atomic.Bool // set once the demo is over: mute the shutdown's events

	cloud *localcloud.Cloud
	agent *localcloud.Autoscaler
}

// run sets the local cloud up, runs the load steps, prints the summary and
// checks the outcome. Every process it started is stopped before it returns.
func (d *demo) run(ctx context.Context) (err error) {
	start := time.Now()
	d.tl = newTimeline(os.Stdout, start)
	d.rec = newRecord()
	cores := runtime.NumCPU()

	d.tl.printf("setup", "starting the local cloud (moto, a Nomad server, one Nomad client per instance) in %s", d.workDir)
	cfg := localcloud.Config{
		WorkDir:   d.workDir,
		Reconcile: true,
		Client: localcloud.ClientOptions{
			NodeClass:       nodeClass,
			CPUTotalCompute: cpuTotalCompute,
			ExtraHCL:        clientExtraHCL(),
		},
		OnEvent: cloudEvent(d.tl, d.rec, &d.quiet),
	}
	if d.opts.verbose {
		cfg.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	d.cloud, err = localcloud.Start(sctx, cfg)
	scancel()
	if err != nil {
		return fmt.Errorf("start the local cloud: %w", err)
	}
	defer func() {
		d.quiet.Store(true)
		if err != nil && d.agent != nil {
			d.printAgentTail(40)
		}
		if cerr := d.cloud.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stop the local cloud: %w", cerr))
		}
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	l, fleetID, err := d.setup(ctx, cores)
	if err != nil {
		return err
	}

	// The figure in the status line: apm-node in this process, configured
	// like the agent's.
	apmLog := hclog.NewNullLogger()
	if d.opts.verbose {
		apmLog = hclog.New(&hclog.LoggerOptions{Name: "status.apm-node", Level: hclog.Debug, Output: os.Stderr})
	}
	apm := apmnode.NewPlugin(apmLog)
	if err := apm.SetConfig(map[string]string{
		"nomad_address":   d.cloud.NomadAddr(),
		"sample_interval": sampleInterval.String(),
		"node_warmup":     nodeWarmup.String(),
	}); err != nil {
		return fmt.Errorf("configure apm-node for the status line: %w", err)
	}
	defer apm.Stop()

	// Background: the agent's log, the watcher, the agent's liveness.
	var wg sync.WaitGroup
	defer wg.Wait()
	bg, bgCancel := context.WithCancel(ctx)
	defer bgCancel()
	al := &agentLog{tl: d.tl, rec: d.rec}
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := tailFile(bg, d.agent.LogPath(), al.handle); err != nil {
			cancel(err)
		}
	}()
	w := &watcher{cloud: d.cloud, nc: l.nc, apm: apm, fleetID: fleetID, tl: d.tl, rec: d.rec, statusEvery: 10 * time.Second}
	go func() {
		defer wg.Done()
		w.run(bg)
	}()
	go func() {
		defer wg.Done()
		d.watchAgent(bg, cancel)
	}()

	if err := runSteps(ctx, d.tl, d.rec, l, cores); err != nil {
		return err
	}
	last := waitSteady(ctx, d.rec, 30*time.Second)
	w.printStatus(last)
	bgCancel()
	wg.Wait()
	// One last look at every allocation of the load: none may be lost.
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	err = w.pollAllocs(actx, &snapshot{})
	acancel()
	if err != nil {
		return fmt.Errorf("final check of the load's allocations: %w", err)
	}

	s := d.rec.summary()
	d.tl.printf("summary", "demo took %s", d.tl.elapsed())
	printSummary(d.tl, s)
	if err := verdict(s); err != nil {
		return err
	}
	return nil
}

// setup creates the fleet, waits for its first node, starts one burner and
// the autoscaler agent with the demo's policy.
func (d *demo) setup(ctx context.Context, cores int) (load, string, error) {
	d.tl.printf("setup", "Nomad server at %s, moto (EC2, SQS) at %s", d.cloud.NomadAddr(), d.cloud.MotoURL())
	fctx, fcancel := context.WithTimeout(ctx, time.Minute)
	defer fcancel()
	fleetID, err := d.cloud.CreateFleet(fctx, localcloud.FleetSpec{
		Name:           "demo-spot-workers",
		Type:           localcloud.FleetTypeMaintain,
		TargetCapacity: startNodes,
		InstanceTypes:  []string{"c5.large", "m5.large"},
	})
	if err != nil {
		return load{}, "", fmt.Errorf("create the spot fleet: %w", err)
	}
	d.tl.printf("setup", "spot fleet %s: maintain, diversified over c5.large + m5.large, target capacity %d", fleetID, startNodes)
	nodes, err := d.cloud.WaitNodesReady(fctx, startNodes)
	if err != nil {
		return load{}, "", fmt.Errorf("wait for the fleet's first node: %w", err)
	}
	if err := checkNodeCPU(nodes[0]); err != nil {
		return load{}, "", err
	}
	d.tl.printf("setup", "node %s ready: %d MHz schedulable of %d (reserved %d); one burner = %.0f%% of a node (%.3f of a core on this %d-core host)",
		nodes[0].Name, schedulableCPU, cpuTotalCompute, reservedCPU, burnerPercent(cores), burnShare(cores), cores)

	nc, err := d.cloud.NomadClient()
	if err != nil {
		return load{}, "", err
	}
	l := load{nc: nc, share: burnShare(cores)}
	if err := l.start(fctx, steps[0].Burners); err != nil {
		return load{}, "", err
	}
	if err := l.waitRunning(fctx, steps[0].Burners); err != nil {
		return load{}, "", err
	}

	d.tl.printf("setup", "demo time scale: samples every %s, evaluation every %s, query window %s, scale-out window %s, cooldown %s (%s after a scale-out), drain deadline %s",
		sampleInterval, evaluationInterval, queryWindow, scaleOutWindow, cooldown, cooldownOnScaleUp, drainTimeout)
	d.tl.printf("setup", "  (production: ~10s samples, 10s evaluations, 5m window, 30s scale-out window, 2m cooldowns, 15m drains)")
	d.agent, err = d.cloud.StartAutoscaler(fctx, localcloud.AutoscalerSpec{
		// The timeline reads the agent's DEBUG lines ("requesting slot").
		LogLevel:           "DEBUG",
		EvaluationInterval: evaluationInterval,
		Cooldown:           cooldown,
		ExtraHCL:           agentPluginsHCL(d.cloud.SpotfleetTargetHCL()),
		Policies:           map[string]string{"spot-fleet.hcl": clusterPolicyHCL(fleetID)},
	})
	if err != nil {
		return load{}, "", fmt.Errorf("start the autoscaler agent: %w", err)
	}
	d.tl.printf("setup", "autoscaler agent up (pid %d): apm-node (workload_cpu of %s), strategy-cpu-target (target %d%%), target-spotfleet; policy min %d max %d",
		d.agent.PID(), nodeClass, targetCPU, policyMin, policyMax)
	return l, fleetID, nil
}

// checkNodeCPU verifies that the client took the demo's CPU settings: the
// load figures depend on them.
func checkNodeCPU(n *api.Node) error {
	if n.NodeResources == nil || n.ReservedResources == nil {
		return fmt.Errorf("node %s reports no resources", n.Name)
	}
	total, reserved := int(n.NodeResources.Cpu.CpuShares), int(n.ReservedResources.Cpu.CpuShares)
	if total != cpuTotalCompute || reserved != reservedCPU {
		return fmt.Errorf("node %s has %d MHz CPU with %d reserved, want %d with %d: the client did not take the demo's CPU settings",
			n.Name, total, reserved, cpuTotalCompute, reservedCPU)
	}
	return nil
}

// watchAgent cancels the demo if the autoscaler agent exits.
func (d *demo) watchAgent(ctx context.Context, cancel context.CancelCauseFunc) {
	for {
		if d.agent.Exited() {
			cancel(fmt.Errorf("the autoscaler agent exited (%v); see its log below", d.agent.ExitErr()))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// printAgentTail writes the last n lines of the agent's log to stderr.
func (d *demo) printAgentTail(n int) {
	lines := strings.Split(strings.TrimRight(d.agent.Logs(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(os.Stderr, "\n==> last %d lines of the autoscaler agent's log (%s)\n", len(lines), d.agent.LogPath())
	for _, l := range lines {
		fmt.Fprintln(os.Stderr, l)
	}
}
