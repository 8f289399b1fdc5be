package interruption

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/hashicorp/go-hclog"
)

// maxVisibilitySeconds is the longest visibility timeout SQS accepts.
const maxVisibilitySeconds = 43200

// process takes one received message from its body to its deletion or its
// return to the queue: parse, skip duplicates, handle, act on the outcome.
func (w *Watcher) process(ctx context.Context, m types.Message) {
	msg := messageOf(m)
	log := w.log.With("message_id", msg.ID, "receive_count", msg.ReceiveCount)

	ev, err := Parse([]byte(aws.ToString(m.Body)))
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			w.stats.unsupported.Add(1)
			log.Info("deleting a message with an event the plugin does not act on", "error", err)
		} else {
			w.stats.malformed.Add(1)
			log.Warn("deleting a message that is not a valid EC2 event", "error", err)
		}
		w.delete(ctx, m, log)
		return
	}
	log = log.With("event_id", ev.ID, "event", ev.String())

	switch w.events.claim(ev.ID) {
	case alreadyDone:
		w.stats.duplicates.Add(1)
		log.Info("deleting a duplicate of an event already handled")
		w.delete(ctx, m, log)
		return
	case beingHandled:
		w.stats.duplicates.Add(1)
		log.Info("the event is being handled from another message; this copy is looked at again later",
			"retry_in", inFlightDuplicateDelay)
		w.changeVisibility(ctx, m, inFlightDuplicateDelay, log)
		return
	}

	out := w.handle(ctx, ev, msg, log)
	w.events.finish(ev.ID, out.Disposition == Done || out.Disposition == Drop)
	switch out.Disposition {
	case Done:
		w.stats.done.Add(1)
		log.Debug("event handled", "why", out.Why)
		w.delete(ctx, m, log)
	case Drop:
		w.stats.dropped.Add(1)
		log.Info("event needs no action; deleting it", "why", out.Why)
		w.delete(ctx, m, log)
	default: // Retry
		w.stats.retried.Add(1)
		retryIn := time.Duration(visibilitySeconds(out.RetryAfter)) * time.Second
		level := hclog.Debug
		if w.events.firstRetry(ev.ID) {
			level = hclog.Info
		}
		log.Log(level, "event not handled yet; it comes back later", "why", out.Why, "retry_in", retryIn)
		w.changeVisibility(ctx, m, retryIn, log)
	}
}

// handle calls the Handler with its own deadline. A panic, or an outcome
// that is not one of the Dispositions, is a Retry after panicRetryAfter.
func (w *Watcher) handle(ctx context.Context, ev Event, msg Message, log hclog.Logger) (out Outcome) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.HandleTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			log.Error("the event handler panicked; the event will be retried",
				"panic", fmt.Sprint(r), "retry_in", panicRetryAfter, "stack", string(debug.Stack()))
			out = Outcome{Disposition: Retry, Why: fmt.Sprintf("handler panicked: %v", r), RetryAfter: panicRetryAfter}
		}
	}()
	out = w.handler.Handle(ctx, ev, msg)
	if out.Disposition != Done && out.Disposition != Drop && out.Disposition != Retry {
		log.Error("the event handler returned an unknown disposition; the event will be retried",
			"disposition", out.Disposition.String(), "retry_in", panicRetryAfter)
		out = Outcome{Disposition: Retry, Why: "unknown disposition " + out.Disposition.String(), RetryAfter: panicRetryAfter}
	}
	return out
}

// delete removes a message from the queue. It runs even when ctx ended
// meanwhile (the watcher is stopping): an event that was handled should not
// come back, though it would be harmless.
func (w *Watcher) delete(ctx context.Context, m types.Message, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	_, err := w.api.DeleteMessage(ctx, &sqs.DeleteMessageInput{
		QueueUrl:      aws.String(w.cfg.QueueURL),
		ReceiptHandle: m.ReceiptHandle,
	})
	if err != nil {
		w.stats.deleteErrors.Add(1)
		log.Warn("deleting the message failed; it will be delivered again (harmless, handling is idempotent)",
			"error", fmt.Errorf("deleting message %s: %w", aws.ToString(m.MessageId), err))
	}
}

// changeVisibility hides a message for d from now, after which SQS delivers
// it again. Like delete it runs even when ctx ended meanwhile.
func (w *Watcher) changeVisibility(ctx context.Context, m types.Message, d time.Duration, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	_, err := w.api.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
		QueueUrl:          aws.String(w.cfg.QueueURL),
		ReceiptHandle:     m.ReceiptHandle,
		VisibilityTimeout: visibilitySeconds(d),
	})
	if err != nil {
		w.stats.visibilityErrors.Add(1)
		log.Warn("changing the visibility of the message failed; it comes back after the visibility timeout instead",
			"visibility_timeout", w.cfg.VisibilityTimeout,
			"error", fmt.Errorf("changing the visibility of message %s: %w", aws.ToString(m.MessageId), err))
	}
}

// visibilitySeconds is d as an SQS visibility timeout: rounded up to whole
// seconds, within 0 to 12 hours.
func visibilitySeconds(d time.Duration) int32 {
	if d <= 0 {
		return 0
	}
	s := math.Ceil(d.Seconds())
	return int32(min(s, maxVisibilitySeconds))
}
