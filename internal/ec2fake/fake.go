// Package ec2fake is an in-memory EC2 for unit tests. It follows the AWS
// semantics the plugins depend on: a maintain fleet refills terminated
// instances, lowering the target capacity with the default policy terminates
// instances EC2 picks, noTermination leaves them, terminating an instance does
// not change the target capacity. It refuses what EC2 refuses, with EC2's
// error codes: modifying a request-type fleet or a fleet that is not active
// (FleetNotInModifiableState), describing by InstanceIds an instance EC2 does
// not list yet (InvalidInstanceID.NotFound, see DescribeLag). Tests can limit
// the spot capacity of a fleet (SetCapacity), keep a fleet modifying for a
// while after each change (ModifyingFor), make the next calls of an operation
// fail (API errors, or network errors shaped as the SDK returns them:
// ConnReset, ConnRefused, NetTimeout, UnexpectedEOF) and read every call made.
package ec2fake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

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
	// TemplateVersion is the version the launch-template configs name:
	// "1" (the default), "$Latest" or "$Default".
	TemplateVersion string
	Weight          float64 // WeightedCapacity of every spec; 0 means unset
	State           types.BatchState
}

type spotFleet struct {
	id            string
	spec          Fleet
	state         types.BatchState
	target        int
	instances     []string // active instance ids, launch order
	templates     []string // launch template ids
	next          int      // round-robin over instance types
	capacity      int      // most instances spot capacity allows; <0: no limit
	modifyingLeft int      // DescribeSpotFleetRequests calls that still see modifying
}

type instance struct {
	id, typ, fleet string
	privateIP      string
	state          types.InstanceStateName
	launched       time.Time
	tags           map[string]string
	hidden         int // DescribeInstances calls that do not list it yet
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
	templates map[string][]string          // template id -> instance type of each version
	fail      map[string]*failure
	calls     []Call
	seq       int
	now       func() time.Time

	// Unavailable stops fleets from launching instances (no spot capacity).
	Unavailable bool
	// NoRefill turns maintain-fleet replacement off.
	NoRefill bool
	// DescribeLag is how many DescribeInstances calls after its launch an
	// instance stays unknown to DescribeInstances, the way EC2's eventual
	// consistency hides an instance just launched: asked for by InstanceIds
	// it fails the whole call with InvalidInstanceID.NotFound, selected with
	// the instance-id filter it is simply left out. DescribeSpotFleetInstances
	// lists it at once. 0 (the default) shows instances at once.
	DescribeLag int
	// ModifyingFor is how many DescribeSpotFleetRequests calls after a
	// successful ModifySpotFleetRequest report the fleet as modifying; the
	// next one reports it active again. While it is modifying, EC2 refuses
	// another modify and the fleet does not refill. 0 (the default) keeps
	// the fleet active.
	ModifyingFor int
}

// New returns an empty fake EC2.
func New() *EC2 {
	return &EC2{
		fleets:    map[string]*spotFleet{},
		instances: map[string]*instance{},
		tags:      map[string]map[string]string{},
		templates: map[string][]string{},
		fail:      map[string]*failure{},
		now:       time.Now,
	}
}

// APIError builds an AWS-shaped API error with the given code.
func APIError(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: code + " (injected by ec2fake)"}
}

// Network failures, shaped as aws-sdk-go-v2 returns them (checked against
// real SDK clients talking to a misbehaving server, see
// internal/awsretry/errors_test.go). The operation error they build names no
// operation; when one is injected with FailNext, the fake names the operation
// that fails. Each of them is retryable (awsretry.IsRetryable), none is a
// cancellation.

// fakeEndpoint is the URL the network errors name.
const fakeEndpoint = "https://ec2.us-east-1.amazonaws.com/"

// ConnReset is the error of a call whose connection was reset by the peer
// before the answer came: OperationError > MaxAttemptsError >
// awshttp.ResponseError (status 0) > RequestSendError > *url.Error >
// *net.OpError > ECONNRESET.
func ConnReset() error {
	return sendFailed(&net.OpError{Op: "read", Net: "tcp", Addr: fakeAddr,
		Err: os.NewSyscallError("read", syscall.ECONNRESET)})
}

