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
	a.flush()
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

// Hook and interruption lines as target-spotfleet writes them; the failed
// hook's why field holds the playbook's output over several lines.
const (
	registeredLine = `2026-12-02T04:22:01.455Z [INFO]  external_plugin.target-spotfleet: node registered: running its launch hooks: instance_id=i-f1 node_id=615c4c5e-f8af resumed=false action=provision launch_hooks=configure timestamp=2026-12-02T04:22:01.455Z`
	finishedLine   = `2026-12-02T04:22:03.489Z [INFO]  external_plugin.target-spotfleet: hook finished: type=awx duration="2.014e+09" hook=configure instance_id=i-ok job_id=1002 @module=hooks timestamp=2026-12-02T04:22:03.489Z`
	failedLine1    = `2026-12-02T04:22:03.497Z [WARN]  external_plugin.target-spotfleet: launch hook failed: the instance is removed and the fleet replaces it (on_failure=terminate): instance_id=i-f1`
	failedLine2    = `  why=`
	failedLine3    = `  | hook configure (awx): AWX job 1001 ended failed: ansible-playbook: exit status 2; last lines of its output:`
	failedLine4    = `  | fatal: [172.31.0.4]: FAILED! => {"changed": false, "msg": "x=1 y"}`
	failedLine5    = `   hook=configure action=provision timestamp=2026-12-02T04:22:03.497Z`
	removedLine    = `2026-12-02T04:22:03.552Z [WARN]  external_plugin.target-spotfleet: terminated the instance whose launch hook failed; the fleet launches a replacement: action=provision instance_id=i-f1 node_id=615c4c5e`
	admittedLine   = `2026-12-02T04:22:13.230Z [INFO]  external_plugin.target-spotfleet: node admitted: it takes work now: admission_took=1.762s hooks_took=4.026s instance_id=i-ok pipeline_to_admitted=5.788s launch_hooks=configure`
	drainIRQLine   = `2026-12-02T04:24:49.397Z [INFO]  external_plugin.target-spotfleet: draining the node of a leaving instance: event_id=b93 instance_id=i-v node_id=86c9a549-b881 allocations_move=now event=spot-interruption notice_left=2m0s took_over_drain=false deadline=10s`
	raisedLine     = `2026-12-02T04:24:49.500Z [INFO]  external_plugin.target-spotfleet: replacement requested: target capacity raised by one for the interrupted instance; given back once the replacement has launched or the instance is gone: instance_id=i-v read_before_change=5 target_capacity=6`
)

func TestAgentLogHooksAndInterruption(t *testing.T) {
	var out bytes.Buffer
	rec := newRecord()
	rec.updateIRQ(func(irq *interruption) { irq.Instance = "i-v" })
	a := &agentLog{tl: newTimeline(&out, time.Now()), rec: rec}
	for _, l := range []string{registeredLine, finishedLine, failedLine1, failedLine2, failedLine3, failedLine4, failedLine5, removedLine, admittedLine, drainIRQLine, raisedLine} {
		a.handle(l)
	}
	a.flush()
	got := out.String()
	for _, want := range []string{
		"i-f1 registered gated: target-spotfleet runs its launch hook configure",
		"i-ok: hook configure finished: AWX job 1002 successful (2s)",
		"i-f1: launch hook configure FAILED",
		"terminated i-f1, whose launch hook failed",
		"i-ok admitted (spotfleet_admission=admitted): it takes work now; hooks took 4s, admission 1.8s",
		"got the warning for i-v from SQS: draining node 86c9a549 now, deadline 10s",
		"replacement requested for i-v: target capacity raised to 6",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("timeline lacks %q:\n%s", want, got)
		}
	}
	h := rec.history(time.Now(), time.Now())
	wantAt := func(m map[string]time.Time, inst, ts string) {
		t.Helper()
		w, _ := time.Parse(time.RFC3339Nano, ts)
		if !m[inst].Equal(w) {
			t.Errorf("%s logged at %s, want the line's own time %s", inst, m[inst], w)
		}
	}
	wantAt(h.HookFailed, "i-f1", "2026-12-02T04:22:03.497Z")
	wantAt(h.HookRemoved, "i-f1", "2026-12-02T04:22:03.552Z")
	wantAt(h.AdmitLogged, "i-ok", "2026-12-02T04:22:13.230Z")
	if w, _ := time.Parse(time.RFC3339Nano, "2026-12-02T04:24:49.397Z"); !h.IRQ.DrainLogged.Equal(w) {
		t.Errorf("interruption drain logged at %s, want %s", h.IRQ.DrainLogged, w)
	}
	kinds := map[markKind]int{}
	for _, m := range h.Marks {
		kinds[m.Kind]++
	}
	if kinds[markHookFailed] != 1 || kinds[markAdmitted] != 1 {
		t.Errorf("marks %v, want one hook failure and one admission", kinds)
	}
}

func TestParseMultiLineEntry(t *testing.T) {
	// instance_id on the first line, or after the multi-line value: hclog
	// orders a plugin's fields at random.
	lastLine := strings.Replace(failedLine1, ": instance_id=i-f1", "", 1)
	for _, entry := range []string{
		strings.Join([]string{failedLine1, failedLine2, failedLine3, failedLine4, failedLine5}, "\n"),
		strings.Join([]string{lastLine, failedLine2, failedLine3, failedLine4, failedLine5 + " instance_id=i-f1"}, "\n"),
	} {
		l, ok := parseLogLine(entry)
		if !ok {
			t.Fatal("not parsed")
		}
		if l.Fields["instance_id"] != "i-f1" || l.Fields["hook"] != "configure" || l.Fields["timestamp"] == "" {
			t.Errorf("fields %v, want instance_id i-f1, hook and timestamp", l.Fields)
		}
		wantWhy := "hook configure (awx): AWX job 1001 ended failed: ansible-playbook: exit status 2; last lines of its output:\n" +
			`fatal: [172.31.0.4]: FAILED! => {"changed": false, "msg": "x=1 y"}`
		if l.Fields["why"] != wantWhy {
			t.Errorf("why = %q, want %q", l.Fields["why"], wantWhy)
		}
		if _, ok := l.Fields["x"]; ok {
			t.Errorf("a key=value inside the multi-line value was taken as a field: %v", l.Fields)
		}
		if l.Msg != "launch hook failed: the instance is removed and the fleet replaces it (on_failure=terminate)" {
			t.Errorf("msg %q", l.Msg)
		}
		if l.Time.IsZero() {
			t.Error("no time parsed")
		}
	}
}
