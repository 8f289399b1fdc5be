package interruption

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/hashicorp/go-hclog"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/awsretry"
)

// SQSAPI is the part of the SQS client the watcher uses; *sqs.Client
// implements it.
type SQSAPI interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
	ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, optFns ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error)
}

var _ SQSAPI = (*sqs.Client)(nil)

const (
	// receiveSlack is how much longer than its long poll a receive may
	// take before its context ends.
	receiveSlack = 10 * time.Second
	// callTimeout bounds a DeleteMessage or ChangeMessageVisibility call.
	callTimeout = 10 * time.Second
	// Receive errors are retried after backoffBase, doubling up to
	// backoffMax; a successful receive starts over.
	backoffBase = time.Second
	backoffMax  = 60 * time.Second
	// inFlightDuplicateDelay is how long a copy of an event that is being
	// handled stays hidden before it is looked at again.
	inFlightDuplicateDelay = 5 * time.Second
	// panicRetryAfter is the RetryAfter of a Handle call that panicked.
	panicRetryAfter = 10 * time.Second
)

// Stats counts what a Watcher did since it was made.
type Stats struct {
	Received         int64 // messages received
	Done             int64 // events handled Done (message deleted)
	Dropped          int64 // events the handler dropped (message deleted)
	Retried          int64 // events left on the queue to be retried, panics included
	Malformed        int64 // messages that were not valid events (deleted)
	Unsupported      int64 // valid events of a kind not acted on (deleted)
	Duplicates       int64 // copies of an event already handled or being handled
	ReceiveErrors    int64 // failed ReceiveMessage calls
	DeleteErrors     int64 // failed DeleteMessage calls
	VisibilityErrors int64 // failed ChangeMessageVisibility calls
}

// counters is Stats, safe for concurrent use.
type counters struct {
	received, done, dropped, retried, malformed, unsupported, duplicates atomic.Int64
	receiveErrors, deleteErrors, visibilityErrors                        atomic.Int64
}

// Watcher long-polls the interruption queue and hands each event to a
// Handler. Make one with NewWatcher and start it with Run.
type Watcher struct {
	api     SQSAPI
	handler Handler
	cfg     Config
	log     hclog.Logger
	slots   chan struct{} // one token per message being handled
	events  *eventMemory
	stats   counters
	running atomic.Bool
	// sleep pauses between failed receives (replaced in tests).
	sleep func(ctx context.Context, d time.Duration) error
}

// NewWatcher returns a Watcher for the queue cfg.QueueURL, after applying
// the defaults of cfg and validating it.
func NewWatcher(api SQSAPI, h Handler, cfg Config) (*Watcher, error) {
	if api == nil {
		return nil, errors.New("creating the interruption watcher: no SQS client")
	}
	if h == nil {
		return nil, errors.New("creating the interruption watcher: no handler")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("creating the interruption watcher: invalid configuration: %w", err)
	}
	return &Watcher{
		api:     api,
		handler: h,
		cfg:     cfg,
		log:     cfg.Logger.With("queue_url", cfg.QueueURL),
		slots:   make(chan struct{}, cfg.MaxInFlight),
		events:  newEventMemory(cfg.Now),
		sleep:   sleepCtx,
	}, nil
}

// Stats returns the watcher's counters; it is safe for concurrent use.
func (w *Watcher) Stats() Stats {
	c := &w.stats
	return Stats{
		Received:         c.received.Load(),
		Done:             c.done.Load(),
		Dropped:          c.dropped.Load(),
		Retried:          c.retried.Load(),
		Malformed:        c.malformed.Load(),
		Unsupported:      c.unsupported.Load(),
		Duplicates:       c.duplicates.Load(),
		ReceiveErrors:    c.receiveErrors.Load(),
		DeleteErrors:     c.deleteErrors.Load(),
		VisibilityErrors: c.visibilityErrors.Load(),
	}
}

