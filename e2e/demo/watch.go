package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
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

// watcher polls the fleet (moto), the pool's nodes (their admission gate
// included) and the load job (Nomad), and the AWX stand-in's jobs, every
// second: it prints node joins, admissions, drains and departures, playbook
// runs and lost allocations as they happen, a status line every
// statusEvery, and feeds the record the steps, the promises, the summary
// and the picture read.
type watcher struct {
	cloud       *localcloud.Cloud
	nc          *api.Client
	apm         workloadQuerier
	fleetID     string
	awx         *awxSide
	tl          *timeline
	rec         *record
	statusEvery time.Duration

	nodes     map[string]nodeView // node ID -> last view
	migrating map[string]bool     // allocation IDs reported as moving off a draining node
	jobsDone  map[int]bool        // AWX jobs whose end was printed
	jobsRun   map[int]bool        // AWX jobs whose start was printed

	// Notes printed once, the first time the status line needs them.
	notedOver100, notedNotice bool
}

// nodeView is what the watcher remembers of a node between polls.
type nodeView struct {
	name     string
	status   string
	drain    bool
	eligible bool
	admitted bool
}

// run polls until ctx ends.
func (w *watcher) run(ctx context.Context) {
	w.nodes = map[string]nodeView{}
	w.migrating = map[string]bool{}
	w.jobsDone = map[int]bool{}
	w.jobsRun = map[int]bool{}
	lastStatus := time.Time{}
	for {
		s, down, err := w.poll(ctx)
		if err != nil && ctx.Err() == nil {
			w.tl.printf("status", "could not read the fleet or the pool: %v", err)
		}
		w.pollAWX()
		if err == nil {
			s = w.rec.observe(s, down)
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
	if s.Admitting > 0 {
		extra += fmt.Sprintf(" | configuring %d", s.Admitting)
	}
	if s.Draining > 0 {
		extra += fmt.Sprintf(" | draining %d", s.Draining)
	}
	if s.Initializing > 0 {
		extra += fmt.Sprintf(" | starting %d", s.Initializing)
	}
	w.tl.printf("status", "fleet target %d | running %d | admitted nodes %d%s | workload CPU mean %s | burners %d",
		s.Target, s.Running, s.Ready, extra, s.WorkloadCPU, s.Burners)
	if s.HaveCPU && s.CPU > 100 && !w.notedOver100 {
		w.notedOver100 = true
		w.tl.printf("note", "workload CPU is the CPU the burners use over the schedulable CPU of the admitted nodes (%d MHz each): a node's burners may use more than that (raw_exec has no CPU limit), the load beyond its capacity queues on it, so the mean can exceed 100%%", schedulableCPU)
	}
	irq := w.rec.interruption()
	if s.Running > s.Target && irq.Instance != "" && irq.Terminated.IsZero() && !w.notedNotice {
		w.notedNotice = true
		w.tl.printf("note", "running %d, target %d: the interrupted %s still runs out its %s notice (its replacement unit was given back); EC2 reclaims it at the notice's end", s.Running, s.Target, irq.Instance, interruptionNotice)
	}
}

// poll reads one snapshot and reports node and allocation changes; down
// counts the pool's nodes that are down.
func (w *watcher) poll(ctx context.Context) (snapshot, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s := snapshot{At: time.Now()}

	target, err := fleetTarget(ctx, w.cloud, w.fleetID)
	if err != nil {
		return s, 0, err
	}
	s.Target = target
	insts, err := w.cloud.RunningFleetInstances(ctx, w.fleetID)
	if err != nil {
		return s, 0, fmt.Errorf("list fleet instances: %w", err)
	}
	s.Running = len(insts)
	seen := make([]instSeen, 0, len(insts))
	for _, in := range insts {
		seen = append(seen, instSeen{ID: in.ID, PrivateIP: in.PrivateIP, PID: w.cloud.ClientPID(in.ID)})
	}
	w.rec.seeInstances(s.At, seen)

	down, err := w.pollNodes(ctx, &s)
	if err != nil {
		return s, 0, err
	}
	if err := w.pollAllocs(ctx, &s); err != nil {
		return s, 0, err
	}
	s.CPU, s.HaveCPU, s.WorkloadCPU = w.workloadCPU()
	return s, down, nil
}

// pollAWX prints each configure job's start and end once.
func (w *watcher) pollAWX() {
	if w.awx == nil {
		return
	}
	for _, j := range w.awx.awx.Jobs() {
		inst := jobInstance(j)
		if !w.jobsRun[j.ID] && !j.Started.IsZero() {
			w.jobsRun[j.ID] = true
			w.tl.at(j.Started, "awx", "job %d (%s) for %s: ansible-playbook runs against %s", j.ID, j.Name, inst, j.Limit)
		}
		if !w.jobsDone[j.ID] && localcloud.AWXFinal(j.Status) {
			w.jobsDone[j.ID] = true
			took := ""
			if !j.Started.IsZero() {
				took = " after " + j.Finished.Sub(j.Started).Round(100*time.Millisecond).String()
			}
			outcome := jobOutcome(j.Stdout)
			if outcome == "" {
				outcome = j.Explanation
			}
			w.tl.at(j.Finished, "awx", "job %d for %s %s%s: %s", j.ID, inst, strings.ToUpper(j.Status), took, outcome)
		}
	}
}

// pollNodes counts the pool's nodes, records their history and prints
// their transitions; it returns how many are down.
func (w *watcher) pollNodes(ctx context.Context, s *snapshot) (int, error) {
	stubs, _, err := w.nc.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("list Nomad nodes: %w", err)
	}
	down := 0
	for _, n := range stubs {
		if n.NodeClass != nodeClass {
			continue
		}
		old, seen := w.nodes[n.ID]
		v := nodeView{name: n.Name, status: n.Status, drain: n.Drain,
			eligible: n.SchedulingEligibility == api.NodeSchedulingEligible, admitted: old.admitted}
		// The gate never goes back: only nodes not seen admitted yet are read.
		nodeDir, marker, markerErr := "", "", ""
		if !v.admitted && v.status == api.NodeStatusReady {
			node, _, err := w.nc.Nodes().Info(n.ID, (&api.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return 0, fmt.Errorf("read Nomad node %s: %w", short(n.ID), err)
			}
			v.admitted = node.Meta[gateKey] == "admitted"
			nodeDir = node.Meta[localcloud.MetaNodeDir]
			if v.admitted {
				marker, markerErr = readMarker(w.cloud.NodeDir(n.Name), nodeDir)
			}
		}
		switch {
		case v.status == api.NodeStatusReady && v.drain:
			s.Draining++
		case v.status == api.NodeStatusReady && v.eligible && v.admitted:
			s.Ready++
		case v.status == api.NodeStatusReady && v.eligible:
			s.Admitting++
		case v.status == api.NodeStatusInit:
			s.Initializing++
		case v.status == api.NodeStatusDown:
			down++
		}
		w.nodes[n.ID] = v
		now := time.Now()
		w.rec.updateNode(n.ID, n.Name, now, func(h *nodeHist) {
			if v.status == api.NodeStatusReady && h.Ready.IsZero() {
				h.Ready = now
			}
			if nodeDir != "" && h.NodeDir == "" {
				h.NodeDir = nodeDir
			}
			if v.admitted && h.Admitted.IsZero() {
				h.Admitted = now
				h.Marker, h.MarkerErr = marker, markerErr
			}
			if v.drain && h.DrainStart.IsZero() {
				h.DrainStart = now
			}
			if !v.drain && !h.DrainStart.IsZero() && h.DrainEnd.IsZero() && v.status == api.NodeStatusReady {
				h.DrainEnd = now
			}
			if v.status == api.NodeStatusDown && h.Down.IsZero() {
				h.Down = now
			}
		})
		switch {
		case v.status == api.NodeStatusReady && (!seen || old.status != api.NodeStatusReady):
			w.rec.nodeJoined()
			if v.admitted {
				w.tl.printf("node", "%s joined Nomad as node %s: ready", v.name, short(n.ID))
			} else {
				w.tl.printf("node", "%s joined Nomad as node %s: ready but gated (%s=pending): no pool work until its playbook ran", v.name, short(n.ID), gateKey)
			}
		case v.status == api.NodeStatusDown && seen && old.status != api.NodeStatusDown:
			w.rec.nodeLeft()
			w.tl.printf("node", "%s (node %s) is down: its client agent is gone", v.name, short(n.ID))
		}
		if seen && v.admitted && !old.admitted {
			w.tl.printf("node", "%s (node %s): the servers show %s=admitted; the scheduler may place burners there", v.name, short(n.ID), gateKey)
		}
		if seen && v.drain && !old.drain {
			w.tl.printf("node", "%s (node %s) draining: ineligible, allocations moving off", v.name, short(n.ID))
		}
		if seen && !v.drain && old.drain {
			w.tl.printf("node", "%s (node %s) drain complete", v.name, short(n.ID))
		}
	}
	return down, nil
}

// readMarker reads the monitoring marker the playbook writes in the node's
// own directory (the local cloud's NodeDir of the instance), which must be
// the directory the node's meta names.
func readMarker(cloudDir, metaDir string) (string, string) {
	switch {
	case cloudDir == "":
		return "", "the instance has no client agent (no node directory)"
	case metaDir != cloudDir:
		return "", fmt.Sprintf("the node's meta.node_dir %q is not its directory %q", metaDir, cloudDir)
	}
	b, err := os.ReadFile(filepath.Join(cloudDir, monitoringMarker))
	if err != nil {
		return "", err.Error()
	}
	return string(b), ""
}

// pollAllocs counts running burners and reports lost allocations.
func (w *watcher) pollAllocs(ctx context.Context, s *snapshot) error {
	allocs, _, err := w.nc.Jobs().Allocations(loadJobID, true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list allocations of %s: %w", loadJobID, err)
	}
	for _, a := range allocs {
		w.rec.seeAlloc(allocHist{ID: a.ID, JobID: a.JobID, NodeID: a.NodeID, NodeName: a.NodeName,
			Created: time.Unix(0, a.CreateTime), Status: a.ClientStatus})
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

// workloadCPU is the pool's newest mean workload CPU as apm-node reports
// it: the figure, whether there is one, and its text.
func (w *watcher) workloadCPU() (float64, bool, string) {
	now := time.Now()
	ms, err := w.apm.Query("workload_cpu node_class="+nodeClass, sdk.TimeRange{From: now.Add(-3 * sampleInterval), To: now})
	if err != nil {
		return math.NaN(), false, "n/a"
	}
	if len(ms) == 0 {
		return math.NaN(), false, "n/a (no node counts yet)"
	}
	v := ms[len(ms)-1].Value
	return v, true, fmt.Sprintf("%.0f%%", v)
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

// eventPID reads "pid=N" from a local cloud event's message, 0 if none.
func eventPID(msg string) int {
	for _, f := range strings.Fields(msg) {
		if v, ok := strings.CutPrefix(f, "pid="); ok {
			if pid, err := strconv.Atoi(strings.TrimRight(v, ",)")); err == nil {
				return pid
			}
		}
	}
	return 0
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
			rec.clientPID(e.InstanceID, eventPID(e.Message))
			tl.at(e.Time, "cloud", "instance %s running: starting its Nomad client agent", e.InstanceID)
		case localcloud.EventClientStopped:
			tl.at(e.Time, "cloud", "instance %s no longer running: its Nomad client agent is stopped", e.InstanceID)
		case localcloud.EventRefill:
			tl.at(e.Time, "cloud", "maintain refill of %s: %s", e.FleetID, e.Message)
		case localcloud.EventInterruptionWarning:
			rec.addMark(e.Time, markInterruption, "spot interruption of "+e.InstanceID)
			tl.at(e.Time, "spot", "EC2 warns: spot instance %s will be reclaimed (%s)", e.InstanceID, e.Message)
		case localcloud.EventInterruptionTerminated:
			rec.updateIRQ(func(irq *interruption) {
				if irq.Instance == e.InstanceID && irq.Terminated.IsZero() {
					irq.Terminated = e.Time
				}
			})
			rec.addMark(e.Time, markInterruptionEnd, e.InstanceID+" reclaimed")
			tl.at(e.Time, "spot", "EC2 reclaims %s at the end of its notice: %s", e.InstanceID, e.Message)
		case localcloud.EventClientFailed, localcloud.EventReconcileError:
			rec.cloudProblem(fmt.Sprintf("%s %s: %s", e.Kind, e.InstanceID, e.Message))
			tl.at(e.Time, "cloud", "WARNING %s %s: %s", e.Kind, e.InstanceID, e.Message)
		default:
			tl.at(e.Time, "cloud", "%s %s %s", e.Kind, e.InstanceID, e.Message)
		}
	}
}
