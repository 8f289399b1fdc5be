package plugin

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// fakeNomad is an in-memory Nomad node API that refuses what Nomad refuses:
// a draining node cannot be marked eligible, unknown nodes are 404s. Drains
// complete at the next read of the node unless held; failures can be
// injected per call.
type fakeNomad struct {
	mu       sync.Mutex
	nodes    map[string]*api.Node
	allocs   map[string][]*api.Allocation // node id -> allocations
	drainErr map[string]error             // node id -> error returned by StartDrain
	hold     map[string]bool              // node id -> drain stays in progress
	fail     map[string][]error           // method -> errors to return next, in order
	calls    map[string]int               // method -> calls
	drained  []string                     // node ids, in drain order
	purged   []string
	index    uint64
	// onDrain, when set, runs at the start of every StartDrain (outside the lock).
	onDrain func(nodeID string)
	// metaLag is how many NodeInfo reads of a node pass before meta set
	// with ApplyMeta shows (a client reports it to the servers later).
	metaLag    int
	metaQueued map[string][]queuedMeta
}

type queuedMeta struct {
	meta  map[string]*string
	reads int
}

var _ nomadnode.API = (*fakeNomad)(nil)

// nomadError is an HTTP error answer, shaped like the API client's
// (it has StatusCode()).
type nomadError struct {
	code int
	msg  string
}

func (e nomadError) Error() string {
	return fmt.Sprintf("Unexpected response code: %d (%s)", e.code, e.msg)
}
func (e nomadError) StatusCode() int { return e.code }

var errNoLeader = nomadError{code: 500, msg: "No cluster leader"}

func newFakeNomad() *fakeNomad {
	return &fakeNomad{nodes: map[string]*api.Node{}, allocs: map[string][]*api.Allocation{}, drainErr: map[string]error{},
		hold: map[string]bool{}, fail: map[string][]error{}, calls: map[string]int{}}
}

// addNode registers a ready, eligible node for an instance; the node
// advertises addr (the instance's private address), if given.
func (f *fakeNomad) addNode(instanceID, class string, addr ...string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	id := fmt.Sprintf("node-%s", instanceID)
	f.nodes[id] = &api.Node{
		ID: id, Name: instanceID, NodeClass: class, Datacenter: "dc1", NodePool: "default",
		Status: api.NodeStatusReady, SchedulingEligibility: api.NodeSchedulingEligible,
		Meta: map[string]string{"ec2_instance_id": instanceID}, Attributes: map[string]string{},
		CreateIndex: f.index,
	}
	if len(addr) > 0 {
		f.nodes[id].HTTPAddr = addr[0] + ":4646"
	}
	f.allocs[id] = []*api.Allocation{{ID: "alloc-" + id, NodeID: id, ClientStatus: api.AllocClientStatusRunning}}
	return id
}

func (f *fakeNomad) node(id string) api.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.nodes[id]
}

func (f *fakeNomad) update(id string, fn func(n *api.Node)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.nodes[id].ModifyIndex = f.index
	fn(f.nodes[id])
}

// failNext makes the next calls of method return errs, one each.
func (f *fakeNomad) failNext(method string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = append(f.fail[method], errs...)
}

func (f *fakeNomad) callCount(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// begin counts a call and returns an injected error; f.mu must be held.
func (f *fakeNomad) begin(method string) error {
	f.calls[method]++
	if q := f.fail[method]; len(q) > 0 {
		f.fail[method] = q[1:]
		return q[0]
	}
	return nil
}

// setHold keeps the node's drain in progress (true) or lets it complete.
func (f *fakeNomad) setHold(id string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold[id] = on
}

func (f *fakeNomad) drainedNodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.drained...)
	sort.Strings(out)
	return out
}

// progress completes a drain started with StartDrain that is not held: its
// allocations stop. Drains a test sets up itself stay as they are.
func (f *fakeNomad) progress(n *api.Node) {
	if n.DrainStrategy == nil || f.hold[n.ID] || !slices.Contains(f.drained, n.ID) || n.LastDrain == nil {
		return
	}
	n.DrainStrategy = nil
	n.LastDrain.Status = api.DrainStatusComplete
	for _, a := range f.allocs[n.ID] {
		a.ClientStatus = api.AllocClientStatusComplete
	}
}

