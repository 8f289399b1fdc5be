package main

// Regression tests for the fixes of review 10 beside the reviewer's own
// (review10_test.go): each breaks one thing the fixed checks now look at.

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPromiseAdmissionChecksMarkerAndNodeDir(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		breakIt      func(h *history)
	}{
		{"no marker", "no monitoring marker", func(h *history) { h.Nodes[3].Marker, h.Nodes[3].MarkerErr = "", "open x: no such file" }},
		{"marker of another node", `marker reads "i-a"`, func(h *history) { h.Nodes[3].Marker = "i-a\n" }},
		{"job with another node_dir", "is not the node's meta.node_dir", func(h *history) { h.Nodes[1].NodeDir = "/elsewhere" }},
		{"address never read", "address was never read", func(h *history) {
			in := h.Instances["i-d"]
			in.PrivateIP = ""
			h.Instances["i-d"] = in
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, jobs, _, _ := goodDay()
			tc.breakIt(&h)
			p := promiseAdmission(h, jobs)
			if p.OK || !strings.Contains(p.Detail, tc.reason) {
				t.Errorf("OK=%v detail %q, want broken naming %q", p.OK, p.Detail, tc.reason)
			}
		})
	}
}

// A scale-out between the failed instance's termination and the next
// launch: that launch is the scale-out's, not the maintain refill.
func TestFailedReplacementNotAScaleOut(t *testing.T) {
	h, _, _, _ := goodDay()
	h.Marks = append(h.Marks, mark{At: at(28), Kind: markScaleOut, Label: "2→3"})
	h.Samples = []sample{{At: at(26), Target: 2}, {At: at(28.5), Target: 3}, {At: at(31), Target: 3}}
	if repl, why := failedReplacement(h, "i-f"); repl != "" {
		t.Errorf("failedReplacement = %s, want none: the only instance after the termination came with a raised target", repl)
	} else if why == "" {
		t.Error("no reason given")
	}
	// Without the scale-out the same launch is the refill.
	h, _, _, _ = goodDay()
	if repl, why := failedReplacement(h, "i-f"); repl != "i-c" {
		t.Errorf("failedReplacement = %q (%s), want i-c", repl, why)
	}
}

func TestInterruptionNeedsGiveBackAndPromptLog(t *testing.T) {
	h, _, _, _ := goodDay()
	h.IRQ.GivenBack = time.Time{}
	if p := promiseInterruption(h); p.OK || !strings.Contains(p.Detail, "giving its replacement unit back") {
		t.Errorf("without the give-back line: OK=%v %q", p.OK, p.Detail)
	}
	h, _, _, _ = goodDay()
	h.IRQ.DrainLogged = at(106)
	if p := promiseInterruption(h); p.OK || !strings.Contains(p.Detail, "not at once") {
		t.Errorf("drain logged 6 s late: OK=%v %q", p.OK, p.Detail)
	}
	h, _, _, _ = goodDay()
	h.IRQ.Requested = time.Time{}
	if p := promiseInterruption(h); p.OK || !strings.Contains(p.Detail, "replacement requested") {
		t.Errorf("without the request line: OK=%v %q", p.OK, p.Detail)
	}
}

func TestProcessLeaks(t *testing.T) {
	pids := map[string]int{"i-a": 10, "i-b": 11, "i-c": 12}
	alive := func(pid int) bool { return pid != 12 }
	got := processLeaks(pids, map[string]bool{"i-a": true}, alive)
	if len(got) != 1 || !strings.Contains(got[0], "i-b (pid 11)") {
		t.Errorf("processLeaks = %q, want only i-b's agent (its instance gone, pid alive)", got)
	}
}

func TestTimelineSortsBufferedLines(t *testing.T) {
	var out bytes.Buffer
	start := time.Now().Add(-time.Minute)
	tl := newTimeline(&out, start)
	tl.buffer(time.Hour) // nothing is due before stop
	tl.at(start.Add(12*time.Second), "b", "second")
	tl.at(start.Add(3*time.Second), "a", "first")
	tl.at(start.Add(12*time.Second), "c", "third")
	if out.Len() != 0 {
		t.Fatalf("printed before the delay: %q", out.String())
	}
	tl.stop()
	want := "+00:03  a        first\n+00:12  b        second\n+00:12  c        third\n"
	if out.String() != want {
		t.Errorf("timeline = %q, want %q", out.String(), want)
	}
	tl.printf("d", "after stop")
	if !strings.HasSuffix(out.String(), "after stop\n") {
		t.Errorf("a line after stop was not printed at once: %q", out.String())
	}
}

