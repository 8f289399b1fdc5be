//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// The interruption samples of agent-config/infra/ (see docs/interruptions.md).
type infraRule struct {
	Name         string
	Description  string
	State        string
	EventPattern map[string]any
	Targets      []struct{ Id, Arn string }
}

type infraStatement struct {
	Sid       string
	Effect    string
	Principal map[string]any
	Action    any // a string or a list, as IAM accepts
	Resource  any
	Condition map[string]map[string]any
}

type infraPolicy struct {
	Version   string
	Id        string
	Statement []infraStatement
}

// decodeStrict decodes a sample, refusing fields its type does not have.
func decodeStrict(t *testing.T, rel string, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(readSample(t, rel))))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// strs reads an IAM value that is a string or a list of strings.
func strs(t *testing.T, v any) []string {
	t.Helper()
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				t.Fatalf("%v is not a list of strings", v)
			}
			out = append(out, s)
		}
		return out
	}
	t.Fatalf("%v is neither a string nor a list of strings", v)
	return nil
}

// patternMatches implements the part of EventBridge's event patterns the
// samples use: each key's value is a list of allowed exact values, or a
// nested pattern for an object.
func patternMatches(pattern, event map[string]any) bool {
	for k, want := range pattern {
		got, ok := event[k]
		if !ok {
			return false
		}
		switch w := want.(type) {
		case map[string]any:
			obj, ok := got.(map[string]any)
			if !ok || !patternMatches(w, obj) {
				return false
			}
		case []any:
			if !slices.Contains(w, got) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// TestInterruptionInfraSamplesAgree checks the interruption setup of
// agent-config/infra/ against itself and against the plugin: the rules match
// every event the plugin acts on (and not the state changes it ignores), the
// queue policy lets exactly those rules send to the queue, the IAM policy
// grants the SQS calls the watcher makes on that queue, and the agent sample
// points at the same queue.
func TestInterruptionInfraSamplesAgree(t *testing.T) {
	var rules struct{ Rules []infraRule }
	decodeStrict(t, "infra/eventbridge-rules.json", &rules)
	var queue struct {
		QueueName  string
		Attributes map[string]string
		Tags       map[string]string `json:"tags"`
	}
	decodeStrict(t, "infra/sqs-queue.json", &queue)
	var queuePolicy, agentPolicy infraPolicy
	decodeStrict(t, "infra/sqs-queue-policy.json", &queuePolicy)
	decodeStrict(t, "infra/iam-policy.json", &agentPolicy)

	// Every rule targets one queue; its ARN names the region and account.
	if len(rules.Rules) == 0 {
		t.Fatal("eventbridge-rules.json has no rule")
	}
	queueARN := ""
	for _, r := range rules.Rules {
		if r.State != "ENABLED" || len(r.Targets) != 1 {
			t.Errorf("rule %s: want state ENABLED and one target, got %q and %d", r.Name, r.State, len(r.Targets))
			continue
		}
		if queueARN == "" {
			queueARN = r.Targets[0].Arn
		}
		if r.Targets[0].Arn != queueARN {
			t.Errorf("rule %s targets %s, the others %s", r.Name, r.Targets[0].Arn, queueARN)
		}
	}
	arn := regexp.MustCompile(`^arn:aws:sqs:([a-z0-9-]+):([0-9]{12}):([A-Za-z0-9_-]+)$`).FindStringSubmatch(queueARN)
	if arn == nil {
		t.Fatalf("rule target %q is not an SQS queue ARN", queueARN)
	}
	region, account, name := arn[1], arn[2], arn[3]
	if queue.QueueName != name {
		t.Errorf("sqs-queue.json creates queue %q, the rules target %q", queue.QueueName, name)
	}

	// The rules match what the plugin parses and acts on, and leave out the
	// state changes it ignores.
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	const instance = "i-0123456789abcdef0"
	envelope := func(detailType string, detail any) []byte {
		b, err := json.Marshal(map[string]any{"version": "0", "id": "0b8e1f2a-1c1d-4a47-9d43-3b0e8f9c2d10", "detail-type": detailType,
			"source": "aws.ec2", "account": account, "time": at.Format(time.RFC3339), "region": region,
			"resources": []string{"arn:aws:ec2:" + region + ":" + account + ":instance/" + instance}, "detail": detail})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	events := []struct {
		body []byte
		want bool // the plugin acts on it
	}{
		{envelope(localcloud.SpotInterruptionDetailType, localcloud.SpotInterruptionWarningDetail{InstanceID: instance, InstanceAction: "terminate"}), true},
		{envelope(localcloud.RebalanceDetailType, localcloud.RebalanceRecommendationDetail{InstanceID: instance}), true},
	}
	for _, state := range []string{"pending", "running", "stopping", "stopped", "shutting-down", "terminated"} {
		acted := state != "pending" && state != "running"
		events = append(events, struct {
			body []byte
			want bool
		}{envelope(localcloud.StateChangeDetailType, localcloud.InstanceStateChangeDetail{InstanceID: instance, State: state}), acted})
	}
	for _, e := range events {
		ev, err := interruption.Parse(e.body)
		if err != nil {
			t.Fatalf("the plugin does not parse the sample event %s: %v", e.body, err)
		}
		var fields map[string]any
		if err := json.Unmarshal(e.body, &fields); err != nil {
			t.Fatal(err)
		}
		var matched []string
		for _, r := range rules.Rules {
			if patternMatches(r.EventPattern, fields) {
				matched = append(matched, r.Name)
			}
		}
		switch {
		case e.want && len(matched) != 1:
			t.Errorf("%s: want exactly one rule to match, got %v", ev, matched)
		case !e.want && len(matched) != 0:
			t.Errorf("%s: the plugin ignores it, yet rules %v send it to the queue", ev, matched)
		}
	}

	// The queue: long polling, the watcher's visibility, a retention longer
	// than the plugin retries unknown instances, the policy given twice alike.
	for key, want := range map[string]string{"VisibilityTimeout": "60", "ReceiveMessageWaitTimeSeconds": "20"} {
		if got := queue.Attributes[key]; got != want {
			t.Errorf("sqs-queue.json: %s is %q, want %q", key, got, want)
		}
	}
	if r, err := time.ParseDuration(queue.Attributes["MessageRetentionPeriod"] + "s"); err != nil || r < 10*time.Minute || r > 14*24*time.Hour {
		t.Errorf("sqs-queue.json: MessageRetentionPeriod %q: want seconds from 600 (the plugin retries unknown instances for 10 minutes) to 1209600",
			queue.Attributes["MessageRetentionPeriod"])
	}
	var embedded infraPolicy
	dec := json.NewDecoder(strings.NewReader(queue.Attributes["Policy"]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&embedded); err != nil {
		t.Fatalf("sqs-queue.json: Policy is not a queue policy: %v", err)
	}
	if !reflect.DeepEqual(embedded, queuePolicy) {
		t.Errorf("the Policy of sqs-queue.json differs from sqs-queue-policy.json:\n%+v\n%+v", embedded, queuePolicy)
	}

	// The queue policy: EventBridge may send to this queue, for these rules.
	var ruleARNs []string
	for _, r := range rules.Rules {
		ruleARNs = append(ruleARNs, "arn:aws:events:"+region+":"+account+":rule/"+r.Name)
	}
	sort.Strings(ruleARNs)
	if len(queuePolicy.Statement) != 1 {
		t.Fatalf("sqs-queue-policy.json: want one statement, got %d", len(queuePolicy.Statement))
	}
	st := queuePolicy.Statement[0]
	if st.Effect != "Allow" || !reflect.DeepEqual(st.Principal, map[string]any{"Service": "events.amazonaws.com"}) ||
		!reflect.DeepEqual(strs(t, st.Action), []string{"sqs:SendMessage"}) || !reflect.DeepEqual(strs(t, st.Resource), []string{queueARN}) {
		t.Errorf("sqs-queue-policy.json: want events.amazonaws.com allowed sqs:SendMessage on %s, got %+v", queueARN, st)
	}
	sources := strs(t, st.Condition["ArnEquals"]["aws:SourceArn"])
	sort.Strings(sources)
	if !reflect.DeepEqual(sources, ruleARNs) {
		t.Errorf("sqs-queue-policy.json: aws:SourceArn is %v, want the rules %v", sources, ruleARNs)
	}

	// The agent's IAM policy grants every SQS call of the watcher on the queue.
	api := reflect.TypeFor[interruption.SQSAPI]()
	granted := map[string]bool{}
	for _, s := range agentPolicy.Statement {
		if s.Effect != "Allow" || !slices.Contains(strs(t, s.Resource), queueARN) {
			continue
		}
		for _, a := range strs(t, s.Action) {
			granted[a] = true
		}
	}
	for i := range api.NumMethod() {
		if action := "sqs:" + api.Method(i).Name; !granted[action] {
			t.Errorf("iam-policy.json does not allow %s (called by the interruption watcher) on %s", action, queueARN)
		}
	}

	// The agent sample points at the same queue.
	m := regexp.MustCompile(`(?m)^\s*interruption_queue_url\s*=\s*"([^"]+)"`).FindStringSubmatch(readSample(t, "agent.hcl"))
	if m == nil {
		t.Fatal("agent.hcl sets no interruption_queue_url")
	}
	if err := interruption.ValidQueueURL(m[1]); err != nil {
		t.Errorf("agent.hcl: %v", err)
	}
	if want := "https://sqs." + region + ".amazonaws.com/" + account + "/" + name; m[1] != want {
		t.Errorf("agent.hcl: interruption_queue_url is %s, want the sample queue %s", m[1], want)
	}
	// The Terraform files are compared with these samples in
	// samples_infra_tf_test.go.
}
