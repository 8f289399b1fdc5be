package nomadnode

import (
	"fmt"
	"regexp"
	"strings"
)

// The admission gate. Nomad v1.6 cannot register a client ineligible, so a
// node launched for a Spot Fleet carries a client meta key (set by its
// launch template's user-data) whose value starts as GatePending; the pool's
// jobs constrain on it being GateAdmitted, so the scheduler places nothing
// there until target-spotfleet has run every launch hook and set the value
// to GateAdmitted through dynamic node metadata. A node without the key is
// not gated: it takes work as soon as it is ready.
const (
	// DefaultGateKey is the meta key of the gate unless a policy names another.
	DefaultGateKey = "spotfleet_admission"
	// GatePending is the value a gated node registers with.
	GatePending = "pending"
	// GateAdmitted is the value that lets the scheduler place work.
	GateAdmitted = "admitted"
	// GateFailed is set on a node whose launch hook failed and that is kept
	// for debugging (failure policy keep): it never takes work.
	GateFailed = "failed"
	// AdmittedAtSuffix is appended to the gate key for the meta key that
	// holds when the node was admitted (RFC 3339), for warm-up.
	AdmittedAtSuffix = "_at"
)

// PhaseAdmitting: ready in Nomad but gated: its launch hooks have not all
// succeeded yet, so the scheduler places nothing there (capacity that is
// coming).
const PhaseAdmitting Phase = "admitting"

// PhaseRefused: ready in Nomad but a launch hook failed and the instance
// is kept for debugging (failure policy keep): it takes no work and does not
// count as capacity.
const PhaseRefused Phase = "hook_failed"

// PhaseOfNode is PhaseOf with the admission gate: a ready node that is gated
// and not admitted is PhaseAdmitting (or PhaseRefused when its gate says
// failed).
func PhaseOfNode(n Node, g Gate) (Phase, string) {
	p, why := PhaseOf(n.NodeListStub)
	if p != PhaseReady || g.Admitted(n.Meta) {
		return p, why
	}
	if _, v := g.State(n.Meta); v == GateFailed {
		return PhaseRefused, g.Reason(n.Meta)
	}
	return PhaseAdmitting, g.Reason(n.Meta)
}

var gateKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// Gate reads the admission gate from a node's meta.
type Gate struct {
	// Key is the meta key; empty means DefaultGateKey.
	Key string
}

// ParseGate validates a gate key; empty means DefaultGateKey.
func ParseGate(key string) (Gate, error) {
	key = strings.TrimSpace(key)
	if key == "" {
		return Gate{Key: DefaultGateKey}, nil
	}
	if len(key) > 128 || !gateKeyPattern.MatchString(key) {
		return Gate{}, fmt.Errorf("%q is not a Nomad meta key: want letters, digits, '_', '.' or '-', at most 128 characters (for example %s)", key, DefaultGateKey)
	}
	return Gate{Key: key}, nil
}

func (g Gate) key() string {
	if g.Key == "" {
		return DefaultGateKey
	}
	return g.Key
}

// MetaKey returns the meta key of the gate.
func (g Gate) MetaKey() string { return g.key() }

// AdmittedAtKey returns the meta key that holds the admission time.
func (g Gate) AdmittedAtKey() string { return g.key() + AdmittedAtSuffix }

// State returns whether the node is gated (carries the key) and the value.
func (g Gate) State(meta map[string]string) (gated bool, value string) {
	v, ok := meta[g.key()]
	return ok, v
}

// Admitted reports whether the scheduler may place work on the node: it is
// not gated, or its gate value is GateAdmitted.
func (g Gate) Admitted(meta map[string]string) bool {
	gated, v := g.State(meta)
	return !gated || v == GateAdmitted
}

// Reason says why a gated node takes no work, "" when it may.
func (g Gate) Reason(meta map[string]string) string {
	if g.Admitted(meta) {
		return ""
	}
	_, v := g.State(meta)
	if v == GateFailed {
		return fmt.Sprintf("a launch hook failed (meta %s=%s): kept for debugging, takes no work", g.key(), v)
	}
	return fmt.Sprintf("waiting for its launch hooks (meta %s=%s)", g.key(), v)
}
