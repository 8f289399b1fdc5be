package plugin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// This file computes the unplaced_nodes figure: how many nodes to add to
// target-spotfleet's count so that the allocations that wait unplaced can be
// placed (docs/apm-node.md, "unplaced_nodes"): the empty nodes of the pool's
// size they need, plus, while they wait, the pool's nodes that take work but
// that target-spotfleet's count still leaves out for their warm-up. Nomad
// keeps one blocked evaluation per job whose allocations it could not place;
// the job summary counts them (Queued) and the job says what each asks and
// where it may run.
//
// Coming nodes (joining, admitting) are not subtracted: the strategy asks
// for count + value, and target-spotfleet counts its coming and launching
// capacity toward that desired count itself (its scale-out raises the
// target only past what is already there). Subtracting them here as well
// counted them twice.

// poolNode is a pool node as the unplaced figure sees it.
type poolNode struct {
	stub  *api.NodeListStub
	facts nodeFacts
	// coming: registered but not taking work yet (initializing, or waiting
	// for its admission gate). Only judged as admitted for constraints and
	// logged: target-spotfleet counts it toward the desired count.
	coming bool
	// uncounted: takes work, but target-spotfleet's count still leaves it
	// out for its warm-up (see uncountedWarming).
	uncounted bool
	cpu       float64 // schedulable MHz
	mem       float64 // schedulable MB
}

// nodeSize is the schedulable size of one node of the pool: the smallest
// (what a new node is assumed to be) and the largest (what an ask must fit).
type nodeSize struct {
	cpu, mem       float64 // MHz, MB
	maxCPU, maxMem float64
	mhzPerCore     float64 // for asks in cores; 0 when no node says its cores
}

// unplacedAsk is one allocation that waits unplaced.
type unplacedAsk struct {
	cpu, mem float64 // MHz, MB
}

// waitingGroup is a task group with allocations waiting unplaced that the
// pool could run.
type waitingGroup struct {
	job, group string // "namespace/job", task group
	jobIndex   uint64 // the job's JobModifyIndex
	queued     int
	ask        unplacedAsk
}

// name is the task group as logs name it: namespace/job[group].
func (g waitingGroup) name() string { return fmt.Sprintf("%s[%s]", g.job, g.group) }

