package interruption

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/stretchr/testify/require"
)

type handled struct {
	ev  Event
	msg Message
}

func TestWatcherDeletesAHandledMessage(t *testing.T) {
	seen := make(chan handled, 1)
	hs := newHarness(t, HandlerFunc(func(_ context.Context, ev Event, msg Message) Outcome {
		seen <- handled{ev, msg}
		return Outcome{Disposition: Done}
	}), nil)
	before := time.Now().Add(-time.Second)
	id := hs.sqs.send(warningBody)
	hs.start(t)

	got := receive(t, seen, "the handler")
	want, err := Parse([]byte(warningBody))
	require.NoError(t, err)
	require.Equal(t, want, got.ev)
	require.Equal(t, id, got.msg.ID)
	require.Equal(t, 1, got.msg.ReceiveCount)
	require.True(t, got.msg.Sent.After(before), "Sent is the SentTimestamp: %s", got.msg.Sent)
	require.True(t, got.msg.FirstReceived.After(before), "FirstReceived: %s", got.msg.FirstReceived)

	waitFor(t, "the message to be deleted", func() bool { return hs.sqs.isDeleted(id) })
	require.Equal(t, Stats{Received: 1, Done: 1}, hs.w.Stats())

	in := hs.sqs.receiveInputs()[0]
	require.Equal(t, fakeQueueURL, aws.ToString(in.QueueUrl))
	require.Equal(t, int32(1), in.WaitTimeSeconds)
	require.Equal(t, int32(10), in.MaxNumberOfMessages)
	require.Equal(t, int32(30), in.VisibilityTimeout)
	require.Equal(t, []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}, in.MessageSystemAttributeNames)
}

func TestWatcherDeletesMalformedAndUnsupportedMessagesWithOneLogLineEach(t *testing.T) {
	hs := newHarness(t, HandlerFunc(func(_ context.Context, ev Event, _ Message) Outcome {
		t.Errorf("the handler got %s", ev)
		return Outcome{Disposition: Done}
	}), nil)
	malformedID := hs.sqs.send(edit(t, warningBody, "detail.instance-id", "i-NOTHEX"))
	unsupportedID := hs.sqs.send(edit(t, warningBody, "detail-type", "EC2 Instance Scheduled Change"))
	hs.start(t)

	waitFor(t, "both messages to be deleted", func() bool {
		return hs.sqs.isDeleted(malformedID) && hs.sqs.isDeleted(unsupportedID)
	})
	lines := hs.logs.where(t, "message_id", malformedID)
	require.Len(t, lines, 1, "%v", lines)
	require.Equal(t, "warn", lines[0].level())
	require.Contains(t, lines[0].field("error"), `malformed event: field "detail.instance-id" is "i-NOTHEX"`)

	lines = hs.logs.where(t, "message_id", unsupportedID)
	require.Len(t, lines, 1, "%v", lines)
	require.Equal(t, "info", lines[0].level())
	require.Contains(t, lines[0].field("error"), `unsupported event: source "aws.ec2", detail-type "EC2 Instance Scheduled Change"`)

	require.Equal(t, Stats{Received: 2, Malformed: 1, Unsupported: 1}, hs.w.Stats())
}

func TestWatcherDeletesADroppedEventWithOneLogLine(t *testing.T) {
	hs := newHarness(t, HandlerFunc(func(context.Context, Event, Message) Outcome {
		return Outcome{Disposition: Drop, Why: "i-1234567890abcdef0 is not in fleet sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c"}
	}), nil)
	id := hs.sqs.send(warningBody)
	hs.start(t)

	waitFor(t, "the message to be deleted", func() bool { return hs.sqs.isDeleted(id) })
	lines := hs.logs.where(t, "message_id", id)
	require.Len(t, lines, 1, "%v", lines)
	require.Equal(t, "info", lines[0].level())
	require.Equal(t, "i-1234567890abcdef0 is not in fleet sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c", lines[0].field("why"))
	require.Equal(t, "spot-interruption of i-1234567890abcdef0 (terminate) at 10:00:00Z", lines[0].field("event"))
	require.Equal(t, "12345678-1234-1234-1234-123456789012", lines[0].field("event_id"))
	require.Equal(t, Stats{Received: 1, Dropped: 1}, hs.w.Stats())
}

