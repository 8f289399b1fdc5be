package interruption

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

const fakeQueueURL = "https://sqs.us-east-1.amazonaws.com/123456789012/spot-interruptions"

// fakeSQS is an in-memory standard SQS queue, as far as the watcher can
// tell: a received message is hidden for its visibility timeout (or until
// deleted or made visible by ChangeMessageVisibility), counts its receives,
// and gets a new receipt handle each time; ReceiveMessage long-polls. Time
// is real: visibility timeouts are whole seconds, as in SQS.
type fakeSQS struct {
	mu       sync.Mutex
	messages []*fakeMessage
	byHandle map[string]*fakeMessage
	nextID   int
	changed  chan struct{} // closed (and replaced) on every change, to wake long polls

	// receiveScript decides the next ReceiveMessage calls in order: an
	// error fails the call, nil lets it behave normally.
	receiveScript []error
	deleteErr     error // fails every DeleteMessage when set

	receives       []sqs.ReceiveMessageInput
	deleted        []string // message ids, in order of successful deletes
	visibility     []visibilityChange
	activeReceives int
}

type fakeMessage struct {
	id, body      string
	handle        string // the latest receipt handle
	visibleAt     time.Time
	receiveCount  int
	sent          time.Time
	firstReceived time.Time
	deleted       bool
}

type visibilityChange struct {
	messageID string
	seconds   int32
}

func newFakeSQS() *fakeSQS {
	return &fakeSQS{byHandle: map[string]*fakeMessage{}, changed: make(chan struct{})}
}

// wake tells the long polls something changed. Call with f.mu held.
func (f *fakeSQS) wake() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// send puts a message on the queue and returns its id.
func (f *fakeSQS) send(body string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	m := &fakeMessage{
		id:   fmt.Sprintf("0e3c5a4e-0000-4000-8000-%012d", f.nextID),
		body: body, sent: time.Now(),
	}
	f.messages = append(f.messages, m)
	f.wake()
	return m.id
}

// failReceives scripts the next ReceiveMessage calls (nil: a normal call).
func (f *fakeSQS) failReceives(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.receiveScript = append(f.receiveScript, errs...)
}

func (f *fakeSQS) failDeletes(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleteErr = err
}

func (f *fakeSQS) ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, _ ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, opError("ReceiveMessage", &smithy.CanceledError{Err: err})
	}
	f.mu.Lock()
	f.receives = append(f.receives, *in)
	if len(f.receiveScript) > 0 {
		err := f.receiveScript[0]
		f.receiveScript = f.receiveScript[1:]
		if err != nil {
			f.mu.Unlock()
			return nil, err
		}
	}
	if err := checkReceive(in); err != nil {
		f.mu.Unlock()
		return nil, opError("ReceiveMessage", err)
	}
	f.activeReceives++
	defer func() {
		f.activeReceives--
		f.mu.Unlock()
	}()

	deadline := time.Now().Add(time.Duration(in.WaitTimeSeconds) * time.Second)
	for {
		now := time.Now()
		if got := f.take(now, in); len(got) > 0 || !now.Before(deadline) {
			return &sqs.ReceiveMessageOutput{Messages: got}, nil
		}
		wakeAt := deadline
		for _, m := range f.messages {
			if !m.deleted && m.visibleAt.Before(wakeAt) {
				wakeAt = m.visibleAt
			}
		}
		changed := f.changed
		f.mu.Unlock()
		timer := time.NewTimer(time.Until(wakeAt))
		select {
		case <-ctx.Done():
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
		f.mu.Lock()
		if ctx.Err() != nil {
			// As the SDK reports a caller's cancellation.
			return nil, opError("ReceiveMessage", &smithy.CanceledError{Err: ctx.Err()})
		}
	}
}

