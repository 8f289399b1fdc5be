package interruption

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrMalformed is wrapped by the Parse errors of a body that is not a valid
// EC2 event: not JSON, a required field missing, or a value out of range.
var ErrMalformed = errors.New("malformed event")

// ErrUnsupported is wrapped by the Parse errors of a well-formed event that
// this package does not act on: another source, or another EC2 detail-type.
var ErrUnsupported = errors.New("unsupported event")

// The source and detail-types of the events Parse accepts.
const (
	sourceEC2                  = "aws.ec2"
	detailTypeSpotInterruption = "EC2 Spot Instance Interruption Warning"
	detailTypeRebalance        = "EC2 Instance Rebalance Recommendation"
	detailTypeStateChange      = "EC2 Instance State-change Notification"
)

var kindByDetailType = map[string]Kind{
	detailTypeSpotInterruption: KindSpotInterruption,
	detailTypeRebalance:        KindRebalance,
	detailTypeStateChange:      KindStateChange,
}

// instanceIDPattern is an EC2 instance id: the old 8-digit and the current
// 17-digit forms, and anything between (moto issues 17 digits too).
var instanceIDPattern = regexp.MustCompile(`^i-[0-9a-f]{8,17}$`)

var instanceActions = set("terminate", "stop", "hibernate")

var instanceStates = set("pending", "running", "stopping", "stopped", "shutting-down", "terminated")

// maxShown bounds how much of a bad value an error repeats: enough to
// recognise it, not a whole message body in a log line.
const maxShown = 100

// Parse reads the body of an SQS message: an EventBridge event, or an SNS
// notification whose Message is one (unwrapped once).
//
// A body that is not a valid event gives an error wrapping ErrMalformed that
// names the field and its value; a valid event of another source or
// detail-type gives an error wrapping ErrUnsupported that names both.
func Parse(body []byte) (Event, error) {
	fields, err := jsonObject(body, "body")
	if err != nil {
		return Event{}, err
	}
	inner, wrapped, err := snsMessage(fields)
	if err != nil {
		return Event{}, err
	}
	if wrapped {
		if fields, err = jsonObject([]byte(inner), "SNS Message"); err != nil {
			return Event{}, err
		}
	}
	return parseEvent(fields)
}

// parseEvent checks the envelope, then whether the event is one this package
// supports, then the detail of its kind.
func parseEvent(fields map[string]json.RawMessage) (Event, error) {
	var ev Event
	var err error
	if ev.ID, err = requiredString(fields, "id", "id"); err != nil {
		return Event{}, err
	}
	if ev.DetailType, err = requiredString(fields, "detail-type", "detail-type"); err != nil {
		return Event{}, err
	}
	source, err := requiredString(fields, "source", "source")
	if err != nil {
		return Event{}, err
	}
	rawTime, err := requiredString(fields, "time", "time")
	if err != nil {
		return Event{}, err
	}
	rawDetail, ok := fields["detail"]
	if !ok || isNull(rawDetail) {
		return Event{}, malformed(`field "detail" is missing`)
	}

	kind, known := kindByDetailType[ev.DetailType]
	if source != sourceEC2 || !known {
		return Event{}, fmt.Errorf("%w: source %s, detail-type %s (supported: source %q with detail-type %s)",
			ErrUnsupported, shown(source), shown(ev.DetailType), sourceEC2, strings.Join(quotedKeys(kindByDetailType), ", "))
	}
	ev.Kind = kind

	if ev.Time, err = time.Parse(time.RFC3339, rawTime); err != nil {
		return Event{}, malformed(`field "time" is %s, want an RFC 3339 time such as "2026-12-01T10:00:00Z"`, shown(rawTime))
	}
	if ev.Region, err = optionalString(fields, "region", "region"); err != nil {
		return Event{}, err
	}
	if ev.Account, err = optionalString(fields, "account", "account"); err != nil {
		return Event{}, err
	}

	detail, err := jsonObject(rawDetail, `field "detail"`)
	if err != nil {
		return Event{}, err
	}
	if ev.InstanceID, err = requiredString(detail, "instance-id", "detail.instance-id"); err != nil {
		return Event{}, err
	}
	if !instanceIDPattern.MatchString(ev.InstanceID) {
		return Event{}, malformed(`field "detail.instance-id" is %s, want "i-" and 8 to 17 lowercase hex digits`, shown(ev.InstanceID))
	}
	switch kind {
	case KindSpotInterruption:
		if ev.Action, err = oneOf(detail, "instance-action", "detail.instance-action", instanceActions); err != nil {
			return Event{}, err
		}
	case KindStateChange:
		if ev.State, err = oneOf(detail, "state", "detail.state", instanceStates); err != nil {
			return Event{}, err
		}
	}
	return ev, nil
}

// snsMessage returns the event an SNS notification carries, and whether
// fields are such a notification at all.
func snsMessage(fields map[string]json.RawMessage) (string, bool, error) {
	var typ string
	if raw, ok := fields["Type"]; !ok || json.Unmarshal(raw, &typ) != nil || typ != "Notification" {
		return "", false, nil
	}
	msg, err := requiredString(fields, "Message", "Message")
	if err != nil {
		return "", false, fmt.Errorf("SNS notification: %w", err)
	}
	return msg, true, nil
}

// jsonObject decodes data, which must be a JSON object, into its fields.
func jsonObject(data []byte, what string) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		reason := "null"
		if err != nil {
			reason = err.Error()
		}
		return nil, malformed("%s is not a JSON object (%s): %s", what, reason, shownRaw(data))
	}
	return fields, nil
}

// requiredString returns the string field key of fields; name is how errors
// call it (detail fields are "detail.<key>").
func requiredString(fields map[string]json.RawMessage, key, name string) (string, error) {
	raw, ok := fields[key]
	if !ok || isNull(raw) {
		return "", malformed("field %q is missing", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", malformed("field %q is %s, want a string", name, shownRaw(raw))
	}
	if s == "" {
		return "", malformed("field %q is empty", name)
	}
	return s, nil
}

// optionalString is requiredString for a field that may be absent or empty.
func optionalString(fields map[string]json.RawMessage, key, name string) (string, error) {
	raw, ok := fields[key]
	if !ok || isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", malformed("field %q is %s, want a string", name, shownRaw(raw))
	}
	return s, nil
}

// oneOf returns the string field key, which must be one of allowed.
func oneOf(fields map[string]json.RawMessage, key, name string, allowed map[string]bool) (string, error) {
	s, err := requiredString(fields, key, name)
	if err != nil {
		return "", err
	}
	if !allowed[s] {
		return "", malformed("field %q is %s, want one of %s", name, shown(s), strings.Join(quotedKeys(allowed), ", "))
	}
	return s, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func isNull(raw json.RawMessage) bool { return strings.TrimSpace(string(raw)) == "null" }

// shown quotes s for an error message, cut to maxShown characters.
func shown(s string) string {
	r := []rune(s)
	if len(r) <= maxShown {
		return strconv.Quote(s)
	}
	return strconv.Quote(string(r[:maxShown])) + fmt.Sprintf("... (%d bytes)", len(s))
}

// shownRaw is shown for raw JSON, which is repeated unquoted.
func shownRaw(raw []byte) string {
	r := []rune(string(raw))
	if len(r) <= maxShown {
		return string(raw)
	}
	return string(r[:maxShown]) + fmt.Sprintf("... (%d bytes)", len(raw))
}

func set(values ...string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}

// quotedKeys lists the keys of m, quoted and sorted, for error messages.
func quotedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, strconv.Quote(k))
	}
	sort.Strings(keys)
	return keys
}
