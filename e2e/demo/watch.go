package main

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// workloadQuerier returns pool CPU figures (apm-node, in this process).
type workloadQuerier interface {
	Query(q string, r sdk.TimeRange) (sdk.TimestampedMetrics, error)
}

// watcher polls the fleet (moto), the pool's nodes and the load job (Nomad)
// every second: it prints node joins, drains and departures and lost
// allocations as they happen, a status line every statusEvery, and feeds
// the record the steps and the summary read.
type watcher struct {
	cloud       *localcloud.Cloud
	nc          *api.Client
	apm         workloadQuerier
	fleetID     string
	tl          *timeline
	rec         *record
	statusEvery time.Duration

	nodes     map[string]nodeView // node ID -> last view
	migrating map[string]bool     // allocation IDs reported as moving off a draining node
}

// nodeView is what the watcher remembers of a node between polls.
type nodeView struct {
	name     string
	status   string
	drain    bool
	eligible bool
}

// run polls until ctx ends.
func (w *watcher) run(ctx context.Context) {
	w.nodes = map[string]nodeView{}
	w.migrating = map[string]bool{}
	lastStatus := time.Time{}
	for {
		s, err := w.poll(ctx)
		if err != nil && ctx.Err() == nil {
			w.tl.printf("status", "could not read the fleet or the pool: %v", err)
		}
		if err == nil {
			s = w.rec.observe(s)
			if time.Since(lastStatus) >= w.statusEvery {
				lastStatus = time.Now()
				w.printStatus(s)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// printStatus writes the compact status line.
func (w *watcher) printStatus(s snapshot) {
	extra := ""
	if s.Draining > 0 {
		extra += fmt.Sprintf(" | draining %d", s.Draining)
	}
	if s.Initializing > 0 {
		extra += fmt.Sprintf(" | starting %d", s.Initializing)
	}
	w.tl.printf("status", "fleet target %d | running %d | ready nodes %d%s | workload CPU mean %s | burners %d",
		s.Target, s.Running, s.Ready, extra, s.WorkloadCPU, s.Burners)
}

// poll reads one snapshot and reports node and allocation changes.
func (w *watcher) poll(ctx context.Context) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s := snapshot{At: time.Now()}

	target, err := fleetTarget(ctx, w.cloud, w.fleetID)
	if err != nil {
		return s, err
	}
	s.Target = target
	insts, err := w.cloud.RunningFleetInstances(ctx, w.fleetID)
	if err != nil {
		return s, fmt.Errorf("list fleet instances: %w", err)
	}
	s.Running = len(insts)

	if err := w.pollNodes(ctx, &s); err != nil {
		return s, err
	}
	if err := w.pollAllocs(ctx, &s); err != nil {
		return s, err
	}
	s.WorkloadCPU = w.workloadCPU()
	return s, nil
}

// pollNodes counts the pool's nodes and prints their transitions.
func (w *watcher) pollNodes(ctx context.Context, s *snapshot) error {
	stubs, _, err := w.nc.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list Nomad nodes: %w", err)
	}
	for _, n := range stubs {
		if n.NodeClass != nodeClass {
			continue
		}
		v := nodeView{name: n.Name, status: n.Status, drain: n.Drain,
			eligible: n.SchedulingEligibility == api.NodeSchedulingEligible}
		switch {
		case v.status == api.NodeStatusReady && v.drain:
			s.Draining++
		case v.status == api.NodeStatusReady && v.eligible:
			s.Ready++
		case v.status == api.NodeStatusInit:
			s.Initializing++
		}
		old, seen := w.nodes[n.ID]
		w.nodes[n.ID] = v
		switch {
		case v.status == api.NodeStatusReady && (!seen || old.status != api.NodeStatusReady):
			w.rec.nodeJoined()
			w.tl.printf("node", "%s joined Nomad as node %s: ready", v.name, short(n.ID))
		case v.status == api.NodeStatusDown && seen && old.status != api.NodeStatusDown:
			w.rec.nodeLeft()
			w.tl.printf("node", "%s (node %s) is down: its client agent is gone", v.name, short(n.ID))
		}
		if seen && v.drain && !old.drain {
			w.tl.printf("node", "%s (node %s) draining: ineligible, allocations moving off", v.name, short(n.ID))
		}
		if seen && !v.drain && old.drain {
			w.tl.printf("node", "%s (node %s) drain complete", v.name, short(n.ID))
		}
	}
	return nil
}

// pollAllocs counts running burners and reports lost allocations.
func (w *watcher) pollAllocs(ctx context.Context, s *snapshot) error {
	allocs, _, err := w.nc.Jobs().Allocations(loadJobID, true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list allocations of %s: %w", loadJobID, err)
	}
	for _, a := range allocs {
		// The scheduler stops a drained node's allocation with this
		// description and places its replacement elsewhere.
		if a.DesiredStatus == api.AllocDesiredStatusStop && strings.Contains(a.DesiredDescription, "migrated") && !w.migrating[a.ID] {
			w.migrating[a.ID] = true
			w.tl.printf("node", "burner %s moves off draining node %s: Nomad migrates it, nothing is lost", short(a.ID), a.NodeName)
		}
		switch a.ClientStatus {
		case api.AllocClientStatusRunning:
			s.Burners++
		case api.AllocClientStatusLost:
			desc := fmt.Sprintf("allocation %s on node %s (%s)", short(a.ID), a.NodeName, short(a.NodeID))
			if w.rec.addLost(a.ID, desc) {
				w.tl.printf("LOST", "%s is lost: a node went away without a drain", desc)
			}
		}
	}
	return nil
}

// workloadCPU is the pool's newest mean workload CPU as apm-node reports it.
func (w *watcher) workloadCPU() string {
	now := time.Now()
	ms, err := w.apm.Query("workload_cpu node_class="+nodeClass, sdk.TimeRange{From: now.Add(-3 * sampleInterval), To: now})
	if err != nil {
		return "n/a"
	}
	if len(ms) == 0 {
		return "n/a (no node counts yet)"
	}
	return fmt.Sprintf("%.0f%%", ms[len(ms)-1].Value)
}

// fleetTarget reads the fleet's TargetCapacity.
func fleetTarget(ctx context.Context, cloud *localcloud.Cloud, fleetID string) (int, error) {
	out, err := cloud.EC2().DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{fleetID}})
	if err != nil {
		return 0, fmt.Errorf("describe fleet %s: %w", fleetID, err)
	}
	if len(out.SpotFleetRequestConfigs) != 1 || out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig == nil {
		return 0, fmt.Errorf("describe fleet %s: not found", fleetID)
	}
	return int(aws.ToInt32(out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig.TargetCapacity)), nil
}

// cloudEvent prints the local cloud's instance-side events until quiet is
// set (the shutdown at the end stops every client; that is not news).
func cloudEvent(tl *timeline, rec *record, quiet *atomic.Bool) func(localcloud.Event) {
	return func(e localcloud.Event) {
		if quiet.Load() {
			return
		}
		switch e.Kind {
		case localcloud.EventClientStarted:
			tl.at(e.Time, "cloud", "instance %s running: starting its Nomad client agent", e.InstanceID)
		case localcloud.EventClientStopped:
			tl.at(e.Time, "cloud", "instance %s no longer running: its Nomad client agent is stopped", e.InstanceID)
		case localcloud.EventRefill:
			tl.at(e.Time, "cloud", "maintain refill of %s: %s", e.FleetID, e.Message)
		case localcloud.EventClientFailed, localcloud.EventReconcileError:
			rec.cloudProblem(fmt.Sprintf("%s %s: %s", e.Kind, e.InstanceID, e.Message))
			tl.at(e.Time, "cloud", "WARNING %s %s: %s", e.Kind, e.InstanceID, e.Message)
		default:
			tl.at(e.Time, "cloud", "%s %s %s", e.Kind, e.InstanceID, e.Message)
		}
	}
}
