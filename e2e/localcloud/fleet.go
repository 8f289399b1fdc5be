package localcloud

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Fleet request types.
const (
	FleetTypeMaintain = "maintain"
	FleetTypeRequest  = "request"
)

// TagFleetType is the spot-fleet-request tag that carries the fleet's Type:
// moto does not store the Type, and the reconciler needs it for refill.
const TagFleetType = "localcloud:fleet-type"

// DefaultImageID is an AMI from moto's built-in image list.
const DefaultImageID = "ami-1e749f67"

// DefaultInstanceTypes are two instance families, i.e. a diversified fleet.
var DefaultInstanceTypes = []string{"c5.large", "m5.large"}

// SingleFamilyInstanceTypes are two sizes of one family: not diversified.
var SingleFamilyInstanceTypes = []string{"c5.large", "c5.xlarge"}

// FleetSpec describes a Spot Fleet request for CreateFleet.
type FleetSpec struct {
	// Name prefixes the launch template names; default "localcloud-fleet-<n>".
	Name string
	// Type is FleetTypeMaintain (default) or FleetTypeRequest.
	Type string
	// TargetCapacity is the number of instances (each has weight 1).
	TargetCapacity int32
	// AllocationStrategy: "diversified" (default), "capacityOptimized",
	// "lowestPrice", ... (moto spreads round-robin only for diversified and
	// puts everything on the first config otherwise).
	AllocationStrategy string
	// InstanceTypes get one launch template and one LaunchTemplateConfig each,
	// with exactly one override (moto honours only Overrides[0]). Default:
	// DefaultInstanceTypes, or SingleFamilyInstanceTypes if SingleFamily.
	InstanceTypes []string
	// SingleFamily selects SingleFamilyInstanceTypes when InstanceTypes is empty.
	SingleFamily bool
	// ImageID for the launch templates; default DefaultImageID.
	ImageID string
	// SubnetIDs are given round-robin to the overrides; default: moto's
	// default subnets, sorted by availability zone. moto must see a subnet in
	// the override: it matches a terminated instance to its launch spec by
	// type and subnet, and without that match it never lowers
	// FulfilledCapacity (a later raise of TargetCapacity then launches
	// nothing).
	SubnetIDs []string
	// Tags are added to the spot fleet request.
	Tags map[string]string
	// Client overrides Config.Client for the client agents the reconciler
	// starts for this fleet's instances (node class, meta ...).
	Client ClientOptions
	// CapacityLimit, when set (and >= 0), puts the fleet in capacity-shortage
	// mode from its creation on: see SetCapacityLimit. The instances moto
	// launches above it are terminated by the reconciler before any client
	// agent starts for them.
	CapacityLimit *int
}

var fleetSeq atomic.Int64

