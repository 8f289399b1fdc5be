package main

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// promise is one thing the demo shows, checked against what happened.
type promise struct {
	What   string
	OK     bool
	Detail string
}

// finalState is the fleet as EC2 (moto), Nomad and the local cloud show it
// after the fall back to the minimum.
type finalState struct {
	Target, Running, Ready int
	// NonTerminated is every instance EC2 lists in a state other than
	// terminated, in any fleet or none.
	NonTerminated int
	// Leaked describes each instance or client agent that is not one of
	// the fleet's running, admitted nodes, and a count that does not
	// match the target.
	Leaked []string
	// States is the EC2 state of instances the promises ask about.
	States map[string]string
	// PIDsChecked is how many client agent processes of gone instances
	// were checked dead.
	PIDsChecked int
}

// configureJobs returns the configure jobs run for an instance, oldest first.
func configureJobs(jobs []localcloud.AWXJob, instance string) []localcloud.AWXJob {
	var out []localcloud.AWXJob
	for _, j := range jobs {
		if j.TemplateID == configureTemplateID && jobInstance(j) == instance {
			out = append(out, j)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// firstAllocs returns the creation time of the first allocation on each
// node (by instance, the node's name).
func firstAllocs(h history) map[string]time.Time {
	out := map[string]time.Time{}
	for _, a := range h.Allocs {
		if t, ok := out[a.NodeName]; !ok || a.Created.Before(t) {
			out[a.NodeName] = a.Created
		}
	}
	return out
}

// nodeOf returns the history of the node of an instance.
func (h history) nodeOf(instance string) (nodeHist, bool) {
	for _, n := range h.Nodes {
		if n.Name == instance {
			return n, true
		}
	}
	return nodeHist{}, false
}

// checkPromises checks every promise of the demo.
func checkPromises(h history, jobs []localcloud.AWXJob, s summary, fin finalState) []promise {
	return []promise{
		promiseFollowed(h, s),
		promiseAdmission(h, jobs),
		promiseFailedPlaybook(h, jobs, fin),
		promiseInterruption(h),
		promiseMinimum(fin),
		{What: "no allocation lost", OK: len(s.Lost) == 0, Detail: lostDetail(s.Lost)},
		{What: "no instance leaked", OK: len(fin.Leaked) == 0, Detail: leakDetail(fin)},
	}
}

// overshootRule is the most nodes the fleet may reach for a load that
// needs need nodes at the target: a quarter more, rounded up, plus one.
func overshootRule(need int) int { return int(math.Ceil(float64(need)*1.25)) + 1 }

// nodesFor is how many nodes burners burners need to sit at or below the
// target, each adding pct percent of one node (at least the policy's min).
func nodesFor(burners int, pct float64) int {
	return max(policyMin, int(math.Ceil(float64(burners)*pct/targetCPU-1e-9)))
}

// loadAt returns the burner count of the load step in force at t (from the
// load marks, "<step>: <n> burners"), or fallback when there is none.
func loadAt(marks []mark, t time.Time, fallback int) int {
	n, found := fallback, false
	for _, m := range marks {
		if m.Kind != markLoad || m.At.After(t) {
			continue
		}
		if _, after, ok := strings.Cut(m.Label, ": "); ok {
			var b int
			if _, err := fmt.Sscanf(after, "%d burner", &b); err == nil {
				n, found = b, true
			}
		}
	}
	if !found {
		return fallback
	}
	return n
}

// heldBeyondNeed integrates, over the samples, the running instances
// beyond what the load in force needed, and all running instances, in
// node-seconds.
func heldBeyondNeed(h history, pct float64) (extra, held float64) {
	for i := 0; i+1 < len(h.Samples); i++ {
		s := h.Samples[i]
		dt := h.Samples[i+1].At.Sub(s.At).Seconds()
		n := max(s.Running, s.Target)
		need := nodesFor(loadAt(h.Marks, s.At, s.Burners), pct)
		held += float64(n) * dt
		extra += float64(max(n-need, 0)) * dt
	}
	return extra, held
}

// promiseFollowed: the fleet grew with the load and came back, without
// overshooting: its target peaked at no more than overshootRule of the
// nodes the heaviest step needs.
func promiseFollowed(h history, s summary) promise {
	p := promise{What: "the fleet followed the load out and back in"}
	pct := burnerPercent(runtime.NumCPU())
	peakBurners := 0
	for _, st := range steps {
		peakBurners = max(peakBurners, st.Burners)
	}
	need := nodesFor(peakBurners, pct)
	bound := overshootRule(need)
	var errs []string
	if s.PeakTarget < startNodes+2 {
		errs = append(errs, fmt.Sprintf("its target peaked at %d: it never grew by 2 from %d", s.PeakTarget, startNodes))
	}
	if s.PeakTarget > bound {
		errs = append(errs, fmt.Sprintf("its target peaked at %d, above %d = ceil(1.25 × %d) + 1: an overshoot", s.PeakTarget, bound, need))
	}
	if s.ScaleOuts == 0 || s.ScaleIns == 0 {
		errs = append(errs, fmt.Sprintf("%d scale-outs and %d scale-ins, want both", s.ScaleOuts, s.ScaleIns))
	}
	extra, held := heldBeyondNeed(h, pct)
	share := 0.0
	if held > 0 {
		share = 100 * extra / held
	}
	p.OK = len(errs) == 0
	detail := fmt.Sprintf("peak target %d (from %d); rule: peak ≤ ceil(1.25 × need) + 1 = %d, need = ceil(%d burners × %.0f%% / %d%%) = %d nodes for the heaviest step; %d scale-outs, %d scale-ins; %.0f node-seconds held beyond the load's need (%.0f%% of %.0f held)",
		s.PeakTarget, startNodes, bound, peakBurners, pct, targetCPU, need, s.ScaleOuts, s.ScaleIns, extra, share, held)
	if p.OK {
		p.Detail = detail
	} else {
		p.Detail = strings.Join(errs, "; ") + " (" + detail + ")"
	}
	return p
}

// promiseAdmission: every node that was admitted or took an allocation,
// whether or not the watcher saw its node, had exactly one configure job,
// run against its own address and node directory, which succeeded before
// the node was admitted (both the plugin's log line and the servers'
// meta, as the watcher saw it) and before its first allocation was
// created; and the playbook's monitoring marker was on the node when it was
// admitted.
func promiseAdmission(h history, jobs []localcloud.AWXJob) promise {
	p := promise{What: "every admitted node ran its AWX playbook before it took work"}
	first := firstAllocs(h)
	var errs []string
	admitted := 0
	minLead, maxLead := time.Duration(1<<62), time.Duration(0)
	names := map[string]bool{}
	var order []string
	for _, n := range h.Nodes {
		if !names[n.Name] {
			names[n.Name] = true
			order = append(order, n.Name)
		}
	}
	var unseen []string
	for name := range first {
		if !names[name] {
			unseen = append(unseen, name)
		}
	}
	sort.Strings(unseen)
	order = append(order, unseen...)
	for _, name := range order {
		n, seen := h.nodeOf(name)
		firstAlloc, hasAlloc := first[name]
		if n.Admitted.IsZero() && !hasAlloc {
			continue
		}
		admitted++
		if !seen {
			errs = append(errs, fmt.Sprintf("%s took an allocation at %s, but the watcher never saw its node (its gate and marker unchecked)", name, clock(firstAlloc)))
		}
		js := configureJobs(jobs, name)
		if len(js) != 1 {
			errs = append(errs, fmt.Sprintf("%s had %d configure jobs, want exactly 1", name, len(js)))
			if len(js) == 0 {
				continue
			}
		}
		j := js[len(js)-1]
		if j.Status != localcloud.AWXSuccessful {
			errs = append(errs, fmt.Sprintf("%s was admitted or took work, but its configure job %d ended %s", name, j.ID, j.Status))
			continue
		}
		errs = append(errs, ownJob(h, n, j)...)
		if seen && !n.Admitted.IsZero() {
			logged, ok := h.AdmitLogged[name]
			switch {
			case !ok:
				errs = append(errs, fmt.Sprintf("%s was admitted at the servers (seen %s), but target-spotfleet never logged its admission", name, clock(n.Admitted)))
			case !logged.After(j.Finished):
				errs = append(errs, fmt.Sprintf("%s was admitted at %s, not after its job %d ended at %s", name, clock(logged), j.ID, clock(j.Finished)))
			}
			if !n.Admitted.After(j.Finished) {
				errs = append(errs, fmt.Sprintf("%s was seen admitted at the servers at %s, not after its job %d ended at %s", name, clock(n.Admitted), j.ID, clock(j.Finished)))
			}
		}
		if hasAlloc {
			if !firstAlloc.After(j.Finished) {
				errs = append(errs, fmt.Sprintf("%s got its first allocation at %s, before its job %d ended at %s", name, clock(firstAlloc), j.ID, clock(j.Finished)))
			} else {
				lead := firstAlloc.Sub(j.Finished)
				minLead, maxLead = min(minLead, lead), max(maxLead, lead)
			}
		}
	}
	if admitted == 0 {
		errs = append(errs, "no node was admitted")
	}
	p.OK = len(errs) == 0
	if p.OK {
		p.Detail = fmt.Sprintf("%d nodes admitted, each after its own successful job (its limit the instance's address, its node_dir the node's meta, the monitoring marker on the node at admission)", admitted)
		if maxLead > 0 {
			p.Detail += fmt.Sprintf("; first burner placed %s to %s after the job ended", minLead.Round(100*time.Millisecond), maxLead.Round(100*time.Millisecond))
		}
	} else {
		p.Detail = strings.Join(errs, "; ")
	}
	return p
}

// monitoringMarker is the file agent-config/playbooks/monitoring.yml writes
// into the node's directory; its content is the instance ID.
const monitoringMarker = "monitoring-installed"

// ownJob checks that job j configured node n: it ran against the
// instance's address, with the node's own directory, and left the
// monitoring marker there.
func ownJob(h history, n nodeHist, j localcloud.AWXJob) []string {
	var errs []string
	ip := h.Instances[n.Name].PrivateIP
	switch {
	case ip == "":
		errs = append(errs, fmt.Sprintf("%s: the instance's address was never read, so job %d's limit %q is unchecked", n.Name, j.ID, j.Limit))
	case j.Limit != ip:
		errs = append(errs, fmt.Sprintf("%s: job %d ran against %q, not the instance's address %s", n.Name, j.ID, j.Limit, ip))
	}
	dir := fmt.Sprint(j.ExtraVars["node_dir"])
	switch {
	case n.NodeDir == "":
		errs = append(errs, fmt.Sprintf("%s: the node's meta.node_dir was never read, so job %d's node_dir %q is unchecked", n.Name, j.ID, dir))
	case dir != n.NodeDir:
		errs = append(errs, fmt.Sprintf("%s: job %d's node_dir %q is not the node's meta.node_dir %q", n.Name, j.ID, dir, n.NodeDir))
	}
	switch {
	case n.MarkerErr != "":
		errs = append(errs, fmt.Sprintf("%s: no monitoring marker on the node at admission: %s", n.Name, n.MarkerErr))
	case strings.TrimSpace(n.Marker) != n.Name:
		errs = append(errs, fmt.Sprintf("%s: the node's monitoring marker reads %q, want its instance ID", n.Name, strings.TrimSpace(n.Marker)))
	}
	return errs
}

// Launch attribution. Every instance the fleet launched during the demo
// has one cause: a scale-out (the target raised by target-spotfleet), the
// maintain fleet's refill of an instance whose launch hook failed (the
// target unchanged), or the replacement of an interrupted instance (the
// target raised by one). Instances are taken in the order the watcher first
// saw them running, each by the earliest cause still owed instances whose
// window holds it; no instance serves two causes.
const (
	// claimWindow is how long after its cause an instance may be seen.
	claimWindow = 30 * time.Second
	// scaleOutEarly: "scaled out" is logged once the instances run, so
	// the 1 s poll may see them a little before the line's time.
	scaleOutEarly = 2 * time.Second
	// replacementEarly: the raise launches at once (moto), just before
	// the plugin logs it.
	replacementEarly = time.Second
)

// launchCause is one reason for the fleet to launch instances.
type launchCause struct {
	ID    string // "scale-out <label>", "refill <instance>", "replacement <instance>"
	At    time.Time
	N     int
	Early time.Duration
}

// launchCauses lists the causes in the history, oldest first.
func launchCauses(h history) []launchCause {
	var cs []launchCause
	for _, m := range h.Marks {
		if m.Kind != markScaleOut {
			continue
		}
		if from, to, ok := arrow(m.Label); ok && to > from {
			cs = append(cs, launchCause{ID: "scale-out " + m.Label + " at " + clock(m.At), At: m.At, N: to - from, Early: scaleOutEarly})
		}
	}
	for inst, at := range h.HookRemoved {
		cs = append(cs, launchCause{ID: "refill " + inst, At: at, N: 1})
	}
	if h.IRQ.Instance != "" && !h.IRQ.Requested.IsZero() {
		cs = append(cs, launchCause{ID: "replacement " + h.IRQ.Instance, At: h.IRQ.Requested, N: 1, Early: replacementEarly})
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].At.Before(cs[j].At) })
	return cs
}

// arrow parses a mark label "a→b".
func arrow(label string) (from, to int, ok bool) {
	a, b, found := strings.Cut(label, "→")
	if !found {
		return 0, 0, false
	}
	from, err1 := strconv.Atoi(strings.TrimSpace(a))
	to, err2 := strconv.Atoi(strings.TrimSpace(b))
	return from, to, err1 == nil && err2 == nil
}

// attributeLaunches returns the instances each cause launched (by cause
// ID, in the order they were seen) and the instances no cause claims (the
// fleet's first instances among them).
func attributeLaunches(h history) (map[string][]string, []string) {
	causes := launchCauses(h)
	left := make([]int, len(causes))
	for i, c := range causes {
		left[i] = c.N
	}
	ids := make([]string, 0, len(h.Instances))
	for id := range h.Instances {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool {
		sa, sb := h.Instances[ids[a]].Seen, h.Instances[ids[b]].Seen
		if !sa.Equal(sb) {
			return sa.Before(sb)
		}
		return ids[a] < ids[b]
	})
	by := map[string][]string{}
	var none []string
	for _, id := range ids {
		seen := h.Instances[id].Seen
		claimed := false
		for i, c := range causes {
			if left[i] > 0 && !seen.Before(c.At.Add(-c.Early)) && !seen.After(c.At.Add(claimWindow)) {
				left[i]--
				by[c.ID] = append(by[c.ID], id)
				claimed = true
				break
			}
		}
		if !claimed {
			none = append(none, id)
		}
	}
	return by, none
}

// failedReplacement returns the maintain fleet's refill of the instance
// whose launch hook failed: the first instance launched after
// target-spotfleet logged its termination, with the fleet's target
// unchanged in between, claimed by no other cause. It returns the
// instance ("" if none) and why there is none.
func failedReplacement(h history, inst string) (string, string) {
	removed, ok := h.HookRemoved[inst]
	if !ok {
		return "", "target-spotfleet never logged terminating it"
	}
	by, _ := attributeLaunches(h)
	got := by["refill "+inst]
	if len(got) == 0 {
		return "", fmt.Sprintf("no instance launched within %s after it was terminated at %s that no other cause (scale-out, interruption replacement) claims", claimWindow, clock(removed))
	}
	repl := got[0]
	seen := h.Instances[repl].Seen
	before, after, changed := targetChange(h.Samples, removed, seen)
	if changed {
		return "", fmt.Sprintf("the first instance seen after it was terminated, %s, came with the target changed from %d to %d: a scale-out's, not the maintain refill", repl, before, after)
	}
	return repl, ""
}

// targetChange reports whether the sampled target changed between a and b.
func targetChange(samples []sample, a, b time.Time) (before, after int, changed bool) {
	have := false
	for _, s := range samples {
		if s.At.Before(a) {
			before, have = s.Target, true
			continue
		}
		if s.At.After(b) {
			break
		}
		if !have {
			before, have = s.Target, true
		}
		if s.Target != before {
			return before, s.Target, true
		}
	}
	return before, before, false
}

// promiseFailedPlaybook: the one failed job's instance was never admitted,
// got no allocation, was terminated, and the maintain fleet launched its
// replacement (the refill, target unchanged), which was admitted.
func promiseFailedPlaybook(h history, jobs []localcloud.AWXJob, fin finalState) promise {
	p := promise{What: "the instance whose playbook failed was replaced, nothing placed on it"}
	var failed []localcloud.AWXJob
	for _, j := range jobs {
		if j.TemplateID == configureTemplateID && localcloud.AWXFinal(j.Status) && j.Status != localcloud.AWXSuccessful {
			failed = append(failed, j)
		}
	}
	if len(failed) != 1 {
		p.Detail = fmt.Sprintf("%d configure jobs did not succeed, want exactly 1 (the injected fault)", len(failed))
		return p
	}
	j := failed[0]
	inst := jobInstance(j)
	var errs []string
	if n, ok := h.nodeOf(inst); ok && !n.Admitted.IsZero() {
		errs = append(errs, fmt.Sprintf("its node was admitted at %s", clock(n.Admitted)))
	}
	placed := 0
	for _, a := range h.Allocs {
		if a.NodeName == inst {
			placed++
		}
	}
	if placed > 0 {
		errs = append(errs, fmt.Sprintf("%d allocation(s) were placed on it", placed))
	}
	if _, ok := h.HookFailed[inst]; !ok {
		errs = append(errs, "target-spotfleet never reported the failed hook")
	}
	in := h.Instances[inst]
	if in.Gone.IsZero() {
		errs = append(errs, "it never left the fleet")
	}
	if st := fin.States[inst]; st != "terminated" {
		errs = append(errs, fmt.Sprintf("EC2 shows it %q, want terminated", st))
	}
	failedAt := h.HookFailed[inst]
	if failedAt.IsZero() {
		failedAt = j.Finished
	}
	repl, why := failedReplacement(h, inst)
	var replAt time.Time
	if repl == "" {
		errs = append(errs, "no replacement: "+why)
	} else if rn, ok := h.nodeOf(repl); !ok || rn.Admitted.IsZero() {
		errs = append(errs, fmt.Sprintf("its replacement %s was never admitted", repl))
	} else {
		replAt = rn.Admitted
	}
	p.OK = len(errs) == 0
	if p.OK {
		p.Detail = fmt.Sprintf("%s: job %d %s, never admitted, 0 allocations, terminated %s after the failure; the maintain fleet's refill %s (launched %s after the termination, target unchanged) admitted %s after the failure",
			inst, j.ID, j.Status, in.Gone.Sub(failedAt).Round(100*time.Millisecond), repl,
			h.Instances[repl].Seen.Sub(h.HookRemoved[inst]).Round(100*time.Millisecond), replAt.Sub(failedAt).Round(100*time.Millisecond))
	} else {
		p.Detail = inst + ": " + strings.Join(errs, "; ")
	}
	return p
}

// drainPrompt is how soon after the warning the drain must start: "at once".
const drainPrompt = 5 * time.Second

// promiseInterruption: the interrupted node drained at once (within
// drainPrompt of the warning, as target-spotfleet logged it and as the
// servers showed it) and finished draining before EC2 took the instance;
// target-spotfleet requested a replacement (the target raised by one) and
// gave the unit back; the instance launched for that request was admitted
// before the notice ended.
func promiseInterruption(h history) promise {
	p := promise{What: "the spot interruption was drained and replaced before the notice ended"}
	irq := h.IRQ
	if irq.Instance == "" {
		p.Detail = "no spot interruption was sent"
		return p
	}
	var errs []string
	n, ok := h.nodeOf(irq.Instance)
	switch {
	case !ok:
		errs = append(errs, "its node was never seen")
	case n.DrainStart.IsZero() || n.DrainStart.Before(irq.Warned):
		errs = append(errs, "its node was not seen draining after the warning")
	case n.DrainStart.Sub(irq.Warned) > drainPrompt:
		errs = append(errs, fmt.Sprintf("its node was first seen draining %s after the warning, not at once (within %s)", n.DrainStart.Sub(irq.Warned).Round(100*time.Millisecond), drainPrompt))
	case n.DrainEnd.IsZero():
		errs = append(errs, "its node's drain was never seen complete")
	case !irq.Terminated.IsZero() && !n.DrainEnd.Before(irq.Terminated):
		errs = append(errs, fmt.Sprintf("its drain completed at %s, not before EC2 took it at %s", clock(n.DrainEnd), clock(irq.Terminated)))
	}
	switch {
	case irq.DrainLogged.IsZero():
		errs = append(errs, "target-spotfleet never reported draining it")
	case irq.DrainLogged.Sub(irq.Warned) > drainPrompt:
		errs = append(errs, fmt.Sprintf("target-spotfleet began draining it %s after the warning, not at once (within %s)", irq.DrainLogged.Sub(irq.Warned).Round(100*time.Millisecond), drainPrompt))
	}
	if irq.Terminated.IsZero() {
		errs = append(errs, "EC2 never reclaimed it (the notice did not end during the demo)")
	}
	repl, replAt := "", time.Time{}
	switch {
	case irq.Requested.IsZero():
		errs = append(errs, "target-spotfleet never logged \"replacement requested\" for it")
	case irq.Requested.Before(irq.Warned):
		errs = append(errs, "its replacement was requested before the warning")
	default:
		by, _ := attributeLaunches(h)
		if got := by["replacement "+irq.Instance]; len(got) > 0 {
			repl = got[0]
		}
		if irq.GivenBack.IsZero() {
			errs = append(errs, "target-spotfleet never logged giving its replacement unit back")
		}
	}
	if !irq.Requested.IsZero() && repl == "" {
		errs = append(errs, fmt.Sprintf("no instance launched within %s of the replacement request at %s that no other cause (a scale-out, the refill) claims", claimWindow, clock(irq.Requested)))
	} else if repl != "" {
		if rn, ok := h.nodeOf(repl); !ok || rn.Admitted.IsZero() {
			errs = append(errs, fmt.Sprintf("the replacement %s was never admitted", repl))
		} else {
			replAt = rn.Admitted
			if !replAt.Before(irq.Deadline) {
				errs = append(errs, fmt.Sprintf("the replacement %s was admitted %s after the warning, not within the %s notice",
					repl, replAt.Sub(irq.Warned).Round(100*time.Millisecond), irq.Deadline.Sub(irq.Warned)))
			}
		}
	}
	p.OK = len(errs) == 0
	if p.OK {
		p.Detail = fmt.Sprintf("%s: drain logged %s and seen %s after the warning (at once: within %s), done after %s; replacement requested after %s, unit given back after %s (%s); replacement %s admitted after %s, %s before the %s notice ended",
			irq.Instance, irq.DrainLogged.Sub(irq.Warned).Round(100*time.Millisecond), n.DrainStart.Sub(irq.Warned).Round(100*time.Millisecond), drainPrompt,
			n.DrainEnd.Sub(irq.Warned).Round(100*time.Millisecond),
			irq.Requested.Sub(irq.Warned).Round(100*time.Millisecond), irq.GivenBack.Sub(irq.Warned).Round(100*time.Millisecond), irq.GivenBackWhy,
			repl, replAt.Sub(irq.Warned).Round(100*time.Millisecond), irq.Deadline.Sub(replAt).Round(100*time.Millisecond), irq.Deadline.Sub(irq.Warned))
	} else {
		p.Detail = irq.Instance + ": " + strings.Join(errs, "; ")
	}
	return p
}

func promiseMinimum(fin finalState) promise {
	return promise{What: "the fleet is back to its minimum",
		OK:     fin.Target == policyMin && fin.Running == policyMin && fin.Ready == policyMin,
		Detail: fmt.Sprintf("target %d, running %d, admitted ready nodes %d (min %d)", fin.Target, fin.Running, fin.Ready, policyMin)}
}

func lostDetail(lost []string) string {
	if len(lost) == 0 {
		return "0 allocations lost"
	}
	return fmt.Sprintf("%d lost: %s", len(lost), strings.Join(lost, "; "))
}

func leakDetail(fin finalState) string {
	if len(fin.Leaked) == 0 {
		return fmt.Sprintf("0 leaked: EC2 lists %d instance(s) not terminated, each the fleet's and a ready admitted node; no other admitted node; the client agent processes of all %d gone instances have exited", fin.NonTerminated, fin.PIDsChecked)
	}
	return fmt.Sprintf("%d leaked: %s", len(fin.Leaked), strings.Join(fin.Leaked, "; "))
}

// promisesError returns the failed promises as one error, nil if all hold.
func promisesError(ps []promise) error {
	var errs []string
	for _, p := range ps {
		if !p.OK {
			errs = append(errs, p.What+": "+p.Detail)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(errs, "; "))
}

// timeAbove returns how long the measured CPU was above target and how long
// it was measured, each sample lasting until the next.
func timeAbove(samples []sample, target float64) (above, measured time.Duration) {
	for i := 0; i+1 < len(samples); i++ {
		s := samples[i]
		if !s.HaveCPU {
			continue
		}
		dt := samples[i+1].At.Sub(s.At)
		measured += dt
		if s.CPU > target {
			above += dt
		}
	}
	return above, measured
}

// peakNodes is the most admitted ready nodes seen at once.
func peakNodes(samples []sample) int {
	peak := 0
	for _, s := range samples {
		peak = max(peak, s.Ready)
	}
	return peak
}

// clock formats a time of day to the millisecond.
func clock(t time.Time) string { return t.Format("15:04:05.000") }
