package nomadnode

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"
)

type countingAPI struct {
	API
	nodes []*api.Node
	infos int
}

func (c *countingAPI) ListNodes(context.Context) ([]*api.NodeListStub, error) {
	var out []*api.NodeListStub
	for _, n := range c.nodes {
		out = append(out, &api.NodeListStub{ID: n.ID, NodeClass: n.NodeClass, Status: n.Status})
	}
	return out, nil
}

func (c *countingAPI) NodeInfo(_ context.Context, id string) (*api.Node, error) {
	c.infos++
	for _, n := range c.nodes {
		if n.ID == id {
			return n, nil
		}
	}
	return nil, nil
}

func TestMapperReadsEachNodeOnce(t *testing.T) {
	a := &countingAPI{nodes: []*api.Node{
		{ID: "n1", NodeClass: "spot", Status: api.NodeStatusReady, Meta: map[string]string{"id": "i-1"}},
		{ID: "n2", NodeClass: "spot", Status: api.NodeStatusReady, Meta: map[string]string{"id": "i-2"}},
	}}
	pool, _ := NewPool(map[string]string{"node_class": "spot"})
	lookup, _ := ParseIDLookup("meta.id")
	m := NewMapper()
	for range 3 {
		l, err := m.PoolNodes(context.Background(), a, pool, lookup)
		if err != nil || len(l.Nodes) != 2 {
			t.Fatalf("PoolNodes = %v, %v", l, err)
		}
	}
	if a.infos != 2 {
		t.Errorf("%d node reads for 3 listings of 2 nodes, want 2", a.infos)
	}
}

func TestMapperLeavesDuplicateClaimsOut(t *testing.T) {
	a := &countingAPI{nodes: []*api.Node{
		{ID: "n1", NodeClass: "spot", Status: api.NodeStatusReady, Meta: map[string]string{"id": "i-1"}},
		{ID: "n2", NodeClass: "spot", Status: api.NodeStatusReady, Meta: map[string]string{"id": "i-1"}},
		{ID: "n3", NodeClass: "spot", Status: api.NodeStatusReady, Meta: map[string]string{"id": "i-3"}},
	}}
	pool, _ := NewPool(map[string]string{"node_class": "spot"})
	lookup, _ := ParseIDLookup("meta.id")

	l, err := NewMapper().PoolNodes(context.Background(), a, pool, lookup)
	if err != nil {
		t.Fatal(err)
	}
	nodes, unmapped := l.Nodes, l.Unmapped

	if err != nil || len(nodes) != 1 || nodes[0].ID != "n3" {
		t.Fatalf("nodes = %v, %v; want only n3", nodes, err)
	}
	if len(unmapped) != 2 || unmapped[0].InstanceID != "i-1" || !strings.Contains(unmapped[0].Err.Error(), "claimed by 2 nodes (n1, n2)") {
		t.Fatalf("unmapped = %+v", unmapped)
	}
}
