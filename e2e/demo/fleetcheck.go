package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// interrupt sends a spot interruption warning for the admitted node that
// runs the most burners; the local cloud terminates the instance
// interruptionNotice later.
func (d *demo) interrupt(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	allocs, _, err := d.nc.Jobs().Allocations(loadJobID, false, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list the burners: %w", err)
	}
	insts, err := d.cloud.RunningFleetInstances(ctx, d.fleetID)
	if err != nil {
		return fmt.Errorf("list the fleet's instances: %w", err)
	}
	running := map[string]bool{}
	for _, in := range insts {
		running[in.ID] = true
	}
	count := map[string]int{}
	nodeOf := map[string]string{}
	for _, a := range allocs {
		if a.ClientStatus == api.AllocClientStatusRunning && a.DesiredStatus == api.AllocDesiredStatusRun && running[a.NodeName] && d.rec.nodeAdmitted(a.NodeID) {
			count[a.NodeName]++
			nodeOf[a.NodeName] = a.NodeID
		}
	}
	victim := ""
	for id, n := range count {
		if victim == "" || n > count[victim] || (n == count[victim] && id < victim) {
			victim = id
		}
	}
	if victim == "" {
		return fmt.Errorf("no running, admitted fleet instance runs a burner to interrupt (running %d instances)", len(insts))
	}
	warned := time.Now()
	d.rec.updateIRQ(func(irq *interruption) {
		*irq = interruption{Instance: victim, NodeID: nodeOf[victim], Warned: warned, Deadline: warned.Add(interruptionNotice)}
	})
	d.tl.printf("spot", "interrupting %s (node %s, %s): the warning goes to the SQS queue; the notice: EC2 takes the instance %s after it (AWS: 2 minutes)",
		victim, short(nodeOf[victim]), burners(count[victim]), interruptionNotice)
	if err := d.cloud.Interrupt(ctx, victim, interruptionNotice); err != nil {
		return fmt.Errorf("interrupt %s: %w", victim, err)
	}
	return nil
}

