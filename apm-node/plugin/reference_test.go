package plugin

import (
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/refdoc"
)

const referencePage = "docs/reference/apm-node.md"

// TestReferenceListsEveryKey fails for every agent-level key (configKeys,
// the only keys parseConfig reads), metric and query key (acceptedMetrics
// and acceptedKeys, which parseQuery refuses others with) that has no row in
// docs/reference/apm-node.md, and for every row the code does not accept.
func TestReferenceListsEveryKey(t *testing.T) {
	page, err := refdoc.ReadPage(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		heading string
		keys    []string
	}{
		{"Agent-level keys", append(slices.Clone(configKeys), "nomad_*")},
		{"Metrics", acceptedMetrics},
		{"Query keys", acceptedKeys},
	} {
		for _, p := range refdoc.Problems(page, s.heading, s.keys) {
			t.Errorf("%s: %s", referencePage, p)
		}
	}
}

// TestConfigKeysAreRead makes sure every key of configKeys is read by
// parseConfig: a bad value of each is refused with its name.
func TestConfigKeysAreRead(t *testing.T) {
	for _, k := range configKeys {
		if _, err := parseConfig(map[string]string{k: "-1x"}); err == nil {
			t.Errorf("parseConfig accepted %s = \"-1x\": is the key still read?", k)
		} else if !regexp.MustCompile(`\b` + regexp.QuoteMeta(k) + `\b`).MatchString(err.Error()) {
			t.Errorf("the error for %s does not name it: %v", k, err)
		}
	}
}

// TestReferenceDefaults checks the default column of the agent-level keys
// and of aggregate against what the parsers apply.
func TestReferenceDefaults(t *testing.T) {
	page, err := refdoc.ReadPage(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := refdoc.SectionRows(page, "Agent-level keys")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	code := func(rows []refdoc.Row, key string) string {
		v, err := refdoc.Default(rows, key)
		if err != nil {
			t.Errorf("%s: %v", referencePage, err)
		}
		return v
	}
	for key, want := range map[string]time.Duration{
		configKeySampleInterval:  cfg.sampleInterval,
		configKeySampleRetention: cfg.sampleRetention,
		configKeyNodeWarmup:      cfg.nodeWarmup,
		configKeyRequestTimeout:  cfg.requestTimeout,
	} {
		if got := code(rows, key); got != "" {
			if d, err := time.ParseDuration(got); err != nil || d != want {
				t.Errorf("%s: the default of %s is documented as %q, the code's is %s", referencePage, key, got, want)
			}
		}
	}
	if got := code(rows, configKeyConcurrency); got != strconv.Itoa(cfg.concurrency) {
		t.Errorf("%s: the default of %s is documented as %q, the code's is %d", referencePage, configKeyConcurrency, got, cfg.concurrency)
	}
	if got := code(rows, configKeyAdmissionMetaKey); got != cfg.gate.MetaKey() {
		t.Errorf("%s: the default of %s is documented as %q, the code's is %q", referencePage, configKeyAdmissionMetaKey, got, cfg.gate.MetaKey())
	}

	qrows, err := refdoc.SectionRows(page, "Query keys")
	if err != nil {
		t.Fatal(err)
	}
	q, err := parseQuery(metricHostCPU)
	if err != nil {
		t.Fatal(err)
	}
	if got := code(qrows, queryKeyAggregate); got != q.aggregate.String() {
		t.Errorf("%s: the default of %s is documented as %q, the code's is %q", referencePage, queryKeyAggregate, got, q.aggregate)
	}
}