func (f *fakeNomad) ListNodes(context.Context) ([]*api.NodeListStub, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("ListNodes"); err != nil {
		return nil, err
	}
	var out []*api.NodeListStub
	for _, n := range f.nodes {
		var last *api.DrainMetadata
		if n.LastDrain != nil {
			c := *n.LastDrain
			last = &c
		}
		addr, _, _ := strings.Cut(n.HTTPAddr, ":")
		out = append(out, &api.NodeListStub{ID: n.ID, Address: addr, Name: n.Name, NodeClass: n.NodeClass, Datacenter: n.Datacenter,
			NodePool: n.NodePool, Status: n.Status, SchedulingEligibility: n.SchedulingEligibility,
			Drain: n.DrainStrategy != nil, LastDrain: last, CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeNomad) NodeInfo(_ context.Context, id string) (*api.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("NodeInfo"); err != nil {
		return nil, err
	}
	n, ok := f.nodes[id]
	if !ok {
		return nil, nomadError{code: 404, msg: "node not found"}
	}
	f.progress(n)
	f.showMeta(n)
	c := *n
	c.Meta = maps.Clone(n.Meta)
	if n.LastDrain != nil {
		d := *n.LastDrain
		c.LastDrain = &d
	}
	return &c, nil
}

func (f *fakeNomad) StartDrain(_ context.Context, id string, spec *api.DrainSpec, meta map[string]string) error {
	if f.onDrain != nil {
		f.onDrain(id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("StartDrain"); err != nil {
		return err
	}
	n, ok := f.nodes[id]
	if !ok {
		return nomadError{code: 404, msg: "node not found"}
	}
	if err := f.drainErr[id]; err != nil {
		return err
	}
	m := map[string]string{}
	for k, v := range meta {
		m[k] = v
	}
	n.DrainStrategy = &api.DrainStrategy{DrainSpec: *spec}
	n.SchedulingEligibility = api.NodeSchedulingIneligible
	n.LastDrain = &api.DrainMetadata{Status: api.DrainStatusDraining, Meta: m}
	f.drained = append(f.drained, id)
	return nil
}

func (f *fakeNomad) CancelDrain(_ context.Context, id string, meta map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("CancelDrain"); err != nil {
		return err
	}
	n, ok := f.nodes[id]
	if !ok {
		return nomadError{code: 404, msg: "node not found"}
	}
	if n.DrainStrategy != nil {
		n.DrainStrategy = nil
		n.LastDrain.Status = api.DrainStatusCanceled
		if len(meta) > 0 { // Nomad keeps the drain's meta when the update has none
			n.LastDrain.Meta = meta
		}
	}
	n.SchedulingEligibility = api.NodeSchedulingEligible
	return nil
}

func (f *fakeNomad) SetEligibility(_ context.Context, id string, eligible bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("SetEligibility"); err != nil {
		return err
	}
	n, ok := f.nodes[id]
	if !ok {
		return nomadError{code: 404, msg: "node not found"}
	}
	if eligible && n.DrainStrategy != nil {
		// As Nomad's Node.UpdateEligibility does.
		return nomadError{code: 500, msg: "can not set node's scheduling eligibility to eligible while it is draining"}
	}
	n.SchedulingEligibility = api.NodeSchedulingIneligible
	if eligible {
		n.SchedulingEligibility = api.NodeSchedulingEligible
	}
	return nil
}

func (f *fakeNomad) NodeAllocations(_ context.Context, id string) ([]*api.Allocation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("NodeAllocations"); err != nil {
		return nil, err
	}
	var out []*api.Allocation
	for _, a := range f.allocs[id] {
		c := *a
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeNomad) Purge(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("Purge"); err != nil {
		return err
	}
	delete(f.nodes, id)
	f.purged = append(f.purged, id)
	return nil
}

// rig is a plugin wired to fakes with one fleet whose instances all run Nomad nodes.
type rig struct {
	ec2     *ec2fake.EC2
	nomad   *fakeNomad
	plugin  *TargetPlugin
	fleetID string
	// nodeOf maps instance id to node id.
	nodeOf map[string]string
	config map[string]string
	now    time.Time
}

func newRig(t *testing.T, spec ec2fake.Fleet) *rig {
	t.Helper()
	if len(spec.InstanceTypes) == 0 && len(spec.TemplateTypes) == 0 {
		spec.InstanceTypes = []string{"c5.large", "m5.large"}
	}
	r := &rig{ec2: ec2fake.New(), nomad: newFakeNomad(), nodeOf: map[string]string{}, now: time.Now()}
	r.fleetID = r.ec2.AddFleet(spec)
	for _, id := range r.ec2.Running(r.fleetID) {
		r.nodeOf[id] = r.nomad.addNode(id, "spot", r.ec2.PrivateIP(id))
	}
	noWait := fleet.Retry{Attempts: 4, Sleep: func(context.Context, time.Duration) error { return nil }}
	r.plugin = newWithClients(hclog.NewNullLogger(), fleet.NewClient(r.ec2, fleet.WithRetry(noWait)), r.nomad, nil)
	r.plugin.now = func() time.Time { return r.now }
	r.plugin.pollInterval = time.Millisecond
	r.plugin.drainPoll = nomadnode.Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond}
	r.plugin.capacityRetry = 50 * time.Millisecond
	r.config = map[string]string{
		configKeyFleetID:          r.fleetID,
		"node_class":              "spot",
		configKeyNodeIDAttribute:  "meta.ec2_instance_id",
		configKeySelectorStrategy: "oldest_create_index",
		configKeyLaunchTimeout:    "1s",
	}
	return r
}

// joinNewInstances gives every running instance without a node a Nomad node.
func (r *rig) joinNewInstances() {
	for _, id := range r.ec2.Running(r.fleetID) {
		if _, ok := r.nodeOf[id]; !ok {
			r.nodeOf[id] = r.nomad.addNode(id, "spot", r.ec2.PrivateIP(id))
		}
	}
}

func (r *rig) with(kv ...string) map[string]string {
	cfg := map[string]string{}
	for k, v := range r.config {
		cfg[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(cfg, kv[i])
			continue
		}
		cfg[kv[i]] = kv[i+1]
	}
	return cfg
}

func nopLogger() hclog.Logger { return hclog.NewNullLogger() }

// ApplyMeta is Nomad's POST /v1/client/metadata: refused for an unknown node
// and for a node whose client is down (the server cannot reach it); the
// change shows in NodeInfo after metaLag reads of the node.
func (f *fakeNomad) ApplyMeta(_ context.Context, id string, meta map[string]*string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin("ApplyMeta"); err != nil {
		return err
	}
	n, ok := f.nodes[id]
	switch {
	case !ok:
		return nomadError{code: 404, msg: "Unknown node"}
	case n.Status == api.NodeStatusDown:
		return nomadError{code: 500, msg: "no path to node"}
	}
	if f.metaQueued == nil {
		f.metaQueued = map[string][]queuedMeta{}
	}
	f.metaQueued[id] = append(f.metaQueued[id], queuedMeta{meta: meta})
	f.showMeta(n)
	return nil
}

// showMeta applies the queued meta changes of n that have waited metaLag
// reads; f.mu must be held.
func (f *fakeNomad) showMeta(n *api.Node) {
	q := f.metaQueued[n.ID]
	if len(q) == 0 {
		return
	}
	for len(q) > 0 && q[0].reads >= f.metaLag {
		if n.Meta == nil {
			n.Meta = map[string]string{}
		}
		for k, v := range q[0].meta {
			if v == nil {
				delete(n.Meta, k)
			} else {
				n.Meta[k] = *v
			}
		}
		f.index++
		n.ModifyIndex = f.index
		q = q[1:]
	}
	for i := range q {
		q[i].reads++
	}
	f.metaQueued[n.ID] = q
}
