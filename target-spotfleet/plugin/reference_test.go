package plugin

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/awsconf"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/refdoc"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
)

const referencePage = "docs/reference/target-spotfleet.md"

// agentKeys are the agent-level keys SetConfig reads: awsconf.Parse's,
// hooks.ParseAgent's, the interruption queue, and the agent's nomad_* keys
// (documented as one row).
func agentKeys() []string {
	keys := slices.Concat(awsconf.Keys(), hooks.AgentKeys(), []string{configKeyQueueURL, "nomad_*"})
	return keys
}

// agentAddedKeys are the keys of policyKeys that the agent or Nomad adds.
func agentAddedKeys() []string {
	var out []string
	for _, k := range policyKeys {
		if k.agent {
			out = append(out, k.name)
		}
	}
	return out
}

// TestReferenceListsEveryKey fails for every key the parsers accept that has
// no row in docs/reference/target-spotfleet.md, and for every row naming a
// key they do not accept.
func TestReferenceListsEveryKey(t *testing.T) {
	page, err := refdoc.ReadPage(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		heading string
		keys    []string
	}{
		{"Agent-level keys", agentKeys()},
		{"Policy-level keys", operatorKeys()},
		{"Keys the agent adds", agentAddedKeys()},
	} {
		for _, p := range refdoc.Problems(page, s.heading, s.keys) {
			t.Errorf("%s: %s", referencePage, p)
		}
	}
}

// TestReferenceDefaults checks the default column of the policy-level keys
// against the defaults the parser applies.
func TestReferenceDefaults(t *testing.T) {
	page, err := refdoc.ReadPage(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := refdoc.SectionRows(page, "Policy-level keys")
	if err != nil {
		t.Fatal(err)
	}
	p, err := parsePolicyConfig(map[string]string{configKeyFleetID: "sfr-1", configKeyNodeClass: "spot"})
	if err != nil {
		t.Fatal(err)
	}
	durations := map[string]time.Duration{
		configKeyDrainDeadline:     p.DrainDeadline,
		configKeyLaunchTimeout:     p.LaunchTimeout,
		configKeyJoinTimeout:       p.JoinTimeout,
		configKeyRestartCooldown:   p.RestartCooldown,
		configKeyInterruptionDrain: p.InterruptionDrain,
		configKeyNodeWarmup:        p.NodeWarmup,
	}
	texts := map[string]string{
		configKeyNodeIDAttribute:  p.IDLookup.String(),
		configKeyIgnoreSystemJobs: strconv.FormatBool(p.IgnoreSystemJobs),
		configKeyNodePurge:        strconv.FormatBool(p.Purge),
		configKeyDryRun:           strconv.FormatBool(p.DryRun),
		configKeySelectorStrategy: p.Selector,
		configKeyMinFamilies:      strconv.Itoa(p.MinFamilies),
		configKeyRebalanceAction:  p.RebalanceAction,
		configKeyAdmissionKey:     p.Gate.MetaKey(),
	}
	defaultOf := func(key string) string {
		v, err := refdoc.Default(rows, key)
		if err != nil {
			t.Errorf("%s: %v", referencePage, err)
		}
		return v
	}
	for key, want := range durations {
		got := defaultOf(key)
		if got == "" {
			continue
		}
		if d, err := time.ParseDuration(got); err != nil || d != want {
			t.Errorf("%s: the default of %s is documented as %q, the code's is %s", referencePage, key, got, want)
		}
	}
	for key, want := range texts {
		if got := defaultOf(key); got != "" && got != want {
			t.Errorf("%s: the default of %s is documented as %q, the code's is %q", referencePage, key, got, want)
		}
	}
	if cell, _ := refdoc.Cell(rows, configKeyFleetID, 1); cell != "required" {
		t.Errorf("%s: %s is required, documented default %q", referencePage, configKeyFleetID, cell)
	}
}
