package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Polling of a fleet request in state modifying: the first pause, doubling up
// to the cap.
const (
	modifyPollFirst = time.Second
	modifyPollMax   = 10 * time.Second
)

// CodeFleetNotInModifiableState is the error code of ModifySpotFleetRequest
// when the request cannot be modified: its type is not maintain ("Fleet
// Request: sfr-... is not a modifiable fleet request type."), or it is not in
// a state that accepts a change.
const CodeFleetNotInModifiableState = "FleetNotInModifiableState"

// ErrNotModifiable says the fleet request cannot be resized: its type is not
// maintain, or its state is neither active nor on its way to active
// (cancelled, failed ...).
var ErrNotModifiable = errors.New("spot fleet request cannot be modified")

// ErrStillModifying says the fleet request stayed in state modifying (or
// submitted) for longer than the client waits (WithModifyWait).
var ErrStillModifying = errors.New("spot fleet request is still being modified")

// ErrNoModifyPermission says the IAM policy of the caller does not allow
// ec2:ModifySpotFleetRequest.
var ErrNoModifyPermission = errors.New("the IAM permission ec2:ModifySpotFleetRequest is missing")

// WaitModifiable describes the fleet request and, while its state is
// modifying or submitted, polls it again with backoff (1s doubling to 10s)
// until it is active, ctx ends or the pauses add up to the modify wait
// (WithModifyWait; then the error matches ErrStillModifying). Any other state
// is an error that names the state and matches ErrNotModifiable. It returns
// the active request as last described.
func (c *Client) WaitModifiable(ctx context.Context, id string) (*Request, error) {
	pause, waited := modifyPollFirst, time.Duration(0)
	for {
		req, err := c.Describe(ctx, id)
		if err != nil {
			return nil, err
		}
		switch req.State {
		case types.BatchStateActive:
			return req, nil
		case types.BatchStateModifying, types.BatchStateSubmitted:
		default:
			return nil, fmt.Errorf("spot fleet request %s is %s, not active: %w", id, req.State, ErrNotModifiable)
		}
		if waited >= c.modifyWait {
			return nil, fmt.Errorf("spot fleet request %s is still %s after %s: %w", id, req.State, waited, ErrStillModifying)
		}
		if err := c.retry.Wait(ctx, pause); err != nil {
			return nil, fmt.Errorf("waiting for spot fleet request %s (%s) to become active: %w", id, req.State, err)
		}
		waited += pause
		pause = min(2*pause, modifyPollMax)
	}
}

// ChangeTargetCapacity changes the fleet's target capacity by delta: it waits
// until the request is modifiable, reads the current target again and sets it
// to current+delta (never below 0), with ExcessCapacityTerminationPolicy
// noTermination so that EC2 never picks instances to terminate itself. Reading
// just before the change keeps a long operation (a drain) from overwriting a
// change made meanwhile. It returns the target before and after; when nothing
// was changed (delta 0, or already 0 going down) no modify call is made. On
// error, from and to are 0 if the request could not be read, and to equals
// from if the modify failed (although EC2 may have applied a modify whose
// answer was lost to a network error).
func (c *Client) ChangeTargetCapacity(ctx context.Context, id string, delta int) (from, to int, err error) {
	from, to, err = c.resize(ctx, id, func(current int) int { return current + delta }, false)
	if err != nil {
		return from, to, fmt.Errorf("changing target capacity of spot fleet request %s by %+d: %w", id, delta, err)
	}
	return from, to, nil
}

// SetTargetCapacity sets the fleet's target capacity to n once the request is
// modifiable, and tells EC2 never to pick instances to terminate itself: the
// caller terminates exactly the instances it drained. Prefer
// ChangeTargetCapacity, which does not overwrite a change made by others.
func (c *Client) SetTargetCapacity(ctx context.Context, id string, n int) error {
	if _, _, err := c.resize(ctx, id, func(int) int { return n }, false); err != nil {
		return fmt.Errorf("setting target capacity of spot fleet request %s to %d: %w", id, n, err)
	}
	return nil
}

// CheckModifiable verifies that this client can resize the fleet: the request
// is of type maintain (EC2 modifies no other type), active (a modifying one
// is waited for), and the caller holds the IAM permission. ModifySpotFleetRequest
// has no DryRun parameter, so the permission is proven by a modify that keeps
// the target capacity as it is (noTermination); CheckModifiable then waits
// until the request is active again and returns it. A missing permission
// gives an error that matches ErrNoModifyPermission.
func (c *Client) CheckModifiable(ctx context.Context, id string) (*Request, error) {
	if _, _, err := c.resize(ctx, id, func(current int) int { return current }, true); err != nil {
		return nil, fmt.Errorf("checking that spot fleet request %s can be resized: %w", id, err)
	}
	req, err := c.WaitModifiable(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("checking that spot fleet request %s can be resized: %w", id, err)
	}
	return req, nil
}

// resize waits until the request is modifiable, computes the new target from
// the current one and sets it. always makes the modify call even when the
// target stays the same. When EC2 answers FleetNotInModifiableState because
// the request went into modifying between the describe and the modify (a
// change by someone else), it waits and reads again, a few times.
func (c *Client) resize(ctx context.Context, id string, target func(current int) int, always bool) (from, to int, err error) {
	const tries = 3
	for try := 1; ; try++ {
		req, err := c.WaitModifiable(ctx, id)
		if err != nil {
			return 0, 0, err
		}
		from = req.TargetCapacity
		if req.Type != types.FleetTypeMaintain {
			return from, from, fmt.Errorf("spot fleet request %s is of type %s: EC2 modifies only requests of type maintain, so its target capacity cannot be changed (create the fleet with type maintain): %w",
				id, req.Type, ErrNotModifiable)
		}
		to = max(target(from), 0)
		if to == from && !always {
			return from, to, nil
		}
		err = c.modify(ctx, id, to)
		if err == nil {
			return from, to, nil
		}
		if ErrorCode(err) == CodeFleetNotInModifiableState && try < tries {
			continue // it changed state under us: wait for it and read again
		}
		return from, from, err
	}
}

// modify sets the target capacity of the request, never letting EC2 choose
// instances to terminate.
func (c *Client) modify(ctx context.Context, id string, n int) error {
	err := c.call(ctx, fmt.Sprintf("modifying spot fleet request %s to target capacity %d", id, n), func(ctx context.Context) error {
		_, err := c.api.ModifySpotFleetRequest(ctx, &ec2.ModifySpotFleetRequestInput{
			SpotFleetRequestId:              aws.String(id),
			TargetCapacity:                  aws.Int32(int32(n)),
			ExcessCapacityTerminationPolicy: types.ExcessCapacityTerminationPolicyNoTermination,
		})
		return err
	})
	if err != nil && IsAccessDenied(err) {
		return fmt.Errorf("%w (EC2 answered %s; grant ec2:ModifySpotFleetRequest on the fleet request to the plugin's IAM role): %w",
			ErrNoModifyPermission, ErrorCode(err), err)
	}
	return err
}
