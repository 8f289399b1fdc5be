package plugin

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// fakeNomad is an in-memory Nomad node API with failure knobs.
type fakeNomad struct {
	mu       sync.Mutex
	nodes    map[string]*api.Node
	drainErr map[string]error // node id -> error returned by Drain
	drained  []string         // node ids, in drain order
	purged   []string
	index    uint64
	// onDrain, when set, runs at the start of every Drain (outside the lock).
	onDrain func(nodeID string)
}

var _ nomadnode.API = (*fakeNomad)(nil)

func newFakeNomad() *fakeNomad {
	return &fakeNomad{nodes: map[string]*api.Node{}, drainErr: map[string]error{}}
}

// addNode registers a ready, eligible node for an instance.
func (f *fakeNomad) addNode(instanceID, class string) string {
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
	fn(f.nodes[id])
}

func (f *fakeNomad) drainedNodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.drained...)
	sort.Strings(out)
	return out
}

func (f *fakeNomad) ListNodes(context.Context) ([]*api.NodeListStub, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*api.NodeListStub
	for _, n := range f.nodes {
		out = append(out, &api.NodeListStub{ID: n.ID, Name: n.Name, NodeClass: n.NodeClass, Datacenter: n.Datacenter,
			NodePool: n.NodePool, Status: n.Status, SchedulingEligibility: n.SchedulingEligibility,
			Drain: n.DrainStrategy != nil, CreateIndex: n.CreateIndex})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeNomad) NodeInfo(_ context.Context, id string) (*api.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[id]
	if !ok {
		return nil, fmt.Errorf("node %s not found", id)
	}
	c := *n
	return &c, nil
}

func (f *fakeNomad) Drain(_ context.Context, id string, _ *api.DrainSpec, _ map[string]string) error {
	if f.onDrain != nil {
		f.onDrain(id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[id]
	if !ok {
		return fmt.Errorf("node %s not found", id)
	}
	n.SchedulingEligibility = api.NodeSchedulingIneligible
	if err := f.drainErr[id]; err != nil {
		return err
	}
	f.drained = append(f.drained, id)
	return nil
}

func (f *fakeNomad) SetEligibility(_ context.Context, id string, eligible bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[id]
	if !ok {
		return fmt.Errorf("node %s not found", id)
	}
	n.SchedulingEligibility = api.NodeSchedulingIneligible
	if eligible {
		n.SchedulingEligibility = api.NodeSchedulingEligible
	}
	return nil
}

func (f *fakeNomad) Purge(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
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
	r := &rig{ec2: ec2fake.New(), nomad: newFakeNomad(), nodeOf: map[string]string{}, now: time.Unix(1_800_000_000, 0)}
	r.fleetID = r.ec2.AddFleet(spec)
	for _, id := range r.ec2.Running(r.fleetID) {
		r.nodeOf[id] = r.nomad.addNode(id, "spot")
	}
	noWait := fleet.Retry{Attempts: 4, Sleep: func(context.Context, time.Duration) error { return nil }}
	r.plugin = newWithClients(hclog.NewNullLogger(), fleet.NewClient(r.ec2, fleet.WithRetry(noWait)), r.nomad, nil)
	r.plugin.now = func() time.Time { return r.now }
	r.plugin.pollInterval = time.Millisecond
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
			r.nodeOf[id] = r.nomad.addNode(id, "spot")
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
