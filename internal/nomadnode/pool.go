package nomadnode

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad-autoscaler/sdk/helper/scaleutils/nodepool"
	"github.com/hashicorp/nomad/api"
)

// Pool selects the nodes of one node pool by class, datacenter and/or Nomad
// node pool (all that are set must match), as the stock cluster targets do.
type Pool struct {
	id nodepool.ClusterNodePoolIdentifier
}

// NewPool reads node_class, datacenter and node_pool from a policy's target config.
func NewPool(cfg map[string]string) (Pool, error) {
	id, err := nodepool.NewClusterNodePoolIdentifier(cfg)
	if err != nil {
		return Pool{}, fmt.Errorf("no node pool selected: set at least one of %s, %s or %s",
			sdk.TargetConfigKeyClass, sdk.TargetConfigKeyDatacenter, sdk.TargetConfigKeyNodePool)
	}
	return Pool{id: id}, nil
}

// Contains reports whether n belongs to the pool.
func (p Pool) Contains(n *api.NodeListStub) bool { return p.id.IsPoolMember(n) }

// String describes the pool for logs.
func (p Pool) String() string { return p.id.Key() + "=" + p.id.Value() }

// IDLookup reads a node's cloud instance id from an attribute or a meta key.
type IDLookup struct {
	key  string
	meta bool
}

// DefaultIDAttribute is set by Nomad's AWS fingerprinter on EC2.
const DefaultIDAttribute = "unique.platform.aws.instance-id"

// ParseIDLookup accepts "meta.<key>" for client meta, or an attribute name,
// optionally written "attr.<name>" as in Nomad constraints.
func ParseIDLookup(s string) (IDLookup, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		s = DefaultIDAttribute
	}
	if k, ok := strings.CutPrefix(s, "meta."); ok {
		if k == "" {
			return IDLookup{}, fmt.Errorf("%q names no meta key: write meta.<key>, for example meta.ec2_instance_id", s)
		}
		return IDLookup{key: k, meta: true}, nil
	}
	s = strings.TrimPrefix(s, "attr.")
	if s == "" {
		return IDLookup{}, fmt.Errorf("empty attribute name: write an attribute such as %s, or meta.<key>", DefaultIDAttribute)
	}
	return IDLookup{key: s}, nil
}

// String returns the lookup in the form ParseIDLookup accepts.
func (l IDLookup) String() string {
	if l.meta {
		return "meta." + l.key
	}
	return l.key
}

// InstanceID returns the instance id of n.
func (l IDLookup) InstanceID(n *api.Node) (string, error) {
	src, where := n.Attributes, "attribute"
	if l.meta {
		src, where = n.Meta, "meta key"
	}
	if v := src[l.key]; v != "" {
		return v, nil
	}
	return "", fmt.Errorf("node %s has no %s %q", n.ID, where, l.key)
}

// Node is a pool member with the instance it runs on.
type Node struct {
	*api.NodeListStub
	InstanceID string
	// Meta is the node's meta (static and dynamic) as the servers know it,
	// read again whenever the node's ModifyIndex changes.
	Meta map[string]string
}

// Unmapped is a pool member whose instance id could not be read.
type Unmapped struct {
	NodeID string
	// InstanceID is set when the node claims an instance another node claims too.
	InstanceID string
	Err        error
}

// Mapper lists pool nodes with their instance ids and meta. A node's
// instance never changes and its meta changes only with its ModifyIndex, so
// what one NodeInfo call reads is cached per node id and lookup until the
// node's ModifyIndex moves; steady state costs one ListNodes call. The zero
// value is not usable; call NewMapper.
type Mapper struct {
	mu    sync.Mutex
	cache map[string]mapped // lookup + "\x00" + node id
}

type mapped struct {
	instanceID  string
	modifyIndex uint64
	meta        map[string]string
}

// NewMapper returns an empty Mapper.
func NewMapper() *Mapper { return &Mapper{cache: map[string]mapped{}} }

// Listing is one reading of the pool's nodes.
type Listing struct {
	// Nodes are the pool's nodes that are not down, with their instance ids.
	Nodes []Node
	// Unmapped are pool nodes whose id cannot be read, or that claim the
	// same instance id as another node: callers say so and leave them alone.
	Unmapped []Unmapped
	// Addresses holds the address of every node the cluster lists, in any
	// pool and state but down, so that an instance whose node has another
	// class or no readable id is not taken for one that never joined.
	Addresses map[string]bool
}

// PoolNodes lists the pool's nodes that are not down, with their instance
// ids (see Listing).
func (m *Mapper) PoolNodes(ctx context.Context, a API, pool Pool, lookup IDLookup) (*Listing, error) {
	stubs, err := a.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	addrs := map[string]bool{}
	for _, s := range stubs {
		if s.Status != api.NodeStatusDown && s.Address != "" {
			addrs[s.Address] = true
		}
	}
	prefix := lookup.String() + "\x00"
	live := map[string]bool{}
	byInstance := map[string][]Node{}
	var unmapped []Unmapped
	for _, s := range stubs {
		live[prefix+s.ID] = true
		if !pool.Contains(s) || s.Status == api.NodeStatusDown {
			continue
		}
		id, meta, err := m.instanceID(ctx, a, lookup, prefix+s.ID, s)
		if err != nil {
			if !IsTransient(err) && ctx.Err() == nil {
				unmapped = append(unmapped, Unmapped{NodeID: s.ID, Err: err})
				continue
			}
			return nil, err
		}
		byInstance[id] = append(byInstance[id], Node{NodeListStub: s, InstanceID: id, Meta: meta})
	}
	m.forget(prefix, live)
	var nodes []Node
	for id, ns := range byInstance {
		if len(ns) == 1 {
			nodes = append(nodes, ns[0])
			continue
		}
		ids := make([]string, 0, len(ns))
		for _, n := range ns {
			ids = append(ids, n.ID)
		}
		sort.Strings(ids)
		for _, n := range ns {
			unmapped = append(unmapped, Unmapped{NodeID: n.ID, InstanceID: id, Err: fmt.Errorf(
				"instance id %s is claimed by %d nodes (%s): none of them is touched", id, len(ns), strings.Join(ids, ", "))})
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	sort.Slice(unmapped, func(i, j int) bool { return unmapped[i].NodeID < unmapped[j].NodeID })
	return &Listing{Nodes: nodes, Unmapped: unmapped, Addresses: addrs}, nil
}

func (m *Mapper) instanceID(ctx context.Context, a API, lookup IDLookup, key string, s *api.NodeListStub) (string, map[string]string, error) {
	m.mu.Lock()
	e, ok := m.cache[key]
	m.mu.Unlock()
	if ok && e.modifyIndex == s.ModifyIndex {
		return e.instanceID, e.meta, nil
	}
	info, err := a.NodeInfo(ctx, s.ID)
	if err != nil {
		return "", nil, err
	}
	id, err := lookup.InstanceID(info)
	if err != nil {
		return "", nil, err
	}
	if ok && e.instanceID != id {
		// A node id never moves to another instance: keep the first.
		id = e.instanceID
	}
	m.mu.Lock()
	m.cache[key] = mapped{instanceID: id, modifyIndex: s.ModifyIndex, meta: info.Meta}
	m.mu.Unlock()
	return id, info.Meta, nil
}

// forget drops cached ids of nodes the cluster no longer lists.
func (m *Mapper) forget(prefix string, live map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.cache {
		if strings.HasPrefix(k, prefix) && !live[k] {
			delete(m.cache, k)
		}
	}
}
