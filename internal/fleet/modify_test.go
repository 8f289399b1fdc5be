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

// pauses is a Retry that does not wait but records the pauses asked for.
type pauses struct{ got []time.Duration }

func (p *pauses) retry() fleet.Retry {
	return fleet.Retry{Attempts: 4, Base: time.Millisecond, Max: time.Millisecond,
		Sleep: func(ctx context.Context, d time.Duration) error {
			p.got = append(p.got, d)
			return ctx.Err()
		}}
}

func modifyInputs(t *testing.T, fake *ec2fake.EC2) []*ec2.ModifySpotFleetRequestInput {
	t.Helper()
	var out []*ec2.ModifySpotFleetRequestInput
	for _, c := range fake.Calls("ModifySpotFleetRequest") {
		out = append(out, c.Input.(*ec2.ModifySpotFleetRequestInput))
	}
	return out
}

func requireNoTermination(t *testing.T, fake *ec2fake.EC2) {
	t.Helper()
	for _, in := range modifyInputs(t, fake) {
		require.Equal(t, types.ExcessCapacityTerminationPolicyNoTermination, in.ExcessCapacityTerminationPolicy)
	}
}

func TestWaitModifiable(t *testing.T) {
	t.Run("active at once", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large"}})
		var p pauses
		req, err := fleet.NewClient(fake, fleet.WithRetry(p.retry())).WaitModifiable(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, types.BatchStateActive, req.State)
		require.Equal(t, 2, req.TargetCapacity)
		require.Empty(t, p.got)
		require.Len(t, fake.Calls("DescribeSpotFleetRequests"), 1)
	})
	t.Run("modifying, then active: polls with backoff", func(t *testing.T) {
		fake := ec2fake.New()
		fake.ModifyingFor = 5
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
		var p pauses
		c := fleet.NewClient(fake, fleet.WithRetry(p.retry()))
		require.NoError(t, c.SetTargetCapacity(context.Background(), id, 2))
		p.got = nil

		req, err := c.WaitModifiable(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, types.BatchStateActive, req.State)
		require.Equal(t, 2, req.TargetCapacity)
		require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second}, p.got)
	})
	t.Run("other states are errors that name them", func(t *testing.T) {
		for _, st := range []types.BatchState{types.BatchStateCancelledRunning, types.BatchStateCancelledTerminatingInstances, types.BatchStateFailed} {
			fake := ec2fake.New()
			id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, State: st})
			_, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).WaitModifiable(context.Background(), id)
			require.ErrorIs(t, err, fleet.ErrNotModifiable)
			require.ErrorContains(t, err, "is "+string(st)+", not active")
		}
	})
	t.Run("submitted is waited for", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, State: types.BatchStateSubmitted})
		calls := 0
		r := fleet.Retry{Attempts: 1, Sleep: func(context.Context, time.Duration) error {
			if calls++; calls == 2 {
				fake.SetFleetState(id, types.BatchStateActive)
			}
			return nil
		}}
		_, err := fleet.NewClient(fake, fleet.WithRetry(r)).WaitModifiable(context.Background(), id)
		require.NoError(t, err)
		require.Len(t, fake.Calls("DescribeSpotFleetRequests"), 3)
	})
	t.Run("stuck in modifying: gives up after the modify wait", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, State: types.BatchStateModifying})
		var p pauses
		_, err := fleet.NewClient(fake, fleet.WithRetry(p.retry()), fleet.WithModifyWait(30*time.Second)).WaitModifiable(context.Background(), id)
		require.ErrorIs(t, err, fleet.ErrStillModifying)
		require.ErrorContains(t, err, "still modifying after 35s")
		require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}, p.got)
	})
	t.Run("the caller's context ends the wait", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, State: types.BatchStateModifying})
		ctx, cancel := context.WithCancel(context.Background())
		r := fleet.Retry{Attempts: 1, Sleep: func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() }}
		_, err := fleet.NewClient(fake, fleet.WithRetry(r)).WaitModifiable(ctx, id)
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorContains(t, err, "waiting for spot fleet request "+id+" (modifying) to become active")
	})
}

