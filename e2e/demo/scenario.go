package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// step is one level of the load: the burner count is set, then the step
// lasts at least Min and ends once Goal holds and the fleet has been steady
// (target = running = ready nodes, no drain) for settleFor. A fleet that
// stays steady for giveUpAfter without reaching the goal ends the step too
// (the final verdict decides whether that matters), and so does Max.
type step struct {
	Name     string
	Burners  int
	Goal     func(snapshot) bool // nil: no goal beyond being steady
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

// steps is the load profile: up in two steps, then down in two.
//
// With burners of ~43% of a node and a 75% target (config.go) the expected
// course is 1 node → 3 (4 burners: 171% on 1 node) → 5 (8 burners) → 2
// (3 burners: 26% on 5 nodes, 64% on 2) → 1 (1 burner). The goals are a
// little looser than that, so measurement noise on a shared host changes
// the path, never the outcome the demo checks.
var steps = []step{
	{Name: "baseline", Burners: 1, Min: 15 * time.Second, Max: 15 * time.Second},
	{Name: "rise", Burners: 4, Goal: func(s snapshot) bool { return s.Target >= startNodes+2 },
		GoalText: "the fleet has grown to at least 3 nodes", Min: 20 * time.Second, Max: 100 * time.Second},
	{Name: "peak", Burners: 8, Goal: func(s snapshot) bool { return s.Target >= 4 },
		GoalText: "the fleet has grown to at least 4 nodes", Min: 20 * time.Second, Max: 100 * time.Second},
	{Name: "fall", Burners: 3, Goal: func(s snapshot) bool { return s.Target <= 2 },
		GoalText: "the fleet has shrunk to 2 nodes or fewer", Min: 20 * time.Second, Max: 100 * time.Second},
	{Name: "quiet", Burners: 1, Goal: func(s snapshot) bool { return s.Target == 1 },
		GoalText: "the fleet is back to 1 node", Min: 20 * time.Second, Max: 100 * time.Second},
}

// runSteps applies the load profile and waits for the fleet after each step.
func runSteps(ctx context.Context, tl *timeline, rec *record, l load, cores int) error {
	for i, st := range steps {
		if i > 0 {
			if err := l.scale(ctx, st.Burners); err != nil {
				return err
			}
		}
		tl.printf("load", "%s: %d burner(s), %.0f%% of one node's schedulable CPU in all",
			st.Name, st.Burners, float64(st.Burners)*burnerPercent(cores))
		if err := waitStep(ctx, tl, rec, st); err != nil {
			return err
		}
		if st.Name == "peak" {
			if s := rec.summary(); s.PeakTarget < startNodes+2 {
				return fmt.Errorf("the fleet did not grow by 2 nodes: its target peaked at %d (started at %d)", s.PeakTarget, startNodes)
			}
		}
	}
	return nil
}

// waitStep waits until the step may end.
func waitStep(ctx context.Context, tl *timeline, rec *record, st step) error {
	begin := time.Now()
	for {
		s, ok := rec.latest()
		done := ok && s.At.After(begin) && time.Since(begin) >= st.Min &&
			(st.Goal == nil || st.Goal(s)) && s.steady() && s.At.Sub(s.TargetSince) >= settleFor
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

// verdict checks what the demo must show and returns every failure.
func verdict(s summary) error {
	var errs []string
	if len(s.Lost) > 0 {
		errs = append(errs, fmt.Sprintf("%d allocation(s) lost: %s", len(s.Lost), strings.Join(s.Lost, "; ")))
	}
	if s.PeakTarget < startNodes+2 || s.ScaleOuts == 0 {
		errs = append(errs, fmt.Sprintf("the fleet did not grow by at least 2 nodes (peak target %d, %d scale-outs)", s.PeakTarget, s.ScaleOuts))
	}
	if s.Last.Target > 2 || s.ScaleIns == 0 {
		errs = append(errs, fmt.Sprintf("the fleet did not shrink back to 1 or 2 nodes (target %d at the end, %d scale-ins)", s.Last.Target, s.ScaleIns))
	}
	if !s.Last.steady() {
		errs = append(errs, fmt.Sprintf("the fleet is not steady at the end: target %d, running instances %d, ready nodes %d, draining %d",
			s.Last.Target, s.Last.Running, s.Last.Ready, s.Last.Draining))
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// printSummary writes the end of the timeline.
func printSummary(tl *timeline, s summary) {
	tl.printf("summary", "peak %d ready nodes (fleet target %d); %d scale-outs and %d scale-ins done by target-spotfleet",
		s.PeakReady, s.PeakTarget, s.ScaleOuts, s.ScaleIns)
	tl.printf("summary", "strategy asked %d times to scale out and %d times to scale in; the agent sent %d actions and held %d back (cooldown)",
		s.DecisionsOut, s.DecisionsIn, s.Dispatched, s.HeldBack)
	tl.printf("summary", "nodes joined %d, went down %d; allocations lost: %d", s.Joined, s.Left, len(s.Lost))
	tl.printf("summary", "end: fleet target %d, running instances %d, ready nodes %d",
		s.Last.Target, s.Last.Running, s.Last.Ready)
	for _, e := range s.AgentErrors {
		tl.printf("summary", "agent error seen: %s", e)
	}
	for _, p := range s.CloudProblems {
		tl.printf("summary", "local cloud problem seen: %s", p)
	}
}
