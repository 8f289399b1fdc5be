// Package ec2fake is an in-memory EC2 for unit tests. It follows the AWS
// semantics the plugins depend on: a maintain fleet refills terminated
// instances, lowering the target capacity with the default policy terminates
// instances EC2 picks, noTermination leaves them, terminating an instance does
// not change the target capacity. Tests can make the next calls of an
// operation fail (throttling, server faults) and read every call made.
package ec2fake

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
)

// Call is one recorded API call.
type Call struct {
	Op    string
	Input any
}

// Fleet describes a fleet to create with AddFleet.
type Fleet struct {
	Type           types.FleetType // default maintain
	TargetCapacity int
	InstanceTypes  []string // one launch specification each
	// TemplateTypes adds launch-template configs without overrides whose
	// templates launch the given type (read with DescribeLaunchTemplateVersions).
	TemplateTypes []string
	Weight        float64 // WeightedCapacity of every spec; 0 means unset
	State         types.BatchState
}

type spotFleet struct {
	id        string
	spec      Fleet
	state     types.BatchState
	target    int
	instances []string // active instance ids, launch order
	templates []string // launch template ids
	next      int      // round-robin over instance types
}

type instance struct {
	id, typ, fleet string
	state          types.InstanceStateName
	launched       time.Time
	tags           map[string]string
}

type failure struct {
	n   int
	err error
}

// EC2 is the fake. The zero value is not usable; call New.
type EC2 struct {
	mu        sync.Mutex
	fleets    map[string]*spotFleet
	instances map[string]*instance
	tags      map[string]map[string]string // tags of non-instance resources
	templates map[string]string            // template id -> instance type
	fail      map[string]*failure
	calls     []Call
	seq       int
	now       func() time.Time

	// Unavailable stops fleets from launching instances (no spot capacity).
	Unavailable bool
	// NoRefill turns maintain-fleet replacement off.
	NoRefill bool
}

// New returns an empty fake EC2.
func New() *EC2 {
	return &EC2{
		fleets:    map[string]*spotFleet{},
		instances: map[string]*instance{},
		tags:      map[string]map[string]string{},
		templates: map[string]string{},
		fail:      map[string]*failure{},
		now:       time.Now,
	}
}

// APIError builds an AWS-shaped API error with the given code.
func APIError(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: code + " (injected by ec2fake)"}
}

// FailNext makes the next n calls of op (for example "TerminateInstances")
// fail with err.
func (e *EC2) FailNext(op string, n int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fail[op] = &failure{n: n, err: err}
}