func TestChangeTargetCapacity(t *testing.T) {
	cases := []struct {
		name            string
		from, delta     int
		wantTo          int
		wantModifyCalls int
	}{
		{name: "up", from: 2, delta: 3, wantTo: 5, wantModifyCalls: 1},
		{name: "down", from: 4, delta: -1, wantTo: 3, wantModifyCalls: 1},
		{name: "never below zero", from: 2, delta: -5, wantTo: 0, wantModifyCalls: 1},
		{name: "zero delta makes no call", from: 2, delta: 0, wantTo: 2},
		{name: "already zero going down makes no call", from: 0, delta: -1, wantTo: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := ec2fake.New()
			id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: tc.from, InstanceTypes: []string{"c5.large", "m5.large"}})
			from, to, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).ChangeTargetCapacity(context.Background(), id, tc.delta)
			require.NoError(t, err)
			require.Equal(t, tc.from, from)
			require.Equal(t, tc.wantTo, to)
			require.Equal(t, tc.wantTo, fake.TargetCapacity(id))
			require.Len(t, fake.Calls("ModifySpotFleetRequest"), tc.wantModifyCalls)
			require.Len(t, fake.Running(id), max(tc.from, tc.wantTo), "noTermination: lowering terminates nothing")
			requireNoTermination(t, fake)
		})
	}
}

func TestChangeTargetCapacityKeepsAChangeMadeMeanwhile(t *testing.T) {
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 3, InstanceTypes: []string{"c5.large", "m5.large"}})
	c := fleet.NewClient(fake, fleet.WithRetry(noWait))
	ctx := context.Background()
	req, err := c.Describe(ctx, id) // read before a long drain
	require.NoError(t, err)

	// Meanwhile someone else raises the target.
	_, err = fake.ModifySpotFleetRequest(ctx, &ec2.ModifySpotFleetRequestInput{SpotFleetRequestId: aws.String(id), TargetCapacity: aws.Int32(5)})
	require.NoError(t, err)

	from, to, err := c.ChangeTargetCapacity(ctx, id, -1)
	require.NoError(t, err)
	require.Equal(t, 3, req.TargetCapacity)
	require.Equal(t, 5, from, "the target is read again just before the change")
	require.Equal(t, 4, to)
	require.Equal(t, 4, fake.TargetCapacity(id))
}

func TestChangeTargetCapacityWaitsOutModifying(t *testing.T) {
	fake := ec2fake.New()
	fake.ModifyingFor = 2
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	var p pauses
	c := fleet.NewClient(fake, fleet.WithRetry(p.retry()))
	ctx := context.Background()

	_, _, err := c.ChangeTargetCapacity(ctx, id, 1)
	require.NoError(t, err)
	// The fleet is now modifying for two describes: the next change waits.
	from, to, err := c.ChangeTargetCapacity(ctx, id, 1)
	require.NoError(t, err)
	require.Equal(t, []int{2, 3}, []int{from, to})
	require.Len(t, p.got, 2)
	require.Len(t, fake.Calls("ModifySpotFleetRequest"), 2, "no modify was sent while it was modifying")
}

func TestChangeTargetCapacityRereadsWhenTheFleetTurnedModifying(t *testing.T) {
	// Between our describe and our modify, another change put the fleet into
	// modifying: EC2 refuses ours; the client waits, reads again and retries.
	fake := ec2fake.New()
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large"}})
	fake.FailNext("ModifySpotFleetRequest", 1, ec2fake.APIError(fleet.CodeFleetNotInModifiableState))
	from, to, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).ChangeTargetCapacity(context.Background(), id, 1)
	require.NoError(t, err)
	require.Equal(t, []int{2, 3}, []int{from, to})
	require.Len(t, fake.Calls("ModifySpotFleetRequest"), 2)
	require.Len(t, fake.Calls("DescribeSpotFleetRequests"), 2)
}

func TestChangeTargetCapacityRetriesNetworkErrors(t *testing.T) {
	for name, netErr := range map[string]func() error{
		"connection reset":   ec2fake.ConnReset,
		"connection refused": ec2fake.ConnRefused,
		"attempt timeout":    ec2fake.NetTimeout,
		"unexpected EOF":     ec2fake.UnexpectedEOF,
	} {
		t.Run(name, func(t *testing.T) {
			fake := ec2fake.New()
			id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large"}})
			fake.FailNext("ModifySpotFleetRequest", 2, netErr())
			_, to, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).ChangeTargetCapacity(context.Background(), id, 1)
			require.NoError(t, err)
			require.Equal(t, 3, to)
			require.Len(t, fake.Calls("ModifySpotFleetRequest"), 3)
		})
	}
}

