package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	start   time.Time

	tl    *timeline
	rec   *record
	quiet atomic.Bool // set once the demo is over: mute the shutdown's events

	awx     *awxSide
	cloud   *localcloud.Cloud
	agent   *localcloud.Autoscaler
	nc      *api.Client
	fleetID string
}

// run sets the local cloud up, runs the day, prints the summary, draws the
// picture and checks every promise. Every process it started is stopped
// before it returns.
func (d *demo) run(ctx context.Context) (err error) {
	d.start = time.Now()
	d.tl = newTimeline(d.opts.out, d.start)
	// Events arrive from the agent's log, the polls, the local cloud and
	// AWX a little late and out of order: hold each line 2 s, print sorted.
	d.tl.buffer(2 * time.Second)
	defer d.tl.stop()
	d.rec = newRecord()
	parent := ctx
	cores := runtime.NumCPU()

	d.tl.printf("setup", "starting the AWX stand-in (real ansible-playbook) and the local cloud (moto, a Nomad server, one Nomad client per instance) in %s", d.workDir)
	sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
	defer scancel()
	d.awx, err = startAWX(sctx, filepath.Join(d.workDir, "awx"))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.awx.awx.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stop the AWX stand-in: %w", cerr))
		}
	}()
	cfg := localcloud.Config{
		WorkDir:     d.workDir,
		Reconcile:   true,
		RefillDelay: refillDelay,
		Client: localcloud.ClientOptions{
			NodeClass:       nodeClass,
			CPUTotalCompute: cpuTotalCompute,
			Meta:            clientMeta(),
			ExtraHCL:        clientExtraHCL(),
		},
		OnEvent: cloudEvent(d.tl, d.rec, &d.quiet),
	}
	if d.opts.verbose {
		cfg.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	d.cloud, err = localcloud.Start(sctx, cfg)
	scancel()
	if err != nil {
		return fmt.Errorf("start the local cloud: %w", err)
	}
	defer func() {
		d.quiet.Store(true)
		d.tl.stop()
		// The agent's log helps when the demo failed, not when it was
		// interrupted (Ctrl-C): then it only shows the shutdown.
		if err != nil && d.agent != nil && !errors.Is(context.Cause(parent), context.Canceled) {
			d.printAgentTail(40)
		}
		if cerr := d.cloud.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("stop the local cloud: %w", cerr))
		}
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if d.nc, err = d.cloud.NomadClient(); err != nil {
		return err
	}
	l := load{nc: d.nc, share: burnShare(cores)}
	if err := d.createFleet(ctx, l); err != nil {
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
		"nomad_address":      d.cloud.NomadAddr(),
		"sample_interval":    sampleInterval.String(),
		"node_warmup":        nodeWarmup.String(),
		"admission_meta_key": gateKey,
	}); err != nil {
		return fmt.Errorf("configure apm-node for the status line: %w", err)
	}
	defer apm.Stop()

	// Background: the watcher from the start (the first node's admission is
	// part of the story), then the agent and its log.
	var wg sync.WaitGroup
	defer wg.Wait()
	bg, bgCancel := context.WithCancel(ctx)
	defer bgCancel()
	w := &watcher{cloud: d.cloud, nc: d.nc, apm: apm, fleetID: d.fleetID, awx: d.awx, tl: d.tl, rec: d.rec, statusEvery: 10 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run(bg)
	}()
	if err := d.startAgent(ctx); err != nil {
		return err
	}
	al := &agentLog{tl: d.tl, rec: d.rec}
	wg.Add(2)
	go func() {
		defer wg.Done()
		err := tailFile(bg, d.agent.LogPath(), al.handle, al.flush)
		al.flush()
		if err != nil {
			cancel(err)
		}
	}()
	go func() {
		defer wg.Done()
		d.watchAgent(bg, cancel)
	}()
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	err = l.waitRunning(wctx, steps[0].Burners)
	wcancel()
	if err != nil {
		return fmt.Errorf("the first node was not admitted (its burner never ran): %w", err)
	}

	if err := d.runSteps(ctx, l, cores); err != nil {
		return err
	}
	last := waitSteady(ctx, d.rec, 30*time.Second)
	w.printStatus(last)
	bgCancel()
	wg.Wait()
	d.tl.stop() // everything seen is printed; the rest prints at once
	// One last look at every allocation of the load: none may be lost.
	actx, acancel := context.WithTimeout(ctx, 10*time.Second)
	err = w.pollAllocs(actx, &snapshot{})
	acancel()
	if err != nil {
		return fmt.Errorf("final check of the load's allocations: %w", err)
	}
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	fin, err := d.finalState(fctx)
	fcancel()
	if err != nil {
		return fmt.Errorf("final check of the fleet: %w", err)
	}

	end := time.Now()
	h := d.rec.history(d.start, end)
	s := d.rec.summary()
	promises := checkPromises(h, d.awx.awx.Jobs(), s, fin)
	d.tl.printf("summary", "demo took %s", d.tl.elapsed())
	for _, line := range summaryLines(h, s, d.awx.awx.Jobs(), fin) {
		d.tl.printf("summary", "%s", line)
	}
	for _, p := range promises {
		verdict := "PASS"
		if !p.OK {
			verdict = "FAIL"
		}
		d.tl.printf("promise", "%s  %s: %s", verdict, p.What, p.Detail)
	}
	pngPath, svgPath, perr := renderPicture(h, d.opts.outDir)
	if perr != nil {
		return errors.Join(promisesError(promises), fmt.Errorf("draw the picture: %w", perr))
	}
	d.tl.printf("picture", "CPU and nodes over time, events marked: %s", pngPath)
	d.tl.printf("picture", "the same as SVG: %s", svgPath)
	return promisesError(promises)
}

