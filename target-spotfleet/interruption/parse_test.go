package interruption

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The bodies below have the shapes of the AWS documentation ("Spot Instance
// interruption notices", "EC2 instance rebalance recommendations", "State
// change events for Amazon EC2 instances").

const warningBody = `{
  "version": "0",
  "id": "12345678-1234-1234-1234-123456789012",
  "detail-type": "EC2 Spot Instance Interruption Warning",
  "source": "aws.ec2",
  "account": "123456789012",
  "time": "2026-12-01T10:00:00Z",
  "region": "us-east-1",
  "resources": ["arn:aws:ec2:us-east-1a:instance/i-1234567890abcdef0"],
  "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"}
}`

const rebalanceBody = `{
  "version": "0",
  "id": "a0b1c2d3-0000-4000-8000-000000000001",
  "detail-type": "EC2 Instance Rebalance Recommendation",
  "source": "aws.ec2",
  "account": "123456789012",
  "time": "2026-12-01T09:58:12Z",
  "region": "us-east-2",
  "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-0abcd1234ef567890"],
  "detail": {"instance-id": "i-0abcd1234ef567890"}
}`

// The documentation's state-change example has no "version".
const stateChangeBody = `{
  "id": "7bf73129-1428-4cd3-a780-95db273d1602",
  "detail-type": "EC2 Instance State-change Notification",
  "source": "aws.ec2",
  "account": "123456789012",
  "time": "2021-11-11T21:29:54Z",
  "region": "us-east-1",
  "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
  "detail": {"instance-id": "i-abcd1111", "state": "shutting-down"}
}`

// snsWrapped is body as SNS delivers it to SQS without raw delivery.
func snsWrapped(t *testing.T, body string) string {
	t.Helper()
	wrapper, err := json.Marshal(map[string]string{
		"Type":      "Notification",
		"MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
		"TopicArn":  "arn:aws:sns:us-east-1:123456789012:spot-events",
		"Message":   body,
		"Timestamp": "2026-12-01T10:00:01.000Z",
	})
	require.NoError(t, err)
	return string(wrapper)
}

// edit returns body with its field path (dot-separated) set to value, or
// deleted when value is nil.
func edit(t *testing.T, body, path string, value any) string {
	t.Helper()
	var doc map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &doc))
	keys := strings.Split(path, ".")
	m := doc
	for _, k := range keys[:len(keys)-1] {
		m = m[k].(map[string]any)
	}
	if value == nil {
		delete(m, keys[len(keys)-1])
	} else {
		m[keys[len(keys)-1]] = value
	}
	out, err := json.Marshal(doc)
	require.NoError(t, err)
	return string(out)
}

