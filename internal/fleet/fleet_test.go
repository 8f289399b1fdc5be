package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/ec2fake"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
)

// noWait retries at once, so tests do not sleep.
var noWait = fleet.Retry{Attempts: 4, Base: time.Millisecond, Max: time.Millisecond,
	Sleep: func(context.Context, time.Duration) error { return nil }}

func TestRetryOnTransientErrors(t *testing.T) {
	cases := []struct {
		name      string
		failures  int
		err       error
		wantErr   bool
		wantCalls int
	}{
		{name: "throttling is retried", failures: 2, err: ec2fake.APIError("RequestLimitExceeded"), wantCalls: 3},
		{name: "server fault is retried", failures: 1, err: ec2fake.APIError("InternalError"), wantCalls: 2},
		{name: "unavailable is retried", failures: 3, err: ec2fake.APIError("Unavailable"), wantCalls: 4},
		{name: "connection reset is retried", failures: 2, err: ec2fake.ConnReset(), wantCalls: 3},
		{name: "connection refused is retried", failures: 1, err: ec2fake.ConnRefused(), wantCalls: 2},
		{name: "attempt timeout is retried", failures: 3, err: ec2fake.NetTimeout(), wantCalls: 4},
		{name: "unexpected EOF mid-response is retried", failures: 1, err: ec2fake.UnexpectedEOF(), wantCalls: 2},
		{name: "retries end after the attempts", failures: 10, err: ec2fake.APIError("Throttling"), wantErr: true, wantCalls: 4},
		{name: "network retries end after the attempts", failures: 10, err: ec2fake.ConnReset(), wantErr: true, wantCalls: 4},
		{name: "client errors are not retried", failures: 1, err: ec2fake.APIError("UnauthorizedOperation"), wantErr: true, wantCalls: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := ec2fake.New()
			id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large", "m5.large"}})
			fake.FailNext("DescribeSpotFleetRequests", tc.failures, tc.err)
			c := fleet.NewClient(fake, fleet.WithRetry(noWait))

			req, err := c.Describe(context.Background(), id)

			require.Len(t, fake.Calls("DescribeSpotFleetRequests"), tc.wantCalls)
			if tc.wantErr {
				require.Error(t, err)
				require.Contains(t, err.Error(), "describing spot fleet request "+id)
				require.Equal(t, fleet.ErrorCode(tc.err), fleet.ErrorCode(err), "the AWS error stays inspectable")
				return
			}
			require.NoError(t, err)
			require.Equal(t, 1, req.TargetCapacity)
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	fake.FailNext("DescribeSpotFleetRequests", 100, ec2fake.APIError("Throttling"))
	ctx, cancel := context.WithCancel(context.Background())
	r := fleet.Retry{Attempts: 50, Base: time.Millisecond, Sleep: func(ctx context.Context, _ time.Duration) error {
		cancel()
		return ctx.Err()
	}}
	_, err := fleet.NewClient(fake, fleet.WithRetry(r)).Describe(ctx, id)
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, fake.Calls("DescribeSpotFleetRequests"), 1)
}

func TestDescribeReadsInstanceTypes(t *testing.T) {
	cases := []struct {
		name         string
		spec         ec2fake.Fleet
		wantTypes    []string
		wantFamilies []string
	}{
		{name: "launch specifications", spec: ec2fake.Fleet{InstanceTypes: []string{"m5.large", "c5.large", "c5.xlarge"}},
			wantTypes: []string{"c5.large", "c5.xlarge", "m5.large"}, wantFamilies: []string{"c5", "m5"}},
		{name: "launch templates without overrides", spec: ec2fake.Fleet{TemplateTypes: []string{"c5.large", "r5.large"}},
			wantTypes: []string{"c5.large", "r5.large"}, wantFamilies: []string{"c5", "r5"}},
		{name: "single family", spec: ec2fake.Fleet{InstanceTypes: []string{"c5.large", "c5.2xlarge"}},
			wantTypes: []string{"c5.2xlarge", "c5.large"}, wantFamilies: []string{"c5"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := ec2fake.New()
			id := fake.AddFleet(tc.spec)
			c := fleet.NewClient(fake, fleet.WithRetry(noWait))
			req, err := c.Describe(context.Background(), id)
			require.NoError(t, err)
			got, err := c.InstanceTypesOf(context.Background(), req)
			require.NoError(t, err)
			require.Equal(t, tc.wantTypes, got)
			require.Equal(t, tc.wantFamilies, fleet.Families(got))
		})
	}
}

func TestDescribeUnknownFleet(t *testing.T) {
	c := fleet.NewClient(ec2fake.New(), fleet.WithRetry(noWait))
	_, err := c.Describe(context.Background(), "sfr-missing")
	require.Error(t, err)
	require.True(t, fleet.IsNotFound(err), "got %v", err)
}

func TestSetTargetCapacityNeverLetsEC2ChooseVictims(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 3, InstanceTypes: []string{"c5.large", "m5.large"}})
	c := fleet.NewClient(fake, fleet.WithRetry(noWait))

	require.NoError(t, c.SetTargetCapacity(context.Background(), id, 1))

	require.Len(t, fake.Running(id), 3, "lowering the target must not terminate anything")
	calls := fake.Calls("ModifySpotFleetRequest")
	require.Len(t, calls, 1)
}

