package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// tailFile calls fn with every complete line written to path, from its
// beginning, until ctx ends; then it reads what is left and returns.
func tailFile(ctx context.Context, path string, fn func(string)) error {
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
}

// handle processes one line of the agent's log.
func (a *agentLog) handle(raw string) {
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
			a.tl.printf("decide", "%s", p.reason)
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
				a.tl.printf("decide", "%s %s -> %s held back (%s); %s", direction(p), p.from, p.to, why, figureRe.FindString(p.reason))
			}
		}

	// The strategy plugin.
	case decisionRe.MatchString(l.Msg):
		a.rec.decision(decisionRe.FindStringSubmatch(l.Msg)[1])
	case l.Level == "WARN" && noActionRe.MatchString(l.Msg):
		if l.Msg != a.lastWarn {
			a.lastWarn = l.Msg
			a.tl.printf("decide", "%s", l.Msg)
		}

	// The target plugin.
	case l.Msg == "scaled out":
		a.rec.scaled("out")
		a.tl.printf("target", "scaled out: target capacity %s -> %s, %s instances running",
			l.Fields["from"], l.Fields["to"], l.Fields["running"])
	case l.Msg == "scaled in":
		a.rec.scaled("in")
		line := fmt.Sprintf("scaled in: target capacity %s -> %s, drained and terminated %s",
			l.Fields["from"], l.Fields["target_capacity"], l.Fields["terminated"])
		if f := l.Fields["drain_failed"]; f != "" && f != "[]" {
			line += ", drain failed: " + f
		}
		if f := l.Fields["terminate_failed"]; f != "" && f != "[]" {
			line += ", terminate failed: " + f
		}
		a.tl.printf("target", "%s", line)
	case l.Msg == "draining node":
		a.tl.printf("target", "draining node %s (instance %s), deadline %s",
			short(l.Fields["node_id"]), l.Fields["instance_id"], l.Fields["deadline"])
	case strings.HasPrefix(l.Msg, "scale out: capacity did not arrive"):
		a.tl.printf("target", "WARNING %s: %s", l.Msg, l.Fields["error"])

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
		a.tl.printf("agent", "evaluation skipped: apm-node has no datapoint yet (no pool node counts: warming up)")
		return
	}
	a.rec.agentError(text)
	a.tl.printf("agent", "ERROR %s", text)
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