// createFleet creates the fleet, waits for its first node (gated) and
// registers the burner job, which waits for that node's admission.
func (d *demo) createFleet(ctx context.Context, l load) error {
	d.tl.printf("setup", "Nomad server at %s, moto (EC2, SQS) at %s, AWX stand-in at %s", d.cloud.NomadAddr(), d.cloud.MotoURL(), d.awx.awx.URL())
	fctx, fcancel := context.WithTimeout(ctx, time.Minute)
	defer fcancel()
	var err error
	d.fleetID, err = d.cloud.CreateFleet(fctx, localcloud.FleetSpec{
		Name:           "demo-spot-workers",
		Type:           localcloud.FleetTypeMaintain,
		TargetCapacity: startNodes,
		InstanceTypes:  []string{"c5.large", "m5.large"},
	})
	if err != nil {
		return fmt.Errorf("create the spot fleet: %w", err)
	}
	d.tl.printf("setup", "spot fleet %s: maintain, diversified over c5.large + m5.large, target capacity %d; every node registers gated (%s=pending)",
		d.fleetID, startNodes, gateKey)
	nodes, err := d.cloud.WaitNodesReady(fctx, startNodes)
	if err != nil {
		return fmt.Errorf("wait for the fleet's first node: %w", err)
	}
	if err := checkNodeCPU(nodes[0]); err != nil {
		return err
	}
	cores := runtime.NumCPU()
	d.tl.printf("setup", "node %s ready: %d MHz schedulable of %d (reserved %d); one burner = %.0f%% of a node (%.3f of a core on this %d-core host)",
		nodes[0].Name, schedulableCPU, cpuTotalCompute, reservedCPU, burnerPercent(cores), burnShare(cores), cores)
	if err := l.start(fctx, steps[0].Burners); err != nil {
		return err
	}
	d.tl.printf("setup", "burner job registered, constrained to ${meta.%s} == \"admitted\": it waits for the first node's playbook", gateKey)
	return nil
}

// startAgent starts the autoscaler agent with the demo's policy.
func (d *demo) startAgent(ctx context.Context) error {
	d.tl.printf("setup", "demo time scale: samples every %s, evaluation every %s, query window %s, scale-out window %s, cooldown %s (%s after a scale-out), drain deadline %s",
		sampleInterval, evaluationInterval, queryWindow, scaleOutWindow, cooldown, cooldownOnScaleUp, drainTimeout)
	d.tl.printf("setup", "  spot notice %s (AWS: 2m), interruption drain deadline %s, maintain refill after %s", interruptionNotice, interruptionDrain, refillDelay)
	d.tl.printf("setup", "  (production: ~10s samples, 10s evaluations, 5m window, 30s scale-out window, 2m cooldowns, 15m drains)")
	targetHCL, err := targetWithAWX(d.cloud.SpotfleetTargetHCL(), d.awx.awx.URL(), d.cloud.QueueURL())
	if err != nil {
		return err
	}
	actx, acancel := context.WithTimeout(ctx, time.Minute)
	defer acancel()
	d.agent, err = d.cloud.StartAutoscaler(actx, localcloud.AutoscalerSpec{
		// The timeline reads the agent's DEBUG lines ("requesting slot").
		LogLevel:           "DEBUG",
		EvaluationInterval: evaluationInterval,
		Cooldown:           cooldown,
		ExtraHCL:           agentPluginsHCL(targetHCL),
		Policies:           map[string]string{"spot-fleet.hcl": clusterPolicyHCL(d.fleetID)},
		Env:                d.awx.env(),
	})
	if err != nil {
		return fmt.Errorf("start the autoscaler agent: %w", err)
	}
	d.tl.printf("setup", "autoscaler agent up (pid %d): apm-node (workload_cpu of %s), strategy-cpu-target (target %d%%), target-spotfleet (launch hook %s = AWX template %s, on_failure terminate; interruptions from SQS); policy min %d max %d",
		d.agent.PID(), nodeClass, targetCPU, configureHook, configureTemplate, policyMin, policyMax)
	return nil
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
