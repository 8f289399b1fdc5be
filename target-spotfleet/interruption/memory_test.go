package interruption

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// manualClock is a clock the test moves.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestEventMemoryHandsAnEventOverOnce(t *testing.T) {
	clock := &manualClock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	m := newEventMemory(clock.now)

	require.Equal(t, claimed, m.claim("ev-1"))
	require.Equal(t, beingHandled, m.claim("ev-1"), "a second copy while the first is handled")
	m.finish("ev-1", false) // Retry
	require.Equal(t, claimed, m.claim("ev-1"), "a retried event is handled again")
	m.finish("ev-1", true)
	require.Equal(t, alreadyDone, m.claim("ev-1"))

	clock.advance(59 * time.Minute)
	require.Equal(t, alreadyDone, m.claim("ev-1"), "remembered for an hour")
	clock.advance(time.Minute)
	require.Equal(t, claimed, m.claim("ev-1"), "forgotten after an hour")
}

func TestEventMemoryFirstRetry(t *testing.T) {
	clock := &manualClock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	m := newEventMemory(clock.now)
	require.True(t, m.firstRetry("ev-1"))
	require.False(t, m.firstRetry("ev-1"))
	require.True(t, m.firstRetry("ev-2"))
}

func TestRecentSetStaysBounded(t *testing.T) {
	clock := &manualClock{t: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	s := newRecentSet(time.Hour, 100)
	for i := range 1000 {
		s.add(fmt.Sprint(i), clock.now())
	}
	require.Equal(t, 100, s.size(), "the oldest ids are forgotten past the bound")
	require.False(t, s.has("0", clock.now()))
	require.True(t, s.has("999", clock.now()))

	clock.advance(2 * time.Hour)
	s.add("late", clock.now())
	require.Equal(t, 1, s.size(), "expired ids are pruned")
}
