package localcloud

// Messages of the interruption queue. AWS delivers EC2 events to SQS through
// an EventBridge rule; the local cloud writes the same JSON bodies directly
// into QueueURL: spot interruption warnings (Interrupt, InterruptWith),
// rebalance recommendations (Rebalance), instance state-change notifications
// (see the package doc) and whatever a test sends raw (SendMessage).

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// EventBridge detail-types of the other EC2 events the local cloud emits.
const (
	RebalanceDetailType   = "EC2 Instance Rebalance Recommendation"
	StateChangeDetailType = "EC2 Instance State-change Notification"
)

// ForeignInstanceID is an instance ID that is in no fleet of the local cloud
// (and not in moto), for ForeignInterruptionBody.
const ForeignInstanceID = "i-0123456789abcdef0"

// RebalanceRecommendation is the EventBridge event AWS emits when a spot
// instance is at elevated risk of interruption, as delivered to an SQS queue.
type RebalanceRecommendation = EventBridgeEvent[RebalanceRecommendationDetail]

// RebalanceRecommendationDetail is the detail of a RebalanceRecommendation.
type RebalanceRecommendationDetail struct {
	InstanceID string `json:"instance-id"`
}

// InstanceStateChange is the EventBridge "EC2 Instance State-change
// Notification", as delivered to an SQS queue.
type InstanceStateChange = EventBridgeEvent[InstanceStateChangeDetail]

// InstanceStateChangeDetail is the detail of an InstanceStateChange.
type InstanceStateChangeDetail struct {
	InstanceID string `json:"instance-id"`
	State      string `json:"state"`
}

// eventTime is the time field of an event: UTC, whole seconds, like AWS.
func eventTime() time.Time { return time.Now().UTC().Truncate(time.Second) }

// azARN is the resource ARN form of the spot warning and the rebalance
// recommendation: arn:aws:ec2:<az>:instance/<id>.
func azARN(az, instanceID string) string {
	if az == "" {
		az = DefaultRegion + "a"
	}
	return "arn:aws:ec2:" + az + ":instance/" + instanceID
}

// marshalBody encodes an event; the types above always encode.
func marshalBody(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("localcloud: encode %T: %v", v, err))
	}
	return string(b)
}

// interruptionBody is a spot interruption warning for the instance.
func interruptionBody(instanceID, az, action string) string {
	return marshalBody(SpotInterruptionWarning{
		Version:    "0",
		ID:         newEventID(),
		DetailType: SpotInterruptionDetailType,
		Source:     "aws.ec2",
		Account:    DefaultAccountID,
		Time:       eventTime(),
		Region:     DefaultRegion,
		Resources:  []string{azARN(az, instanceID)},
		Detail:     SpotInterruptionWarningDetail{InstanceID: instanceID, InstanceAction: action},
	})
}

// ForeignInterruptionBody returns a well-formed spot interruption warning
// (action terminate) for instanceID, for tests that send a warning about an
// instance that is in none of the local cloud's fleets (ForeignInstanceID,
// for example) with SendMessage. Nothing happens to any instance.
func ForeignInterruptionBody(instanceID string) string {
	return interruptionBody(instanceID, "", InterruptionActionTerminate)
}

// stateChangeBody is a state-change notification for the instance.
func stateChangeBody(instanceID, state string) string {
	return marshalBody(InstanceStateChange{
		Version:    "0",
		ID:         newEventID(),
		DetailType: StateChangeDetailType,
		Source:     "aws.ec2",
		Account:    DefaultAccountID,
		Time:       eventTime(),
		Region:     DefaultRegion,
		Resources:  []string{"arn:aws:ec2:" + DefaultRegion + ":" + DefaultAccountID + ":instance/" + instanceID},
		Detail:     InstanceStateChangeDetail{InstanceID: instanceID, State: state},
	})
}

// sendBody puts one message into the interruption queue.
func (c *Cloud) sendBody(ctx context.Context, body string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.sqs.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    aws.String(c.queueURL),
		MessageBody: aws.String(body),
	}); err != nil {
		return fmt.Errorf("send message to %s: %w", c.queueURL, err)
	}
	return nil
}

// SendMessage puts body as it is into the interruption queue (malformed or
// foreign messages, resent duplicates) and records an EventMessageSent.
func (c *Cloud) SendMessage(ctx context.Context, body string) error {
	if err := c.sendBody(ctx, body); err != nil {
		return fmt.Errorf("localcloud: %w", err)
	}
	short := body
	if len(short) > 120 {
		short = short[:120] + "..."
	}
	c.record(Event{Kind: EventMessageSent, Message: fmt.Sprintf("%d bytes: %s", len(body), short)})
	return nil
}

// Rebalance sends an EventBridge-shaped "EC2 Instance Rebalance
// Recommendation" for a running instance to QueueURL and returns the body
// sent. Nothing else happens to the instance (as on AWS, where the
// recommendation often comes long before an interruption, or without one).
func (c *Cloud) Rebalance(ctx context.Context, instanceID string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	inst, err := c.describeInstance(ctx, instanceID)
	if err != nil {
		return "", fmt.Errorf("localcloud: rebalance %s: %w", instanceID, err)
	}
	if inst.State != string(types.InstanceStateNameRunning) {
		return "", fmt.Errorf("localcloud: rebalance %s: %w (state %s)", instanceID, errNotRunning, inst.State)
	}
	body := marshalBody(RebalanceRecommendation{
		Version:    "0",
		ID:         newEventID(),
		DetailType: RebalanceDetailType,
		Source:     "aws.ec2",
		Account:    DefaultAccountID,
		Time:       eventTime(),
		Region:     DefaultRegion,
		Resources:  []string{azARN(inst.AvailabilityZone, instanceID)},
		Detail:     RebalanceRecommendationDetail{InstanceID: instanceID},
	})
	if err := c.sendBody(ctx, body); err != nil {
		return "", fmt.Errorf("localcloud: rebalance %s: %w", instanceID, err)
	}
	c.record(Event{Kind: EventRebalance, InstanceID: instanceID, Message: "rebalance recommendation queued"})
	return body, nil
}

// QueueDepth returns the interruption queue's ApproximateNumberOfMessages
// (visible: waiting to be received) and
// ApproximateNumberOfMessagesNotVisible (inFlight: received, not deleted,
// visibility timeout not over). moto 5.2.1 computes both exactly from the
// queue's messages at the time of the call.
func (c *Cloud) QueueDepth(ctx context.Context) (visible, inFlight int, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := c.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(c.queueURL),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages,
			sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		return 0, 0, fmt.Errorf("localcloud: queue depth of %s: %w", c.queueURL, err)
	}
	attr := func(name sqstypes.QueueAttributeName) (int, error) {
		s, ok := out.Attributes[string(name)]
		if !ok {
			return 0, fmt.Errorf("localcloud: queue depth of %s: no attribute %s", c.queueURL, name)
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("localcloud: queue depth of %s: attribute %s=%q: %w", c.queueURL, name, s, err)
		}
		return n, nil
	}
	if visible, err = attr(sqstypes.QueueAttributeNameApproximateNumberOfMessages); err != nil {
		return 0, 0, err
	}
	if inFlight, err = attr(sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible); err != nil {
		return 0, 0, err
	}
	return visible, inFlight, nil
}