// ConnRefused is the error of a call whose connection was refused (nothing
// listens at the endpoint).
func ConnRefused() error {
	return sendFailed(&net.OpError{Op: "dial", Net: "tcp", Addr: fakeAddr,
		Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
}

// NetTimeout is the error of a call whose single attempt timed out
// (http.Client.Timeout): a net.Error with Timeout true that also matches
// context.DeadlineExceeded, although the caller's context did not end.
func NetTimeout() error { return sendFailed(attemptTimeout{}) }

// UnexpectedEOF is the error of a call whose answer broke off in the middle
// of its body: the SDK reports a DeserializationError wrapping
// io.ErrUnexpectedEOF, with the response's status 200, and does not retry it
// itself.
func UnexpectedEOF() error {
	return &smithy.OperationError{ServiceID: "EC2", Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: http.NoBody}},
			Err:      &smithy.DeserializationError{Err: fmt.Errorf("failed to decode response body, %w", io.ErrUnexpectedEOF)},
		},
	}}
}

// fakeAddr is the remote address the network errors name (TEST-NET-1).
var fakeAddr = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 443}

// sendFailed wraps a transport error the way the SDK does when the request
// got no answer, after its own retries (3 attempts by default).
func sendFailed(transport error) error {
	return &smithy.OperationError{ServiceID: "EC2", Err: &retry.MaxAttemptsError{Attempt: 3, Err: &awshttp.ResponseError{
		ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{Header: http.Header{}, Body: http.NoBody}},
			Err:      &smithyhttp.RequestSendError{Err: &url.Error{Op: "Post", URL: fakeEndpoint, Err: transport}},
		},
	}}}
}

// attemptTimeout is net/http's error for an attempt that exceeded
// http.Client.Timeout.
type attemptTimeout struct{}

func (attemptTimeout) Error() string {
	return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
}
func (attemptTimeout) Timeout() bool        { return true }
func (attemptTimeout) Temporary() bool      { return true }
func (attemptTimeout) Is(target error) bool { return target == context.DeadlineExceeded }

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
		var opErr *smithy.OperationError
		if errors.As(f.err, &opErr) && opErr == f.err && opErr.OperationName == "" {
			named := *opErr
			named.OperationName = op
			return &named
		}
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
	if spec.TemplateVersion == "" {
		spec.TemplateVersion = "1"
	}
	f := &spotFleet{id: e.newID("sfr"), spec: spec, state: types.BatchStateActive, target: spec.TargetCapacity, capacity: -1}
	if spec.State != "" {
		f.state = spec.State
	}
	for _, t := range spec.TemplateTypes {
		id := e.newID("lt")
		e.templates[id] = []string{t}
		f.templates = append(f.templates, id)
	}
	e.fleets[f.id] = f
	e.launch(f, f.target)
	return f.id
}

func (f *spotFleet) types(e *EC2) []string {
	out := append([]string(nil), f.spec.InstanceTypes...)
	for _, id := range f.templates {
		out = append(out, e.templateType(id, f.spec.TemplateVersion))
	}
	return out
}

// templateType returns the instance type of a launch template version:
// "$Latest" and "$Default" are the newest version here.
func (e *EC2) templateType(id, version string) string {
	versions := e.templates[id]
	if len(versions) == 0 {
		return ""
	}
	if n, err := strconv.Atoi(version); err == nil && n >= 1 && n <= len(versions) {
		return versions[n-1]
	}
	return versions[len(versions)-1]
}

