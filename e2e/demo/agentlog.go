package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// tailFile calls fn with every complete line written to path, from its
// beginning, until ctx ends; then it reads what is left and returns. idle,
// when set, is called each time the end of the file is reached.
func tailFile(ctx context.Context, path string, fn func(string), idle func()) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open agent log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64*1024)
	var partial strings.Builder
	for {
		chunk, err := r.ReadString('\n')
		partial.WriteString(chunk)
		if err == nil {
			fn(strings.TrimRight(partial.String(), "\r\n"))
			partial.Reset()
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("read agent log: %w", err)
		}
		// The agent writes each entry, however many lines, in one write:
		// at the end of the file the last entry is whole.
		if idle != nil && partial.Len() == 0 {
			idle()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

var (
	// decisionRe matches the strategy's decision line (its message is the
	// action's Reason): "scale out 1 -> 3: ..." or "scale in 5 -> 2: ...".
	decisionRe = regexp.MustCompile(`^scale (out|in) (\d+) -> (\d+): `)
	// noActionRe matches the strategy's warning when data is missing.
	noActionRe = regexp.MustCompile(`^hold \d+: no action, `)
	// figureRe finds the figure a decision rests on.
	figureRe = regexp.MustCompile(`(recent mean|window peak) CPU [0-9.]+%`)
)

// pendingAction is an action the agent has computed and not yet dispatched.
type pendingAction struct {
	from, to, reason string
}

// agentLog turns the agent's log into timeline lines and counts.
//
// A decision is printed once the agent says what it does with it: the
// agent (v0.5.0) evaluates during a cooldown too and then holds the action
// back, so the strategy's line alone does not mean anything was applied.
// The agent's own "calculating scaling target" line carries the strategy's
// Reason, and the agent's next line tells the outcome; plugin lines are
// relayed asynchronously, so they are only counted, not paired.
type agentLog struct {
	tl       *timeline
	rec      *record
	pending  *pendingAction
	lastHeld string // "from->to" of the last held-back action printed
	lastWarn string
	lastErr  string
	entry    string // the entry being collected
	// warmupNoted: the count-versus-warm-up note was printed.
	warmupNoted bool
}

// noteWarmup explains, once, an action whose count is below the admitted
// nodes the watcher sees: target-spotfleet counts a node only once its
// node_warmup has passed (apm-node does not measure it before), so a node
// that has just been admitted is not counted yet.
func (a *agentLog) noteWarmup(at time.Time, p *pendingAction) {
	from, err := strconv.Atoi(p.from)
	s, ok := a.rec.latest()
	if a.warmupNoted || err != nil || !ok || from >= s.Ready {
		return
	}
	a.warmupNoted = true
	warming := plural(s.Ready-from, "admitted node") + " warm up"
	if s.Ready-from == 1 {
		warming = "1 admitted node warms up"
	}
	a.tl.at(at, "note", "count is %d while %s: target-spotfleet counts a node only %s after its admission (node_warmup), once apm-node measures it; until then the action changes nothing", from, warming, targetWarmup)
}

// handle takes one line of the agent's log. An entry may span lines (a
// multi-line field value), so an entry is processed once the next one
// starts, or at flush.
func (a *agentLog) handle(raw string) {
	if !entryStartRe.MatchString(raw) && a.entry != "" {
		a.entry += "\n" + raw
		return
	}
	a.flush()
	a.entry = raw
}

// flush processes the entry being collected, if any.
func (a *agentLog) flush() {
	if a.entry != "" {
		a.process(a.entry)
		a.entry = ""
	}
}

// process handles one whole entry of the agent's log.
func (a *agentLog) process(raw string) {
	l, ok := parseLogLine(raw)
	if !ok {
		return
	}
	switch {
	// The agent's policy handler: computed action, then its outcome.
	case l.Msg == "calculating scaling target":
		a.pending = nil
		if l.Fields["from"] != l.Fields["to"] {
			a.pending = &pendingAction{from: l.Fields["from"], to: l.Fields["to"], reason: l.Fields["reason"]}
		}
	case l.Msg == "requesting slot" || l.Msg == "updating action, waiting to execute":
		if p := a.pending; p != nil {
			a.pending, a.lastHeld = nil, ""
			a.rec.dispatched()
			a.tl.at(l.at(), "decide", "%s", p.reason)
			a.noteWarmup(l.at(), p)
		}
	case l.Msg == "skipping scaling, policy still on cooldown" || l.Msg == "skipping scaling, target still scaling":
		if p := a.pending; p != nil {
			a.pending = nil
			a.rec.heldBack()
			why := "the target is still scaling"
			if strings.Contains(l.Msg, "cooldown") {
				why = "cooldown, " + roundDuration(l.Fields["remaining"]) + " left"
			}
			if key := p.from + "->" + p.to; key != a.lastHeld {
				a.lastHeld = key
				a.tl.at(l.at(), "decide", "%s %s -> %s held back (%s); %s", direction(p), p.from, p.to, why, figureRe.FindString(p.reason))
			}
		}

	// The strategy plugin.
	case decisionRe.MatchString(l.Msg):
		a.rec.decision(decisionRe.FindStringSubmatch(l.Msg)[1])
	case l.Level == "WARN" && noActionRe.MatchString(l.Msg):
		if l.Msg != a.lastWarn {
			a.lastWarn = l.Msg
			a.tl.at(l.at(), "decide", "%s", l.Msg)
		}

	// The target plugin.
	case l.Msg == "scaled out" || strings.HasPrefix(l.Msg, "scaled out: target capacity raised"):
		// The mark's label is the target capacity before and after: the
		// difference is what the fleet launches for it.
		before, after := orDefault(l.Fields["read_before_change"], l.Fields["from"]), orDefault(l.Fields["target_capacity"], l.Fields["to"])
		a.rec.scaled("out", l.at(), fmt.Sprintf("%s→%s", before, after))
		line := fmt.Sprintf("scaled out: target capacity %s -> %s, %s instances running", before, after, l.Fields["running"])
		if l.Msg != "scaled out" {
			line = "WARNING " + line + " (capacity did not launch yet)"
		}
		a.tl.at(l.at(), "target", "%s", line)
	case l.Msg == "scaled in":
		a.rec.scaled("in", l.at(), fmt.Sprintf("%s→%s", orDefault(l.Fields["read_before_change"], l.Fields["from"]), l.Fields["target_capacity"]))
		for _, inst := range listField(l.Fields["terminated"]) {
			a.rec.scaledInInstance(inst, l.at())
		}
		line := fmt.Sprintf("scaled in: target capacity %s -> %s, drained and terminated %s",
			orDefault(l.Fields["read_before_change"], l.Fields["from"]), l.Fields["target_capacity"], l.Fields["terminated"])
		if f := l.Fields["drain_failed"]; f != "" && f != "[]" {
			line += ", drain failed: " + f
		}
		if f := l.Fields["terminate_failed"]; f != "" && f != "[]" {
			line += ", terminate failed: " + f
		}
		a.tl.at(l.at(), "target", "%s", line)
	case strings.HasPrefix(l.Msg, "scaled in: lowered target capacity only"):
		a.rec.scaled("in", l.at(), fmt.Sprintf("%s→%s", l.Fields["from"], l.Fields["target_capacity"]))
		a.tl.at(l.at(), "target", "scaled in: target capacity lowered to %s, no running node removed (%s)", l.Fields["target_capacity"], l.Fields["why"])
	case l.Msg == "scaling action was a no-op, skipping cooldown":
		a.rec.noOp()
		a.tl.at(l.at(), "target", "no change, no cooldown (a no-op): %s", strings.TrimPrefix(l.Fields["reason"], "rpc error: code = Unknown desc = "))
	case l.Msg == "draining node":
		a.tl.at(l.at(), "target", "draining node %s (instance %s), deadline %s",
			short(l.Fields["node_id"]), l.Fields["instance_id"], l.Fields["deadline"])
	case strings.HasPrefix(l.Msg, "scale out: capacity did not arrive"):
		a.tl.at(l.at(), "target", "WARNING %s: %s", l.Msg, l.Fields["error"])

	// The launch hooks and the admission gate.
	case l.Msg == "node registered: running its launch hooks":
		a.tl.at(l.at(), "hook", "%s registered gated: target-spotfleet runs its launch hook %s", l.Fields["instance_id"], l.Fields["launch_hooks"])
	case l.Msg == "hook started" && l.Fields["type"] == "awx":
		a.tl.at(l.at(), "hook", "%s: hook %s launches AWX job template %s (limit %s)", l.Fields["instance_id"], l.Fields["hook"],
			l.Fields["job_template"], l.Fields["limit"])
	case l.Msg == "hook finished":
		a.tl.at(l.at(), "hook", "%s: hook %s finished: AWX job %s successful (%s)", l.Fields["instance_id"], l.Fields["hook"],
			l.Fields["job_id"], hookDuration(l.Fields["duration"]))
	case l.Msg == "node admitted: it takes work now":
		inst := l.Fields["instance_id"]
		a.rec.logged(a.rec.admitLogged, inst, l.at())
		a.rec.addMark(l.at(), markAdmitted, inst)
		a.tl.at(l.at(), "hook", "%s admitted (%s=admitted): it takes work now; hooks took %s, admission %s",
			inst, gateKey, hookDuration(l.Fields["hooks_took"]), hookDuration(l.Fields["admission_took"]))
	case strings.HasPrefix(l.Msg, "launch hook failed: the instance is removed"):
		inst := l.Fields["instance_id"]
		a.rec.logged(a.rec.hookFailed, inst, l.at())
		a.rec.addMark(l.at(), markHookFailed, inst)
		a.tl.at(l.at(), "hook", "%s: launch hook %s FAILED: never admitted, nothing placed on it; the instance is removed and the fleet replaces it (on_failure=terminate)",
			inst, orDefault(l.Fields["hook"], configureHook))
	case strings.HasPrefix(l.Msg, "terminated the instance whose launch hook failed"):
		inst := l.Fields["instance_id"]
		a.rec.logged(a.rec.hookRemoved, inst, l.at())
		a.tl.at(l.at(), "target", "terminated %s, whose launch hook failed; the target stays, so the maintain fleet launches a replacement", inst)

	// Spot interruptions.
	case l.Msg == "draining the node of a leaving instance":
		inst := l.Fields["instance_id"]
		a.rec.updateIRQ(func(irq *interruption) {
			if irq.Instance == inst && irq.DrainLogged.IsZero() {
				irq.DrainLogged = l.at()
			}
		})
		a.tl.at(l.at(), "spot", "target-spotfleet got the warning for %s from SQS: draining node %s now, deadline %s (%s)",
			inst, short(l.Fields["node_id"]), l.Fields["deadline"], l.Fields["event"])
	case strings.HasPrefix(l.Msg, "replacement requested"):
		inst := l.Fields["instance_id"]
		a.rec.updateIRQ(func(irq *interruption) {
			if irq.Instance == inst && irq.Requested.IsZero() {
				irq.Requested = l.at()
			}
		})
		a.tl.at(l.at(), "spot", "replacement requested for %s: target capacity raised to %s, so the fleet launches a replacement now", inst, l.Fields["target_capacity"])
	case strings.HasPrefix(l.Msg, "replacement unit given back"):
		insts := listField(l.Fields["instances"])
		a.rec.updateIRQ(func(irq *interruption) {
			if slices.Contains(insts, irq.Instance) && irq.GivenBack.IsZero() {
				irq.GivenBack, irq.GivenBackWhy = l.at(), l.Fields["why"]
			}
		})
		a.tl.at(l.at(), "spot", "replacement unit of %s given back: target capacity back to %s (%s); the interrupted instance runs out its notice above the target",
			strings.Join(insts, ", "), l.Fields["target_capacity"], l.Fields["why"])
	case strings.HasPrefix(l.Msg, "interrupted instance is gone"):
		a.tl.at(l.at(), "spot", "%s is gone: its departure is complete", l.Fields["instance_id"])
	case strings.HasPrefix(l.Msg, "terminated the leaving instance"):
		a.tl.at(l.at(), "spot", "target-spotfleet terminated the leaving instance %s (%s)", l.Fields["instance_id"], l.Fields["why"])
	case strings.HasPrefix(l.Msg, "instance is going: node force-drained"), strings.HasPrefix(l.Msg, "instance is gone: its node purged"):
		a.tl.at(l.at(), "spot", "%s: %s", l.Fields["instance_id"], l.Msg)

	// Anything else that went wrong.
	case l.Level == "ERROR":
		a.agentError(l)
	}
}

// agentError prints an agent error once. "No metrics available" is the
// agent's way of saying that apm-node counted no node (all warming up): it
// skips the evaluation, which is expected right after start.
func (a *agentLog) agentError(l logLine) {
	text := l.Module + ": " + l.Msg
	if e := l.Fields["error"]; e != "" {
		text += ": " + e
	}
	if text == a.lastErr {
		return
	}
	a.lastErr = text
	if strings.Contains(text, "no metrics available") {
		a.tl.at(l.at(), "agent", "evaluation skipped: apm-node has no datapoint yet (no pool node counts: warming up)")
		return
	}
	a.rec.agentError(text)
	a.tl.at(l.at(), "agent", "ERROR %s", text)
}

// at is when the line was logged: the plugin's own timestamp field (a
// plugin's line reaches the agent's log a little later), else the agent's
// header time, else now.
func (l logLine) at() time.Time {
	if ts, err := time.Parse(time.RFC3339Nano, l.Fields["timestamp"]); err == nil {
		return ts
	}
	if l.Time.IsZero() {
		return time.Now()
	}
	return l.Time
}

// listField splits a list field as hclog writes it, "[a, b]" or "[a b]".
func listField(v string) []string {
	v = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "["), "]")
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
}

// hookDuration formats a hook's duration field: hclog writes a
// time.Duration that reaches the agent as JSON as a number of nanoseconds
// ("2.014e+09"), or as a Go duration string.
func hookDuration(v string) string {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(f).Round(100 * time.Millisecond).String()
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d.Round(100 * time.Millisecond).String()
	}
	return v
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// direction names the way an action goes.
func direction(p *pendingAction) string {
	from, _ := strconv.Atoi(p.from)
	to, _ := strconv.Atoi(p.to)
	if to > from {
		return "scale out"
	}
	return "scale in"
}

// roundDuration rounds a Go duration string to whole seconds.
func roundDuration(s string) string {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return s
	case d < time.Second:
		return "<1s"
	}
	return d.Round(time.Second).String()
}

// short abbreviates a Nomad ID to its first 8 characters.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