// CreateFleet creates one launch template per instance type and a Spot Fleet
// request with ExcessCapacityTerminationPolicy=noTermination, and returns the
// fleet request ID. moto launches the instances at once.
func (c *Cloud) CreateFleet(ctx context.Context, spec FleetSpec) (string, error) {
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("localcloud-fleet-%d", fleetSeq.Add(1))
	}
	if spec.Type == "" {
		spec.Type = FleetTypeMaintain
	}
	if spec.Type != FleetTypeMaintain && spec.Type != FleetTypeRequest {
		return "", fmt.Errorf("localcloud: create fleet %s: unknown type %q", spec.Name, spec.Type)
	}
	if spec.AllocationStrategy == "" {
		spec.AllocationStrategy = string(types.AllocationStrategyDiversified)
	}
	if len(spec.InstanceTypes) == 0 {
		spec.InstanceTypes = DefaultInstanceTypes
		if spec.SingleFamily {
			spec.InstanceTypes = SingleFamilyInstanceTypes
		}
	}
	if spec.ImageID == "" {
		spec.ImageID = DefaultImageID
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if len(spec.SubnetIDs) == 0 {
		subnets, err := c.defaultSubnets(ctx)
		if err != nil {
			return "", fmt.Errorf("localcloud: create fleet %s: %w", spec.Name, err)
		}
		spec.SubnetIDs = subnets
	}

	var configs []types.LaunchTemplateConfig
	for i, it := range spec.InstanceTypes {
		ltName := spec.Name + "-" + strings.ReplaceAll(it, ".", "-")
		out, err := c.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
			LaunchTemplateName: aws.String(ltName),
			LaunchTemplateData: &types.RequestLaunchTemplateData{
				ImageId:      aws.String(spec.ImageID),
				InstanceType: types.InstanceType(it),
			},
		})
		if err != nil {
			return "", fmt.Errorf("localcloud: create launch template %s: %w", ltName, err)
		}
		configs = append(configs, types.LaunchTemplateConfig{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecification{
				LaunchTemplateId: out.LaunchTemplate.LaunchTemplateId,
				Version:          aws.String("$Latest"),
			},
			Overrides: []types.LaunchTemplateOverrides{{
				InstanceType:     types.InstanceType(it),
				SubnetId:         aws.String(spec.SubnetIDs[i%len(spec.SubnetIDs)]),
				WeightedCapacity: aws.Float64(1),
			}},
		})
	}
	tags := []types.Tag{
		{Key: aws.String("Name"), Value: aws.String(spec.Name)},
		{Key: aws.String(TagFleetType), Value: aws.String(spec.Type)},
	}
	for k, v := range spec.Tags {
		tags = append(tags, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	limit, limited := capacityLimitOf(spec)
	if limited {
		// No reconciler pass may see the new instances before the limit.
		c.rec.mu.Lock()
		defer c.rec.mu.Unlock()
	}
	out, err := c.ec2.RequestSpotFleet(ctx, &ec2.RequestSpotFleetInput{
		SpotFleetRequestConfig: &types.SpotFleetRequestConfigData{
			IamFleetRole:                    aws.String("arn:aws:iam::" + DefaultAccountID + ":role/aws-ec2-spot-fleet-tagging-role"),
			TargetCapacity:                  aws.Int32(spec.TargetCapacity),
			Type:                            types.FleetType(spec.Type),
			AllocationStrategy:              types.AllocationStrategy(spec.AllocationStrategy),
			ExcessCapacityTerminationPolicy: types.ExcessCapacityTerminationPolicyNoTermination,
			LaunchTemplateConfigs:           configs,
			TagSpecifications: []types.TagSpecification{{
				ResourceType: types.ResourceTypeSpotFleetRequest,
				Tags:         tags,
			}},
		},
	})
	if err != nil {
		return "", fmt.Errorf("localcloud: request spot fleet %s: %w", spec.Name, err)
	}
	id := aws.ToString(out.SpotFleetRequestId)
	c.mu.Lock()
	c.fleetTypes[id] = spec.Type
	c.fleetClients[id] = spec.Client
	if limited {
		c.capLimits[id] = limit
	}
	c.mu.Unlock()
	c.logf("created %s fleet %s (%s, target %d, types %v)", spec.Type, id, spec.AllocationStrategy, spec.TargetCapacity, spec.InstanceTypes)
	if limited {
		c.logf("capacity limit of fleet %s set to %d running instances", id, limit)
		c.kickReconciler()
	}
	return id, nil
}

// defaultSubnets returns moto's default subnets of the region, sorted by
// availability zone.
func (c *Cloud) defaultSubnets(ctx context.Context) ([]string, error) {
	out, err := c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{})
	if err != nil {
		return nil, fmt.Errorf("describe subnets: %w", err)
	}
	type sn struct{ id, az string }
	var subnets []sn
	for _, s := range out.Subnets {
		if aws.ToBool(s.DefaultForAz) {
			subnets = append(subnets, sn{aws.ToString(s.SubnetId), aws.ToString(s.AvailabilityZone)})
		}
	}
	if len(subnets) == 0 {
		return nil, errors.New("moto has no default subnet")
	}
	sort.Slice(subnets, func(i, j int) bool { return subnets[i].az < subnets[j].az })
	ids := make([]string, len(subnets))
	for i, s := range subnets {
		ids[i] = s.id
	}
	return ids, nil
}

// Instance is an EC2 instance as the local cloud sees it.
type Instance struct {
	ID               string
	Type             string
	State            string // running, stopped, terminated, ...
	AvailabilityZone string
	LaunchTime       time.Time
	// PrivateIP and PrivateDNSName are what moto assigns in the instance's
	// subnet (172.31.x.y and ip-172-31-x-y.ec2.internal in us-east-1's
	// default subnets). Nothing listens there: they are names only.
	PrivateIP      string
	PrivateDNSName string
}

// fleetInstances returns the fleet's instances as moto lists them (it drops
// terminated ones from a fleet, and keeps stopped ones), with their current
// state.
func (c *Cloud) fleetInstances(ctx context.Context, fleetID string) ([]Instance, error) {
	ids, err := c.fleetInstanceIDs(ctx, fleetID)
	if err != nil {
		return nil, err
	}
	return c.describeInstances(ctx, ids)
}

