package main

import (
	"context"
	"fmt"
	"time"
)

// step is one level of the load: the burner count is set (and Begin, when
// set, runs: the demo's fault or interruption), then the step lasts at
// least Min and ends once Goal holds and the fleet has been steady (target
// = running = admitted ready nodes, nothing configuring or draining) for
// settleFor. A fleet that stays steady for giveUpAfter without reaching the
// goal ends the step too (the promises at the end decide whether that
// matters), and so does Max.
type step struct {
	Name     string
	Story    string // what the step stands for in the day
	Burners  int
	Begin    func(ctx context.Context, d *demo) error
	Goal     func(d *demo, s snapshot) bool // nil: no goal beyond being steady
	GoalText string
	Min, Max time.Duration
}

// settleFor is how long the fleet must be steady before the next step.
const settleFor = 10 * time.Second

// giveUpAfter is how long a steady fleet that misses a step's goal is given:
// longer than a scale-in needs to clear the query window (30 s) and be
// evaluated (5 s), so a scale-in about to happen is never cut off.
const giveUpAfter = 45 * time.Second

// startNodes is the fleet's initial target capacity.
const startNodes = 1

// steps is the day in miniature: a quiet night, the morning rise (whose
// first new node's playbook fails), the midday spike, a spot interruption
// at the spike's height, and the evening fall back to the minimum.
//
// With burners of ~43% of a node and a 75% target (config.go) the expected
// course is 1 node → 3 (4 burners: 171% on 1 node; one of the two new
// instances fails its playbook and is replaced) → 5 (8 burners) → one of
// the 5 interrupted and replaced → 1 (1 burner). The goals are a little
// looser than that, so measurement noise on a shared host changes the
// path, never the outcome the demo checks.
var steps = []step{
	{Name: "baseline", Story: "night: one burner on the first node", Burners: 1, Min: 15 * time.Second, Max: 15 * time.Second},
	{Name: "rise", Story: "morning: the load quadruples; the next playbook is armed to fail", Burners: 4,
		Begin: func(_ context.Context, d *demo) error { return d.awx.armFault() },
		Goal: func(d *demo, s snapshot) bool {
			return s.Target >= startNodes+2 && !d.awx.faultArmed() && d.faultReplaced()
		},
		GoalText: "the fleet has grown to at least 3 admitted nodes and the maintain fleet's replacement of the failed instance is admitted", Min: 20 * time.Second, Max: 120 * time.Second},
	{Name: "spike", Story: "midday: the load doubles again", Burners: 8,
		Goal:     func(_ *demo, s snapshot) bool { return s.HaveCPU && s.CPU <= targetCPU*(1+tolerance) },
		GoalText: fmt.Sprintf("the fleet holds the load at or below the target plus tolerance (%.2f%%)", targetCPU*(1+tolerance)),
		Min:      15 * time.Second, Max: 100 * time.Second},
	{Name: "interruption", Story: "EC2 reclaims a spot instance at the spike's height", Burners: 8,
		Begin: func(ctx context.Context, d *demo) error { return d.interrupt(ctx) },
		Goal: func(d *demo, s snapshot) bool {
			irq := d.rec.interruption()
			return !irq.Terminated.IsZero()
		},
		GoalText: "the interrupted instance is gone and its replacement serves", Max: interruptionNotice + 60*time.Second},
	{Name: "fall", Story: "evening: back to one burner", Burners: 1, Goal: func(_ *demo, s snapshot) bool { return s.Target == policyMin },
		GoalText: "the fleet is back to its minimum of 1 node", Min: 20 * time.Second, Max: 120 * time.Second},
}

// tolerance is strategy-cpu-target's default tolerance: it scales out above
// target × (1 + tolerance).
const tolerance = 0.05

// faultReplaced reports whether the maintain fleet's replacement of the
// instance whose playbook failed has been admitted.
func (d *demo) faultReplaced() bool {
	h := d.rec.history(d.start, time.Now())
	for inst := range h.HookRemoved {
		repl, _ := failedReplacement(h, inst)
		if n, ok := h.nodeOf(repl); repl != "" && ok && !n.Admitted.IsZero() {
			return true
		}
	}
	return false
}

// burners is "1 burner" or "n burners".
func burners(n int) string { return plural(n, "burner") }

// runSteps applies the load profile and waits for the fleet after each step.
func (d *demo) runSteps(ctx context.Context, l load, cores int) error {
	for i, st := range steps {
		if i > 0 && st.Burners != steps[i-1].Burners {
			if err := l.scale(ctx, st.Burners); err != nil {
				return err
			}
		}
		d.rec.addMark(time.Now(), markLoad, fmt.Sprintf("%s: %s", st.Name, burners(st.Burners)))
		d.tl.printf("load", "%s — %s: %s, %.0f%% of one node's schedulable CPU in all (%s hold that at or below %d%%)",
			st.Name, st.Story, burners(st.Burners), float64(st.Burners)*burnerPercent(cores), plural(nodesFor(st.Burners, burnerPercent(cores)), "node"), targetCPU)
		if st.Begin != nil {
			if err := st.Begin(ctx, d); err != nil {
				return fmt.Errorf("step %q: %w", st.Name, err)
			}
		}
		if err := waitStep(ctx, d, st); err != nil {
			return err
		}
		if st.Name == "spike" {
			if s := d.rec.summary(); s.PeakTarget < startNodes+2 {
				return fmt.Errorf("the fleet did not grow by 2 nodes: its target peaked at %d (started at %d)", s.PeakTarget, startNodes)
			}
		}
	}
	return nil
}

// waitStep waits until the step may end.
func waitStep(ctx context.Context, d *demo, st step) error {
	tl, rec := d.tl, d.rec
	begin := time.Now()
	for {
		s, ok := rec.latest()
		done := ok && s.At.After(begin) && time.Since(begin) >= st.Min &&
			(st.Goal == nil || st.Goal(d, s)) && s.steady() && s.At.Sub(s.TargetSince) >= settleFor
		if done {
			if st.GoalText != "" {
				tl.printf("load", "%s: done after %s: %s (target %d, %d ready)", st.Name,
					time.Since(begin).Round(time.Second), st.GoalText, s.Target, s.Ready)
			}
			return nil
		}
		if ok && st.Goal != nil && time.Since(begin) >= st.Min && s.steady() && s.At.Sub(later(s.TargetSince, begin)) >= giveUpAfter {
			tl.printf("load", "%s: the fleet settled at %d nodes without this step's goal (%s); going on", st.Name, s.Target, st.GoalText)
			return nil
		}
		if time.Since(begin) >= st.Max {
			if st.GoalText != "" {
				tl.printf("load", "%s: not settled after %s (wanted: %s; target %d, running %d, ready %d); going on",
					st.Name, st.Max, st.GoalText, s.Target, s.Running, s.Ready)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("step %q (%d burners): %w", st.Name, st.Burners, context.Cause(ctx))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// waitSteady waits up to timeout for the fleet to be steady.
func waitSteady(ctx context.Context, rec *record, timeout time.Duration) snapshot {
	deadline := time.Now().Add(timeout)
	for {
		s, _ := rec.latest()
		if s.steady() || time.Now().After(deadline) || ctx.Err() != nil {
			return s
		}
		time.Sleep(500 * time.Millisecond)
	}
}
