package plugin

import (
	"context"
	"sync"
	"sync/atomic"
)

// runner calls fn for i in [0, n) concurrently and returns when all calls
// have returned.
type runner func(ctx context.Context, n int, fn func(ctx context.Context, i int))

// limiter bounds the Nomad calls in flight across every sampler of the
// plugin, so a large pool or several queries never flood the servers.
type limiter struct {
	slots chan struct{}
}

func newLimiter(limit int) *limiter {
	return &limiter{slots: make(chan struct{}, max(1, limit))}
}

// run implements runner. It starts at most as many workers as the limit, so
// a 1,000-node pool costs a handful of goroutines, not a thousand.
func (l *limiter) run(ctx context.Context, n int, fn func(ctx context.Context, i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, cap(l.slots)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				select {
				case l.slots <- struct{}{}:
					fn(ctx, i)
					<-l.slots
				case <-ctx.Done():
					// fn sees the cancelled context and fails fast, so
					// every index still gets its (failed) result.
					fn(ctx, i)
				}
			}
		})
	}
	wg.Wait()
}
