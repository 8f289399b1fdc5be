// Package fleet owns every EC2 call the plugins make about a Spot Fleet request:
// describing the request and its instances, changing its target capacity,
// tagging and terminating instances. Callers decide; this package talks to EC2.
package fleet

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// EC2API lists the EC2 operations this project uses, so that tests can replace
// the SDK client with an in-memory fake (see internal/ec2fake).
type EC2API interface {
	DescribeSpotFleetRequests(ctx context.Context, in *ec2.DescribeSpotFleetRequestsInput, opts ...func(*ec2.Options)) (*ec2.DescribeSpotFleetRequestsOutput, error)
	DescribeSpotFleetInstances(ctx context.Context, in *ec2.DescribeSpotFleetInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeSpotFleetInstancesOutput, error)
	ModifySpotFleetRequest(ctx context.Context, in *ec2.ModifySpotFleetRequestInput, opts ...func(*ec2.Options)) (*ec2.ModifySpotFleetRequestOutput, error)
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, opts ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	CreateTags(ctx context.Context, in *ec2.CreateTagsInput, opts ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteTags(ctx context.Context, in *ec2.DeleteTagsInput, opts ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error)
	DescribeTags(ctx context.Context, in *ec2.DescribeTagsInput, opts ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error)
	DescribeLaunchTemplateVersions(ctx context.Context, in *ec2.DescribeLaunchTemplateVersionsInput, opts ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplateVersionsOutput, error)
}

var _ EC2API = (*ec2.Client)(nil)