func TestParseReadsEachSupportedEvent(t *testing.T) {
	cases := []struct {
		name string
		body string
		want Event
	}{
		{name: "spot interruption warning", body: warningBody, want: Event{
			ID: "12345678-1234-1234-1234-123456789012", Kind: KindSpotInterruption, DetailType: "EC2 Spot Instance Interruption Warning",
			Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Region: "us-east-1", Account: "123456789012",
			InstanceID: "i-1234567890abcdef0", Action: "terminate",
		}},
		{name: "rebalance recommendation", body: rebalanceBody, want: Event{
			ID: "a0b1c2d3-0000-4000-8000-000000000001", Kind: KindRebalance, DetailType: "EC2 Instance Rebalance Recommendation",
			Time: time.Date(2026, 12, 1, 9, 58, 12, 0, time.UTC), Region: "us-east-2", Account: "123456789012",
			InstanceID: "i-0abcd1234ef567890",
		}},
		{name: "state change with an 8-digit instance id", body: stateChangeBody, want: Event{
			ID: "7bf73129-1428-4cd3-a780-95db273d1602", Kind: KindStateChange, DetailType: "EC2 Instance State-change Notification",
			Time: time.Date(2021, 11, 11, 21, 29, 54, 0, time.UTC), Region: "us-east-1", Account: "123456789012",
			InstanceID: "i-abcd1111", State: "shutting-down",
		}},
		{name: "spot interruption that stops", body: edit(t, warningBody, "detail.instance-action", "stop"), want: Event{
			ID: "12345678-1234-1234-1234-123456789012", Kind: KindSpotInterruption, DetailType: "EC2 Spot Instance Interruption Warning",
			Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Region: "us-east-1", Account: "123456789012",
			InstanceID: "i-1234567890abcdef0", Action: "stop",
		}},
		{name: "spot interruption that hibernates, time with an offset", body: edit(t, edit(t, warningBody, "detail.instance-action", "hibernate"), "time", "2026-12-01T11:00:00+01:00"), want: Event{
			ID: "12345678-1234-1234-1234-123456789012", Kind: KindSpotInterruption, DetailType: "EC2 Spot Instance Interruption Warning",
			Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Region: "us-east-1", Account: "123456789012",
			InstanceID: "i-1234567890abcdef0", Action: "hibernate",
		}},
		{name: "SNS-wrapped warning", body: snsWrapped(t, warningBody), want: Event{
			ID: "12345678-1234-1234-1234-123456789012", Kind: KindSpotInterruption, DetailType: "EC2 Spot Instance Interruption Warning",
			Time: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), Region: "us-east-1", Account: "123456789012",
			InstanceID: "i-1234567890abcdef0", Action: "terminate",
		}},
		{name: "resources as a string, as in some documentation", body: edit(t, rebalanceBody, "resources", "arn:aws:ec2:us-east-2:123456789012:instance/i-0abcd1234ef567890"), want: Event{
			ID: "a0b1c2d3-0000-4000-8000-000000000001", Kind: KindRebalance, DetailType: "EC2 Instance Rebalance Recommendation",
			Time: time.Date(2026, 12, 1, 9, 58, 12, 0, time.UTC), Region: "us-east-2", Account: "123456789012",
			InstanceID: "i-0abcd1234ef567890",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.body))
			require.NoError(t, err)
			require.True(t, tc.want.Time.Equal(got.Time), "time %s, want %s", got.Time, tc.want.Time)
			got.Time = tc.want.Time
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseNamesTheBadFieldOfAMalformedEvent(t *testing.T) {
	long := strings.Repeat("x", 5000)
	cases := []struct {
		name string
		body string
		want []string // each must be in the error
	}{
		{name: "not JSON", body: "hello from the SQS console", want: []string{"body is not a JSON object", `hello from`}},
		{name: "empty body", body: "", want: []string{"body is not a JSON object"}},
		{name: "JSON array", body: `[1,2]`, want: []string{"body is not a JSON object", "[1,2]"}},
		{name: "JSON null", body: `null`, want: []string{"body is not a JSON object (null)"}},
		{name: "no id", body: edit(t, warningBody, "id", nil), want: []string{`field "id" is missing`}},
		{name: "empty id", body: edit(t, warningBody, "id", ""), want: []string{`field "id" is empty`}},
		{name: "numeric id", body: edit(t, warningBody, "id", 42), want: []string{`field "id" is 42, want a string`}},
		{name: "no detail-type", body: edit(t, warningBody, "detail-type", nil), want: []string{`field "detail-type" is missing`}},
		{name: "no source", body: edit(t, warningBody, "source", nil), want: []string{`field "source" is missing`}},
		{name: "no time", body: edit(t, warningBody, "time", nil), want: []string{`field "time" is missing`}},
		{name: "no detail", body: edit(t, warningBody, "detail", nil), want: []string{`field "detail" is missing`}},
		{name: "detail not an object", body: edit(t, warningBody, "detail", "terminate"), want: []string{`field "detail" is not a JSON object`, `"terminate"`}},
		{name: "time not RFC 3339", body: edit(t, warningBody, "time", "yesterday"), want: []string{`field "time" is "yesterday", want an RFC 3339 time`}},
		{name: "region not a string", body: edit(t, warningBody, "region", []int{1}), want: []string{`field "region" is [1], want a string`}},
		{name: "no instance id", body: edit(t, warningBody, "detail.instance-id", nil), want: []string{`field "detail.instance-id" is missing`}},
		{name: "instance id of another resource", body: edit(t, warningBody, "detail.instance-id", "sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c"),
			want: []string{`field "detail.instance-id" is "sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c", want "i-" and 8 to 17 lowercase hex digits`}},
		{name: "instance id too short", body: edit(t, warningBody, "detail.instance-id", "i-1234567"), want: []string{`"i-1234567"`}},
		{name: "instance id too long", body: edit(t, warningBody, "detail.instance-id", "i-1234567890abcdef01"), want: []string{`"i-1234567890abcdef01"`}},
		{name: "instance id upper case", body: edit(t, warningBody, "detail.instance-id", "i-1234567890ABCDEF0"), want: []string{`"i-1234567890ABCDEF0"`}},
		{name: "huge instance id is cut", body: edit(t, warningBody, "detail.instance-id", long), want: []string{`field "detail.instance-id" is "` + strings.Repeat("x", 100) + `"... (5000 bytes)`}},
		{name: "no instance-action", body: edit(t, warningBody, "detail.instance-action", nil), want: []string{`field "detail.instance-action" is missing`}},
		{name: "unknown instance-action", body: edit(t, warningBody, "detail.instance-action", "reboot"),
			want: []string{`field "detail.instance-action" is "reboot", want one of "hibernate", "stop", "terminate"`}},
		{name: "no state", body: edit(t, stateChangeBody, "detail.state", nil), want: []string{`field "detail.state" is missing`}},
		{name: "unknown state", body: edit(t, stateChangeBody, "detail.state", "rebooting"),
			want: []string{`field "detail.state" is "rebooting", want one of "pending", "running", "shutting-down", "stopped", "stopping", "terminated"`}},
		{name: "SNS notification without Message", body: `{"Type":"Notification","MessageId":"x"}`, want: []string{`SNS notification`, `field "Message" is missing`}},
		{name: "SNS Message not JSON", body: `{"Type":"Notification","Message":"not json"}`, want: []string{"SNS Message is not a JSON object", "not json"}},
		{name: "SNS wraps only once", body: snsWrapped(t, snsWrapped(t, warningBody)), want: []string{`field "id" is missing`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body))
			require.ErrorIs(t, err, ErrMalformed)
			require.False(t, errors.Is(err, ErrUnsupported))
			for _, w := range tc.want {
				require.ErrorContains(t, err, w)
			}
			require.Less(t, len(err.Error()), 400, "a bad value is not repeated whole")
		})
	}
}