// take receives up to MaxNumberOfMessages visible messages. Call with f.mu held.
func (f *fakeSQS) take(now time.Time, in *sqs.ReceiveMessageInput) []types.Message {
	max := int(in.MaxNumberOfMessages)
	if max == 0 {
		max = 1
	}
	hide := time.Duration(in.VisibilityTimeout) * time.Second
	if in.VisibilityTimeout == 0 {
		hide = 30 * time.Second // the queue's default
	}
	var got []types.Message
	for _, m := range f.messages {
		if len(got) == max {
			break
		}
		if m.deleted || m.visibleAt.After(now) {
			continue
		}
		m.receiveCount++
		if m.firstReceived.IsZero() {
			m.firstReceived = now
		}
		m.visibleAt = now.Add(hide)
		m.handle = fmt.Sprintf("AQEB-%s-%d", m.id, m.receiveCount)
		f.byHandle[m.handle] = m
		got = append(got, types.Message{
			MessageId:     aws.String(m.id),
			ReceiptHandle: aws.String(m.handle),
			Body:          aws.String(m.body),
			Attributes:    systemAttributes(m, in),
		})
	}
	return got
}

// systemAttributes are the attributes SQS returns: only those asked for.
func systemAttributes(m *fakeMessage, in *sqs.ReceiveMessageInput) map[string]string {
	asked := func(name types.MessageSystemAttributeName) bool {
		return slices.Contains(in.MessageSystemAttributeNames, types.MessageSystemAttributeNameAll) ||
			slices.Contains(in.MessageSystemAttributeNames, name)
	}
	attrs := map[string]string{}
	add := func(name types.MessageSystemAttributeName, value string) {
		if asked(name) {
			attrs[string(name)] = value
		}
	}
	add(types.MessageSystemAttributeNameApproximateReceiveCount, strconv.Itoa(m.receiveCount))
	add(types.MessageSystemAttributeNameSentTimestamp, strconv.FormatInt(m.sent.UnixMilli(), 10))
	add(types.MessageSystemAttributeNameApproximateFirstReceiveTimestamp, strconv.FormatInt(m.firstReceived.UnixMilli(), 10))
	add(types.MessageSystemAttributeNameSenderId, "AIDAIENQZJOLO23YVJ4VO")
	if len(attrs) == 0 {
		return nil
	}
	return attrs
}

func checkReceive(in *sqs.ReceiveMessageInput) error {
	switch {
	case aws.ToString(in.QueueUrl) != fakeQueueURL:
		return &types.QueueDoesNotExist{Message: aws.String("The specified queue does not exist."),
			ErrorCodeOverride: aws.String("AWS.SimpleQueueService.NonExistentQueue")}
	case in.MaxNumberOfMessages < 0 || in.MaxNumberOfMessages > 10:
		return invalidParameter("MaxNumberOfMessages", in.MaxNumberOfMessages)
	case in.WaitTimeSeconds < 0 || in.WaitTimeSeconds > 20:
		return invalidParameter("WaitTimeSeconds", in.WaitTimeSeconds)
	case in.VisibilityTimeout < 0 || in.VisibilityTimeout > 43200:
		return invalidParameter("VisibilityTimeout", in.VisibilityTimeout)
	}
	return nil
}

func (f *fakeSQS) DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, _ ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	if err := ctx.Err(); err != nil { // the SDK sends nothing on an ended context
		return nil, opError("DeleteMessage", &smithy.CanceledError{Err: err})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deleteErr != nil {
		return nil, f.deleteErr
	}
	m, ok := f.byHandle[aws.ToString(in.ReceiptHandle)]
	if !ok || aws.ToString(in.QueueUrl) != fakeQueueURL {
		return nil, opError("DeleteMessage", &types.ReceiptHandleIsInvalid{
			Message: aws.String(fmt.Sprintf("The input receipt handle %q is not a valid receipt handle.", aws.ToString(in.ReceiptHandle)))})
	}
	if !m.deleted { // deleting twice succeeds, as in SQS
		m.deleted = true
		f.deleted = append(f.deleted, m.id)
		f.wake()
	}
	return &sqs.DeleteMessageOutput{}, nil
}