// Calls returns the calls made so far, optionally only those of op.
func (e *EC2) Calls(op string) []Call {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Call
	for _, c := range e.calls {
		if op == "" || c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

// begin records a call, applies maintain refill, and returns an injected error.
func (e *EC2) begin(op string, in any) error {
	e.calls = append(e.calls, Call{Op: op, Input: in})
	if f := e.fail[op]; f != nil && f.n > 0 {
		f.n--
		return f.err
	}
	e.refill()
	return nil
}

func (e *EC2) newID(prefix string) string {
	e.seq++
	return fmt.Sprintf("%s-%017x", prefix, e.seq)
}

// AddFleet creates a fleet and launches its target capacity.
func (e *EC2) AddFleet(spec Fleet) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if spec.Type == "" {
		spec.Type = types.FleetTypeMaintain
	}
	f := &spotFleet{id: e.newID("sfr"), spec: spec, state: types.BatchStateActive, target: spec.TargetCapacity}
	if spec.State != "" {
		f.state = spec.State
	}
	for _, t := range spec.TemplateTypes {
		id := e.newID("lt")
		e.templates[id] = t
		f.templates = append(f.templates, id)
	}
	e.fleets[f.id] = f
	e.launch(f, f.target)
	return f.id
}

func (f *spotFleet) types(e *EC2) []string {
	out := append([]string(nil), f.spec.InstanceTypes...)
	for _, id := range f.templates {
		out = append(out, e.templates[id])
	}
	return out
}

func (e *EC2) launch(f *spotFleet, n int) {
	if e.Unavailable {
		return
	}
	ts := f.types(e)
	for i := 0; i < n && len(ts) > 0; i++ {
		in := &instance{id: e.newID("i"), typ: ts[f.next%len(ts)], fleet: f.id,
			state: types.InstanceStateNameRunning, launched: e.now(), tags: map[string]string{}}
		f.next++
		e.instances[in.id] = in
		f.instances = append(f.instances, in.id)
	}
}

// refill is what a maintain fleet does on its own: replace missing capacity.
func (e *EC2) refill() {
	if e.NoRefill {
		return
	}
	for _, f := range e.fleets {
		if f.spec.Type == types.FleetTypeMaintain && f.state == types.BatchStateActive && len(f.instances) < f.target {
			e.launch(f, f.target-len(f.instances))
		}
	}
}

// Running returns the ids of the fleet's running instances, sorted.
func (e *EC2) Running(fleetID string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.fleets[fleetID]
	if f == nil {
		return nil
	}
	out := append([]string(nil), f.instances...)
	sort.Strings(out)
	return out
}

// TargetCapacity returns the fleet's target capacity.
func (e *EC2) TargetCapacity(fleetID string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fleets[fleetID].target
}

// InstanceTags returns a copy of an instance's tags.
func (e *EC2) InstanceTags(id string) map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]string{}
	if in := e.instances[id]; in != nil {
		for k, v := range in.tags {
			out[k] = v
		}
	}
	return out
}

// SetInstanceTag sets a tag directly, bypassing call recording (test setup).
func (e *EC2) SetInstanceTag(id, key, value string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.instances[id].tags[key] = value
}

// SetFleetState changes the fleet's state (to model modifying or cancelled).
func (e *EC2) SetFleetState(fleetID string, s types.BatchState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fleets[fleetID].state = s
}

// Kill terminates an instance the way an interruption does (no API call recorded).
func (e *EC2) Kill(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.terminate(id)
}

func (e *EC2) terminate(id string) {
	in := e.instances[id]
	if in == nil || in.state == types.InstanceStateNameTerminated {
		return
	}
	in.state = types.InstanceStateNameTerminated
	if f := e.fleets[in.fleet]; f != nil {
		for i, x := range f.instances {
			if x == id {
				f.instances = append(f.instances[:i], f.instances[i+1:]...)
				break
			}
		}
	}
}

func notFound(code, id string) error {
	return &smithy.GenericAPIError{Code: code, Message: fmt.Sprintf("The ID '%s' does not exist", id)}
}

// DescribeSpotFleetRequests implements fleet.EC2API.
func (e *EC2) DescribeSpotFleetRequests(_ context.Context, in *ec2.DescribeSpotFleetRequestsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSpotFleetRequestsOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeSpotFleetRequests", in); err != nil {
		return nil, err
	}
	out := &ec2.DescribeSpotFleetRequestsOutput{}
	for _, id := range in.SpotFleetRequestIds {
		f := e.fleets[id]
		if f == nil {
			return nil, notFound("InvalidSpotFleetRequestId.NotFound", id)
		}
		data := &types.SpotFleetRequestConfigData{
			Type:              f.spec.Type,
			TargetCapacity:    aws.Int32(int32(f.target)),
			FulfilledCapacity: aws.Float64(float64(len(f.instances))),
			IamFleetRole:      aws.String("arn:aws:iam::123456789012:role/fleet"),
		}
		for _, t := range f.spec.InstanceTypes {
			spec := types.SpotFleetLaunchSpecification{InstanceType: types.InstanceType(t)}
			if f.spec.Weight != 0 {
				spec.WeightedCapacity = aws.Float64(f.spec.Weight)
			}
			data.LaunchSpecifications = append(data.LaunchSpecifications, spec)
		}
		for _, lt := range f.templates {
			data.LaunchTemplateConfigs = append(data.LaunchTemplateConfigs, types.LaunchTemplateConfig{
				LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecification{LaunchTemplateId: aws.String(lt), Version: aws.String("1")},
			})
		}
		out.SpotFleetRequestConfigs = append(out.SpotFleetRequestConfigs, types.SpotFleetRequestConfig{
			SpotFleetRequestId:     aws.String(f.id),
			SpotFleetRequestState:  f.state,
			SpotFleetRequestConfig: data,
		})
	}
	return out, nil
}

