package fleet

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// describeBatch is how many instance ids go into one instance-id filter
// (EC2 accepts up to 200 values per filter).
const describeBatch = 200

// Instances returns the fleet's active instances with their state and tags,
// sorted by id. An instance the fleet lists as active but DescribeInstances
// does not return yet (just launched; EC2 is eventually consistent) is
// returned with Described false, State pending and the fleet's instance type,
// so that callers count it as capacity that is coming.
func (c *Client) Instances(ctx context.Context, id string) ([]Instance, error) {
	var active []types.ActiveInstance
	var token *string
	for {
		var out *ec2.DescribeSpotFleetInstancesOutput
		err := c.call(ctx, fmt.Sprintf("describing instances of spot fleet request %s", id), func(ctx context.Context) error {
			var err error
			out, err = c.api.DescribeSpotFleetInstances(ctx, &ec2.DescribeSpotFleetInstancesInput{SpotFleetRequestId: aws.String(id), NextToken: token})
			return err
		})
		if err != nil {
			return nil, err
		}
		active = append(active, out.ActiveInstances...)
		token = out.NextToken
		if aws.ToString(token) == "" {
			break
		}
	}
	if len(active) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(active))
	for _, a := range active {
		ids = append(ids, aws.ToString(a.InstanceId))
	}
	described, err := c.DescribeInstances(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("describing instances of spot fleet request %s: %w", id, err)
	}
	seen := make(map[string]bool, len(described))
	for _, in := range described {
		seen[in.ID] = true
	}
	for _, a := range active {
		iid := aws.ToString(a.InstanceId)
		if seen[iid] || iid == "" {
			continue
		}
		seen[iid] = true
		described = append(described, Instance{ID: iid, Type: aws.ToString(a.InstanceType),
			State: types.InstanceStateNamePending, Tags: map[string]string{}})
	}
	sort.Slice(described, func(i, j int) bool { return described[i].ID < described[j].ID })
	return described, nil
}

// DescribeInstances returns the named instances, sorted by id. It selects
// them with the instance-id filter, not InstanceIds: with InstanceIds EC2
// fails the whole call (InvalidInstanceID.NotFound) when one id is not
// listed, which happens for instances launched moments ago. Ids EC2 does not
// list (not yet, or no longer) are left out.
func (c *Client) DescribeInstances(ctx context.Context, ids []string) ([]Instance, error) {
	var out []Instance
	for start := 0; start < len(ids); start += describeBatch {
		batch := ids[start:min(start+describeBatch, len(ids))]
		var token *string
		for {
			var resp *ec2.DescribeInstancesOutput
			err := c.call(ctx, fmt.Sprintf("describing %d instances", len(batch)), func(ctx context.Context) error {
				var err error
				resp, err = c.api.DescribeInstances(ctx, &ec2.DescribeInstancesInput{
					Filters:   []types.Filter{{Name: aws.String("instance-id"), Values: batch}},
					NextToken: token,
				})
				return err
			})
			if err != nil {
				return nil, err
			}
			for _, res := range resp.Reservations {
				for _, in := range res.Instances {
					out = append(out, newInstance(in))
				}
			}
			token = resp.NextToken
			if aws.ToString(token) == "" {
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func newInstance(in types.Instance) Instance {
	i := Instance{ID: aws.ToString(in.InstanceId), Type: string(in.InstanceType), LaunchTime: aws.ToTime(in.LaunchTime),
		Tags: map[string]string{}, Described: true, PrivateIP: aws.ToString(in.PrivateIpAddress),
		PrivateDNS: aws.ToString(in.PrivateDnsName)}
	if in.Placement != nil {
		i.Zone = aws.ToString(in.Placement.AvailabilityZone)
	}
	if in.State != nil {
		i.State = in.State.Name
	}
	for _, t := range in.Tags {
		i.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return i
}
