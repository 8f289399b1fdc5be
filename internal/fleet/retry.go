package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Retry says how often and how patiently a call is repeated when EC2 throttles
// it or fails on its side. Other errors are returned at once.
type Retry struct {
	// Attempts is the total number of tries, including the first.
	Attempts int
	// Base is the pause before the second try; it doubles each time.
	Base time.Duration
	// Max caps one pause.
	Max time.Duration
	// Sleep waits for d or until ctx ends; nil means a real timer. Tests set it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// DefaultRetry suits the EC2 API's request-rate limits.
var DefaultRetry = Retry{Attempts: 6, Base: 250 * time.Millisecond, Max: 8 * time.Second}

// Do runs fn until it succeeds, fails with an error that is not retryable, the
// attempts are used up or ctx ends. what names the call for the error message.
func (r Retry) Do(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	attempts := max(r.Attempts, 1)
	var err error
	for i := 0; i < attempts; i++ {
		if err = fn(ctx); err == nil {
			return nil
		}
		if !IsRetryable(err) || i == attempts-1 {
			break
		}
		if serr := r.sleep(ctx, r.backoff(i)); serr != nil {
			return fmt.Errorf("%s: %w (gave up waiting to retry: %w)", what, err, serr)
		}
	}
	if IsRetryable(err) && attempts > 1 {
		return fmt.Errorf("%s: still failing after %d attempts: %w", what, attempts, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// backoff is "full jitter": a random pause between 0 and Base*2^i, capped at Max,
// so that many callers throttled together do not retry together.
func (r Retry) backoff(i int) time.Duration {
	ceiling := r.Base << i
	if r.Max > 0 && (ceiling > r.Max || ceiling <= 0) {
		ceiling = r.Max
	}
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceiling))) + 1
}

func (r Retry) sleep(ctx context.Context, d time.Duration) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
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
