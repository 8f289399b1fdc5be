package fleet_test

import (
	"context"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
)

// startMoto runs moto_server on a free loopback port for the test and
// returns an EC2 client for it. moto_server is required (as for make test):
// the test fails when it is not on PATH.
func startMoto(t *testing.T) *ec2.Client {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Fatalf("moto_server not on PATH (install it with: pip install 'moto[server]'): %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())

	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/")
		if err == nil {
			_ = resp.Body.Close()
			break
		}
		require.True(t, time.Now().Before(deadline), "moto_server did not answer on %s: %v", url, err)
		time.Sleep(100 * time.Millisecond)
	}
	return ec2.New(ec2.Options{Region: "us-east-1", BaseEndpoint: aws.String(url),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")})
}

// TestAgainstMoto runs the client against moto 5.2.1, the EC2 of the e2e
// tests and the demo, and pins the moto behaviour the client relies on.
func TestAgainstMoto(t *testing.T) {
	api := startMoto(t)
	ctx := context.Background()
	lt, err := api.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("fleet-test-c5"),
		LaunchTemplateData: &types.RequestLaunchTemplateData{ImageId: aws.String("ami-1e749f67"), InstanceType: types.InstanceTypeC5Large},
	})
	require.NoError(t, err)
	out, err := api.RequestSpotFleet(ctx, &ec2.RequestSpotFleetInput{SpotFleetRequestConfig: &types.SpotFleetRequestConfigData{
		IamFleetRole:       aws.String("arn:aws:iam::123456789012:role/fleet"),
		TargetCapacity:     aws.Int32(2),
		Type:               types.FleetTypeMaintain,
		AllocationStrategy: types.AllocationStrategyDiversified,
		LaunchTemplateConfigs: []types.LaunchTemplateConfig{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecification{LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId, Version: aws.String("$Latest")},
			Overrides:                   []types.LaunchTemplateOverrides{{InstanceType: types.InstanceTypeC5Large, WeightedCapacity: aws.Float64(1)}},
		}},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSpotFleetRequest,
			Tags: []types.Tag{{Key: aws.String("created"), Value: aws.String("at-creation")}}}},
	}})
	require.NoError(t, err)
	id := aws.ToString(out.SpotFleetRequestId)
	c := fleet.NewClient(api, fleet.WithRetry(noWait))

	req, err := c.Describe(ctx, id)
	require.NoError(t, err)
	require.Equal(t, types.BatchStateActive, req.State)
	require.Equal(t, types.FleetTypeMaintain, req.Type, "moto reports no Type; EC2's default is maintain")
	require.Equal(t, 2, req.TargetCapacity)
	typesOf, err := c.InstanceTypesOf(ctx, req)
	require.NoError(t, err)
	require.Equal(t, []string{"c5.large"}, typesOf)

	// Tags: moto keeps the creation-time tags (reported by
	// DescribeSpotFleetRequests only) apart from CreateTags (reported by
	// DescribeTags only). So the plugin reads the last-event tag with DescribeTags.
	require.NoError(t, c.Tag(ctx, []string{id}, map[string]string{"later": "by-create-tags"}))
	tags, err := c.Tags(ctx, id)
	require.NoError(t, err)
	require.Equal(t, "by-create-tags", tags["later"])
	raw, err := api.DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{id}})
	require.NoError(t, err)
	described := map[string]string{}
	for _, tg := range raw.SpotFleetRequestConfigs[0].Tags {
		described[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	require.Equal(t, map[string]string{"created": "at-creation"}, described, "moto 5.2.1 does not report CreateTags tags here")

	instances, err := c.Instances(ctx, id)
	require.NoError(t, err)
	require.Len(t, instances, 2)
	for _, in := range instances {
		require.True(t, in.Described)
		require.Equal(t, types.InstanceStateNameRunning, in.State)
	}
	// The instance-id filter leaves an unknown id out instead of failing.
	got, err := c.DescribeInstances(ctx, []string{instances[0].ID, "i-0123456789abcdef0"})
	require.NoError(t, err)
	require.Len(t, got, 1)

	checked, err := c.CheckModifiable(ctx, id)
	require.NoError(t, err)
	require.Equal(t, 2, checked.TargetCapacity)

	from, to, err := c.ChangeTargetCapacity(ctx, id, 1)
	require.NoError(t, err)
	require.Equal(t, []int{2, 3}, []int{from, to})
	instances, err = c.Instances(ctx, id)
	require.NoError(t, err)
	require.Len(t, instances, 3)
}
