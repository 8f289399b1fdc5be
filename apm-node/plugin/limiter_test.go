package plugin

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestLimiterBoundsCallsInFlight(t *testing.T) {
	cases := []struct {
		name   string
		limit  int
		runs   int // concurrent run calls sharing the limiter, like several samplers
		n      int
		cancel bool
	}{
		{name: "one sample", limit: 4, runs: 1, n: 100},
		{name: "several samplers share the bound", limit: 4, runs: 3, n: 50},
		{name: "fewer calls than the limit", limit: 32, runs: 1, n: 3},
		{name: "a cancelled sample still visits every index", limit: 2, runs: 1, n: 20, cancel: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLimiter(tc.limit)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			var inFlight, peak atomic.Int64
			var calls atomic.Int64

			var wg sync.WaitGroup
			for range tc.runs {
				wg.Go(func() {
					l.run(ctx, tc.n, func(ctx context.Context, i int) {
						calls.Add(1)
						now := inFlight.Add(1)
						for {
							p := peak.Load()
							if now <= p || peak.CompareAndSwap(p, now) {
								break
							}
						}
						if ctx.Err() == nil {
							time.Sleep(time.Millisecond)
						}
						inFlight.Add(-1)
					})
				})
			}
			wg.Wait()

			assert.Equal(t, int64(tc.runs*tc.n), calls.Load(), "every index is visited once")
			if !tc.cancel {
				assert.LessOrEqual(t, peak.Load(), int64(tc.limit))
			}
		})
	}
}