// collectUnplaced takes one sample of unplaced_nodes.
func (c *collector) collectUnplaced(ctx context.Context, q query, log hclog.Logger) outcome {
	start := c.now()

	nodes, err := c.api.Nodes(ctx)
	if err != nil {
		return outcome{err: err}
	}
	var stubs []*api.NodeListStub
	for _, n := range nodes {
		if q.inPool(n) {
			if p, _ := nomadnode.PhaseOf(n); p != nomadnode.PhaseDown {
				stubs = append(stubs, n)
			}
		}
	}
	if len(stubs) == 0 {
		return outcome{empty: fmt.Sprintf("no Nomad node that is up matches the pool (%d nodes in the cluster), so the pool's node size is unknown", len(nodes))}
	}

	facts, errs := c.nodes.read(ctx, stubs, c.run)
	var pool []poolNode
	var unread []exclusion
	ready := 0
	for i, n := range stubs {
		if errs[i] != nil {
			unread = append(unread, exclusion{node: n, reason: errs[i].Error()})
			continue
		}
		pn := poolNode{stub: n, facts: facts[i]}
		phase, _ := nomadnode.PhaseOfNode(nomadnode.Node{NodeListStub: n, Meta: facts[i].meta}, c.nodes.gate)
		pn.coming = phase == nomadnode.PhaseJoining || phase == nomadnode.PhaseAdmitting
		pn.uncounted = phase == nomadnode.PhaseReady && uncountedWarming(facts[i].meta, c.nodes.gate, start, c.countWarmup)
		cpu, cpuErr := schedulableCPU(n)
		mem, memErr := schedulableMemoryMB(n)
		if err := errors.Join(cpuErr, memErr); err != nil {
			unread = append(unread, exclusion{node: n, reason: err.Error()})
			continue
		}
		if phase == nomadnode.PhaseReady {
			ready++
		}
		pn.cpu, pn.mem = cpu, mem
		pool = append(pool, pn)
	}
	if len(pool) == 0 {
		return outcome{err: fmt.Errorf("none of the %d pool nodes could be read, for example %s", len(stubs), unread[0])}
	}
	if len(unread) > 0 {
		log.Warn("pool nodes left out of the unplaced figure: they could not be read", "count", len(unread), "nodes", listExclusions(unread))
	}
	size := sizeOf(pool)

	evals, err := c.api.BlockedEvaluations(ctx)
	if err != nil {
		return outcome{err: err}
	}
	mem := c.unplaced.pool(q.String())
	groups, err := c.waitingGroups(ctx, evals, pool, size, mem, log)
	if err != nil {
		return outcome{err: err}
	}
	groups = mem.guard(groups, ready, log)

	waiting := 0
	var sumCPU, sumMem float64
	items := make([]packItem, 0, len(groups))
	for _, g := range groups {
		items = append(items, packItem{ask: g.ask, n: g.queued})
		waiting += g.queued
		sumCPU += float64(g.queued) * g.ask.cpu
		sumMem += float64(g.queued) * g.ask.mem
	}
	coming, warming := 0, 0
	for _, pn := range pool {
		if pn.coming {
			coming++
		}
		if pn.uncounted {
			warming++
		}
	}
	needed, err := packFirstFitDecreasing(ctx, items, size)
	if err != nil {
		return outcome{err: fmt.Errorf("packing %d waiting allocations of %d task groups: %w", waiting, len(groups), err)}
	}
	mem.asked(groups, needed)
	value := needed
	if needed > 0 {
		// The scheduler has filled the warming nodes already (they are
		// eligible), yet target-spotfleet's count leaves them out: the
		// count + value the strategy asks for must include them.
		value += warming
	}

	// The lower bound without fragmentation, for the log: how much the
	// packing costs over the scarcest resource's sum.
	bound := math.Max(sumCPU/size.cpu, sumMem/size.mem)
	log.Debug("sampled unplaced work", "value", value, "new_nodes", needed, "warming_nodes", warming, "waiting_allocations", waiting,
		"task_groups", len(groups), "asked_cpu_mhz", sumCPU, "asked_memory_mb", sumMem,
		"node_cpu_mhz", size.cpu, "node_memory_mb", size.mem, "coming_nodes", coming, "ready_nodes", ready,
		"nodes_without_fragmentation", fmt.Sprintf("%.2f", bound), "blocked_evaluations", len(evals),
		"took", c.now().Sub(start))
	return outcome{sample: sample{at: start, value: float64(value), nodes: len(pool)}}
}

// uncountedWarming reports whether target-spotfleet leaves a node that takes
// work out of its count for its warm-up: the node's admission gate says
// admitted, with an admission time (meta <gate>_at) less than period ago and
// not more than a minute ahead of now (target-spotfleet's own rule; a node
// without the gate or the time counts there at once). period is
// target-spotfleet's node_warmup as docs/hooks.md sets it: apm-node's
// node_warmup plus its sample_interval; 0 when apm-node has no warm-up.
func uncountedWarming(meta map[string]string, gate nomadnode.Gate, now time.Time, period time.Duration) bool {
	if period <= 0 {
		return false
	}
	if gated, v := gate.State(meta); !gated || v != nomadnode.GateAdmitted {
		return false
	}
	at, ok := admittedAt(meta, gate)
	if !ok || at.After(now.Add(time.Minute)) {
		return false
	}
	return now.Sub(at) < period
}

// sizeOf is the smallest schedulable CPU and, separately, the smallest
// schedulable memory among the pool's nodes: a new node is assumed to be no
// bigger than the smallest one in the pool, which for a fleet of mixed
// instance types errs towards more nodes. The largest are kept too: an ask
// above them fits no node of the pool.
func sizeOf(pool []poolNode) nodeSize {
	s := nodeSize{cpu: math.Inf(1), mem: math.Inf(1), mhzPerCore: math.Inf(1)}
	for _, pn := range pool {
		s.cpu = math.Min(s.cpu, pn.cpu)
		s.mem = math.Min(s.mem, pn.mem)
		s.maxCPU = math.Max(s.maxCPU, pn.cpu)
		s.maxMem = math.Max(s.maxMem, pn.mem)
		if r := pn.stub.NodeResources; r != nil && r.Cpu.TotalCpuCores > 0 {
			s.mhzPerCore = math.Min(s.mhzPerCore, float64(r.Cpu.CpuShares)/float64(r.Cpu.TotalCpuCores))
		}
	}
	if math.IsInf(s.mhzPerCore, 1) {
		s.mhzPerCore = 0
	}
	return s
}

// jobKey names a job across namespaces.
type jobKey struct{ namespace, id string }

func (k jobKey) String() string { return k.namespace + "/" + k.id }