// finalState reads the fleet, every EC2 instance, the Nomad nodes and the
// local cloud's client agents, and lists whatever is not one of the fleet's
// running, admitted nodes.
func (d *demo) finalState(ctx context.Context) (finalState, error) {
	fin := finalState{States: map[string]string{}}
	target, err := fleetTarget(ctx, d.cloud, d.fleetID)
	if err != nil {
		return fin, err
	}
	fin.Target = target
	insts, err := d.cloud.RunningFleetInstances(ctx, d.fleetID)
	if err != nil {
		return fin, fmt.Errorf("list the fleet's instances: %w", err)
	}
	fin.Running = len(insts)
	fleet := map[string]bool{}
	for _, in := range insts {
		fleet[in.ID] = true
	}

	// Every instance EC2 knows, in any fleet or none.
	var all []ec2Instance
	var token *string
	for {
		out, err := d.cloud.EC2().DescribeInstances(ctx, &ec2.DescribeInstancesInput{NextToken: token})
		if err != nil {
			return fin, fmt.Errorf("describe every instance: %w", err)
		}
		for _, res := range out.Reservations {
			for _, in := range res.Instances {
				st := ""
				if in.State != nil {
					st = string(in.State.Name)
				}
				all = append(all, ec2Instance{id: aws.ToString(in.InstanceId), state: st})
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		token = out.NextToken
	}

	stubs, _, err := d.nc.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fin, fmt.Errorf("list Nomad nodes: %w", err)
	}
	serving := map[string]bool{}
	for _, n := range stubs {
		if n.NodeClass != nodeClass || n.Status != api.NodeStatusReady || n.Drain || n.SchedulingEligibility != api.NodeSchedulingEligible {
			continue
		}
		node, _, err := d.nc.Nodes().Info(n.ID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fin, fmt.Errorf("read Nomad node %s: %w", short(n.ID), err)
		}
		if node.Meta[gateKey] == "admitted" {
			serving[n.Name] = true
			fin.Ready++
		}
	}
	fin.Leaked = leaks(all, fleet, serving, d.cloud.Clients(), target)
	pids := d.rec.clientPIDs()
	fin.Leaked = append(fin.Leaked, processLeaks(pids, fleet, localcloud.Alive)...)
	fin.PIDsChecked = 0
	for inst := range pids {
		if !fleet[inst] {
			fin.PIDsChecked++
		}
	}
	for _, in := range all {
		fin.States[in.id] = in.state
		if in.state != "terminated" {
			fin.NonTerminated++
		}
	}
	return fin, nil
}

// ec2Instance is an instance as DescribeInstances lists it.
type ec2Instance struct{ id, state string }

// leaks lists every non-terminated instance that is not one of the fleet's
// running instances with a ready, admitted node, every client agent without
// such an instance, and a fleet whose running count is not its target.
func leaks(all []ec2Instance, fleet, serving map[string]bool, clients []string, target int) []string {
	var out []string
	live := 0
	for _, in := range all {
		if in.state == "terminated" {
			continue
		}
		live++
		switch {
		case !fleet[in.id]:
			out = append(out, fmt.Sprintf("%s is %s but not a running instance of the fleet", in.id, in.state))
		case !serving[in.id]:
			out = append(out, fmt.Sprintf("%s runs in the fleet but is not a ready, admitted Nomad node", in.id))
		}
	}
	if live != target {
		out = append(out, fmt.Sprintf("EC2 lists %d instances not terminated, the fleet's target is %d", live, target))
	}
	for _, c := range clients {
		if !fleet[c] {
			out = append(out, fmt.Sprintf("a Nomad client agent still runs for %s, which is not a running instance of the fleet", c))
		}
	}
	for name := range serving {
		if !fleet[name] {
			out = append(out, fmt.Sprintf("Nomad still has a ready, admitted node %s, which is not a running instance of the fleet", name))
		}
	}
	sort.Strings(out)
	return out
}

// processLeaks lists every client agent process recorded during the demo
// (by instance) that is still alive although its instance is no longer a
// running instance of the fleet.
func processLeaks(pids map[string]int, fleet map[string]bool, alive func(int) bool) []string {
	var out []string
	for inst, pid := range pids {
		if !fleet[inst] && alive(pid) {
			out = append(out, fmt.Sprintf("the Nomad client agent of %s (pid %d) still runs, although the instance is gone", inst, pid))
		}
	}
	sort.Strings(out)
	return out
}

// summaryLines are the figures of the summary.
func summaryLines(h history, s summary, jobs []localcloud.AWXJob, fin finalState) []string {
	above, measured := timeAbove(h.Samples, targetCPU)
	share := 0.0
	if measured > 0 {
		share = 100 * above.Seconds() / measured.Seconds()
	}
	ok, failed := 0, 0
	for _, j := range jobs {
		switch {
		case j.Status == localcloud.AWXSuccessful:
			ok++
		case localcloud.AWXFinal(j.Status):
			failed++
		}
	}
	other := s.Dispatched - s.ScaleOuts - s.ScaleIns - s.NoOps
	sent := fmt.Sprintf("%s, %s, %s (target-spotfleet found the target already covering the count)",
		plural(s.ScaleOuts, "scale-out"), plural(s.ScaleIns, "scale-in"), plural(s.NoOps, "no-op"))
	if other != 0 {
		sent += fmt.Sprintf(", %d without an outcome in the log (failed or still running)", other)
	}
	lines := []string{
		fmt.Sprintf("peak nodes: %d admitted and ready at once (fleet target peaked at %d)", peakNodes(h.Samples), s.PeakTarget),
		fmt.Sprintf("time above the %d%% target: %s of %s measured (%.0f%%)", targetCPU, above.Round(time.Second), measured.Round(time.Second), share),
		fmt.Sprintf("scaling: the strategy asked %s to scale out and %s to scale in (one ask per evaluation); the agent held %d back (cooldown, or the target still scaling) and sent %d: %s",
			plural(s.DecisionsOut, "time"), plural(s.DecisionsIn, "time"), s.HeldBack, s.Dispatched, sent),
		fmt.Sprintf("AWX post-configuration: %d ansible-playbook jobs, %d successful, %d failed (the injected fault)", ok+failed, ok, failed),
		instanceLine(h, fin),
		fmt.Sprintf("Nomad nodes: %d joined, %d seen down by the end (a terminated instance's client stops at once; Nomad marks its node down only after the heartbeat grace, so the last ones may still show ready or initializing when the demo ends)", s.Joined, s.Left),
		fmt.Sprintf("allocations lost: %d", len(s.Lost)),
		fmt.Sprintf("instances leaked: %d (EC2 lists %d not terminated; fleet target %d, running %d, admitted ready nodes %d; client agents of %d gone instances checked exited)",
			len(fin.Leaked), fin.NonTerminated, fin.Target, fin.Running, fin.Ready, fin.PIDsChecked),
	}
	for _, e := range s.AgentErrors {
		lines = append(lines, "agent error seen: "+e)
	}
	for _, p := range s.CloudProblems {
		lines = append(lines, "local cloud problem seen: "+strings.TrimSpace(p))
	}
	return lines
}

// plural is "n thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// instanceLine counts the instances launched, by cause, and terminated, by
// reason.
func instanceLine(h history, fin finalState) string {
	by, none := attributeLaunches(h)
	outs, outN, refills, repl := 0, 0, 0, 0
	for id, insts := range by {
		switch {
		case strings.HasPrefix(id, "scale-out "):
			outs++
			outN += len(insts)
		case strings.HasPrefix(id, "refill "):
			refills += len(insts)
		case strings.HasPrefix(id, "replacement "):
			repl += len(insts)
		}
	}
	launched := fmt.Sprintf("%d launched (%d at the start or unattributed, %d by %s, %d maintain refill of the failed playbook's instance, %d interruption replacement)",
		len(h.Instances), len(none), outN, plural(outs, "scale-out"), refills, repl)
	gone, scaledIn, hook, reclaimed, otherGone := 0, 0, 0, 0, 0
	for id, in := range h.Instances {
		if in.Gone.IsZero() {
			continue
		}
		gone++
		_, si := h.ScaledIn[id]
		_, hk := h.HookRemoved[id]
		switch {
		case si:
			scaledIn++
		case hk:
			hook++
		case id == h.IRQ.Instance:
			reclaimed++
		default:
			otherGone++
		}
	}
	left := fmt.Sprintf("%d terminated (%d by scale-in, %d whose playbook failed, %d reclaimed by EC2 after the spot notice", gone, scaledIn, hook, reclaimed)
	if otherGone > 0 {
		left += fmt.Sprintf(", %d otherwise", otherGone)
	}
	return fmt.Sprintf("instances: %s, %s), %d running at the end", launched, left, fin.Running)
}