// launch starts up to n instances, as far as spot capacity allows: like
// InsufficientInstanceCapacity on real EC2, the fleet's target stays where it
// is and the missing instances just do not come.
func (e *EC2) launch(f *spotFleet, n int) {
	if e.Unavailable {
		return
	}
	if f.capacity >= 0 {
		n = min(n, f.capacity-len(f.instances))
	}
	ts := f.types(e)
	for i := 0; i < n && len(ts) > 0; i++ {
		in := &instance{id: e.newID("i"), typ: ts[f.next%len(ts)], fleet: f.id, privateIP: fmt.Sprintf("10.0.%d.%d", e.seq/250, e.seq%250+1),
			state: types.InstanceStateNameRunning, launched: e.now(), tags: map[string]string{}, hidden: e.DescribeLag}
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

// PrivateIP returns an instance's private address ("" if unknown).
func (e *EC2) PrivateIP(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if in := e.instances[id]; in != nil {
		return in.privateIP
	}
	return ""
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
// The state stays until the next SetFleetState.
func (e *EC2) SetFleetState(fleetID string, s types.BatchState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fleets[fleetID].state = s
	e.fleets[fleetID].modifyingLeft = 0
}

// SetCapacity limits how many instances of the fleet spot capacity allows to
// run at once; n < 0 lifts the limit. Launches beyond it do not happen (the
// target capacity stays raised); when the limit is raised again a maintain
// fleet fills up to its target at the next call.
func (e *EC2) SetCapacity(fleetID string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fleets[fleetID].capacity = n
}

// Templates returns the ids of the launch templates the fleet uses.
func (e *EC2) Templates(fleetID string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.fleets[fleetID].templates...)
}

// SetTemplateType creates a new version of a launch template that launches
// instanceType; it becomes "$Latest" and "$Default".
func (e *EC2) SetTemplateType(templateID, instanceType string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.templates[templateID] = append(e.templates[templateID], instanceType)
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

// notFound is EC2's error for an id it does not know, for example
// InvalidInstanceID.NotFound "The instance ID 'i-...' does not exist".
func notFound(code, what, id string) error {
	return &smithy.GenericAPIError{Code: code, Message: fmt.Sprintf("The %s '%s' does not exist", what, id)}
}

// DescribeSpotFleetRequests implements fleet.EC2API. Without ids it
// describes every fleet. Tags are not returned (moto 5.2.1, the EC2 of the
// e2e tests, returns only creation-time tags there, and the fleet client does
// not read them).
func (e *EC2) DescribeSpotFleetRequests(_ context.Context, in *ec2.DescribeSpotFleetRequestsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSpotFleetRequestsOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeSpotFleetRequests", in); err != nil {
		return nil, err
	}
	ids := in.SpotFleetRequestIds
	if len(ids) == 0 {
		for id := range e.fleets {
			ids = append(ids, id)
		}
		sort.Strings(ids)
	}
	for _, id := range ids {
		if e.fleets[id] == nil {
			// EC2: InvalidSpotFleetRequestId.NotFound for an unknown id.
			return nil, notFound("InvalidSpotFleetRequestId.NotFound", "spot fleet request ID", id)
		}
	}
	out := &ec2.DescribeSpotFleetRequestsOutput{}
	for _, id := range ids {
		f := e.fleets[id]
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
				LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecification{LaunchTemplateId: aws.String(lt), Version: aws.String(f.spec.TemplateVersion)},
			})
		}
		out.SpotFleetRequestConfigs = append(out.SpotFleetRequestConfigs, types.SpotFleetRequestConfig{
			SpotFleetRequestId:     aws.String(f.id),
			SpotFleetRequestState:  f.state,
			SpotFleetRequestConfig: data,
		})
		if f.modifyingLeft > 0 {
			if f.modifyingLeft--; f.modifyingLeft == 0 {
				f.state = types.BatchStateActive
			}
		}
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
		return nil, notFound("InvalidSpotFleetRequestId.NotFound", "spot fleet request ID", aws.ToString(in.SpotFleetRequestId))
	}
	out := &ec2.DescribeSpotFleetInstancesOutput{SpotFleetRequestId: aws.String(f.id)}
	for _, id := range f.instances {
		out.ActiveInstances = append(out.ActiveInstances, types.ActiveInstance{InstanceId: aws.String(id), InstanceType: aws.String(e.instances[id].typ)})
	}
	return out, nil
}