// waitingGroups reads the jobs of the blocked evaluations and returns their
// task groups whose queued allocations the pool could run. A job purged
// since the list is skipped; any other failure fails the sample, because
// the figure would be too low.
func (c *collector) waitingGroups(ctx context.Context, evals []*api.Evaluation, pool []poolNode, size nodeSize, mem *poolMemory, log hclog.Logger) ([]waitingGroup, error) {
	// Nomad keeps one blocked evaluation per job; several would name the
	// same task groups, so the union is taken. A task group is filtered
	// only when every evaluation's metric for it says so.
	failed := map[jobKey]map[string]bool{} // task group -> filtered only
	jobIndex := map[jobKey]uint64{}
	var keys []jobKey
	for _, e := range evals {
		if e == nil || e.Status != api.EvalStatusBlocked {
			continue
		}
		if e.Type == api.JobTypeSystem || e.Type == api.JobTypeSysbatch {
			// One allocation per eligible node: a new node gets its own, so
			// nodes added for them would wait for nothing.
			continue
		}
		if e.QuotaLimitReached != "" {
			log.Debug("blocked evaluation waits for a quota, not for nodes; left out", "job", e.JobID, "quota", e.QuotaLimitReached)
			continue
		}
		k := jobKey{namespace: e.Namespace, id: e.JobID}
		if _, ok := failed[k]; !ok {
			failed[k] = map[string]bool{}
			keys = append(keys, k)
		}
		jobIndex[k] = max(jobIndex[k], e.JobModifyIndex)
		for tg, m := range e.FailedTGAllocs {
			only := filteredOnly(m)
			if prev, ok := failed[k][tg]; ok {
				only = only && prev
			}
			failed[k][tg] = only
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })

	type read struct {
		summary *api.JobSummary
		job     *api.Job
		err     error
	}
	reads := make([]read, len(keys))
	c.run(ctx, len(keys), func(ctx context.Context, i int) {
		k := keys[i]
		s, err := c.api.JobSummary(ctx, k.namespace, k.id)
		if err != nil {
			reads[i].err = err
			return
		}
		if j, ok := c.unplaced.cachedJob(k, jobIndex[k]); ok {
			reads[i] = read{summary: s, job: j}
			return
		}
		j, err := c.api.Job(ctx, k.namespace, k.id)
		reads[i] = read{summary: s, job: j, err: err}
	})

	var groups []waitingGroup
	var notHere, filtered, pinned []string
	oversized := map[string]bool{}
	jobs := map[jobKey]*api.Job{}
	for i, k := range keys {
		r := reads[i]
		switch {
		case errors.Is(r.err, errJobGone):
			log.Debug("job of a blocked evaluation is gone; left out", "job", k)
			continue
		case r.err != nil:
			return nil, r.err
		}
		jobs[k] = r.job
		if r.job.Stop != nil && *r.job.Stop {
			continue
		}
		var index uint64
		if r.job.JobModifyIndex != nil {
			index = *r.job.JobModifyIndex
		}
		for _, tg := range r.job.TaskGroups {
			if tg == nil || tg.Name == nil {
				continue
			}
			only, ok := failed[k][*tg.Name]
			if !ok {
				continue
			}
			queued := r.summary.Summary[*tg.Name].Queued
			if queued <= 0 {
				continue
			}
			g := waitingGroup{job: k.String(), group: *tg.Name, jobIndex: index, queued: queued}
			name := g.name()
			if only {
				filtered = append(filtered, name)
				continue
			}
			g.ask = groupAsk(tg, size)
			if g.ask.cpu > size.maxCPU || g.ask.mem > size.maxMem {
				oversized[name] = true
				kv := []any{"task_group", name, "queued", queued, "ask_cpu_mhz", g.ask.cpu, "ask_memory_mb", g.ask.mem,
					"largest_node_cpu_mhz", size.maxCPU, "largest_node_memory_mb", size.maxMem}
				// Warned once per task group, again when its ask or the
				// pool's largest node changes.
				if mem.warnOversized(name, oversizedNote{ask: g.ask, maxCPU: size.maxCPU, maxMem: size.maxMem}) {
					log.Warn("task group asks more than any pool node offers: adding nodes cannot place it; left out", kv...)
				} else {
					log.Debug("oversized task group left out (warned before)", kv...)
				}
				continue
			}
			constraints := constraintsOf(r.job, tg)
			if pinnedToExistingHosts(constraints) {
				pinned = append(pinned, name)
				continue
			}
			if !runsOnPool(r.job, constraints, pool, c.nodes.gate) {
				notHere = append(notHere, name)
				continue
			}
			groups = append(groups, g)
		}
	}
	mem.forgetOversized(oversized)
	c.unplaced.keepJobs(jobs)
	if len(notHere) > 0 {
		log.Debug("unplaced task groups this pool cannot run (datacenters, node pool or constraints); left out", "task_groups", strings.Join(notHere, ", "))
	}
	if len(filtered) > 0 {
		log.Debug("unplaced task groups Nomad filtered from every node it evaluated, none for lack of room (constraints, drivers, devices, volumes): new nodes of the pool would be filtered too; left out",
			"task_groups", strings.Join(filtered, ", "))
	}
	if len(pinned) > 0 {
		log.Debug("unplaced task groups pinned to existing hosts (a ${node.unique.*} or ${attr.unique.*} constraint): no new node can take them; left out",
			"task_groups", strings.Join(pinned, ", "))
	}
	return groups, nil
}