// Run receives and handles messages until ctx is done, then waits for every
// Handle call it started to return (their contexts derive from ctx). Errors
// are logged and retried, never returned: the queue may be fixed while the
// watcher runs. A second Run while one is running returns at once.
func (w *Watcher) Run(ctx context.Context) {
	if !w.running.CompareAndSwap(false, true) {
		w.log.Error("the interruption watcher is already running; ignoring the second Run")
		return
	}
	defer w.running.Store(false)

	var handling sync.WaitGroup
	defer handling.Wait()
	w.log.Info("watching the interruption queue", "wait_time", w.cfg.WaitTime, "max_in_flight", w.cfg.MaxInFlight)
	defer w.log.Info("stopped watching the interruption queue")

	var failures receiveFailures
	for {
		// Ask only for as many messages as can be handled now, so that
		// none waits for a slot while its visibility timeout runs.
		free := w.acquire(ctx, int(w.cfg.MaxMessages))
		if free == 0 {
			return
		}
		msgs, err := w.receive(ctx, free)
		if err != nil {
			w.release(free)
			if ctx.Err() != nil {
				return
			}
			pause := failures.next()
			w.stats.receiveErrors.Add(1)
			w.logReceiveError(err, pause, &failures)
			if w.sleep(ctx, pause) != nil {
				return
			}
			continue
		}
		failures.reset()
		w.stats.received.Add(int64(len(msgs)))
		for i, m := range msgs {
			// SQS never returns more than asked; should it, the extra
			// ones wait for a slot rather than overrun MaxInFlight.
			if i >= free && w.acquire(ctx, 1) == 0 {
				break
			}
			handling.Add(1)
			go func() {
				defer handling.Done()
				defer w.release(1)
				w.process(ctx, m)
			}()
		}
		w.release(free - min(len(msgs), free))
	}
}

// acquire waits for one free handling slot, then takes up to want-1 more
// without waiting. It returns how many it took: 0 when ctx ended.
func (w *Watcher) acquire(ctx context.Context, want int) int {
	select {
	case w.slots <- struct{}{}:
	case <-ctx.Done():
		return 0
	}
	n := 1
	for n < want {
		select {
		case w.slots <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

func (w *Watcher) release(n int) {
	for range n {
		<-w.slots
	}
}

// receive long-polls the queue for up to max messages.
func (w *Watcher) receive(ctx context.Context, max int) ([]types.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.WaitTime+receiveSlack)
	defer cancel()
	out, err := w.api.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:                    aws.String(w.cfg.QueueURL),
		MaxNumberOfMessages:         int32(max),
		WaitTimeSeconds:             int32(w.cfg.WaitTime / time.Second),
		VisibilityTimeout:           int32(w.cfg.VisibilityTimeout / time.Second),
		MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
	})
	if err != nil {
		return nil, fmt.Errorf("receiving from the interruption queue: %w", err)
	}
	if out == nil {
		return nil, nil
	}
	return out.Messages, nil
}

// receiveFailures is the state of the receive loop between failures: the
// next pause and the errors already logged at Error.
type receiveFailures struct {
	pause  time.Duration
	logged map[string]bool
}

// next returns the pause before the next receive: 1s, doubling to 60s.
func (f *receiveFailures) next() time.Duration {
	if f.pause == 0 {
		f.pause = backoffBase
	}
	d := f.pause
	f.pause = min(2*f.pause, backoffMax)
	return d
}

// reset starts over after a successful receive: the next failure pauses 1s
// and is logged again.
func (f *receiveFailures) reset() {
	f.pause = 0
	clear(f.logged)
}

// firstTime reports whether the error with key is met for the first time
// since the last successful receive.
func (f *receiveFailures) firstTime(key string) bool {
	if f.logged == nil {
		f.logged = map[string]bool{}
	}
	if f.logged[key] {
		return false
	}
	f.logged[key] = true
	return true
}

// logReceiveError logs a failed receive. An error that will not go away
// by itself (permissions, a wrong queue URL) is logged at Error once, with
// what to fix, until a receive succeeds; a transient one at Warn each time.
func (w *Watcher) logReceiveError(err error, pause time.Duration, failures *receiveFailures) {
	code := awsretry.ErrorCode(err)
	key := code
	if key == "" {
		key = err.Error()
	}
	log := w.log.With("error", err, "retry_in", pause)
	if code != "" {
		log = log.With("code", code)
	}
	switch {
	case awsretry.IsAccessDenied(err):
		if failures.firstTime(key) {
			log.Error("not allowed to use the interruption queue: grant the IAM permissions sqs:ReceiveMessage, " +
				"sqs:DeleteMessage and sqs:ChangeMessageVisibility on it to the autoscaler's role")
			return
		}
	case awsretry.IsNotFound(err):
		if failures.firstTime(key) {
			log.Error("the interruption queue does not exist: check the queue URL (and the region of the credentials)")
			return
		}
	case awsretry.IsRetryable(err), errors.Is(err, context.DeadlineExceeded):
		log.Warn("receiving from the interruption queue failed; retrying")
		return
	default:
		if failures.firstTime(key) {
			log.Error("receiving from the interruption queue failed with an error that retrying is unlikely to fix")
			return
		}
	}
	log.Debug("receiving from the interruption queue still fails")
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
