package localcloud

import (
	"context"
	"crypto/rand"
	"encoding/json"
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

// SpotInterruptionWarning is the EventBridge event AWS emits two minutes
// before it reclaims a spot instance, as delivered to an SQS queue.
type SpotInterruptionWarning struct {
	Version    string                        `json:"version"`
	ID         string                        `json:"id"`
	DetailType string                        `json:"detail-type"`
	Source     string                        `json:"source"`
	Account    string                        `json:"account"`
	Time       time.Time                     `json:"time"`
	Region     string                        `json:"region"`
	Resources  []string                      `json:"resources"`
	Detail     SpotInterruptionWarningDetail `json:"detail"`
}

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

// Interrupt emulates a spot interruption of a running instance: it sends an
// EventBridge-shaped "EC2 Spot Instance Interruption Warning" to QueueURL
// now and terminates the instance after notice (in the background; Close
// cancels a pending termination). It returns once the warning is queued.
func (c *Cloud) Interrupt(ctx context.Context, instanceID string, notice time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	inst, err := c.describeInstance(ctx, instanceID)
	if err != nil {
		return fmt.Errorf("localcloud: interrupt %s: %w", instanceID, err)
	}
	if inst.State != string(types.InstanceStateNameRunning) {
		return fmt.Errorf("localcloud: interrupt %s: %w (state %s)", instanceID, errNotRunning, inst.State)
	}
	az := inst.AvailabilityZone
	if az == "" {
		az = DefaultRegion + "a"
	}
	msg := SpotInterruptionWarning{
		Version:    "0",
		ID:         newEventID(),
		DetailType: SpotInterruptionDetailType,
		Source:     "aws.ec2",
		Account:    DefaultAccountID,
		Time:       time.Now().UTC().Truncate(time.Second),
		Region:     DefaultRegion,
		Resources:  []string{"arn:aws:ec2:" + az + ":instance/" + instanceID},
		Detail:     SpotInterruptionWarningDetail{InstanceID: instanceID, InstanceAction: "terminate"},
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("localcloud: interrupt %s: encode warning: %w", instanceID, err)
	}
	if _, err := c.sqs.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    aws.String(c.queueURL),
		MessageBody: aws.String(string(body)),
	}); err != nil {
		return fmt.Errorf("localcloud: interrupt %s: send warning to %s: %w", instanceID, c.queueURL, err)
	}
	c.record(Event{Kind: EventInterruptionWarning, InstanceID: instanceID,
		Message: fmt.Sprintf("warning queued, termination in %s", notice)})

	started := c.goBackground(func() {
		t := time.NewTimer(notice)
		defer t.Stop()
		select {
		case <-c.bgCtx.Done():
			return
		case <-t.C:
		}
		done, err := c.terminateIfRunning(c.bgCtx, instanceID)
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
		return fmt.Errorf("localcloud: interrupt %s: the cloud is closed", instanceID)
	}
	return nil
}