// filteredOnly reports whether a blocked evaluation's metric for a task
// group says that Nomad evaluated nodes and filtered every one (constraints,
// drivers, devices, volumes, node class), none for lack of room: a new node
// of the same pool would be filtered too. Filters a new node does pass
// (distinct_hosts, distinct_property: a host or value not used yet) do not
// count as such. With no node evaluated (the pool has no node yet) or no
// metric, adding nodes may help.
func filteredOnly(m *api.AllocationMetric) bool {
	if m == nil || m.NodesEvaluated <= 0 || m.NodesExhausted > 0 {
		return false
	}
	for reason := range m.ConstraintFiltered {
		if strings.Contains(reason, api.ConstraintDistinctHosts) || strings.Contains(reason, api.ConstraintDistinctProperty) {
			return false
		}
	}
	return true
}

// constraintsOf returns the job's, the group's and its tasks' constraints.
func constraintsOf(job *api.Job, tg *api.TaskGroup) []*api.Constraint {
	constraints := slices.Clone(job.Constraints)
	constraints = append(constraints, tg.Constraints...)
	for _, t := range tg.Tasks {
		if t != nil {
			constraints = append(constraints, t.Constraints...)
		}
	}
	return constraints
}

// pinnedToExistingHosts reports whether a constraint asks for particular
// existing hosts: equality or set membership on a ${node.unique.*} or
// ${attr.unique.*} target (a node's ID, name, hostname, address or instance
// ID), which no new node has. "!=" on them is left to runsOnPool (a new node
// passes it); regexp too, the stall guard catching one no new node matches.
func pinnedToExistingHosts(constraints []*api.Constraint) bool {
	for _, c := range constraints {
		if c == nil || !onUniqueTarget(c) {
			continue
		}
		switch c.Operand {
		case "", "=", "==", "is", api.ConstraintSetContains, api.ConstraintSetContainsAll, api.ConstraintSetContainsAny:
			return true
		}
	}
	return false
}

// groupAsk is what one allocation of the task group asks: the sum of its
// tasks' CPU (MHz, or cores at the pool's MHz per core) and memory (MB).
// Every task counts, prestart and poststop ones included, so the figure
// errs high for groups with lifecycle tasks.
func groupAsk(tg *api.TaskGroup, size nodeSize) unplacedAsk {
	var a unplacedAsk
	for _, t := range tg.Tasks {
		if t == nil || t.Resources == nil {
			continue
		}
		r := t.Resources
		switch {
		case r.Cores != nil && *r.Cores > 0:
			a.cpu += float64(*r.Cores) * size.mhzPerCore
		case r.CPU != nil:
			a.cpu += float64(*r.CPU)
		}
		if r.MemoryMB != nil {
			a.mem += float64(*r.MemoryMB)
		}
	}
	return a
}

// onUniqueTarget reports whether a constraint is on a ${node.unique.*} or
// ${attr.unique.*} target: a value each node has for itself.
func onUniqueTarget(c *api.Constraint) bool {
	unique := func(target string) bool {
		return strings.HasPrefix(target, "${node.unique.") || strings.HasPrefix(target, "${attr.unique.")
	}
	return unique(c.LTarget) || unique(c.RTarget)
}

