package ec2fake_test

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/awsretry"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
)

var ctx = context.Background()

func describedIDs(t *testing.T, out *ec2.DescribeInstancesOutput) []string {
	t.Helper()
	var ids []string
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			ids = append(ids, aws.ToString(in.InstanceId))
		}
	}
	return ids
}

func modify(e *ec2fake.EC2, id string, n int32) error {
	_, err := e.ModifySpotFleetRequest(ctx, &ec2.ModifySpotFleetRequestInput{SpotFleetRequestId: aws.String(id),
		TargetCapacity: aws.Int32(n), ExcessCapacityTerminationPolicy: types.ExcessCapacityTerminationPolicyNoTermination})
	return err
}

func state(t *testing.T, e *ec2fake.EC2, id string) types.BatchState {
	t.Helper()
	out, err := e.DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{id}})
	require.NoError(t, err)
	return out.SpotFleetRequestConfigs[0].SpotFleetRequestState
}

func TestDescribeInstancesByFilterAndIDs(t *testing.T) {
	e := ec2fake.New()
	id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 3, InstanceTypes: []string{"c5.large", "m5.large"}})
	ids := e.Running(id)
	e.Kill(ids[2])

	out, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-id"), Values: []string{ids[0], ids[2], "i-unknown"}},
	}})
	require.NoError(t, err)
	require.Equal(t, []string{ids[0], ids[2]}, describedIDs(t, out), "unknown ids are left out, terminated ones listed")

	out, err = e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("instance-id"), Values: ids},
		{Name: aws.String("instance-state-name"), Values: []string{"running"}},
	}})
	require.NoError(t, err)
	require.Equal(t, ids[:2], describedIDs(t, out))

	out, err = e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{ids[1]}})
	require.NoError(t, err)
	require.Equal(t, []string{ids[1]}, describedIDs(t, out))

	_, err = e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{ids[1], "i-unknown"}})
	require.Equal(t, "InvalidInstanceID.NotFound", awsretry.ErrorCode(err), "one unknown id fails the whole call")

	_, err = e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("dns-name"), Values: []string{"x"}}}})
	require.Error(t, err)
}

func TestDescribeLagHidesNewInstances(t *testing.T) {
	e := ec2fake.New()
	e.DescribeLag = 2
	id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large"}})
	ids := e.Running(id)
	byFilter := &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-id"), Values: ids}}}

	// Call 1: by ids, the whole call fails.
	_, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	require.Equal(t, "InvalidInstanceID.NotFound", awsretry.ErrorCode(err))
	require.ErrorContains(t, err, "The instance ID '"+ids[0]+"' does not exist")
	// Call 2: by filter, they are left out.
	out, err := e.DescribeInstances(ctx, byFilter)
	require.NoError(t, err)
	require.Empty(t, describedIDs(t, out))
	// Call 3: EC2 caught up.
	out, err = e.DescribeInstances(ctx, byFilter)
	require.NoError(t, err)
	require.Equal(t, ids, describedIDs(t, out))

	// The fleet lists them from the start.
	fi, err := e.DescribeSpotFleetInstances(ctx, &ec2.DescribeSpotFleetInstancesInput{SpotFleetRequestId: aws.String(id)})
	require.NoError(t, err)
	require.Len(t, fi.ActiveInstances, 2)
	require.Len(t, e.Calls("DescribeInstances"), 3)
}

func TestModifyRefusals(t *testing.T) {
	e := ec2fake.New()
	request := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, Type: types.FleetTypeRequest})
	err := modify(e, request, 2)
	require.Equal(t, "FleetNotInModifiableState", awsretry.ErrorCode(err))
	require.ErrorContains(t, err, "is not a modifiable fleet request type")
	require.Equal(t, 1, e.TargetCapacity(request))

	cancelled := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, State: types.BatchStateCancelledRunning})
	require.Equal(t, "FleetNotInModifiableState", awsretry.ErrorCode(modify(e, cancelled, 2)))

	require.Equal(t, "InvalidSpotFleetRequestId.NotFound", awsretry.ErrorCode(modify(e, "sfr-nope", 2)))
}

func TestModifyingForAfterEachChange(t *testing.T) {
	e := ec2fake.New()
	e.ModifyingFor = 2
	id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	require.Equal(t, types.BatchStateActive, state(t, e, id))

	require.NoError(t, modify(e, id, 2))
	require.Len(t, e.Running(id), 2, "the change itself takes effect")
	err := modify(e, id, 3)
	require.Equal(t, "FleetNotInModifiableState", awsretry.ErrorCode(err), "no modify while modifying")
	require.ErrorContains(t, err, "(modifying)")

	require.Equal(t, types.BatchStateModifying, state(t, e, id))
	require.Equal(t, types.BatchStateModifying, state(t, e, id))
	require.Equal(t, types.BatchStateActive, state(t, e, id))
	require.NoError(t, modify(e, id, 3))
	require.Equal(t, 3, e.TargetCapacity(id))
}