func TestTerminateReportsPerInstance(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 3, InstanceTypes: []string{"c5.large", "m5.large"}, Type: types.FleetTypeRequest})
	ids := fake.Running(id)
	c := fleet.NewClient(fake, fleet.WithRetry(noWait))

	// One unknown id makes EC2 refuse the whole batch; the others must still go.
	res := c.Terminate(context.Background(), []string{ids[0], "i-doesnotexist", ids[1]})

	require.NoError(t, res[ids[0]])
	require.NoError(t, res[ids[1]])
	require.Error(t, res["i-doesnotexist"])
	require.Equal(t, []string{ids[2]}, fake.Running(id))
}

func TestTagsRoundTrip(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	c := fleet.NewClient(fake, fleet.WithRetry(noWait))
	ctx := context.Background()

	require.NoError(t, c.Tag(ctx, []string{id}, map[string]string{"a": "1", "b": "2"}))
	require.NoError(t, c.Untag(ctx, []string{id}, "b"))
	tags, err := c.Tags(ctx, id)
	require.NoError(t, err)
	require.Equal(t, map[string]string{"a": "1"}, tags)
}

func TestErrorClassification(t *testing.T) {
	cases := []struct {
		name                                        string
		err                                         error
		throttle, server, network, notFound, denied bool
	}{
		{name: "throttling", err: ec2fake.APIError("RequestLimitExceeded"), throttle: true},
		{name: "internal", err: ec2fake.APIError("InternalError"), server: true},
		{name: "not found", err: ec2fake.APIError("InvalidSpotFleetRequestId.NotFound"), notFound: true},
		{name: "unauthorized", err: ec2fake.APIError("UnauthorizedOperation"), denied: true},
		{name: "connection reset", err: ec2fake.ConnReset(), network: true},
		{name: "attempt timeout", err: ec2fake.NetTimeout(), network: true},
		{name: "caller cancelled", err: fmt.Errorf("x: %w", context.Canceled)},
		{name: "plain error", err: errors.New("boom")},
		{name: "nil", err: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.throttle, fleet.IsThrottling(tc.err))
			require.Equal(t, tc.server, fleet.IsServerFault(tc.err))
			require.Equal(t, tc.notFound, fleet.IsNotFound(tc.err))
			require.Equal(t, tc.denied, fleet.IsAccessDenied(tc.err))
			require.Equal(t, tc.throttle || tc.server || tc.network, fleet.IsRetryable(tc.err))
		})
	}
}
