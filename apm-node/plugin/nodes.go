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
// when it can: only nodes in the ready phase (ready, eligible, not draining)
// count, as for the target.
func schedulingExclusion(n *api.NodeListStub) string {
	_, reason := nomadnode.PhaseOf(n)
	return reason
}

// warmup decides which nodes are still warming up. A node warms up for the
// configured time from the latest of its joining the cluster, its coming back
// from down and its last being marked eligible, so a node that waited ineligible for its post-configuration
// hooks still warms up once it can take work.
//
// Reading that time takes one node read per node; it is cached per node and
// refreshed only when the node's ModifyIndex changes (status, drain and
// eligibility changes all bump it, heartbeats do not).
type warmup struct {
	period time.Duration
	api    nomadAPI
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]warmupEntry
}

type warmupEntry struct {
	modifyIndex uint64
	since       time.Time
}

func newWarmup(period time.Duration, nomad nomadAPI, now func() time.Time) *warmup {
	return &warmup{period: period, api: nomad, now: now, cache: make(map[string]warmupEntry)}
}

// exclusions returns, for each node still warming up or whose warm-up start
// cannot be read, the reason it is left out; nodes not in the map count.
func (w *warmup) exclusions(ctx context.Context, nodes []*api.NodeListStub, run runner) map[string]string {
	if w.period <= 0 || len(nodes) == 0 {
		return nil
	}

	since := make([]time.Time, len(nodes))
	errs := make([]error, len(nodes))
	run(ctx, len(nodes), func(ctx context.Context, i int) {
		since[i], errs[i] = w.countedSince(ctx, nodes[i])
	})

	now := w.now()
	out := make(map[string]string)
	live := make(map[string]bool, len(nodes))
	for i, n := range nodes {
		live[n.ID] = true
		if errs[i] != nil {
			out[n.ID] = fmt.Sprintf("warm-up start unknown: %v", errs[i])
			continue
		}
		if age := now.Sub(since[i]); age < w.period {
			out[n.ID] = fmt.Sprintf("warming up: ready and eligible for %s of %s",
				age.Truncate(time.Second), w.period)
		}
	}
	w.forgetExcept(live)
	return out
}

// countedSince returns when the node last became ready or eligible.
func (w *warmup) countedSince(ctx context.Context, n *api.NodeListStub) (time.Time, error) {
	w.mu.Lock()
	entry, ok := w.cache[n.ID]
	w.mu.Unlock()
	if ok && entry.modifyIndex == n.ModifyIndex {
		return entry.since, nil
	}

	node, err := w.api.Node(ctx, n.ID)
	if err != nil {
		return time.Time{}, err
	}
	since := warmupStart(node)

	w.mu.Lock()
	w.cache[n.ID] = warmupEntry{modifyIndex: n.ModifyIndex, since: since}
	w.mu.Unlock()
	return since, nil
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

// forgetExcept drops cache entries of nodes no longer in the pool, so the
// cache never outgrows the cluster. Several samplers share the cache, so it
// only forgets nodes none of the current nodes list; a node of another pool
// is read again at worst.
func (w *warmup) forgetExcept(live map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.cache) <= 2*len(live) {
		return
	}
	for id := range w.cache {
		if !live[id] {
			delete(w.cache, id)
		}
	}
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