func TestWatcherRedeliversARetriedEventAfterRetryAfter(t *testing.T) {
	type call struct {
		msg       Message
		at        time.Time
		wasDelete bool
	}
	calls := make(chan call, 3)
	var hs *harness
	hs = newHarness(t, HandlerFunc(func(_ context.Context, _ Event, msg Message) Outcome {
		calls <- call{msg: msg, at: time.Now(), wasDelete: hs.sqs.isDeleted(msg.ID)}
		switch msg.ReceiveCount {
		case 1:
			return Outcome{Disposition: Retry, Why: "node not registered yet", RetryAfter: 500 * time.Millisecond} // rounds up to 1 s
		case 2:
			return Outcome{Disposition: Retry, Why: "node still not registered"} // visible again at once
		}
		return Outcome{Disposition: Done}
	}), nil)
	id := hs.sqs.send(warningBody)
	hs.start(t)

	first := receive(t, calls, "the first delivery")
	second := receive(t, calls, "the second delivery")
	third := receive(t, calls, "the third delivery")
	require.Equal(t, []int{1, 2, 3}, []int{first.msg.ReceiveCount, second.msg.ReceiveCount, third.msg.ReceiveCount})
	require.Equal(t, id, second.msg.ID, "the same message comes back")
	require.False(t, second.wasDelete || third.wasDelete, "a retried message is not deleted")
	require.GreaterOrEqual(t, second.at.Sub(first.at), 900*time.Millisecond, "hidden for RetryAfter rounded up to a second")

	waitFor(t, "the message to be deleted", func() bool { return hs.sqs.isDeleted(id) })
	require.Equal(t, []visibilityChange{{id, 1}, {id, 0}}, hs.sqs.visibilityChanges())
	require.Equal(t, Stats{Received: 3, Retried: 2, Done: 1}, hs.w.Stats(), "a retried event's redelivery is no duplicate")

	retries := hs.logs.atLevel(t, "info", "event not handled yet")
	require.Len(t, retries, 1, "Info the first time")
	require.Equal(t, "node not registered yet", retries[0].field("why"))
	require.Len(t, hs.logs.atLevel(t, "debug", "event not handled yet", "node still not registered"), 1, "Debug after that")
}

func TestWatcherHandlesAnEventDeliveredTwiceOnce(t *testing.T) {
	var calls atomic.Int32
	hs := newHarness(t, HandlerFunc(func(context.Context, Event, Message) Outcome {
		calls.Add(1)
		return Outcome{Disposition: Done}
	}), nil)
	hs.start(t)

	first := hs.sqs.send(warningBody)
	waitFor(t, "the first copy to be deleted", func() bool { return hs.sqs.isDeleted(first) })
	second := hs.sqs.send(warningBody) // EventBridge delivers at least once
	waitFor(t, "the second copy to be deleted", func() bool { return hs.sqs.isDeleted(second) })

	require.Equal(t, int32(1), calls.Load())
	require.Equal(t, Stats{Received: 2, Done: 1, Duplicates: 1}, hs.w.Stats())
	lines := hs.logs.where(t, "message_id", second)
	require.Len(t, lines, 1, "%v", lines)
	require.Equal(t, "info", lines[0].level())
	require.Contains(t, lines[0].message(), "duplicate")
}

func TestWatcherLeavesACopyOfAnEventBeingHandledForLater(t *testing.T) {
	started := make(chan string, 2)
	release := make(chan struct{})
	hs := newHarness(t, HandlerFunc(func(_ context.Context, _ Event, msg Message) Outcome {
		started <- msg.ID
		<-release
		return Outcome{Disposition: Done}
	}), nil)
	a := hs.sqs.send(warningBody)
	b := hs.sqs.send(warningBody)
	hs.start(t)

	handledID := receive(t, started, "the handler")
	copyID := a
	if handledID == a {
		copyID = b
	}
	waitFor(t, "the copy to be put back", func() bool { return len(hs.sqs.visibilityChanges()) == 1 })
	require.Equal(t, []visibilityChange{{copyID, 5}}, hs.sqs.visibilityChanges())
	require.Equal(t, int64(1), hs.w.Stats().Duplicates)
	require.False(t, hs.sqs.isDeleted(copyID), "the copy stays on the queue while the event is handled")

	close(release)
	waitFor(t, "the handled message to be deleted", func() bool { return hs.sqs.isDeleted(handledID) })
	require.Len(t, started, 0, "the event was handed over once")
}

