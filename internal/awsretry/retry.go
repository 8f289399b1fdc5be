// Package awsretry is the retry policy and the AWS error classification that
// the project's AWS clients (EC2 fleet, SQS interruption queue) share: which
// errors are worth another attempt (throttling, faults on AWS's side, network
// failures), how long to pause between attempts (exponential backoff with full
// jitter), and when to stop (attempts used up, or the caller's context ended).
package awsretry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Retry says how often and how patiently a call is repeated when AWS
// throttles it, fails on its side or the network fails. Other errors are
// returned at once.
type Retry struct {
	// Attempts is the total number of tries, including the first.
	Attempts int
	// Base is the ceiling of the pause before the second try; it doubles
	// each time.
	Base time.Duration
	// Max caps one pause.
	Max time.Duration
	// Sleep waits for d or until ctx ends; nil means a real timer. Tests set
	// it to avoid waiting.
	Sleep func(ctx context.Context, d time.Duration) error
	// Retryable decides which errors are retried; nil means IsRetryable.
	Retryable func(error) bool
}

// DefaultRetry suits the EC2 and SQS API request-rate limits.
var DefaultRetry = Retry{Attempts: 6, Base: 250 * time.Millisecond, Max: 8 * time.Second}

// Do runs fn until it succeeds, fails with an error that is not retryable, the
// attempts are used up or ctx ends. what names the call for the error
// message; the returned error wraps the last error of fn, so that ErrorCode
// and errors.Is/As still see it. Once ctx has ended nothing is retried, even
// if the last error looks transient, and the error also matches ctx.Err().
func (r Retry) Do(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	attempts := max(r.Attempts, 1)
	retryable := r.Retryable
	if retryable == nil {
		retryable = IsRetryable
	}
	var err error
	for i := 0; i < attempts; i++ {
		if err = fn(ctx); err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil {
			if errors.Is(err, cerr) {
				return fmt.Errorf("%s: %w", what, err)
			}
			return fmt.Errorf("%s: %w (stopped: %w)", what, err, cerr)
		}
		if !retryable(err) || i == attempts-1 {
			break
		}
		if serr := r.Wait(ctx, r.Backoff(i)); serr != nil {
			return fmt.Errorf("%s: %w (gave up waiting to retry: %w)", what, err, serr)
		}
	}
	if retryable(err) && attempts > 1 {
		return fmt.Errorf("%s: still failing after %d attempts: %w", what, attempts, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Backoff returns the pause before retry i+1 (i counts from 0): "full
// jitter", a random pause between 0 and Base*2^i, capped at Max, so that many
// callers throttled together do not retry together.
func (r Retry) Backoff(i int) time.Duration {
	ceiling := r.Base
	if i > 0 {
		if i >= 62 {
			ceiling = -1 // overflow: use Max
		} else {
			ceiling = r.Base << i
		}
	}
	if r.Max > 0 && (ceiling > r.Max || ceiling <= 0) {
		ceiling = r.Max
	}
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceiling))) + 1
}

// Wait pauses for d or until ctx ends (then it returns ctx.Err()), with the
// policy's Sleep when it has one. Polling loops use it so that tests that
// replace Sleep do not wait either.
func (r Retry) Wait(ctx context.Context, d time.Duration) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	return Sleep(ctx, d)
}

// Sleep pauses for d on a real timer, or until ctx ends (then it returns
// ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
