package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// Lines as the v0.5.0 agent writes them (plugin fields in random order).
const (
	scaledOutLine = `2026-11-26T11:56:29.328Z [INFO]  external_plugin.target-spotfleet: scaled out: reason="scale out 2 -> 3: recent mean CPU 79.2% (5 points over 10s) > 78.75% (target 75% + 5% tolerance); ceil(2 × 79.2/75) = 3" running=3 spot_fleet_request_id=sfr-d003e16a994203380 action=scale_out from=2 to=3 timestamp=2026-11-26T11:56:29.327Z`
	strategyLine  = `2026-11-26T11:56:44.242Z [INFO]  external_plugin.strategy-cpu-target: scale in 5 -> 3: window peak CPU 42.8% (15 points over 28s) < 71.25% (target 75% - 5% tolerance); ceil(5 × 42.8/75) = 3 keeps that peak at or below target: count=5 check=cpu timestamp=2026-11-26T11:56:44.242Z`
	calcLine      = `2026-11-26T11:56:34.247Z [INFO]  policy_manager.policy_handler: calculating scaling target: policy_id=1eb source=file target=spotfleet target_config="map[node_class:spot-worker node_drain_deadline:20s]" policy_id=1eb from=2 to=5 reason="scale out 2 -> 5: recent mean CPU 153.5% (5 points over 10s) > 78.75% (target 75% + 5% tolerance); ceil(2 × 153.5/75) = 5" meta=map[]`
	cooldownLine  = `2026-11-26T11:56:34.248Z [INFO]  policy_manager.policy_handler: skipping scaling, policy still on cooldown: policy_id=1eb source=file target=spotfleet target_config="map[node_class:spot-worker]" remaining=15.080972249s`
	scaledInLine  = `2026-11-26T11:56:50.000Z [INFO]  external_plugin.target-spotfleet: scaled in: terminated=[i-1, i-2] drain_failed=[] from=5 target_capacity=3 reason="scale in 5 -> 3: x" terminate_failed=[] selector=least_busy action=scale_in to=3 timestamp=2026-11-26T11:56:50.000Z`
)

func TestParseLogLine(t *testing.T) {
	tests := []struct {
		line   string
		level  string
		msg    string
		fields map[string]string
	}{
		{scaledOutLine, "INFO", "scaled out", map[string]string{
			"from": "2", "to": "3", "running": "3", "action": "scale_out",
			"reason": "scale out 2 -> 3: recent mean CPU 79.2% (5 points over 10s) > 78.75% (target 75% + 5% tolerance); ceil(2 × 79.2/75) = 3",
		}},
		{strategyLine, "INFO",
			"scale in 5 -> 3: window peak CPU 42.8% (15 points over 28s) < 71.25% (target 75% - 5% tolerance); ceil(5 × 42.8/75) = 3 keeps that peak at or below target",
			map[string]string{"count": "5", "check": "cpu"}},
		{cooldownLine, "INFO", "skipping scaling, policy still on cooldown", map[string]string{"remaining": "15.080972249s"}},
		{scaledInLine, "INFO", "scaled in", map[string]string{"terminated": "[i-1, i-2]", "target_capacity": "3", "drain_failed": "[]"}},
		{`2026-11-26T11:56:50.000Z [WARN]  x: a message with x=1 in the middle: k=v`, "WARN",
			"a message with x=1 in the middle", map[string]string{"k": "v"}},
	}
	for _, tt := range tests {
		l, ok := parseLogLine(tt.line)
		if !ok {
			t.Fatalf("not parsed: %s", tt.line)
		}
		if l.Level != tt.level || l.Msg != tt.msg {
			t.Errorf("level %q msg %q, want %q %q", l.Level, l.Msg, tt.level, tt.msg)
		}
		for k, v := range tt.fields {
			if l.Fields[k] != v {
				t.Errorf("%s: field %s = %q, want %q", tt.msg, k, l.Fields[k], v)
			}
		}
	}
	if _, ok := parseLogLine("panic: something"); ok {
		t.Error("a non-hclog line parsed")
	}
}

func TestAgentLogTimeline(t *testing.T) {
	var out bytes.Buffer
	rec := newRecord()
	a := &agentLog{tl: newTimeline(&out, time.Now()), rec: rec}
	for _, l := range []string{calcLine, cooldownLine, calcLine, cooldownLine, strategyLine, scaledOutLine, scaledInLine} {
		a.handle(l)
	}
	got := out.String()
	for _, want := range []string{
		"scale out 2 -> 5 held back (cooldown, 15s left); recent mean CPU 153.5%",
		"scaled out: target capacity 2 -> 3, 3 instances running",
		"scaled in: target capacity 5 -> 3, drained and terminated [i-1, i-2]",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("timeline lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "held back"); n != 1 {
		t.Errorf("the same held-back action is printed %d times, want once:\n%s", n, got)
	}
	s := rec.summary()
	if s.ScaleOuts != 1 || s.ScaleIns != 1 || s.DecisionsIn != 1 || s.HeldBack != 2 {
		t.Errorf("counts: %+v", s)
	}
}
