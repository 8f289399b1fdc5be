package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// tagInterrupted on an instance records that it is leaving the fleet because
// EC2 warned of its interruption (or recommended its rebalance, with
// rebalance_action = drain), and how far its replacement got:
// "kind=spot-interruption at=2026-12-01T10:00:00Z step=raised". It is set when
// the warning is handled, so that scale-in, reconciliation and the surplus
// check leave the instance alone, also after a restart.
const tagInterrupted = "nomad-autoscaler:interrupted"

// tagReplacements on the fleet request is the ledger of replacement units:
// the instances (comma-separated) whose unit is, or is about to be, in the
// target capacity. It is written before a raise and after a unit is given
// back, so that a process started after the leaving instance is gone (its
// own tag gone with it) still gives the unit back.
const tagReplacements = "nomad-autoscaler:replacements"

// parseLedger reads tagReplacements.
func parseLedger(v string) []string {
	var out []string
	for _, id := range strings.Split(v, ",") {
		if id = strings.TrimSpace(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}

// ledger returns the value of tagReplacements: the departures whose unit is
// raised, plus extra (a raise about to be made).
func (fs *fleetState) ledger(extra ...string) string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ids := append([]string(nil), extra...)
	for id, d := range fs.departures {
		if d.step == stepRaised {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

// writeLedger writes the fleet's ledger of replacement units; a failure is
// remembered, and the next status writes it again.
func (t *TargetPlugin) writeLedger(ctx context.Context, fs *fleetState, extra ...string) error {
	err := t.fleet.Tag(ctx, []string{fs.id}, map[string]string{tagReplacements: fs.ledger(extra...)})
	fs.mu.Lock()
	fs.ledgerDirty = err != nil
	fs.mu.Unlock()
	return err
}

// tagRebalance on an instance records that rebalance_action = cordon marked
// its node ineligible ("cordoned at=...").
const tagRebalance = "nomad-autoscaler:rebalance"

// replacement says how far the replacement of a leaving instance got. The
// target capacity holds one unit for every departure in stepRaised: the
// unit that launches the replacement, given back (noTermination) once the
// replacement has launched or the leaving instance is gone, so that EC2's own
// refill never adds a second one.
type replacement string

const (
	// stepPending: no replacement asked for yet.
	stepPending replacement = "pending"
	// stepRaised: the target was raised by one for the replacement.
	stepRaised replacement = "raised"
	// stepLowered: the unit was given back; the replacement counts as
	// ordinary capacity.
	stepLowered replacement = "lowered"
	// stepNone: no replacement is asked for: a scale-in is removing the
	// instance anyway, or the fleet cannot be resized.
	stepNone replacement = "none"
)

// departure is an instance that is leaving the fleet: warned of its spot
// interruption, or drained on a rebalance recommendation.
type departure struct {
	instanceID string
	kind       interruption.Kind
	// at is when AWS emitted the event; the notice runs from it.
	at time.Time
	// handled is when this process took the event.
	handled time.Time
	step    replacement
	// why explains stepNone.
	why string
	// nodeID is the instance's Nomad node, "" while none is known.
	nodeID string
	// drained says this process started the departure's drain.
	drained bool
	// gone says the instance is no longer running.
	gone bool
	// terminated says this process terminated the instance.
	terminated bool
	// warnedShort says the missing replacement was logged; noNodeLogged
	// that the missing node was.
	warnedShort  bool
	noNodeLogged bool
}

// tagValue is the departure as kept in tagInterrupted.
func (d *departure) tagValue() string {
	return fmt.Sprintf("kind=%s at=%s step=%s", d.kind, d.at.UTC().Format(time.RFC3339), d.step)
}

// parseDeparture reads a tagInterrupted value. A departure whose step was
// not recorded as given back is taken as raised: the lower that follows is
// at worst one unit too many, which a later scale-out restores, whereas a
// unit never given back would leave a surplus instance.
func parseDeparture(instanceID, v string) *departure {
	d := &departure{instanceID: instanceID, kind: interruption.KindSpotInterruption, step: stepRaised}
	for _, f := range strings.Fields(v) {
		key, val, _ := strings.Cut(f, "=")
		switch key {
		case "kind":
			if val == string(interruption.KindRebalance) {
				d.kind = interruption.KindRebalance
			}
		case "at":
			if t, err := time.Parse(time.RFC3339, val); err == nil {
				d.at, d.handled = t, t
			}
		case "step":
			switch replacement(val) {
			case stepLowered, stepNone:
				d.step = replacement(val)
			}
		}
	}
	return d
}

// noticeEnd is when EC2 reclaims the instance of a spot interruption.
func (d *departure) noticeEnd() time.Time { return d.at.Add(spotNotice) }

// departureOf returns the fleet's departure of the instance, or nil.
func (fs *fleetState) departureOf(id string) *departure {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.departures[id]
}

// addDeparture records a departure unless one exists; it returns the
// recorded one and whether it is new.
func (fs *fleetState) addDeparture(d *departure) (*departure, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.departures == nil {
		fs.departures = map[string]*departure{}
	}
	if old, ok := fs.departures[d.instanceID]; ok {
		return old, false
	}
	fs.departures[d.instanceID] = d
	return d, true
}

// update runs fn on the departure under the fleet's lock.
func (fs *fleetState) update(d *departure, fn func(d *departure)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fn(d)
}

// snapshot returns a copy of the departure, read under the fleet's lock.
func (fs *fleetState) snapshot(d *departure) departure {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return *d
}

// forgetDeparture drops a finished departure.
func (fs *fleetState) forgetDeparture(id string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	delete(fs.departures, id)
}

// departureList returns copies of the fleet's departures, sorted by instance.
func (fs *fleetState) departureList() []departure {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]departure, 0, len(fs.departures))
	for _, d := range fs.departures {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].instanceID < out[j].instanceID })
	return out
}

// raisedUnits counts the departures whose replacement unit is still in the
// target capacity. Read it under targetMu together with the target.
func (fs *fleetState) raisedUnits() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := 0
	for _, d := range fs.departures {
		if d.step == stepRaised {
			n++
		}
	}
	return n
}

// leaving reports whether the instance is leaving the fleet.
func (fs *fleetState) leaving(id string) bool { return fs.departureOf(id) != nil }