func TestSetFleetStateIsSticky(t *testing.T) {
	e := ec2fake.New()
	e.ModifyingFor = 1
	id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	require.NoError(t, modify(e, id, 2))
	e.SetFleetState(id, types.BatchStateModifying)
	for range 3 {
		require.Equal(t, types.BatchStateModifying, state(t, e, id))
	}
}

func TestCapacityLimit(t *testing.T) {
	e := ec2fake.New()
	id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large", "m5.large"}})
	e.SetCapacity(id, 2)

	require.NoError(t, modify(e, id, 4))
	require.Equal(t, 4, e.TargetCapacity(id), "the target stays raised")
	require.Len(t, e.Running(id), 2, "launches beyond the capacity do not happen")

	e.Kill(e.Running(id)[0])
	_ = state(t, e, id) // any call: the maintain fleet refills within the capacity
	require.Len(t, e.Running(id), 2)

	e.SetCapacity(id, -1)
	_ = state(t, e, id)
	require.Len(t, e.Running(id), 4, "capacity came back: the fleet fills up to its target")

	e.Unavailable = true
	e.Kill(e.Running(id)[0])
	_ = state(t, e, id)
	require.Len(t, e.Running(id), 3, "Unavailable still stops every launch")
}

func TestNetworkErrorsAreShapedLikeTheSDKs(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		check func(t *testing.T, err error)
	}{
		{name: "connection reset", err: ec2fake.ConnReset(), check: func(t *testing.T, err error) {
			require.ErrorIs(t, err, syscall.ECONNRESET)
			var send *smithyhttp.RequestSendError
			require.ErrorAs(t, err, &send)
			require.ErrorContains(t, err, "connection reset by peer")
		}},
		{name: "connection refused", err: ec2fake.ConnRefused(), check: func(t *testing.T, err error) {
			require.ErrorIs(t, err, syscall.ECONNREFUSED)
		}},
		{name: "attempt timeout", err: ec2fake.NetTimeout(), check: func(t *testing.T, err error) {
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			require.True(t, ne.Timeout())
			require.ErrorIs(t, err, context.DeadlineExceeded, "as net/http's own timeout error does")
		}},
		{name: "unexpected EOF", err: ec2fake.UnexpectedEOF(), check: func(t *testing.T, err error) {
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			var de *smithy.DeserializationError
			require.ErrorAs(t, err, &de)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := ec2fake.New()
			id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
			e.FailNext("ModifySpotFleetRequest", 1, tc.err)

			err := modify(e, id, 2)

			var opErr *smithy.OperationError
			require.ErrorAs(t, err, &opErr)
			require.Equal(t, "ModifySpotFleetRequest", opErr.OperationName, "FailNext names the operation")
			require.Equal(t, "EC2", opErr.ServiceID)
			require.True(t, awsretry.IsNetwork(err))
			require.True(t, awsretry.IsRetryable(err))
			require.False(t, awsretry.IsCanceled(err))
			require.Empty(t, awsretry.ErrorCode(err))
			tc.check(t, err)

			require.NoError(t, modify(e, id, 2), "only the next call fails")
			require.Len(t, e.Calls("ModifySpotFleetRequest"), 2)
		})
	}
}

func TestLaunchTemplateVersions(t *testing.T) {
	e := ec2fake.New()
	id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, TemplateTypes: []string{"c5.large"}, TemplateVersion: "$Latest"})
	lt := e.Templates(id)
	require.Len(t, lt, 1)
	e.SetTemplateType(lt[0], "m5.large")

	typeOf := func(version string) (string, error) {
		out, err := e.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: aws.String(lt[0]), Versions: []string{version}})
		if err != nil {
			return "", err
		}
		return string(out.LaunchTemplateVersions[0].LaunchTemplateData.InstanceType), nil
	}
	for version, want := range map[string]string{"1": "c5.large", "2": "m5.large", "$Latest": "m5.large", "$Default": "m5.large"} {
		got, err := typeOf(version)
		require.NoError(t, err)
		require.Equal(t, want, got, version)
	}
	_, err := typeOf("3")
	require.Error(t, err)

	out, err := e.DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{})
	require.NoError(t, err)
	require.Len(t, out.SpotFleetRequestConfigs, 1, "no ids: every fleet")
	require.Equal(t, "$Latest", aws.ToString(out.SpotFleetRequestConfigs[0].SpotFleetRequestConfig.LaunchTemplateConfigs[0].LaunchTemplateSpecification.Version))
}

func TestAPIErrorKeepsWorking(t *testing.T) {
	e := ec2fake.New()
	id := e.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	e.FailNext("DescribeSpotFleetRequests", 1, ec2fake.APIError("RequestLimitExceeded"))
	_, err := e.DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{SpotFleetRequestIds: []string{id}})
	require.Equal(t, "RequestLimitExceeded", awsretry.ErrorCode(err))
	require.True(t, awsretry.IsThrottling(err))
}
