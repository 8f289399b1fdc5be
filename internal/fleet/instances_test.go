package fleet_test

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
)

func TestInstancesCountsUndescribedInstancesAsPending(t *testing.T) {
	fake := ec2fake.New()
	fake.DescribeLag = 1 // EC2 does not list new instances at the first describe
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large", "m5.large"}})
	ids := fake.Running(id)
	c := fleet.NewClient(fake, fleet.WithRetry(noWait))
	ctx := context.Background()

	got, err := c.Instances(ctx, id)
	require.NoError(t, err, "an instance EC2 does not list yet must not fail the call")
	require.Len(t, got, 2)
	for i, in := range got {
		require.Equal(t, ids[i], in.ID)
		require.False(t, in.Described)
		require.Equal(t, types.InstanceStateNamePending, in.State)
		require.True(t, in.Running(), "counted as capacity that is coming")
		require.True(t, in.LaunchTime.IsZero())
		require.NotEmpty(t, in.Type, "the type comes from the fleet")
	}
	require.ElementsMatch(t, []string{"c5.large", "m5.large"}, []string{got[0].Type, got[1].Type})

	got, err = c.Instances(ctx, id)
	require.NoError(t, err)
	for _, in := range got {
		require.True(t, in.Described)
		require.Equal(t, types.InstanceStateNameRunning, in.State)
		require.False(t, in.LaunchTime.IsZero())
	}

	for _, call := range fake.Calls("DescribeInstances") {
		in := call.Input.(*ec2.DescribeInstancesInput)
		require.Empty(t, in.InstanceIds, "ids go into the instance-id filter, never InstanceIds")
		require.Len(t, in.Filters, 1)
		require.Equal(t, "instance-id", aws.ToString(in.Filters[0].Name))
		require.ElementsMatch(t, ids, in.Filters[0].Values)
	}
}

func TestInstancesMixesDescribedAndNew(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	old := fake.Running(id)[0]
	fake.SetInstanceTag(old, "role", "nomad")
	fake.DescribeLag = 1
	c := fleet.NewClient(fake, fleet.WithRetry(noWait))
	_, _, err := c.ChangeTargetCapacity(context.Background(), id, 1)
	require.NoError(t, err)

	got, err := c.Instances(context.Background(), id)
	require.NoError(t, err)
	require.Len(t, got, 2)
	byID := map[string]fleet.Instance{}
	for _, in := range got {
		byID[in.ID] = in
	}
	require.True(t, byID[old].Described)
	require.Equal(t, map[string]string{"role": "nomad"}, byID[old].Tags)
	for iid, in := range byID {
		if iid != old {
			require.False(t, in.Described)
			require.Empty(t, in.Tags)
		}
	}
}

func TestDescribeInstancesLeavesUnknownOut(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large"}})
	ids := fake.Running(id)
	got, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).DescribeInstances(context.Background(), []string{ids[1], "i-0000000000000dead", ids[0]})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, ids[0], got[0].ID, "sorted by id")
}

func TestDescribeInstancesBatchesOf200(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 450, InstanceTypes: []string{"c5.large"}})
	got, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).Instances(context.Background(), id)
	require.NoError(t, err)
	require.Len(t, got, 450)
	calls := fake.Calls("DescribeInstances")
	require.Len(t, calls, 3)
	require.Len(t, calls[0].Input.(*ec2.DescribeInstancesInput).Filters[0].Values, 200)
	require.Len(t, calls[2].Input.(*ec2.DescribeInstancesInput).Filters[0].Values, 50)
}

func TestInstanceTypesOfCachesLaunchTemplates(t *testing.T) {
	t.Run("numbered version: read once", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, TemplateTypes: []string{"c5.large", "m5.large"}, TemplateVersion: "1"})
		now := time.Unix(1_800_000_000, 0)
		c := fleet.NewClient(fake, fleet.WithRetry(noWait), fleet.WithClock(func() time.Time { return now }))
		for range 5 {
			req, err := c.Describe(context.Background(), id)
			require.NoError(t, err)
			got, err := c.InstanceTypesOf(context.Background(), req)
			require.NoError(t, err)
			require.Equal(t, []string{"c5.large", "m5.large"}, got)
			now = now.Add(24 * time.Hour)
		}
		require.Len(t, fake.Calls("DescribeLaunchTemplateVersions"), 2, "one call per template, ever")
	})
	for _, version := range []string{"$Latest", "$Default"} {
		t.Run(version+": read again after the TTL", func(t *testing.T) {
			fake := ec2fake.New()
			id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, TemplateTypes: []string{"c5.large"}, TemplateVersion: version})
			now := time.Unix(1_800_000_000, 0)
			c := fleet.NewClient(fake, fleet.WithRetry(noWait), fleet.WithClock(func() time.Time { return now }))
			types := func() []string {
				t.Helper()
				req, err := c.Describe(context.Background(), id)
				require.NoError(t, err)
				got, err := c.InstanceTypesOf(context.Background(), req)
				require.NoError(t, err)
				return got
			}
			require.Equal(t, []string{"c5.large"}, types())
			fake.SetTemplateType(fake.Templates(id)[0], "r5.large") // a new default version
			now = now.Add(fleet.TemplateTTL - time.Second)
			require.Equal(t, []string{"c5.large"}, types(), "still cached")
			require.Len(t, fake.Calls("DescribeLaunchTemplateVersions"), 1)
			now = now.Add(2 * time.Second)
			require.Equal(t, []string{"r5.large"}, types(), "read again after the TTL")
			require.Len(t, fake.Calls("DescribeLaunchTemplateVersions"), 2)
			in := fake.Calls("DescribeLaunchTemplateVersions")[1].Input.(*ec2.DescribeLaunchTemplateVersionsInput)
			require.Equal(t, []string{version}, in.Versions)
		})
	}
	t.Run("errors are not cached", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, TemplateTypes: []string{"c5.large"}})
		c := fleet.NewClient(fake, fleet.WithRetry(noWait))
		req, err := c.Describe(context.Background(), id)
		require.NoError(t, err)
		fake.FailNext("DescribeLaunchTemplateVersions", 1, ec2fake.APIError("UnauthorizedOperation"))
		_, err = c.InstanceTypesOf(context.Background(), req)
		require.ErrorContains(t, err, "describing version 1 of launch template lt-")
		got, err := c.InstanceTypesOf(context.Background(), req)
		require.NoError(t, err)
		require.Equal(t, []string{"c5.large"}, got)
	})
}