// fleetInstanceIDs returns the IDs moto lists for the fleet
// (DescribeSpotFleetInstances: every instance but terminated ones).
func (c *Cloud) fleetInstanceIDs(ctx context.Context, fleetID string) ([]string, error) {
	var ids []string
	var token *string
	for {
		out, err := c.ec2.DescribeSpotFleetInstances(ctx, &ec2.DescribeSpotFleetInstancesInput{
			SpotFleetRequestId: aws.String(fleetID),
			NextToken:          token,
		})
		if err != nil {
			return nil, fmt.Errorf("describe instances of fleet %s: %w", fleetID, err)
		}
		for _, a := range out.ActiveInstances {
			ids = append(ids, aws.ToString(a.InstanceId))
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		token = out.NextToken
	}
	return ids, nil
}

// describeInstances reads the given instances (only ID lookups: moto rejects
// many filters).
func (c *Cloud) describeInstances(ctx context.Context, ids []string) ([]Instance, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var out []Instance
	p := ec2.NewDescribeInstancesPaginator(c.ec2, &ec2.DescribeInstancesInput{InstanceIds: ids})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe instances %v: %w", ids, err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				inst := Instance{
					ID:         aws.ToString(in.InstanceId),
					Type:       string(in.InstanceType),
					LaunchTime: aws.ToTime(in.LaunchTime),

					PrivateIP:      aws.ToString(in.PrivateIpAddress),
					PrivateDNSName: aws.ToString(in.PrivateDnsName),
				}
				if in.State != nil {
					inst.State = string(in.State.Name)
				}
				if in.Placement != nil {
					inst.AvailabilityZone = aws.ToString(in.Placement.AvailabilityZone)
				}
				out = append(out, inst)
			}
		}
	}
	return out, nil
}

// describeInstance reads one instance.
func (c *Cloud) describeInstance(ctx context.Context, id string) (Instance, error) {
	insts, err := c.describeInstances(ctx, []string{id})
	if err != nil {
		return Instance{}, err
	}
	if len(insts) != 1 {
		return Instance{}, fmt.Errorf("describe instance %s: %d results", id, len(insts))
	}
	return insts[0], nil
}

// RunningFleetInstances returns the fleet's instances in state running
// (stopped ones, which moto still lists in the fleet, are left out).
func (c *Cloud) RunningFleetInstances(ctx context.Context, fleetID string) ([]Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	all, err := c.fleetInstances(ctx, fleetID)
	if err != nil {
		return nil, fmt.Errorf("localcloud: %w", err)
	}
	var out []Instance
	for _, in := range all {
		if in.State == string(types.InstanceStateNameRunning) {
			out = append(out, in)
		}
	}
	return out, nil
}

// SetTargetCapacity calls ModifySpotFleetRequest with the new target and
// ExcessCapacityTerminationPolicy=noTermination (what the target plugin does),
// then wakes the reconciler.
func (c *Cloud) SetTargetCapacity(ctx context.Context, fleetID string, target int32) error {
	defer c.kickReconciler()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := c.ec2.ModifySpotFleetRequest(ctx, &ec2.ModifySpotFleetRequestInput{
		SpotFleetRequestId:              aws.String(fleetID),
		TargetCapacity:                  aws.Int32(target),
		ExcessCapacityTerminationPolicy: types.ExcessCapacityTerminationPolicyNoTermination,
	})
	if err != nil {
		return fmt.Errorf("localcloud: set target capacity of %s to %d: %w", fleetID, target, err)
	}
	return nil
}

// fleetInfo is what the reconciler needs to know about a fleet request.
type fleetInfo struct {
	id        string
	state     string
	fleetType string
	target    int32
	fulfilled float64
}

// describeFleets lists every spot fleet request in moto.
func (c *Cloud) describeFleets(ctx context.Context) ([]fleetInfo, error) {
	var out []fleetInfo
	var token *string
	for {
		page, err := c.ec2.DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{NextToken: token})
		if err != nil {
			return nil, fmt.Errorf("describe spot fleet requests: %w", err)
		}
		for _, f := range page.SpotFleetRequestConfigs {
			fi := fleetInfo{id: aws.ToString(f.SpotFleetRequestId), state: string(f.SpotFleetRequestState)}
			if cfg := f.SpotFleetRequestConfig; cfg != nil {
				fi.target = aws.ToInt32(cfg.TargetCapacity)
				fi.fulfilled = aws.ToFloat64(cfg.FulfilledCapacity)
				fi.fleetType = string(cfg.Type)
			}
			for _, t := range f.Tags {
				if aws.ToString(t.Key) == TagFleetType {
					fi.fleetType = aws.ToString(t.Value)
				}
			}
			out = append(out, fi)
		}
		if aws.ToString(page.NextToken) == "" {
			break
		}
		token = page.NextToken
	}
	c.mu.Lock()
	for i := range out {
		if t, ok := c.fleetTypes[out[i].id]; ok {
			out[i].fleetType = t
		}
		if out[i].fleetType == "" {
			out[i].fleetType = FleetTypeMaintain // the AWS default
		}
	}
	c.mu.Unlock()
	return out, nil
}

// errNotRunning is returned when an instance is not in state running.
var errNotRunning = errors.New("instance is not running")