// DescribeSpotFleetInstances implements fleet.EC2API.
func (e *EC2) DescribeSpotFleetInstances(_ context.Context, in *ec2.DescribeSpotFleetInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeSpotFleetInstancesOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeSpotFleetInstances", in); err != nil {
		return nil, err
	}
	f := e.fleets[aws.ToString(in.SpotFleetRequestId)]
	if f == nil {
		return nil, notFound("InvalidSpotFleetRequestId.NotFound", aws.ToString(in.SpotFleetRequestId))
	}
	out := &ec2.DescribeSpotFleetInstancesOutput{SpotFleetRequestId: aws.String(f.id)}
	for _, id := range f.instances {
		out.ActiveInstances = append(out.ActiveInstances, types.ActiveInstance{InstanceId: aws.String(id), InstanceType: aws.String(e.instances[id].typ)})
	}
	return out, nil
}

// ModifySpotFleetRequest implements fleet.EC2API.
func (e *EC2) ModifySpotFleetRequest(_ context.Context, in *ec2.ModifySpotFleetRequestInput, _ ...func(*ec2.Options)) (*ec2.ModifySpotFleetRequestOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("ModifySpotFleetRequest", in); err != nil {
		return nil, err
	}
	id := aws.ToString(in.SpotFleetRequestId)
	f := e.fleets[id]
	if f == nil {
		return nil, notFound("InvalidSpotFleetRequestId.NotFound", id)
	}
	if f.state != types.BatchStateActive {
		return nil, &smithy.GenericAPIError{Code: "InvalidSpotFleetRequestConfig", Message: fmt.Sprintf("spot fleet request %s is %s", id, f.state)}
	}
	if in.TargetCapacity != nil {
		f.target = int(*in.TargetCapacity)
		switch {
		case len(f.instances) < f.target:
			e.launch(f, f.target-len(f.instances))
		case len(f.instances) > f.target && in.ExcessCapacityTerminationPolicy != types.ExcessCapacityTerminationPolicyNoTermination:
			// EC2 picks the victims: the newest here.
			for len(f.instances) > f.target {
				e.terminate(f.instances[len(f.instances)-1])
			}
		}
	}
	return &ec2.ModifySpotFleetRequestOutput{Return: aws.Bool(true)}, nil
}

