package fleet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// DefaultCallTimeout bounds one EC2 call, retries included.
const DefaultCallTimeout = 30 * time.Second

// DefaultModifyWait bounds how long the client waits for a fleet request in
// state modifying or submitted to become active again (see WaitModifiable).
const DefaultModifyWait = 5 * time.Minute

// Client reads and changes one account's Spot Fleet requests through EC2API.
// It is safe for concurrent use.
type Client struct {
	api        EC2API
	retry      Retry
	timeout    time.Duration
	modifyWait time.Duration
	now        func() time.Time

	templatesMu sync.Mutex
	templates   map[templateKey]templateEntry
}

// Option changes how a Client behaves.
type Option func(*Client)

// WithRetry sets the retry policy for throttled and failed calls.
func WithRetry(r Retry) Option { return func(c *Client) { c.retry = r } }

// WithCallTimeout bounds each call, retries included.
func WithCallTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithModifyWait bounds how long WaitModifiable (and every method that
// changes the target capacity) waits for a modifying fleet request, counted
// as the sum of its pauses between polls. The default is DefaultModifyWait.
func WithModifyWait(d time.Duration) Option { return func(c *Client) { c.modifyWait = d } }

// WithClock sets the clock the launch-template cache reads; tests set it.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// NewClient returns a Client that calls api.
func NewClient(api EC2API, opts ...Option) *Client {
	c := &Client{api: api, retry: DefaultRetry, timeout: DefaultCallTimeout, modifyWait: DefaultModifyWait,
		now: time.Now, templates: map[templateKey]templateEntry{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Request is what the plugins need to know of a Spot Fleet request.
type Request struct {
	ID                string
	State             types.BatchState
	Type              types.FleetType
	TargetCapacity    int
	FulfilledCapacity float64
	// InstanceTypes lists the instance types the request can launch, from its
	// launch specifications and launch-template overrides, sorted and unique.
	InstanceTypes []string
	// UnresolvedTemplates names launch templates used without an override
	// that sets the instance type; their type is read with InstanceTypesOf.
	UnresolvedTemplates []types.FleetLaunchTemplateSpecification
	// Weights lists weighted capacities other than 1 found in the request.
	Weights []float64
}

// Modifiable reports whether the request accepts a new target capacity now.
func (r *Request) Modifiable() bool { return r.State == types.BatchStateActive }

// Instance is one instance of a fleet, as EC2 describes it.
type Instance struct {
	ID    string
	Type  string
	State types.InstanceStateName
	// LaunchTime is zero when the instance is not Described.
	LaunchTime time.Time
	Tags       map[string]string
	// PrivateIP is the instance's private address ("" when not Described);
	// a Nomad node on the instance usually advertises it.
	PrivateIP string
	// PrivateDNS is the instance's private DNS name and Zone its
	// availability zone ("" when not Described or not known).
	PrivateDNS string
	Zone       string
	// Described is false for an instance the fleet lists as active but
	// DescribeInstances does not return yet (EC2 is eventually consistent
	// right after a launch). Instances reports it as pending, with the type
	// the fleet gives, no launch time and no tags: capacity that is coming.
	Described bool
}

// Running reports whether the instance is pending or running (it counts as capacity).
func (i Instance) Running() bool {
	return i.State == types.InstanceStateNameRunning || i.State == types.InstanceStateNamePending
}

func (c *Client) call(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.retry.Do(ctx, what, fn)
}

// Describe returns the Spot Fleet request id.
func (c *Client) Describe(ctx context.Context, id string) (*Request, error) {
	var out *ec2.DescribeSpotFleetRequestsOutput
	err := c.call(ctx, fmt.Sprintf("describing spot fleet request %s", id), func(ctx context.Context) error {
		var err error
		out, err = c.api.DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{id}})
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, cfg := range out.SpotFleetRequestConfigs {
		if aws.ToString(cfg.SpotFleetRequestId) == id {
			return newRequest(cfg), nil
		}
	}
	return nil, fmt.Errorf("describing spot fleet request %s: %w", id, ErrNotFound)
}

// ErrNotFound says the spot fleet request does not exist.
var ErrNotFound = errors.New("spot fleet request not found")

func newRequest(cfg types.SpotFleetRequestConfig) *Request {
	r := &Request{ID: aws.ToString(cfg.SpotFleetRequestId), State: cfg.SpotFleetRequestState}
	data := cfg.SpotFleetRequestConfig
	if data == nil {
		return r
	}
	r.Type = data.Type
	if r.Type == "" {
		r.Type = types.FleetTypeMaintain // the EC2 default
	}
	r.TargetCapacity = int(aws.ToInt32(data.TargetCapacity))
	r.FulfilledCapacity = aws.ToFloat64(data.FulfilledCapacity)
	seen := map[string]bool{}
	addType := func(t types.InstanceType) {
		if t != "" && !seen[string(t)] {
			seen[string(t)] = true
			r.InstanceTypes = append(r.InstanceTypes, string(t))
		}
	}
	addWeight := func(w *float64) {
		if w != nil && *w != 1 {
			r.Weights = append(r.Weights, *w)
		}
	}
	for _, spec := range data.LaunchSpecifications {
		addType(spec.InstanceType)
		addWeight(spec.WeightedCapacity)
	}
	for _, ltc := range data.LaunchTemplateConfigs {
		typed := false
		for _, o := range ltc.Overrides {
			if o.InstanceType != "" {
				typed = true
			}
			addType(o.InstanceType)
			addWeight(o.WeightedCapacity)
		}
		if !typed && ltc.LaunchTemplateSpecification != nil {
			r.UnresolvedTemplates = append(r.UnresolvedTemplates, *ltc.LaunchTemplateSpecification)
		}
	}
	sort.Strings(r.InstanceTypes)
	return r
}

// InstanceTypesOf returns every instance type r can launch, reading the
// instance type of launch templates that have no override.
func (c *Client) InstanceTypesOf(ctx context.Context, r *Request) ([]string, error) {
	all := append([]string(nil), r.InstanceTypes...)
	for _, lt := range r.UnresolvedTemplates {
		t, err := c.templateInstanceType(ctx, lt)
		if err != nil {
			return nil, err
		}
		if t != "" {
			all = append(all, t)
		}
	}
	sort.Strings(all)
	return compactStrings(all), nil
}

// Families returns the instance families (the part of an instance type before
// the dot: "c5" of "c5.large") of the given instance types, sorted and unique.
func Families(instanceTypes []string) []string {
	var out []string
	for _, t := range instanceTypes {
		fam, _, _ := strings.Cut(t, ".")
		out = append(out, fam)
	}
	sort.Strings(out)
	return compactStrings(out)
}

func compactStrings(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// Tag sets tags on EC2 resources (instances or the fleet request itself).
func (c *Client) Tag(ctx context.Context, ids []string, tags map[string]string) error {
	if len(ids) == 0 || len(tags) == 0 {
		return nil
	}
	in := &ec2.CreateTagsInput{Resources: ids}
	for k, v := range tags {
		in.Tags = append(in.Tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	sort.Slice(in.Tags, func(i, j int) bool { return *in.Tags[i].Key < *in.Tags[j].Key })
	return c.call(ctx, fmt.Sprintf("tagging %s", strings.Join(ids, ",")), func(ctx context.Context) error {
		_, err := c.api.CreateTags(ctx, in)
		return err
	})
}

// Untag removes tag keys from EC2 resources.
func (c *Client) Untag(ctx context.Context, ids []string, keys ...string) error {
	if len(ids) == 0 || len(keys) == 0 {
		return nil
	}
	in := &ec2.DeleteTagsInput{Resources: ids}
	for _, k := range keys {
		in.Tags = append(in.Tags, types.Tag{Key: aws.String(k)})
	}
	return c.call(ctx, fmt.Sprintf("removing tags %s from %s", strings.Join(keys, ","), strings.Join(ids, ",")), func(ctx context.Context) error {
		_, err := c.api.DeleteTags(ctx, in)
		return err
	})
}

// Tags returns the tags of one EC2 resource (for example a spot fleet request)
// with DescribeTags. For a spot fleet request this is the only reading that
// includes tags set with CreateTags after its creation in moto 5.2.1 (see
// Request.Tags).
func (c *Client) Tags(ctx context.Context, id string) (map[string]string, error) {
	tags := map[string]string{}
	var token *string
	for {
		var out *ec2.DescribeTagsOutput
		err := c.call(ctx, fmt.Sprintf("describing tags of %s", id), func(ctx context.Context) error {
			var err error
			out, err = c.api.DescribeTags(ctx, &ec2.DescribeTagsInput{
				Filters:   []types.Filter{{Name: aws.String("resource-id"), Values: []string{id}}},
				NextToken: token,
			})
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, t := range out.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		token = out.NextToken
		if aws.ToString(token) == "" {
			return tags, nil
		}
	}
}

// Terminate terminates exactly the named instances and reports the outcome per
// instance: a nil error means EC2 accepted the termination. When EC2 refuses
// the batch as a whole, each instance is tried on its own so that one bad id
// does not keep the others alive.
//
// CheckTerminate asks first, without terminating anything.
func (c *Client) Terminate(ctx context.Context, ids []string) map[string]error {
	result := make(map[string]error, len(ids))
	if len(ids) == 0 {
		return result
	}
	if err := c.terminate(ctx, ids, result); err != nil && len(ids) > 1 {
		for _, id := range ids {
			_ = c.terminate(ctx, []string{id}, result)
		}
	}
	return result
}

func (c *Client) terminate(ctx context.Context, ids []string, result map[string]error) error {
	var out *ec2.TerminateInstancesOutput
	err := c.call(ctx, fmt.Sprintf("terminating instances %s", strings.Join(ids, ",")), func(ctx context.Context) error {
		var err error
		out, err = c.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
		return err
	})
	if err != nil {
		for _, id := range ids {
			result[id] = err
		}
		return err
	}
	accepted := map[string]bool{}
	for _, ch := range out.TerminatingInstances {
		accepted[aws.ToString(ch.InstanceId)] = true
	}
	for _, id := range ids {
		if accepted[id] {
			result[id] = nil
		} else {
			result[id] = fmt.Errorf("terminating instance %s: EC2 did not report it as terminating", id)
		}
	}
	return nil
}

// CheckTerminate asks EC2 whether the instances may be terminated, with
// TerminateInstances DryRun=true (DryRunOperation means yes), so that a
// missing permission is found before anything is drained.
func (c *Client) CheckTerminate(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	err := c.call(ctx, fmt.Sprintf("checking permission to terminate %s (dry run)", strings.Join(ids, ",")), func(ctx context.Context) error {
		_, err := c.api.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids, DryRun: aws.Bool(true)})
		return err
	})
	switch {
	case ErrorCode(err) == "DryRunOperation":
		return nil
	case err == nil:
		return fmt.Errorf("checking permission to terminate %s: EC2 answered a dry run without DryRunOperation", strings.Join(ids, ","))
	case IsAccessDenied(err):
		return fmt.Errorf("the IAM permission ec2:TerminateInstances is missing: %w", err)
	}
	return err
}
