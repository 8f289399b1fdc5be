package localcloud

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// SpotInterruptionDetailType is the EventBridge detail-type of a spot
// interruption warning.
const SpotInterruptionDetailType = "EC2 Spot Instance Interruption Warning"

// EventBridgeEvent is the envelope of an EventBridge event as delivered to
// an SQS queue, with the detail of its detail-type.
type EventBridgeEvent[D any] struct {
	Version    string    `json:"version"`
	ID         string    `json:"id"`
	DetailType string    `json:"detail-type"`
	Source     string    `json:"source"`
	Account    string    `json:"account"`
	Time       time.Time `json:"time"`
	Region     string    `json:"region"`
	Resources  []string  `json:"resources"`
	Detail     D         `json:"detail"`
}

// SpotInterruptionWarning is the EventBridge event AWS emits two minutes
// before it reclaims a spot instance, as delivered to an SQS queue.
type SpotInterruptionWarning = EventBridgeEvent[SpotInterruptionWarningDetail]

// SpotInterruptionWarningDetail is the detail of a SpotInterruptionWarning.
type SpotInterruptionWarningDetail struct {
	InstanceID     string `json:"instance-id"`
	InstanceAction string `json:"instance-action"`
}

// QueueURL returns the URL of the SQS queue that receives interruption
// warnings.
func (c *Cloud) QueueURL() string { return c.queueURL }

// QueueARN returns the ARN of the interruption queue.
func (c *Cloud) QueueARN() string { return c.queueARN }

// createQueue creates the interruption queue in moto.
func (c *Cloud) createQueue(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := c.sqs.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(c.cfg.QueueName)})
	if err != nil {
		return fmt.Errorf("localcloud: create SQS queue %s: %w", c.cfg.QueueName, err)
	}
	c.queueURL = aws.ToString(out.QueueUrl)
	attrs, err := c.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       out.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn},
	})
	if err != nil {
		return fmt.Errorf("localcloud: read attributes of SQS queue %s: %w", c.cfg.QueueName, err)
	}
	c.queueARN = attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)]
	return nil
}

// newEventID returns a random UUID-shaped ID.
func newEventID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// DefaultInterruptionNotice is AWS's two-minute spot interruption notice,
// used by InterruptWith when InterruptSpec.Notice is zero (tests pass a
// scaled-down notice).
const DefaultInterruptionNotice = 120 * time.Second

// Interruption actions: InterruptSpec.Action and the warning's
// instance-action.
const (
	InterruptionActionTerminate = "terminate"
	InterruptionActionStop      = "stop"
)

// InterruptSpec describes a spot interruption for InterruptWith.
type InterruptSpec struct {
	// Notice is the time between the warning and the action; zero means
	// DefaultInterruptionNotice, a negative value is an error.
	Notice time.Duration
	// Action is what happens at the end of the notice, and the warning's
	// instance-action: InterruptionActionTerminate (default when empty) or
	// InterruptionActionStop (the instance is stopped, StopInstances in moto;
	// it stays in the fleet, see StopInstance).
	Action string
	// Duplicates is the number of extra identical copies of the warning
	// (same body, same event ID) sent right after it, as an at-least-once
	// delivery may do.
	Duplicates int
}

// Interrupt emulates a spot interruption of a running instance: it sends an
// EventBridge-shaped "EC2 Spot Instance Interruption Warning" to QueueURL
// now and terminates the instance after notice (in the background; Close
// cancels a pending termination). It returns once the warning is queued.
// Interrupt(ctx, id, notice) is InterruptWith with that Notice, except that a
// zero notice here means termination at once.
func (c *Cloud) Interrupt(ctx context.Context, instanceID string, notice time.Duration) error {
	_, err := c.interrupt(ctx, instanceID, notice, InterruptionActionTerminate, 0)
	return err
}

// InterruptWith emulates a spot interruption of a running instance as spec
// says: it sends the warning (and spec.Duplicates identical copies) to
// QueueURL now and, after the notice, terminates or stops the instance in
// the background (Close cancels it), with the state-change notifications of
// that transition queued at once. It returns the warning's body, so that a
// test can send it again with SendMessage, once every copy is queued; if a
// send fails, nothing is scheduled.
func (c *Cloud) InterruptWith(ctx context.Context, instanceID string, spec InterruptSpec) (string, error) {
	notice := spec.Notice
	if notice == 0 {
		notice = DefaultInterruptionNotice
	}
	if notice < 0 {
		return "", fmt.Errorf("localcloud: interrupt %s: negative notice %s", instanceID, notice)
	}
	action := spec.Action
	if action == "" {
		action = InterruptionActionTerminate
	}
	if action != InterruptionActionTerminate && action != InterruptionActionStop {
		return "", fmt.Errorf("localcloud: interrupt %s: unknown action %q (want %q or %q)",
			instanceID, action, InterruptionActionTerminate, InterruptionActionStop)
	}
	if spec.Duplicates < 0 {
		return "", fmt.Errorf("localcloud: interrupt %s: negative duplicates %d", instanceID, spec.Duplicates)
	}
	return c.interrupt(ctx, instanceID, notice, action, spec.Duplicates)
}

// interrupt sends the warning 1+dups times and schedules the action.
func (c *Cloud) interrupt(ctx context.Context, instanceID string, notice time.Duration, action string, dups int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	inst, err := c.describeInstance(ctx, instanceID)
	if err != nil {
		return "", fmt.Errorf("localcloud: interrupt %s: %w", instanceID, err)
	}
	if inst.State != string(types.InstanceStateNameRunning) {
		return "", fmt.Errorf("localcloud: interrupt %s: %w (state %s)", instanceID, errNotRunning, inst.State)
	}
	body := interruptionBody(instanceID, inst.AvailabilityZone, action)
	for i := range 1 + dups {
		if err := c.sendBody(ctx, body); err != nil {
			return body, fmt.Errorf("localcloud: interrupt %s: warning %d of %d: %w", instanceID, i+1, 1+dups, err)
		}
	}
	what := "termination"
	if action == InterruptionActionStop {
		what = "stop"
	}
	msg := fmt.Sprintf("warning queued, %s in %s", what, notice)
	if dups > 0 {
		msg = fmt.Sprintf("warning queued with %d identical duplicates, %s in %s", dups, what, notice)
	}
	c.record(Event{Kind: EventInterruptionWarning, InstanceID: instanceID, Message: msg})

	started := c.goBackground(func() {
		t := time.NewTimer(notice)
		defer t.Stop()
		select {
		case <-c.bgCtx.Done():
			return
		case <-t.C:
		}
		if action == InterruptionActionStop {
			prev, done, err := c.stopIfRunning(c.bgCtx, instanceID, "interruption")
			m := "stopped after the notice"
			switch {
			case errors.Is(err, errNotRunning) || (err == nil && !done):
				m = "already " + prev + " before the notice ended"
			case err != nil:
				m = "stop failed: " + err.Error()
			}
			c.record(Event{Kind: EventInterruptionStopped, InstanceID: instanceID, Message: m})
			return
		}
		done, err := c.terminateIfRunning(c.bgCtx, instanceID, "interruption")
		m := "terminated after the notice"
		switch {
		case err != nil:
			m = "termination failed: " + err.Error()
		case !done:
			m = "already terminated before the notice ended"
		}
		c.record(Event{Kind: EventInterruptionTerminated, InstanceID: instanceID, Message: m})
	})
	if !started {
		return body, fmt.Errorf("localcloud: interrupt %s: the cloud is closed", instanceID)
	}
	return body, nil
}
