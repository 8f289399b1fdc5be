package awsretry_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/awsretry"
)

// noWait retries at once and records the pauses asked for.
func noWait(attempts int, pauses *[]time.Duration) awsretry.Retry {
	return awsretry.Retry{Attempts: attempts, Base: 100 * time.Millisecond, Max: time.Second,
		Sleep: func(ctx context.Context, d time.Duration) error {
			if pauses != nil {
				*pauses = append(*pauses, d)
			}
			return ctx.Err()
		}}
}

func connReset() error {
	return &smithy.OperationError{ServiceID: "EC2", OperationName: "ModifySpotFleetRequest",
		Err: &smithyhttp.RequestSendError{Err: &url.Error{Op: "Post", URL: "https://ec2.us-east-1.amazonaws.com/",
			Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}}}
}

func failing(n int, err error, calls *int) func(context.Context) error {
	return func(context.Context) error {
		*calls++
		if *calls <= n {
			return err
		}
		return nil
	}
}

func TestDoRetriesTransientErrors(t *testing.T) {
	cases := []struct {
		name      string
		failures  int
		err       error
		wantErr   string
		wantCalls int
	}{
		{name: "throttling", failures: 2, err: &smithy.GenericAPIError{Code: "RequestLimitExceeded"}, wantCalls: 3},
		{name: "connection reset", failures: 3, err: connReset(), wantCalls: 4},
		{name: "attempts run out", failures: 10, err: connReset(), wantCalls: 4, wantErr: "modifying: still failing after 4 attempts: operation error EC2: ModifySpotFleetRequest"},
		{name: "client error at once", failures: 1, err: &smithy.GenericAPIError{Code: "UnauthorizedOperation", Message: "no"}, wantCalls: 1, wantErr: "modifying: api error UnauthorizedOperation: no"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			var pauses []time.Duration
			err := noWait(4, &pauses).Do(context.Background(), "modifying", failing(tc.failures, tc.err, &calls))
			require.Equal(t, tc.wantCalls, calls)
			require.Len(t, pauses, tc.wantCalls-1)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.Equal(t, awsretry.ErrorCode(tc.err), awsretry.ErrorCode(err), "the AWS error stays inspectable")
		})
	}
}

func TestDoStopsWhenTheCallersContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	// The error looks transient, but the caller gave up: no second try.
	err := noWait(5, nil).Do(ctx, "describing", func(context.Context) error {
		calls++
		cancel()
		return connReset()
	})
	require.Equal(t, 1, calls)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "describing: operation error EC2")
}

func TestDoStopsWhenTheCallersDeadlinePassesDuringThePause(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	calls := 0
	r := awsretry.Retry{Attempts: 5, Base: time.Hour, Max: time.Hour} // real timer
	err := r.Do(ctx, "describing", failing(10, connReset(), &calls))
	require.Equal(t, 1, calls)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "gave up waiting to retry")
}

func TestDoWithOwnClassifier(t *testing.T) {
	calls := 0
	r := noWait(3, nil)
	r.Retryable = func(err error) bool { return awsretry.ErrorCode(err) == "Busy" }
	err := r.Do(context.Background(), "x", failing(1, &smithy.GenericAPIError{Code: "Busy"}, &calls))
	require.NoError(t, err)
	require.Equal(t, 2, calls)
}

func TestBackoffIsFullJitterWithinCaps(t *testing.T) {
	r := awsretry.Retry{Base: 100 * time.Millisecond, Max: time.Second}
	for i := 0; i < 100; i++ {
		ceiling := min(r.Base<<min(i, 20), r.Max)
		for range 20 {
			d := r.Backoff(i)
			require.Greater(t, d, time.Duration(0))
			require.LessOrEqual(t, d, ceiling, "pause %d", i)
		}
	}
	require.Equal(t, time.Duration(0), awsretry.Retry{}.Backoff(3))
}

func TestWaitAndSleep(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, awsretry.Sleep(ctx, time.Hour), context.Canceled)
	require.NoError(t, awsretry.Sleep(context.Background(), time.Millisecond))

	var got time.Duration
	r := awsretry.Retry{Sleep: func(_ context.Context, d time.Duration) error { got = d; return nil }}
	require.NoError(t, r.Wait(context.Background(), 7*time.Second))
	require.Equal(t, 7*time.Second, got)
	require.False(t, errors.Is(r.Wait(context.Background(), time.Second), context.Canceled))
}
