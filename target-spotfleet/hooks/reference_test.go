package hooks

import (
	"slices"
	"strings"
	"testing"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/refdoc"
)

const referencePage = "docs/reference/target-spotfleet.md"

// TestReferenceListsEveryHookKey fails for every hook key, setting or type
// the parser accepts that has no row in docs/reference/target-spotfleet.md,
// for every row the parser does not accept, and for a setting whose "types"
// column differs from the types that accept it.
func TestReferenceListsEveryHookKey(t *testing.T) {
	page, err := refdoc.ReadPage(referencePage)
	if err != nil {
		t.Fatal(err)
	}

	// The agent-level AWX keys (that section also holds the other
	// agent-level keys, checked by the plugin's reference test).
	agentRows, err := refdoc.SectionRows(page, "Agent-level keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range AgentKeys() {
		if _, ok := refdoc.Cell(agentRows, k, 0); !ok {
			t.Errorf("%s: section \"Agent-level keys\": key %q is read by ParseAgent but has no row", referencePage, k)
		}
	}

	// The lists, in the policy-level section.
	policyRows, err := refdoc.SectionRows(page, "Policy-level keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{policyKeyLaunch, policyKeyTerminate} {
		if !IsPolicyKey(k) {
			t.Errorf("IsPolicyKey(%q) is false", k)
		}
		if _, ok := refdoc.Cell(policyRows, k, 0); !ok {
			t.Errorf("%s: section \"Policy-level keys\": key %q is read by ParsePolicy but has no row", referencePage, k)
		}
	}

	// Every setting of any type, as hook_<name>_<setting>.
	var settings []string
	for _, s := range allSettings() {
		settings = append(settings, policyKeyPrefix+"<name>_"+s)
	}
	for _, p := range refdoc.Problems(page, "Hook keys", settings) {
		t.Errorf("%s: %s", referencePage, p)
	}
	for _, p := range refdoc.Problems(page, "Hook types", hookTypes) {
		t.Errorf("%s: %s", referencePage, p)
	}

	// The types column says which types accept each setting.
	rows, err := refdoc.SectionRows(page, "Hook keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range allSettings() {
		var want []string
		if slices.Contains(commonSettings, s) {
			want = []string{"all"}
		} else {
			for _, typ := range hookTypes {
				if slices.Contains(typeSettings[typ], s) {
					want = append(want, typ)
				}
			}
		}
		key := policyKeyPrefix + "<name>_" + s
		cell, ok := refdoc.Cell(rows, key, 1)
		if !ok {
			continue // reported above
		}
		var got []string
		for _, typ := range strings.Split(cell, ",") {
			got = append(got, strings.TrimSpace(typ))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %s: the types column says %q, the parser accepts it for %s", referencePage, key, cell, strings.Join(want, ", "))
		}
	}
}

// TestAllSettingsMatchesTheTypes keeps allSettings (what the reference test
// enumerates) equal to the settings the parser accepts per type.
func TestAllSettingsMatchesTheTypes(t *testing.T) {
	want := slices.Clone(commonSettings)
	for _, typ := range hookTypes {
		for _, s := range typeSettings[typ] {
			if !slices.Contains(want, s) {
				want = append(want, s)
			}
		}
	}
	got := slices.Clone(allSettings())
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("allSettings() = %v, the types accept %v", got, want)
	}
	if len(typeSettings) != len(hookTypes) {
		t.Errorf("typeSettings has %d types, hookTypes %d", len(typeSettings), len(hookTypes))
	}
}