// ModifySpotFleetRequest implements fleet.EC2API. Like EC2 it refuses, with
// FleetNotInModifiableState, a fleet whose type is not maintain (the API
// reference: "You can only modify a Spot Fleet request of type maintain";
// the code and message as EC2 returns them are quoted in
// jenkinsci/ec2-fleet-plugin#131) and a fleet that is not active, for
// example still modifying after the previous change (the same code; its
// name says so, the exact message for this case is not documented).
func (e *EC2) ModifySpotFleetRequest(_ context.Context, in *ec2.ModifySpotFleetRequestInput, _ ...func(*ec2.Options)) (*ec2.ModifySpotFleetRequestOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("ModifySpotFleetRequest", in); err != nil {
		return nil, err
	}
	id := aws.ToString(in.SpotFleetRequestId)
	f := e.fleets[id]
	if f == nil {
		return nil, notFound("InvalidSpotFleetRequestId.NotFound", "spot fleet request ID", id)
	}
	if f.spec.Type != types.FleetTypeMaintain {
		return nil, &smithy.GenericAPIError{Code: "FleetNotInModifiableState",
			Message: fmt.Sprintf("Fleet Request: %s is not a modifiable fleet request type.", id)}
	}
	if f.state != types.BatchStateActive {
		return nil, &smithy.GenericAPIError{Code: "FleetNotInModifiableState",
			Message: fmt.Sprintf("Fleet Request: %s is not in a modifiable state (%s).", id, f.state)}
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
	if e.ModifyingFor > 0 {
		f.state = types.BatchStateModifying
		f.modifyingLeft = e.ModifyingFor
	}
	return &ec2.ModifySpotFleetRequestOutput{Return: aws.Bool(true)}, nil
}

// DescribeInstances implements fleet.EC2API. It selects by InstanceIds
// and by the filters instance-id and instance-state-name (both together is
// their intersection, as in EC2); other filters are refused. Like EC2, an id
// in InstanceIds that it does not list (unknown, or launched less than
// DescribeLag calls ago) fails the whole call with InvalidInstanceID.NotFound
// (the code EC2 documents for it, see "Eventual consistency in the Amazon EC2
// API"), while a filter simply leaves such instances out. Terminated
// instances are still listed, as EC2 does for a while.
func (e *EC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeInstances", in); err != nil {
		return nil, err
	}
	defer e.ageInstances()
	visible := func(id string) *instance {
		if x := e.instances[id]; x != nil && x.hidden == 0 {
			return x
		}
		return nil
	}
	var ids []string
	if len(in.InstanceIds) > 0 {
		for _, id := range in.InstanceIds {
			if visible(id) == nil {
				return nil, notFound("InvalidInstanceID.NotFound", "instance ID", id)
			}
		}
		ids = in.InstanceIds
	} else {
		for id := range e.instances {
			ids = append(ids, id)
		}
	}
	keep := func(*instance) bool { return true }
	for _, f := range in.Filters {
		values := map[string]bool{}
		for _, v := range f.Values {
			values[v] = true
		}
		prev := keep
		switch aws.ToString(f.Name) {
		case "instance-id":
			keep = func(x *instance) bool { return prev(x) && values[x.id] }
		case "instance-state-name":
			keep = func(x *instance) bool { return prev(x) && values[string(x.state)] }
		default:
			return nil, &smithy.GenericAPIError{Code: "InvalidParameterValue",
				Message: fmt.Sprintf("ec2fake supports only the instance-id and instance-state-name filters, not %q", aws.ToString(f.Name))}
		}
	}
	sort.Strings(ids)
	res := types.Reservation{}
	for _, id := range ids {
		x := visible(id)
		if x == nil || !keep(x) {
			continue
		}
		inst := types.Instance{InstanceId: aws.String(x.id), InstanceType: types.InstanceType(x.typ),
			State: &types.InstanceState{Name: x.state}, LaunchTime: aws.Time(x.launched), PrivateIpAddress: aws.String(x.privateIP)}
		keys := make([]string, 0, len(x.tags))
		for k := range x.tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			inst.Tags = append(inst.Tags, types.Tag{Key: aws.String(k), Value: aws.String(x.tags[k])})
		}
		res.Instances = append(res.Instances, inst)
	}
	out := &ec2.DescribeInstancesOutput{}
	if len(res.Instances) > 0 {
		out.Reservations = []types.Reservation{res}
	}
	return out, nil
}

// ageInstances counts one DescribeInstances call towards the visibility of
// instances launched moments ago.
func (e *EC2) ageInstances() {
	for _, x := range e.instances {
		if x.hidden > 0 {
			x.hidden--
		}
	}
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
			return nil, notFound("InvalidInstanceID.NotFound", "instance ID", id)
		}
	}
	if aws.ToBool(in.DryRun) {
		// As EC2 (and moto) answer a permitted dry run.
		return nil, &smithy.GenericAPIError{Code: "DryRunOperation", Message: "Request would have succeeded, but DryRun flag is set."}
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
	return nil, notFound("InvalidID", "ID", id)
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

// DescribeLaunchTemplateVersions implements fleet.EC2API (by template id; one
// version: a number, "$Latest" or "$Default", which are the newest here).
func (e *EC2) DescribeLaunchTemplateVersions(_ context.Context, in *ec2.DescribeLaunchTemplateVersionsInput, _ ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.begin("DescribeLaunchTemplateVersions", in); err != nil {
		return nil, err
	}
	id := aws.ToString(in.LaunchTemplateId)
	versions, ok := e.templates[id]
	if !ok {
		return nil, notFound("InvalidLaunchTemplateId.NotFound", "launch template ID", id)
	}
	version := "$Default"
	if len(in.Versions) > 0 {
		version = in.Versions[0]
	}
	number := len(versions)
	if n, err := strconv.Atoi(version); err == nil {
		if n < 1 || n > len(versions) {
			return nil, &smithy.GenericAPIError{Code: "InvalidLaunchTemplateId.VersionNotFound",
				Message: fmt.Sprintf("Could not find launch template version %s for launch template %s", version, id)}
		}
		number = n
	}
	return &ec2.DescribeLaunchTemplateVersionsOutput{LaunchTemplateVersions: []types.LaunchTemplateVersion{{
		LaunchTemplateId:   aws.String(id),
		VersionNumber:      aws.Int64(int64(number)),
		LaunchTemplateData: &types.ResponseLaunchTemplateData{InstanceType: types.InstanceType(versions[number-1])},
	}}}, nil
}

var _ fleet.EC2API = (*EC2)(nil)
