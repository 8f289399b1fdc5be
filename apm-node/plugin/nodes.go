package plugin

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// eligibleEventMessage is the node event Nomad records when a node is marked
// eligible for scheduling; warm-up counts from it as well as from the node
// becoming ready.
const eligibleEventMessage = "Node marked as eligible for scheduling"

// exclusion records a pool node that a sample leaves out, and why.
type exclusion struct {
	node   *api.NodeListStub
	reason string
}

// String formats the exclusion for a log line.
func (e exclusion) String() string {
	return fmt.Sprintf("%s (%s): %s", e.node.Name, shortID(e.node.ID), e.reason)
}

// inPool reports whether the node belongs to the pool the query names. An
// empty filter matches every node.
func (q query) inPool(n *api.NodeListStub) bool {
	return matches(q.classes, n.NodeClass) &&
		matches(q.datacenters, n.Datacenter) &&
		matches(q.pools, n.NodePool)
}

func matches(accepted []string, value string) bool {
	return len(accepted) == 0 || slices.Contains(accepted, value)
}

// schedulingExclusion says why a pool node cannot count as capacity, or ""
// when it can, from the node list alone: only nodes in the ready phase
// (ready, eligible, not draining) count, as for the target. The admission
// gate needs the node's meta, which the list lacks (see nodeReader).
func schedulingExclusion(n *api.NodeListStub) string {
	_, reason := nomadnode.PhaseOf(n)
	return reason
}

// nodeReader reads what a sample needs from a full node (GET /v1/node/:id)
// that the node list lacks: the node's meta, for the admission gate, and its
// events, for the warm-up start.
//
// One read per node, cached per node and refreshed only when the node's
// ModifyIndex changes: status, drain and eligibility changes bump it, and so
// does a change of its dynamic metadata (the client re-registers with the
// new meta); heartbeats do not. So in steady state a sample reads no node.
type nodeReader struct {
	api  nomadAPI
	gate nomadnode.Gate

	mu    sync.Mutex
	cache map[string]nodeEntry
}

type nodeEntry struct {
	modifyIndex uint64
	facts       nodeFacts
}

// nodeFacts is what a sample takes from a full node read.
type nodeFacts struct {
	// gateReason says why the admission gate keeps work off the node; ""
	// when the node may take work (admitted, or not gated).
	gateReason string
	// since is when the node last began to take work, for the warm-up; what
	// names that moment for logs ("ready and eligible", "admitted").
	since time.Time
	what  string
	// meta and attrs are the node's meta and attributes, for the
	// constraints of unplaced work.
	meta  map[string]string
	attrs map[string]string
}

func newNodeReader(nomad nomadAPI, gate nomadnode.Gate) *nodeReader {
	return &nodeReader{api: nomad, gate: gate, cache: make(map[string]nodeEntry)}
}

// read returns the facts of each node, or the error that kept a node from
// being read, concurrently within run's limit.
func (r *nodeReader) read(ctx context.Context, nodes []*api.NodeListStub, run runner) ([]nodeFacts, []error) {
	facts := make([]nodeFacts, len(nodes))
	errs := make([]error, len(nodes))
	if len(nodes) == 0 {
		return facts, errs
	}
	run(ctx, len(nodes), func(ctx context.Context, i int) {
		facts[i], errs[i] = r.factsOf(ctx, nodes[i])
	})
	live := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		live[n.ID] = true
	}
	r.forgetExcept(live)
	return facts, errs
}

// factsOf returns the node's facts from the cache, reading the node when it
// changed since.
func (r *nodeReader) factsOf(ctx context.Context, n *api.NodeListStub) (nodeFacts, error) {
	r.mu.Lock()
	entry, ok := r.cache[n.ID]
	r.mu.Unlock()
	if ok && entry.modifyIndex == n.ModifyIndex {
		return entry.facts, nil
	}

	node, err := r.api.Node(ctx, n.ID)
	if err != nil {
		return nodeFacts{}, err
	}
	facts := nodeFacts{gateReason: r.gate.Reason(node.Meta), since: warmupStart(node), what: "ready and eligible",
		meta: node.Meta, attrs: node.Attributes}
	if at, ok := admittedAt(node.Meta, r.gate); ok && at.After(facts.since) {
		facts.since, facts.what = at, "admitted"
	}

	r.mu.Lock()
	r.cache[n.ID] = nodeEntry{modifyIndex: n.ModifyIndex, facts: facts}
	r.mu.Unlock()
	return facts, nil
}

// admittedAt reads when target-spotfleet admitted the node (meta
// <gate key>_at, RFC 3339). A missing or unreadable time is no admission
// time: warm-up then counts from ready and eligible alone.
func admittedAt(meta map[string]string, gate nomadnode.Gate) (time.Time, bool) {
	v, ok := meta[gate.AdmittedAtKey()]
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, v)
	return t, err == nil
}

// warmupStartEvents are the node events after which a node warms up again:
// it joined, came back from down, or was marked eligible. A client
// re-registering while it stays up (Nomad clients do so shortly after boot)
// records none of them, though it resets StatusUpdatedAt.
var warmupStartEvents = map[string]bool{
	"Node registered":                true,
	"Node re-registered":             true,
	"Node reregistered by heartbeat": true,
	eligibleEventMessage:             true,
}

// warmupStart returns the time of the node's latest warm-up start event, or
// its StatusUpdatedAt when Nomad kept no such event (it keeps the last 10).
func warmupStart(node *api.Node) time.Time {
	var since time.Time
	for _, ev := range node.Events {
		if ev != nil && warmupStartEvents[ev.Message] && ev.Timestamp.After(since) {
			since = ev.Timestamp
		}
	}
	if since.IsZero() {
		since = time.Unix(node.StatusUpdatedAt, 0)
	}
	return since
}

// warmingUp says why a node whose facts these are is still warming up at
// now, or "" when it is past the warm-up. A node warms up for period from
// the latest of its joining the cluster, its coming back from down, its last
// being marked eligible and its admission, so a node that waited for its
// launch hooks still warms up once it can take work.
func (f nodeFacts) warmingUp(now time.Time, period time.Duration) string {
	age := now.Sub(f.since)
	if age >= period {
		return ""
	}
	return fmt.Sprintf("warming up: %s for %s of %s", f.what, max(age, 0).Truncate(time.Second), period)
}

// forgetExcept drops cache entries of nodes no longer in the pool, so the
// cache never outgrows the cluster. Several samplers share the cache, so it
// only forgets nodes none of the current nodes list; a node of another pool
// is read again at worst.
func (r *nodeReader) forgetExcept(live map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) <= 2*len(live) {
		return
	}
	for id := range r.cache {
		if !live[id] {
			delete(r.cache, id)
		}
	}
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
