package nomadnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"
)

// ErrDrainEnded says a drain stopped without completing: it was cancelled or
// replaced by someone else, or the node went down or away.
var ErrDrainEnded = errors.New("drain did not complete")

// IsTransient reports whether a Nomad API error may go away on its own: a 5xx
// answer (500 "No cluster leader" during a leader election), throttling, or
// a network error (connection refused or reset, timeout, cut-off response).
// A context that ended is not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// api.UnexpectedResponseError carries the HTTP status this way.
	var se interface{ StatusCode() int }
	if errors.As(err, &se) {
		return se.StatusCode() >= 500 || se.StatusCode() == http.StatusTooManyRequests
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// IsRefused reports whether Nomad refused a call for lack of rights (401 or
// 403: the caller's ACL token lacks a capability): retrying cannot help.
func IsRefused(err error) bool {
	var se interface{ StatusCode() int }
	return errors.As(err, &se) && (se.StatusCode() == http.StatusUnauthorized || se.StatusCode() == http.StatusForbidden)
}

// DrainedBy reports whether the drain d carries every key and value of marks,
// that is whether the caller that set those marks started it.
func DrainedBy(d *api.DrainMetadata, marks map[string]string) bool {
	if d == nil || len(marks) == 0 {
		return false
	}
	for k, v := range marks {
		if d.Meta[k] != v {
			return false
		}
	}
	return true
}

// Backoff is how a wait polls: Base doubles up to Max between reads.
type Backoff struct {
	Base, Max time.Duration
}

func (b Backoff) next(d time.Duration) time.Duration {
	if d <= 0 {
		return max(b.Base, time.Millisecond)
	}
	return min(2*d, max(b.Max, b.Base))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// WaitOptions tunes WaitDrained.
type WaitOptions struct {
	// Marks are the drain meta the caller started the drain with.
	Marks map[string]string
	// IgnoreSystemJobs leaves system job allocations out of the final check,
	// as the drain itself does.
	IgnoreSystemJobs bool
	// Poll is how often the node is read; zero means 1s doubling to 10s.
	Poll Backoff
	// OnTransient is told about each transient error the wait rides out.
	OnTransient func(error)
}

// WaitDrained waits until the caller's drain of node id has completed and
// the node runs no allocation any more (system jobs aside when ignored). It
// keeps waiting through transient API errors (a leader election, a reset
// connection) until ctx ends; it returns an error wrapping ErrDrainEnded when
// the drain was cancelled or replaced by someone else or the node went down.
func WaitDrained(ctx context.Context, a API, id string, opts WaitOptions) error {
	poll := opts.Poll
	if poll.Base <= 0 {
		poll = Backoff{Base: time.Second, Max: 10 * time.Second}
	}
	var pause time.Duration
	var lastErr error
	for {
		done, err := drainDone(ctx, a, id, opts)
		switch {
		case err == nil && done:
			return nil
		case err != nil && ctx.Err() != nil && lastErr != nil:
			return fmt.Errorf("waiting for the drain of Nomad node %s: %w (last error: %w)", id, ctx.Err(), lastErr)
		case err != nil && !IsTransient(err):
			return err
		case err != nil:
			lastErr = err
			if opts.OnTransient != nil {
				opts.OnTransient(err)
			}
		}
		pause = poll.next(pause)
		if serr := sleep(ctx, pause); serr != nil {
			if lastErr != nil {
				return fmt.Errorf("waiting for the drain of Nomad node %s: %w (last error: %w)", id, serr, lastErr)
			}
			return fmt.Errorf("waiting for the drain of Nomad node %s: %w", id, serr)
		}
	}
}

// drainDone reads the node once and says whether the drain is over and the
// node empty.
func drainDone(ctx context.Context, a API, id string, opts WaitOptions) (bool, error) {
	n, err := a.NodeInfo(ctx, id)
	if err != nil {
		return false, err
	}
	if n.Status == api.NodeStatusDown {
		return false, fmt.Errorf("draining Nomad node %s: the node is down: %w", id, ErrDrainEnded)
	}
	if n.DrainStrategy != nil {
		if !DrainedBy(n.LastDrain, opts.Marks) {
			return false, fmt.Errorf("draining Nomad node %s: another drain replaced ours: %w", id, ErrDrainEnded)
		}
		return false, nil
	}
	switch {
	case !DrainedBy(n.LastDrain, opts.Marks):
		return false, fmt.Errorf("draining Nomad node %s: its last drain is not ours (replaced by someone else): %w", id, ErrDrainEnded)
	case n.LastDrain.Status == api.DrainStatusCanceled:
		return false, fmt.Errorf("draining Nomad node %s: the drain was cancelled: %w", id, ErrDrainEnded)
	case n.LastDrain.Status != api.DrainStatusComplete:
		return false, nil
	}
	busy, err := RunningAllocations(ctx, a, id, opts.IgnoreSystemJobs)
	if err != nil {
		return false, err
	}
	return busy == 0, nil
}

// RunningAllocations counts the allocations on node id that are pending or
// running (system jobs left out when ignoreSystem is set).
func RunningAllocations(ctx context.Context, a API, id string, ignoreSystem bool) (int, error) {
	allocs, err := a.NodeAllocations(ctx, id)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, al := range allocs {
		if al.ClientStatus != api.AllocClientStatusPending && al.ClientStatus != api.AllocClientStatusRunning {
			continue
		}
		if ignoreSystem && al.Job != nil && al.Job.Type != nil && *al.Job.Type == api.JobTypeSystem {
			continue
		}
		n++
	}
	return n, nil
}