func TestChangeTargetCapacityFailures(t *testing.T) {
	t.Run("request fleet", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large"}, Type: types.FleetTypeRequest})
		from, to, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).ChangeTargetCapacity(context.Background(), id, 1)
		require.ErrorIs(t, err, fleet.ErrNotModifiable)
		require.ErrorContains(t, err, "is of type request: EC2 modifies only requests of type maintain")
		require.Equal(t, []int{2, 2}, []int{from, to})
		require.Empty(t, fake.Calls("ModifySpotFleetRequest"))
	})
	t.Run("attempts used up", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 2, InstanceTypes: []string{"c5.large"}})
		fake.FailNext("ModifySpotFleetRequest", 10, ec2fake.ConnReset())
		from, to, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).ChangeTargetCapacity(context.Background(), id, 1)
		require.ErrorContains(t, err, "changing target capacity of spot fleet request "+id+" by +1: modifying spot fleet request "+id+" to target capacity 3: still failing after 4 attempts")
		require.True(t, fleet.IsRetryable(err), "the caller may try again later")
		require.Equal(t, []int{2, 2}, []int{from, to})
	})
	t.Run("unknown fleet", func(t *testing.T) {
		_, _, err := fleet.NewClient(ec2fake.New(), fleet.WithRetry(noWait)).ChangeTargetCapacity(context.Background(), "sfr-nope", 1)
		require.True(t, fleet.IsNotFound(err))
	})
}

func TestSetTargetCapacityWaitsUntilModifiable(t *testing.T) {
	fake := ec2fake.New()
	fake.ModifyingFor = 1
	id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
	var p pauses
	c := fleet.NewClient(fake, fleet.WithRetry(p.retry()))
	require.NoError(t, c.SetTargetCapacity(context.Background(), id, 3))
	require.NoError(t, c.SetTargetCapacity(context.Background(), id, 2))
	require.Equal(t, 2, fake.TargetCapacity(id))
	require.Len(t, p.got, 1, "the second change waited once")
	require.NoError(t, c.SetTargetCapacity(context.Background(), id, 2))
	require.Len(t, fake.Calls("ModifySpotFleetRequest"), 2, "the same target again needs no call")
	requireNoTermination(t, fake)
}

func TestCheckModifiable(t *testing.T) {
	t.Run("maintain fleet with permission", func(t *testing.T) {
		fake := ec2fake.New()
		fake.ModifyingFor = 1
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 3, InstanceTypes: []string{"c5.large", "m5.large"}})
		req, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).CheckModifiable(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, types.BatchStateActive, req.State, "it waits until the no-op change is done")
		require.Equal(t, 3, req.TargetCapacity)
		ins := modifyInputs(t, fake)
		require.Len(t, ins, 1)
		require.EqualValues(t, 3, aws.ToInt32(ins[0].TargetCapacity), "the permission check changes nothing")
		requireNoTermination(t, fake)
		require.Len(t, fake.Running(id), 3)
	})
	t.Run("request fleet", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, Type: types.FleetTypeRequest})
		_, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).CheckModifiable(context.Background(), id)
		require.ErrorIs(t, err, fleet.ErrNotModifiable)
		require.ErrorContains(t, err, "checking that spot fleet request "+id+" can be resized: spot fleet request "+id+
			" is of type request: EC2 modifies only requests of type maintain")
		require.Empty(t, fake.Calls("ModifySpotFleetRequest"))
	})
	t.Run("missing IAM permission", func(t *testing.T) {
		for _, code := range []string{"UnauthorizedOperation", "AccessDenied"} {
			fake := ec2fake.New()
			id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
			fake.FailNext("ModifySpotFleetRequest", 1, ec2fake.APIError(code))
			_, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).CheckModifiable(context.Background(), id)
			require.ErrorIs(t, err, fleet.ErrNoModifyPermission)
			require.ErrorContains(t, err, "the IAM permission ec2:ModifySpotFleetRequest is missing (EC2 answered "+code)
			require.Equal(t, code, fleet.ErrorCode(err))
			require.True(t, fleet.IsAccessDenied(err))
			require.Len(t, fake.Calls("ModifySpotFleetRequest"), 1, "not retried")
		}
	})
	t.Run("cancelled fleet", func(t *testing.T) {
		fake := ec2fake.New()
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}, State: types.BatchStateCancelledRunning})
		_, err := fleet.NewClient(fake, fleet.WithRetry(noWait)).CheckModifiable(context.Background(), id)
		require.ErrorIs(t, err, fleet.ErrNotModifiable)
		require.ErrorContains(t, err, "cancelled_running")
	})
	t.Run("modifying fleet is waited for first", func(t *testing.T) {
		fake := ec2fake.New()
		fake.ModifyingFor = 2
		id := fake.AddFleet(ec2fake.Fleet{TargetCapacity: 1, InstanceTypes: []string{"c5.large"}})
		c := fleet.NewClient(fake, fleet.WithRetry(noWait))
		require.NoError(t, c.SetTargetCapacity(context.Background(), id, 2))
		req, err := c.CheckModifiable(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, 2, req.TargetCapacity)
		require.Len(t, fake.Calls("ModifySpotFleetRequest"), 2)
	})
}