func TestWatcherSlowHandlerDoesNotDelayTheNextMessage(t *testing.T) {
	slowStarted := make(chan struct{})
	slowFinished := make(chan struct{})
	fastHandled := make(chan struct{})
	release := make(chan struct{})
	hs := newHarness(t, HandlerFunc(func(_ context.Context, ev Event, _ Message) Outcome {
		if ev.InstanceID == "i-0000000000000000a" {
			close(slowStarted)
			defer close(slowFinished)
			select { // a handler stuck for 2 s, e.g. on a slow Nomad API
			case <-release:
			case <-time.After(2 * time.Second):
			}
			return Outcome{Disposition: Done}
		}
		close(fastHandled)
		return Outcome{Disposition: Done}
	}), nil)
	hs.sqs.send(warning(t, "ev-slow", "i-0000000000000000a"))
	hs.start(t)

	receive(t, slowStarted, "the slow handler to start")
	hs.sqs.send(warning(t, "ev-fast", "i-0000000000000000b"))
	receive(t, fastHandled, "the second interruption to be handled")
	select {
	case <-slowFinished:
		t.Fatal("the second interruption was handled only after the first handler finished")
	default:
	}
	close(release)
	receive(t, slowFinished, "the slow handler to finish")
}

func TestWatcherBacksOffOnReceiveErrorsAndRecovers(t *testing.T) {
	hs := newHarness(t, HandlerFunc(doneHandler), nil)
	id := hs.sqs.send(warningBody)
	hs.sqs.failReceives(throttled(), connectionReset(), throttled(), connectionReset(),
		throttled(), connectionReset(), throttled(), connectionReset(),
		nil, // a successful receive: it gets the message
		connectionReset())
	hs.start(t)

	waitFor(t, "the message and all scripted failures", func() bool {
		return hs.sqs.isDeleted(id) && hs.sqs.scriptLeft() == 0 && len(hs.recordedPauses()) == 9
	})
	s := time.Second
	require.Equal(t, []time.Duration{1 * s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s, 1 * s}, hs.recordedPauses(),
		"doubling from 1 s to 60 s, from 1 s again after a success")
	require.Equal(t, int64(9), hs.w.Stats().ReceiveErrors)
	require.Len(t, hs.logs.atLevel(t, "warn", "receiving from the interruption queue failed; retrying"), 9, "transient errors at Warn")
	require.Empty(t, hs.logs.atLevel(t, "error"))
}