func TestAgentLogTargetAndReplacementLines(t *testing.T) {
	var out bytes.Buffer
	rec := newRecord()
	rec.updateIRQ(func(irq *interruption) { irq.Instance = "i-v" })
	a := &agentLog{tl: newTimeline(&out, time.Now()), rec: rec}
	for _, l := range []string{
		`2026-12-02T04:24:49.500Z [INFO]  external_plugin.target-spotfleet: replacement requested: target capacity raised by one for the interrupted instance; given back once the replacement has launched or the instance is gone: instance_id=i-v read_before_change=5 target_capacity=6`,
		`2026-12-02T04:24:50.100Z [INFO]  external_plugin.target-spotfleet: replacement unit given back: target capacity lowered (noTermination), so EC2's refill of the leaving instance adds nothing: why="the replacement has launched" instances=[i-v] target_capacity=5 read_before_change=6 not_leaving=5`,
		`2026-12-02T04:25:00.000Z [INFO]  external_plugin.target-spotfleet: scaled out: target_capacity=5 read_before_change=3 running=5 from=3 to=5 reason="x"`,
		`2026-12-02T04:26:00.000Z [INFO]  external_plugin.target-spotfleet: scaled in: terminated=[i-1, i-2] drain_failed=[] from=5 target_capacity=3 reason="y" terminate_failed=[]`,
		`2026-12-02T04:26:10.000Z [DEBUG] policy_manager.policy_handler: scaling action was a no-op, skipping cooldown: policy_id=1 reason="target capacity 3 already covers 3 ready nodes"`,
	} {
		a.handle(l)
	}
	a.flush()
	h := rec.history(time.Now(), time.Now())
	if h.IRQ.Requested.IsZero() || h.IRQ.GivenBack.IsZero() || h.IRQ.GivenBackWhy != "the replacement has launched" {
		t.Errorf("interruption %+v: want the request and the give-back recorded", h.IRQ)
	}
	if len(h.ScaledIn) != 2 {
		t.Errorf("scaled-in instances %v, want i-1 and i-2", h.ScaledIn)
	}
	var outLabel string
	for _, m := range h.Marks {
		if m.Kind == markScaleOut {
			outLabel = m.Label
		}
	}
	if outLabel != "3→5" {
		t.Errorf("scale-out mark %q, want the target capacities 3→5", outLabel)
	}
	if s := rec.summary(); s.NoOps != 1 || s.ScaleOuts != 1 || s.ScaleIns != 1 {
		t.Errorf("summary %+v: want 1 no-op, 1 scale-out, 1 scale-in", s)
	}
	if !strings.Contains(out.String(), "no change, no cooldown (a no-op): target capacity 3 already covers") {
		t.Errorf("timeline lacks the no-op:\n%s", out.String())
	}
}

func TestSummaryCountsInstancesByCause(t *testing.T) {
	h, jobs, s, fin := goodDay()
	line := instanceLine(h, fin)
	for _, want := range []string{"5 launched (1 at the start or unattributed, 2 by 1 scale-out, 1 maintain refill", "1 interruption replacement",
		"4 terminated (2 by scale-in, 1 whose playbook failed, 1 reclaimed by EC2"} {
		if !strings.Contains(line, want) {
			t.Errorf("instance line %q lacks %q", line, want)
		}
	}
	s.Dispatched, s.NoOps = 5, 1
	s.ScaleIns = 1
	var scaling string
	for _, l := range summaryLines(h, s, jobs, fin) {
		if strings.HasPrefix(l, "scaling:") {
			scaling = l
		}
	}
	if !strings.Contains(scaling, "sent 5: 2 scale-outs, 1 scale-in, 1 no-op") || !strings.Contains(scaling, "1 without an outcome") {
		t.Errorf("scaling line %q: want the 5 actions sent accounted for", scaling)
	}
}