// runsOnPool reports whether at least one pool node satisfies the job's
// datacenters, node pool and the constraints (constraintsOf). A coming node
// is judged as if its admission gate had admitted it, which it will before
// it takes work. "!=" on a unique target ("not on node-a") is left out: the
// question is whether a new node like the pool's would run the work, and a
// new node's name, ID and addresses are its own.
func runsOnPool(job *api.Job, constraints []*api.Constraint, pool []poolNode, gate nomadnode.Gate) bool {
	constraints = slices.DeleteFunc(slices.Clone(constraints), func(c *api.Constraint) bool {
		return c != nil && onUniqueTarget(c) && (c.Operand == "!=" || c.Operand == "not")
	})
	jobPool := api.NodePoolDefault
	if job.NodePool != nil && *job.NodePool != "" {
		jobPool = *job.NodePool
	}
	for _, pn := range pool {
		n := pn.stub
		if jobPool != api.NodePoolAll && n.NodePool != jobPool {
			continue
		}
		if !slices.ContainsFunc(job.Datacenters, func(dc string) bool { return globMatch(dc, n.Datacenter) }) {
			continue
		}
		meta := pn.facts.meta
		if pn.coming {
			meta = withMeta(meta, gate.MetaKey(), nomadnode.GateAdmitted)
		}
		if slices.IndexFunc(constraints, func(c *api.Constraint) bool { return c != nil && !satisfies(c, n, meta, pn.facts.attrs) }) < 0 {
			return true
		}
	}
	return false
}

// withMeta returns a copy of meta with key set to value.
func withMeta(meta map[string]string, key, value string) map[string]string {
	out := maps.Clone(meta)
	if out == nil {
		out = map[string]string{}
	}
	out[key] = value
	return out
}

// globMatch matches a job's datacenter against a node's, where "*" in the
// job's matches any run of characters (as Nomad's datacenter globs do).
func globMatch(pattern, value string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == value
	}
	if !strings.HasPrefix(value, parts[0]) {
		return false
	}
	value = value[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(value, p)
		if i < 0 {
			return false
		}
		value = value[i+len(p):]
	}
	return strings.HasSuffix(value, last)
}

// satisfies evaluates one constraint on a node as Nomad's scheduler does,
// for the operators and targets apm-node honours; any other constraint is
// assumed satisfied (docs/apm-node.md lists them).
func satisfies(c *api.Constraint, n *api.NodeListStub, meta, attrs map[string]string) bool {
	l, lFound, lKnown := resolveTarget(c.LTarget, n, meta, attrs)
	r, rFound, rKnown := resolveTarget(c.RTarget, n, meta, attrs)
	if !lKnown || !rKnown {
		return true
	}
	switch c.Operand {
	case "", "=", "==", "is":
		return lFound && rFound && l == r
	case "!=", "not":
		return lFound != rFound || l != r
	case api.ConstraintAttributeIsSet:
		return lFound
	case api.ConstraintAttributeIsNotSet:
		return !lFound
	case api.ConstraintRegex:
		if !lFound || !rFound {
			return false
		}
		re, err := regexp.Compile(r)
		return err == nil && re.MatchString(l)
	case api.ConstraintSetContains, api.ConstraintSetContainsAll:
		return lFound && rFound && setContains(l, r, true)
	case api.ConstraintSetContainsAny:
		return lFound && rFound && setContains(l, r, false)
	default:
		// version, semver, ordering, distinct_hosts, distinct_property.
		return true
	}
}

// resolveTarget returns the value of a constraint target on a node: found
// says whether the node has it, known whether apm-node can tell at all.
// Text that is not a ${...} reference is a literal.
func resolveTarget(target string, n *api.NodeListStub, meta, attrs map[string]string) (value string, found, known bool) {
	ref, ok := strings.CutPrefix(target, "${")
	if !ok {
		return target, true, true
	}
	ref, ok = strings.CutSuffix(ref, "}")
	if !ok {
		return target, true, true
	}
	switch ref {
	case "node.class":
		return n.NodeClass, true, true
	case "node.datacenter":
		return n.Datacenter, true, true
	case "node.pool":
		return n.NodePool, true, true
	case "node.unique.name":
		return n.Name, true, true
	case "node.unique.id":
		return n.ID, true, true
	}
	if k, ok := strings.CutPrefix(ref, "meta."); ok {
		v, found := meta[k]
		return v, found, true
	}
	if k, ok := strings.CutPrefix(ref, "attr."); ok {
		v, found := attrs[k]
		return v, found, true
	}
	return "", false, false
}