func TestWatcherLogsAccessDeniedOnceWhileItRepeats(t *testing.T) {
	hs := newHarness(t, HandlerFunc(doneHandler), nil)
	id := hs.sqs.send(warningBody)
	var script []error
	for range 5 {
		script = append(script, accessDenied())
	}
	for range 3 {
		script = append(script, queueMissing())
	}
	script = append(script, nil, accessDenied()) // fixed, then broken again
	hs.sqs.failReceives(script...)
	hs.start(t)

	waitFor(t, "the message and all scripted failures", func() bool {
		return hs.sqs.isDeleted(id) && hs.sqs.scriptLeft() == 0 && hs.w.Stats().ReceiveErrors == 9
	})
	errorsLogged := hs.logs.atLevel(t, "error")
	require.Len(t, errorsLogged, 3, "%v", errorsLogged)
	denied := hs.logs.atLevel(t, "error", "AccessDenied", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")
	require.Len(t, denied, 2, "once, and once more after it was fixed and broke again")
	require.Equal(t, fakeQueueURL, denied[0].field("queue_url"))
	missing := hs.logs.atLevel(t, "error", "AWS.SimpleQueueService.NonExistentQueue", "check the queue URL")
	require.Len(t, missing, 1)
	require.Equal(t, fakeQueueURL, missing[0].field("queue_url"))
	require.Len(t, hs.logs.atLevel(t, "debug", "still fails"), 6, "the repeats")
}

func TestRunReturnsAfterCancelOnceHandlersReturned(t *testing.T) {
	started := make(chan struct{})
	var sawErr atomic.Value
	var returned atomic.Bool
	hs := newHarness(t, HandlerFunc(func(ctx context.Context, _ Event, _ Message) Outcome {
		close(started)
		<-ctx.Done()
		sawErr.Store(ctx.Err())
		time.Sleep(50 * time.Millisecond) // a handler that takes a moment to wind down
		returned.Store(true)
		return Outcome{Disposition: Retry, Why: "stopping"}
	}), nil)
	id := hs.sqs.send(warningBody)
	stop := hs.start(t)
	receive(t, started, "the handler to start")

	stop()
	require.True(t, returned.Load(), "Run returned before the handler did")
	require.ErrorIs(t, sawErr.Load().(error), context.Canceled, "the handler's context ends with Run's")
	require.Equal(t, 0, hs.sqs.receivesInProgress(), "no receive left behind")
	require.Equal(t, []visibilityChange{{id, 0}}, hs.sqs.visibilityChanges(), "the message is put back although Run's context ended")
}

func TestRunTwiceAtOnceRunsOnce(t *testing.T) {
	hs := newHarness(t, HandlerFunc(doneHandler), nil)
	hs.start(t)
	waitFor(t, "the first Run to receive", func() bool { return hs.sqs.receivesInProgress() == 1 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		hs.w.Run(context.Background())
	}()
	receive(t, done, "the second Run to return")
	require.Len(t, hs.logs.atLevel(t, "error", "already running"), 1)
}

func TestHandleTimeoutIsTheHandlersDeadline(t *testing.T) {
	sawErr := make(chan error, 1)
	hs := newHarness(t, HandlerFunc(func(ctx context.Context, _ Event, _ Message) Outcome {
		<-ctx.Done()
		sawErr <- ctx.Err()
		return Outcome{Disposition: Retry, Why: "timed out", RetryAfter: time.Minute}
	}), func(c *Config) { c.HandleTimeout = 100 * time.Millisecond })
	id := hs.sqs.send(warningBody)
	hs.start(t)

	require.ErrorIs(t, receive(t, sawErr, "the handler's deadline"), context.DeadlineExceeded)
	waitFor(t, "the message to be put back", func() bool { return len(hs.sqs.visibilityChanges()) == 1 })
	require.Equal(t, []visibilityChange{{id, 60}}, hs.sqs.visibilityChanges())
}

func TestWatcherRecoversFromAPanickingHandler(t *testing.T) {
	hs := newHarness(t, HandlerFunc(func(_ context.Context, ev Event, _ Message) Outcome {
		if ev.ID == "ev-panics" {
			var m map[string]int
			m["boom"]++ // nil map write
		}
		return Outcome{Disposition: Done}
	}), nil)
	panicky := hs.sqs.send(warning(t, "ev-panics", "i-0000000000000000a"))
	fine := hs.sqs.send(warning(t, "ev-fine", "i-0000000000000000b"))
	hs.start(t)

	waitFor(t, "the other message to be deleted", func() bool { return hs.sqs.isDeleted(fine) })
	waitFor(t, "the panicking one to be put back", func() bool { return len(hs.sqs.visibilityChanges()) == 1 })
	require.Equal(t, []visibilityChange{{panicky, 10}}, hs.sqs.visibilityChanges(), "retried after 10 s")
	require.False(t, hs.sqs.isDeleted(panicky))
	lines := hs.logs.atLevel(t, "error", "panicked", "assignment to entry in nil map")
	require.Len(t, lines, 1)
	require.Equal(t, panicky, lines[0].field("message_id"))
	require.Equal(t, Stats{Received: 2, Done: 1, Retried: 1}, hs.w.Stats())
}

func TestWatcherHandlesAtMostMaxInFlightAtOnce(t *testing.T) {
	var mu sync.Mutex
	running, most := 0, 0
	release := make(chan struct{})
	hs := newHarness(t, HandlerFunc(func(context.Context, Event, Message) Outcome {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		<-release
		mu.Lock()
		running--
		mu.Unlock()
		return Outcome{Disposition: Done}
	}), func(c *Config) { c.MaxInFlight = 2 })
	for i := range 5 {
		hs.sqs.send(warning(t, "ev-"+string(rune('a'+i)), "i-000000000000000"+string(rune('a'+i))))
	}
	hs.start(t)

	waitFor(t, "two handlers to run", func() bool { mu.Lock(); defer mu.Unlock(); return running == 2 })
	time.Sleep(100 * time.Millisecond) // room for a third, were there no bound
	close(release)
	waitFor(t, "all five to be deleted", func() bool { return len(hs.sqs.deletedIDs()) == 5 })
	mu.Lock()
	require.Equal(t, 2, most)
	mu.Unlock()
	for _, in := range hs.sqs.receiveInputs() {
		require.LessOrEqual(t, in.MaxNumberOfMessages, int32(2), "never asks for more than it can handle now")
	}
}

func TestWatcherCountsDeleteErrors(t *testing.T) {
	hs := newHarness(t, HandlerFunc(doneHandler), nil)
	hs.sqs.failDeletes(opError("DeleteMessage", &types.RequestThrottled{Message: aws.String("Rate exceeded")}))
	id := hs.sqs.send(warningBody)
	hs.start(t)

	waitFor(t, "the failed delete", func() bool { return hs.w.Stats().DeleteErrors == 1 })
	lines := hs.logs.atLevel(t, "warn", "deleting the message failed")
	require.Len(t, lines, 1)
	require.Equal(t, id, lines[0].field("message_id"))
	require.Contains(t, lines[0].field("error"), "RequestThrottled")
	require.Equal(t, int64(1), hs.w.Stats().Done)
}

func TestRetryAfterBecomesWholeSecondsWithinSQSBounds(t *testing.T) {
	cases := []struct {
		in   time.Duration
		want int32
	}{
		{-time.Second, 0},
		{0, 0},
		{time.Nanosecond, 1},
		{time.Second, 1},
		{1500 * time.Millisecond, 2},
		{12 * time.Hour, 43200},
		{13 * time.Hour, 43200},
		{time.Duration(1<<63 - 1), 43200},
	}
	for _, tc := range cases {
		t.Run(tc.in.String(), func(t *testing.T) { require.Equal(t, tc.want, visibilitySeconds(tc.in)) })
	}
}

func TestFakeSQSBehavesLikeSQS(t *testing.T) {
	f := newFakeSQS()
	ctx := context.Background()
	id := f.send("hello")
	in := func(wait, hide int32) *sqsReceive {
		return &sqsReceive{QueueUrl: aws.String(fakeQueueURL), WaitTimeSeconds: wait, VisibilityTimeout: hide, MaxNumberOfMessages: 10,
			MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll}}
	}

	out, err := f.ReceiveMessage(ctx, in(0, 1))
	require.NoError(t, err)
	require.Len(t, out.Messages, 1)
	first := out.Messages[0]
	require.Equal(t, "1", first.Attributes["ApproximateReceiveCount"])

	out, err = f.ReceiveMessage(ctx, in(0, 1))
	require.NoError(t, err)
	require.Empty(t, out.Messages, "hidden while its visibility timeout runs")

	start := time.Now()
	out, err = f.ReceiveMessage(ctx, in(5, 1))
	require.NoError(t, err)
	require.Len(t, out.Messages, 1, "the long poll returns when the message is visible again")
	require.Less(t, time.Since(start), 3*time.Second)
	second := out.Messages[0]
	require.Equal(t, "2", second.Attributes["ApproximateReceiveCount"])
	require.NotEqual(t, aws.ToString(first.ReceiptHandle), aws.ToString(second.ReceiptHandle))

	_, err = f.DeleteMessage(ctx, &sqsDelete{QueueUrl: aws.String(fakeQueueURL), ReceiptHandle: second.ReceiptHandle})
	require.NoError(t, err)
	_, err = f.ChangeMessageVisibility(ctx, &sqsVisibility{QueueUrl: aws.String(fakeQueueURL), ReceiptHandle: second.ReceiptHandle, VisibilityTimeout: 5})
	var invalid *types.ReceiptHandleIsInvalid
	require.ErrorAs(t, err, &invalid, "changing the visibility of a deleted message")
	require.Equal(t, []string{id}, f.deletedIDs())

	waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = f.ReceiveMessage(waitCtx, in(20, 1))
	require.True(t, errors.Is(err, context.DeadlineExceeded), "the long poll ends with its context: %v", err)

	f.failReceives(throttled())
	_, err = f.ReceiveMessage(ctx, in(0, 1))
	require.ErrorContains(t, err, "RequestThrottled")
	_, err = f.ReceiveMessage(ctx, &sqsReceive{QueueUrl: aws.String(strings.Replace(fakeQueueURL, "spot", "other", 1))})
	require.ErrorContains(t, err, "AWS.SimpleQueueService.NonExistentQueue")
}