func (f *fakeSQS) ChangeMessageVisibility(ctx context.Context, in *sqs.ChangeMessageVisibilityInput, _ ...func(*sqs.Options)) (*sqs.ChangeMessageVisibilityOutput, error) {
	if err := ctx.Err(); err != nil {
		return nil, opError("ChangeMessageVisibility", &smithy.CanceledError{Err: err})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.byHandle[aws.ToString(in.ReceiptHandle)]
	switch {
	case !ok || m.deleted || aws.ToString(in.QueueUrl) != fakeQueueURL:
		return nil, opError("ChangeMessageVisibility", &types.ReceiptHandleIsInvalid{
			Message: aws.String(fmt.Sprintf("The input receipt handle %q is not a valid receipt handle.", aws.ToString(in.ReceiptHandle)))})
	case in.VisibilityTimeout < 0 || in.VisibilityTimeout > 43200:
		return nil, opError("ChangeMessageVisibility", invalidParameter("VisibilityTimeout", in.VisibilityTimeout))
	case !m.visibleAt.After(time.Now()):
		return nil, opError("ChangeMessageVisibility", &types.MessageNotInflight{Message: aws.String("Message is not in flight.")})
	}
	m.visibleAt = time.Now().Add(time.Duration(in.VisibilityTimeout) * time.Second)
	f.visibility = append(f.visibility, visibilityChange{messageID: m.id, seconds: in.VisibilityTimeout})
	f.wake()
	return &sqs.ChangeMessageVisibilityOutput{}, nil
}

// Views of the fake's state for assertions.

func (f *fakeSQS) deletedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.deleted)
}

func (f *fakeSQS) isDeleted(id string) bool { return slices.Contains(f.deletedIDs(), id) }

func (f *fakeSQS) visibilityChanges() []visibilityChange {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.visibility)
}

func (f *fakeSQS) receiveInputs() []sqs.ReceiveMessageInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.receives)
}

func (f *fakeSQS) receivesInProgress() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.activeReceives
}

func (f *fakeSQS) scriptLeft() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.receiveScript)
}

// Errors as the SDK returns them: an OperationError around the API error
// or the transport failure.

func opError(op string, err error) error {
	return &smithy.OperationError{ServiceID: "SQS", OperationName: op, Err: err}
}

func invalidParameter(name string, value int32) error {
	return &smithy.GenericAPIError{Code: "InvalidParameterValue",
		Message: fmt.Sprintf("Value %d for parameter %s is invalid.", value, name), Fault: smithy.FaultClient}
}

func throttled() error {
	return opError("ReceiveMessage", &types.RequestThrottled{Message: aws.String("Rate exceeded")})
}

func connectionReset() error {
	return opError("ReceiveMessage", &smithyhttp.RequestSendError{Err: &url.Error{Op: "Post", URL: "https://sqs.us-east-1.amazonaws.com/",
		Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}})
}

func accessDenied() error {
	return opError("ReceiveMessage", &smithy.GenericAPIError{Code: "AccessDenied", Fault: smithy.FaultClient,
		Message: "User: arn:aws:sts::123456789012:assumed-role/autoscaler/i-0abc is not authorized to perform: sqs:receivemessage on resource: arn:aws:sqs:us-east-1:123456789012:spot-interruptions"})
}

func queueMissing() error {
	return opError("ReceiveMessage", &types.QueueDoesNotExist{Message: aws.String("The specified queue does not exist."),
		ErrorCodeOverride: aws.String("AWS.SimpleQueueService.NonExistentQueue")})
}

// Short names of the SDK inputs, for tests that call the fake directly.
type (
	sqsReceive    = sqs.ReceiveMessageInput
	sqsDelete     = sqs.DeleteMessageInput
	sqsVisibility = sqs.ChangeMessageVisibilityInput
)
