package plugin

import (
	"strconv"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/refdoc"
)

const referencePage = "docs/reference/strategy-cpu-target.md"

// TestReferenceListsEveryKey fails for every key of acceptedKeys (the list
// parseCheckConfig refuses others with) that has no row in
// docs/reference/strategy-cpu-target.md, and for every row naming a key the
// parser does not accept.
func TestReferenceListsEveryKey(t *testing.T) {
	page, err := refdoc.ReadPage(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range refdoc.Problems(page, "Check keys", acceptedKeys) {
		t.Errorf("%s: %s", referencePage, p)
	}
}

// TestReferenceDefaults checks the default column against the defaults
// parseCheckConfig applies to an empty block.
func TestReferenceDefaults(t *testing.T) {
	page, err := refdoc.ReadPage(referencePage)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := refdoc.SectionRows(page, "Check keys")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseCheckConfig(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	numbers := map[string]float64{
		configKeyTarget:          cfg.Target,
		configKeyTolerance:       cfg.Tolerance,
		configKeyScaleInCoverage: cfg.ScaleInCoverage,
		configKeySaturation:      cfg.Saturation,
	}
	durations := map[string]time.Duration{
		configKeyScaleOutWindow: cfg.ScaleOutWindow,
		configKeyMaxDataAge:     cfg.MaxDataAge,
		configKeyTrendLead:      cfg.TrendLead,
		configKeyTrendWindow:    cfg.TrendWindow,
		configKeyRiseWindow:     cfg.RiseWindow,
	}
	cell := func(key string) string {
		c, ok := refdoc.Cell(rows, key, 1)
		if !ok {
			t.Errorf("%s: no row for %s", referencePage, key)
		}
		return c
	}
	code := func(key string) string {
		v, err := refdoc.Default(rows, key)
		if err != nil {
			t.Errorf("%s: %v", referencePage, err)
		}
		return v
	}
	for key, want := range numbers {
		if got := code(key); got != "" {
			if f, err := strconv.ParseFloat(got, 64); err != nil || f != want {
				t.Errorf("%s: the default of %s is documented as %q, the code's is %g", referencePage, key, got, want)
			}
		}
	}
	for key, want := range durations {
		if got := code(key); got != "" {
			if d, err := time.ParseDuration(got); err != nil || d != want {
				t.Errorf("%s: the default of %s is documented as %q, the code's is %s", referencePage, key, got, want)
			}
		}
	}
	if cfg.MaxScaleUp != 0 || cfg.MaxScaleDown != 0 {
		t.Fatalf("the scale caps have defaults now (%d, %d): document them", cfg.MaxScaleUp, cfg.MaxScaleDown)
	}
	for _, key := range []string{configKeyMaxScaleUp, configKeyMaxScaleDown} {
		if got := cell(key); got != "no cap" {
			t.Errorf("%s: the default of %s is documented as %q, the code has no cap", referencePage, key, got)
		}
	}
	if got := code(configKeySignal); got != cfg.Signal {
		t.Errorf("%s: the default of %s is documented as %q, the code's is %q", referencePage, configKeySignal, got, cfg.Signal)
	}
	if got := code(configKeyDryRun); got != strconv.FormatBool(cfg.DryRun) {
		t.Errorf("%s: the default of %s is documented as %q, the code's is %t", referencePage, configKeyDryRun, got, cfg.DryRun)
	}
}