// DescribeInstances implements fleet.EC2API (by instance ids only).
func (e *EC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeInstances", in); err != nil {
		return nil, err
	}
	res := types.Reservation{}
	for _, id := range in.InstanceIds {
		x := e.instances[id]
		if x == nil {
			return nil, notFound("InvalidInstanceID.NotFound", id)
		}
		inst := types.Instance{InstanceId: aws.String(x.id), InstanceType: types.InstanceType(x.typ),
			State: &types.InstanceState{Name: x.state}, LaunchTime: aws.Time(x.launched)}
		for k, v := range x.tags {
			inst.Tags = append(inst.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		res.Instances = append(res.Instances, inst)
	}
	return &ec2.DescribeInstancesOutput{Reservations: []types.Reservation{res}}, nil
}

// TerminateInstances implements fleet.EC2API. Like EC2, an unknown id fails
// the whole call.
func (e *EC2) TerminateInstances(_ context.Context, in *ec2.TerminateInstancesInput, _ ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("TerminateInstances", in); err != nil {
		return nil, err
	}
	for _, id := range in.InstanceIds {
		if e.instances[id] == nil {
			return nil, notFound("InvalidInstanceID.NotFound", id)
		}
	}
	out := &ec2.TerminateInstancesOutput{}
	for _, id := range in.InstanceIds {
		prev := e.instances[id].state
		e.terminate(id)
		out.TerminatingInstances = append(out.TerminatingInstances, types.InstanceStateChange{
			InstanceId:    aws.String(id),
			PreviousState: &types.InstanceState{Name: prev},
			CurrentState:  &types.InstanceState{Name: types.InstanceStateNameShuttingDown},
		})
	}
	return out, nil
}

func (e *EC2) tagsOf(id string) (map[string]string, error) {
	if in := e.instances[id]; in != nil {
		return in.tags, nil
	}
	if _, ok := e.fleets[id]; ok || strings.HasPrefix(id, "lt-") {
		if e.tags[id] == nil {
			e.tags[id] = map[string]string{}
		}
		return e.tags[id], nil
	}
	return nil, notFound("InvalidID", id)
}

// CreateTags implements fleet.EC2API.
func (e *EC2) CreateTags(_ context.Context, in *ec2.CreateTagsInput, _ ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("CreateTags", in); err != nil {
		return nil, err
	}
	for _, id := range in.Resources {
		tags, err := e.tagsOf(id)
		if err != nil {
			return nil, err
		}
		for _, t := range in.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
	}
	return &ec2.CreateTagsOutput{}, nil
}

// DeleteTags implements fleet.EC2API.
func (e *EC2) DeleteTags(_ context.Context, in *ec2.DeleteTagsInput, _ ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DeleteTags", in); err != nil {
		return nil, err
	}
	for _, id := range in.Resources {
		tags, err := e.tagsOf(id)
		if err != nil {
			return nil, err
		}
		for _, t := range in.Tags {
			delete(tags, aws.ToString(t.Key))
		}
	}
	return &ec2.DeleteTagsOutput{}, nil
}

// DescribeTags implements fleet.EC2API (resource-id filter only).
func (e *EC2) DescribeTags(_ context.Context, in *ec2.DescribeTagsInput, _ ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeTags", in); err != nil {
		return nil, err
	}
	out := &ec2.DescribeTagsOutput{}
	for _, f := range in.Filters {
		if aws.ToString(f.Name) != "resource-id" {
			return nil, &smithy.GenericAPIError{Code: "InvalidParameterValue", Message: "ec2fake supports only the resource-id filter"}
		}
		for _, id := range f.Values {
			tags, err := e.tagsOf(id)
			if err != nil {
				continue
			}
			keys := make([]string, 0, len(tags))
			for k := range tags {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				out.Tags = append(out.Tags, types.TagDescription{ResourceId: aws.String(id), Key: aws.String(k), Value: aws.String(tags[k])})
			}
		}
	}
	return out, nil
}

// DescribeLaunchTemplateVersions implements fleet.EC2API.
func (e *EC2) DescribeLaunchTemplateVersions(_ context.Context, in *ec2.DescribeLaunchTemplateVersionsInput, _ ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeLaunchTemplateVersions", in); err != nil {
		return nil, err
	}
	id := aws.ToString(in.LaunchTemplateId)
	t, ok := e.templates[id]
	if !ok {
		return nil, notFound("InvalidLaunchTemplateId.NotFound", id)
	}
	return &ec2.DescribeLaunchTemplateVersionsOutput{LaunchTemplateVersions: []types.LaunchTemplateVersion{{
		LaunchTemplateId:   aws.String(id),
		VersionNumber:      aws.Int64(1),
		LaunchTemplateData: &types.ResponseLaunchTemplateData{InstanceType: types.InstanceType(t)},
	}}}, nil
}

var _ fleet.EC2API = (*EC2)(nil)