func TestParseNamesSourceAndDetailTypeOfAnUnsupportedEvent(t *testing.T) {
	cases := []struct {
		name string
		body string
		want string
	}{
		{name: "scheduled change", body: edit(t, warningBody, "detail-type", "EC2 Instance Scheduled Change"),
			want: `source "aws.ec2", detail-type "EC2 Instance Scheduled Change"`},
		{name: "health event", body: edit(t, edit(t, warningBody, "source", "aws.health"), "detail-type", "AWS Health Event"),
			want: `source "aws.health", detail-type "AWS Health Event"`},
		{name: "a warning from another source", body: edit(t, warningBody, "source", "custom.test"),
			want: `source "custom.test", detail-type "EC2 Spot Instance Interruption Warning"`},
		{name: "SNS-wrapped unsupported", body: snsWrapped(t, edit(t, warningBody, "detail-type", "EC2 Fleet Spot Instance Request Change")),
			want: `detail-type "EC2 Fleet Spot Instance Request Change"`},
		{name: "its detail is not looked at", body: edit(t, edit(t, warningBody, "detail-type", "AWS API Call via CloudTrail"), "detail", map[string]any{"eventName": "RunInstances"}),
			want: `detail-type "AWS API Call via CloudTrail"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body))
			require.ErrorIs(t, err, ErrUnsupported)
			require.False(t, errors.Is(err, ErrMalformed))
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestEventStringIsOneShortLine(t *testing.T) {
	at := time.Date(2026, 12, 1, 11, 0, 0, 0, time.FixedZone("CET", 3600))
	cases := []struct {
		ev   Event
		want string
	}{
		{ev: Event{Kind: KindSpotInterruption, InstanceID: "i-0abc", Action: "terminate", Time: at}, want: "spot-interruption of i-0abc (terminate) at 10:00:00Z"},
		{ev: Event{Kind: KindRebalance, InstanceID: "i-0abc", Time: at}, want: "rebalance-recommendation of i-0abc at 10:00:00Z"},
		{ev: Event{Kind: KindStateChange, InstanceID: "i-0abc", State: "terminated", Time: at}, want: "state-change of i-0abc (terminated) at 10:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) { require.Equal(t, tc.want, tc.ev.String()) })
	}
}