// setContains reports whether the comma-separated set have holds all (or,
// with all false, any) of the comma-separated members of want.
func setContains(have, want string, all bool) bool {
	set := map[string]bool{}
	for _, h := range strings.Split(have, ",") {
		set[strings.TrimSpace(h)] = true
	}
	for _, w := range strings.Split(want, ",") {
		in := set[strings.TrimSpace(w)]
		if all && !in {
			return false
		}
		if !all && in {
			return true
		}
	}
	return all
}

// packItem is n equal asks: the queued allocations of one task group.
type packItem struct {
	ask unplacedAsk
	n   int
}

// binRun is n new nodes with the same room left.
type binRun struct {
	free unplacedAsk
	n    int
}

// fitCount is how many asks a fit into room free; math.MaxInt when a asks
// nothing.
func fitCount(free, a unplacedAsk) int {
	// The tolerance keeps 1000/100 from flooring to 9 after float
	// subtractions.
	const eps = 1e-9
	k := math.MaxInt
	if a.cpu > 0 {
		k = min(k, int(math.Max(0, math.Floor(free.cpu/a.cpu+eps))))
	}
	if a.mem > 0 {
		k = min(k, int(math.Max(0, math.Floor(free.mem/a.mem+eps))))
	}
	return k
}

// take is room free less m asks a.
func take(free, a unplacedAsk, m int) unplacedAsk {
	return unplacedAsk{cpu: free.cpu - float64(m)*a.cpu, mem: free.mem - float64(m)*a.mem}
}

// packFirstFitDecreasing returns how many new empty nodes of size the asks
// need: the asks, largest share of their scarcest resource first, each go
// into the first node with room for both its CPU and memory, a new node
// when none has room; an ask bigger than the smallest node (a pool of mixed
// sizes) takes a new node of its own. Equal asks (one task group) are
// placed arithmetically, as many per node as fit, and runs of nodes with
// the same room left are kept as one, so the work grows with the number of
// task groups, not of allocations; ctx is checked between task groups.
// The result is a packing that works, so it is never below the optimum;
// with one resource first-fit-decreasing is within 11/9 of the optimum plus
// one, with two it has no such bound when the asks differ in shape (one
// CPU-heavy, one memory-heavy), and it may count a node more.
func packFirstFitDecreasing(ctx context.Context, items []packItem, size nodeSize) (int, error) {
	share := func(a unplacedAsk) float64 { return math.Max(a.cpu/size.cpu, a.mem/size.mem) }
	sorted := slices.Clone(items)
	sort.SliceStable(sorted, func(i, j int) bool { return share(sorted[i].ask) > share(sorted[j].ask) })

	var runs []binRun // the new nodes in the order they were opened
	added := 0
	for _, it := range sorted {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		a, q := it.ask, it.n
		if q <= 0 {
			continue
		}
		if a.cpu > size.cpu || a.mem > size.mem {
			added += q // a node of its own each, nothing left beside it
			continue
		}
		// First fit into the nodes opened so far: every node of a run has
		// the same room, so each takes m until the asks run out.
		for i := 0; i < len(runs) && q > 0; i++ {
			r := runs[i]
			m := fitCount(r.free, a)
			if m == 0 {
				continue
			}
			if m >= q {
				// One node of the run takes them all.
				split := []binRun{{free: take(r.free, a, q), n: 1}}
				if r.n > 1 {
					split = append(split, binRun{free: r.free, n: r.n - 1})
				}
				runs = slices.Replace(runs, i, i+1, split...)
				q = 0
				break
			}
			full := min(r.n, q/m)
			q -= full * m
			split := []binRun{{free: take(r.free, a, m), n: full}}
			rest := r.n - full
			if rest > 0 && q > 0 {
				// The next node of the run takes the remainder (< m).
				split = append(split, binRun{free: take(r.free, a, q), n: 1})
				q = 0
				rest--
			}
			if rest > 0 {
				split = append(split, binRun{free: r.free, n: rest})
			}
			runs = slices.Replace(runs, i, i+1, split...)
			i += len(split) - 1
		}
		if q == 0 {
			continue
		}
		k := fitCount(unplacedAsk{cpu: size.cpu, mem: size.mem}, a) // >= 1: a fits an empty node
		full, rest := q/k, q%k
		if full > 0 {
			runs = append(runs, binRun{free: take(unplacedAsk{cpu: size.cpu, mem: size.mem}, a, k), n: full})
			added += full
		}
		if rest > 0 {
			runs = append(runs, binRun{free: take(unplacedAsk{cpu: size.cpu, mem: size.mem}, a, rest), n: 1})
			added++
		}
	}
	return added, nil
}
