package hooks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"
)

// fakeNomad is a NomadAPI that refuses like Nomad: unknown nodes are 404,
// and ApplyMeta is refused when applyErr is set (a client Nomad has no path
// to).
type fakeNomad struct {
	mu        sync.Mutex
	nodes     map[string]*fakeNode
	infoCalls int
	applyErr  error
}

// fakeNode walks through statuses, one per NodeInfo.
type fakeNode struct {
	statuses []string
	pos      int
	meta     map[string]string
}

func newFakeNomad() *fakeNomad { return &fakeNomad{nodes: map[string]*fakeNode{}} }

func (f *fakeNomad) addNode(id string, statuses ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes[id] = &fakeNode{statuses: statuses, meta: map[string]string{}}
}

func (f *fakeNomad) NodeInfo(_ context.Context, id string) (*api.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.infoCalls++
	n := f.nodes[id]
	if n == nil {
		return nil, fmt.Errorf("reading Nomad node %s: Unexpected response code: 404 (node not found)", id)
	}
	s := n.statuses[n.pos]
	if n.pos < len(n.statuses)-1 {
		n.pos++
	}
	meta := map[string]string{}
	for k, v := range n.meta {
		meta[k] = v
	}
	return &api.Node{ID: id, Status: s, Meta: meta}, nil
}

func (f *fakeNomad) ApplyMeta(_ context.Context, id string, meta map[string]*string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.nodes[id]
	if n == nil {
		return errors.New("Unexpected response code: 404 (node not found)")
	}
	if f.applyErr != nil {
		return f.applyErr
	}
	for k, v := range meta {
		if v == nil {
			delete(n.meta, k)
			continue
		}
		n.meta[k] = *v
	}
	return nil
}

func (f *fakeNomad) metaOf(id string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[id].meta
}

func nomadSpec(t *testing.T, extra ...string) *Spec {
	cfg := map[string]string{"launch_hooks": "join", "hook_join_type": "nomad"}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i]] = extra[i+1]
	}
	return mustPolicy(t, cfg, nil)
}

func TestNomadHookWaitsForTheNodeToBeReadyThenSetsMeta(t *testing.T) {
	nomad := newFakeNomad()
	nomad.addNode("node-1", api.NodeStatusInit, api.NodeStatusInit, api.NodeStatusDown, api.NodeStatusReady)
	r, _ := newTestRunner(t, nil)
	r.Nomad = nomad
	spec := nomadSpec(t, "hook_join_meta", "spotfleet_admission=admitted, ec2_zone={{availability_zone}}")

	out := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	require.Equal(t, 4, nomad.infoCalls)
	require.Equal(t, map[string]string{"spotfleet_admission": "admitted", "ec2_zone": "us-east-1a"}, nomad.metaOf("node-1"))
	require.Equal(t, StateOK, out.Record.Steps["join"].State)
}

func TestNomadHookFailures(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(n *fakeNomad)
		inst    func(i *Instance)
		wantErr string
	}{
		{
			name:    "a node that stays down is reported at the timeout",
			setup:   func(n *fakeNomad) { n.addNode("node-1", api.NodeStatusInit, api.NodeStatusDown) },
			wantErr: "hook join (nomad): node node-1 was not ready within 100ms (last status down)",
		},
		{
			name:    "a node Nomad does not know",
			setup:   func(n *fakeNomad) {},
			wantErr: "node node-1 was not ready within 100ms (reading it failed: reading Nomad node node-1: Unexpected response code: 404 (node not found))",
		},
		{
			name: "Nomad refusing the metadata",
			setup: func(n *fakeNomad) {
				n.addNode("node-1", api.NodeStatusReady)
				n.applyErr = errors.New("Unexpected response code: 500 (no path to node)")
			},
			wantErr: "hook join (nomad): setting dynamic metadata [spotfleet_admission] on node node-1: Unexpected response code: 500 (no path to node)",
		},
		{
			name:    "an instance without a node",
			setup:   func(n *fakeNomad) {},
			inst:    func(i *Instance) { i.NodeID = "" },
			wantErr: "hook join (nomad): the instance has no Nomad node (it never registered)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nomad := newFakeNomad()
			tc.setup(nomad)
			r, _ := newTestRunner(t, nil)
			r.Nomad = nomad
			inst := testInstance()
			if tc.inst != nil {
				tc.inst(&inst)
			}
			spec := nomadSpec(t, "hook_join_meta", "spotfleet_admission=admitted", "hook_join_timeout", "100ms")

			out := r.Launch(context.Background(), spec.Launch, inst, Record{}, (&memSaver{}).save)

			require.False(t, out.OK)
			require.ErrorContains(t, out.Err, tc.wantErr)
			require.Equal(t, StateFailed, out.Record.Steps["join"].State)
		})
	}
}

func TestNomadHookFoundStartedRunsAgain(t *testing.T) {
	nomad := newFakeNomad()
	nomad.addNode("node-1", api.NodeStatusReady)
	r, _ := newTestRunner(t, nil)
	r.Nomad = nomad
	rec := Record{Steps: map[string]Step{"join": {State: StateStarted}}}

	out := r.Launch(context.Background(), nomadSpec(t, "hook_join_meta", "a=b").Launch, testInstance(), rec, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	require.Equal(t, map[string]string{"a": "b"}, nomad.metaOf("node-1"))
}
