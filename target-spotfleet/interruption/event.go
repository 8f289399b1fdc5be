package interruption

import (
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// Kind says which EC2 event an Event is.
type Kind string

// The kinds of EC2 event the watcher understands.
const (
	// KindSpotInterruption is an "EC2 Spot Instance Interruption Warning":
	// EC2 reclaims the instance in two minutes (at once for hibernation).
	KindSpotInterruption Kind = "spot-interruption"
	// KindRebalance is an "EC2 Instance Rebalance Recommendation": the
	// instance is at elevated risk of interruption.
	KindRebalance Kind = "rebalance-recommendation"
	// KindStateChange is an "EC2 Instance State-change Notification".
	KindStateChange Kind = "state-change"
)

// Event is one EC2 event, as EventBridge delivered it.
type Event struct {
	ID         string    // EventBridge event id
	Kind       Kind      // which event this is
	DetailType string    // EventBridge detail-type, e.g. "EC2 Spot Instance Interruption Warning"
	Time       time.Time // when AWS emitted the event
	Region     string    // AWS region of the instance
	Account    string    // AWS account that owns the instance
	InstanceID string    // the instance the event is about
	Action     string    // spot interruption: terminate, stop or hibernate
	State      string    // state change: pending, running, stopping, stopped, shutting-down or terminated
}

// String describes the event on one line, e.g.
// "spot-interruption of i-0abc (terminate) at 10:00:00Z".
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(string(e.Kind))
	b.WriteString(" of ")
	b.WriteString(e.InstanceID)
	switch {
	case e.Action != "":
		b.WriteString(" (" + e.Action + ")")
	case e.State != "":
		b.WriteString(" (" + e.State + ")")
	}
	b.WriteString(" at ")
	b.WriteString(e.Time.UTC().Format("15:04:05Z07:00"))
	return b.String()
}

// Message is what SQS says about the message that carried the event.
type Message struct {
	ID            string    // SQS MessageId
	ReceiveCount  int       // ApproximateReceiveCount: 1 on the first delivery
	Sent          time.Time // SentTimestamp: when EventBridge put the message on the queue
	FirstReceived time.Time // ApproximateFirstReceiveTimestamp
}

// messageOf reads the system attributes of a received message. An attribute
// that is missing or unreadable leaves its field zero.
func messageOf(m types.Message) Message {
	attr := func(name types.MessageSystemAttributeName) string { return m.Attributes[string(name)] }
	msg := Message{
		ID:            aws.ToString(m.MessageId),
		Sent:          epochMillis(attr(types.MessageSystemAttributeNameSentTimestamp)),
		FirstReceived: epochMillis(attr(types.MessageSystemAttributeNameApproximateFirstReceiveTimestamp)),
	}
	if n, err := strconv.Atoi(attr(types.MessageSystemAttributeNameApproximateReceiveCount)); err == nil {
		msg.ReceiveCount = n
	}
	return msg
}

// epochMillis parses the milliseconds since the epoch SQS uses for its
// timestamps; "" or garbage gives the zero time.
func epochMillis(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
