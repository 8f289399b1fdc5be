package plugin

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// These are the keys read from the check's strategy config block. Each key is
// optional; the defaults beside them suit a pool of Nomad clients that needs
// about 90 s from launch to ready, evaluated every 10 s over a 5 m window.
const (
	// configKeyTarget is the average pool CPU, in percent, to hold.
	configKeyTarget = "target"
	defaultTarget   = 75.0

	// configKeyTolerance is the dead band around the target, as a fraction of
	// the target: with 0.05 and target 75, scale-out needs the recent mean
	// above 78.75 and scale-in needs the window's peak below 71.25.
	configKeyTolerance = "tolerance"
	defaultTolerance   = 0.05

	// configKeyScaleOutWindow is how much of the newest data the scale-out
	// decision averages: short enough to react within one or two samples of a
	// real rise, long enough that one noisy sample does not add a node.
	configKeyScaleOutWindow = "scale_out_window"
	defaultScaleOutWindow   = 30 * time.Second

	// configKeyMaxDataAge is how old the newest datapoint may be before the
	// data is called stale and nothing is done.
	configKeyMaxDataAge = "max_data_age"
	defaultMaxDataAge   = 2 * time.Minute

	// configKeyScaleInCoverage is the fraction of the check's query_window
	// that the datapoints must span before a scale-in is considered, so that
	// a window cut short (APM restart, gaps) never hides a peak.
	configKeyScaleInCoverage = "scale_in_min_coverage"
	defaultScaleInCoverage   = 0.8

	// configKeyMaxScaleUp and configKeyMaxScaleDown cap the nodes added or
	// removed by one action (unset: no cap). Same names as target-value.
	configKeyMaxScaleUp   = "max_scale_up"
	configKeyMaxScaleDown = "max_scale_down"

	// configKeyDryRun makes the strategy decide and explain, but return a
	// dry-run action that the agent never applies.
	configKeyDryRun = "dry-run"

	// configKeySignal says what the check's metric is: "cpu" (a CPU
	// percentage of the pool, the default) or "unplaced" (apm-node's
	// unplaced_nodes: the empty nodes the allocations waiting unplaced need).
	configKeySignal = "signal"
	signalCPU       = "cpu"
	signalUnplaced  = "unplaced"

	// configKeySaturation is the recent mean CPU at or above which the pool
	// is called saturated: CPU cannot read above 100%, so the proportional
	// step underestimates the load and the trend may add to it. A recent
	// mean above 100% is never saturated: that metric is not clamped.
	configKeySaturation = "saturation"
	defaultSaturation   = 95.0

	// configKeyTrendLead is how far ahead the rise of the CPU is projected
	// when the pool is saturated and still rising (over the trend window and
	// the scale-out window both): the time from launch to a node taking
	// work. 0 turns the trend off.
	configKeyTrendLead = "trend_lead"
	defaultTrendLead   = 90 * time.Second

	// configKeyTrendWindow is how much of the newest data the trend (a
	// least-squares slope) is fitted to.
	configKeyTrendWindow = "trend_window"
	defaultTrendWindow   = 60 * time.Second

	// configKeyRiseWindow is how far apart two datapoints may be for the
	// climb of the CPU's rolling scale_out_window mean between them to count
	// as a rise (set it to the time from launch to a node taking work: a
	// faster rise outruns a scale-out). A scale-in keeps the window's peak
	// plus its largest such rise at or below the scale-out threshold, so the
	// pool never scales in to a count from which a repeat of a rise it just
	// saw would make it scale out again. The rise is measured on the mean,
	// not sample to sample, because the peak already holds the sampling
	// noise. 0 turns it off.
	configKeyRiseWindow = "rise_window"
	defaultRiseWindow   = 90 * time.Second
)

// acceptedKeys lists every key the check config may hold; anything else is a
// typo the operator should hear about.
var acceptedKeys = []string{
	configKeySignal, configKeyTarget, configKeyTolerance, configKeyScaleOutWindow, configKeyMaxDataAge,
	configKeyScaleInCoverage, configKeyMaxScaleUp, configKeyMaxScaleDown, configKeyDryRun,
	configKeySaturation, configKeyTrendLead, configKeyTrendWindow, configKeyRiseWindow,
}

// unplacedKeys are the keys a check with signal = "unplaced" accepts; the
// others tune the CPU rules, which such a check does not run.
var unplacedKeys = []string{configKeySignal, configKeyMaxDataAge, configKeyMaxScaleUp, configKeyDryRun}

// checkConfig is the validated, typed form of a check's strategy config.
type checkConfig struct {
	Target          float64
	Tolerance       float64
	ScaleOutWindow  time.Duration
	MaxDataAge      time.Duration
	ScaleInCoverage float64
	MaxScaleUp      int64 // 0 means no cap
	MaxScaleDown    int64 // 0 means no cap
	DryRun          bool
	Signal          string
	Saturation      float64
	TrendLead       time.Duration // 0 means no trend
	TrendWindow     time.Duration
	RiseWindow      time.Duration // 0 means no rise headroom
}

// defaultCheckConfig returns the configuration used for keys left unset.
func defaultCheckConfig() checkConfig {
	return checkConfig{
		Target:          defaultTarget,
		Tolerance:       defaultTolerance,
		ScaleOutWindow:  defaultScaleOutWindow,
		MaxDataAge:      defaultMaxDataAge,
		ScaleInCoverage: defaultScaleInCoverage,
		Signal:          signalCPU,
		Saturation:      defaultSaturation,
		TrendLead:       defaultTrendLead,
		TrendWindow:     defaultTrendWindow,
		RiseWindow:      defaultRiseWindow,
	}
}

// scaleOutAbove is the recent mean CPU above which the pool scales out.
func (c checkConfig) scaleOutAbove() float64 { return c.Target * (1 + c.Tolerance) }

// scaleInBelow is the window peak CPU below which the pool may scale in.
func (c checkConfig) scaleInBelow() float64 { return c.Target * (1 - c.Tolerance) }

// parseCheckConfig validates the string map of a check's strategy block into
// a checkConfig. Every error names the key, the bad value and what is
// accepted.
func parseCheckConfig(raw map[string]string) (checkConfig, error) {
	cfg := defaultCheckConfig()

	var unknown []string
	for k := range raw {
		if !isAcceptedKey(k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return cfg, fmt.Errorf("unknown strategy config key(s) %s: accepted keys are %s",
			quoteAll(unknown), quoteAll(acceptedKeys))
	}

	if v, ok := raw[configKeySignal]; ok {
		switch strings.TrimSpace(v) {
		case signalCPU, signalUnplaced:
			cfg.Signal = strings.TrimSpace(v)
		default:
			return cfg, fmt.Errorf("invalid value for %q: %q: accepted values are %q (a CPU percentage of the pool) or %q (apm-node's unplaced_nodes)",
				configKeySignal, v, signalCPU, signalUnplaced)
		}
	}
	if cfg.Signal == signalUnplaced {
		var notHere []string
		for k := range raw {
			if !slices.Contains(unplacedKeys, k) {
				notHere = append(notHere, k)
			}
		}
		if len(notHere) > 0 {
			sort.Strings(notHere)
			return cfg, fmt.Errorf("strategy config key(s) %s do not apply to %s = %q (they tune the CPU rules): accepted keys are %s",
				quoteAll(notHere), configKeySignal, signalUnplaced, quoteAll(unplacedKeys))
		}
	}

	var err error
	if v, ok := raw[configKeySaturation]; ok {
		if cfg.Saturation, err = parseFloatIn(configKeySaturation, v, 0, 100, false); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyTrendLead]; ok {
		d, perr := time.ParseDuration(strings.TrimSpace(v))
		if perr != nil || d < 0 {
			return cfg, fmt.Errorf("invalid value for %q: %q: accepted is a duration of 0s or more, such as \"90s\" (0s turns the trend off)", configKeyTrendLead, v)
		}
		cfg.TrendLead = d
	}
	if v, ok := raw[configKeyTrendWindow]; ok {
		if cfg.TrendWindow, err = parsePositiveDuration(configKeyTrendWindow, v); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyRiseWindow]; ok {
		d, perr := time.ParseDuration(strings.TrimSpace(v))
		if perr != nil || d < 0 {
			return cfg, fmt.Errorf("invalid value for %q: %q: accepted is a duration of 0s or more, such as \"90s\" (0s turns the rise headroom off)", configKeyRiseWindow, v)
		}
		cfg.RiseWindow = d
	}
	if v, ok := raw[configKeyTarget]; ok {
		if cfg.Target, err = parseFloatIn(configKeyTarget, v, 0, 100, false); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyTolerance]; ok {
		if cfg.Tolerance, err = parseFloatIn(configKeyTolerance, v, 0, 0.5, true); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyScaleInCoverage]; ok {
		if cfg.ScaleInCoverage, err = parseFloatIn(configKeyScaleInCoverage, v, 0, 1, true); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyScaleOutWindow]; ok {
		if cfg.ScaleOutWindow, err = parsePositiveDuration(configKeyScaleOutWindow, v); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyMaxDataAge]; ok {
		if cfg.MaxDataAge, err = parsePositiveDuration(configKeyMaxDataAge, v); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyMaxScaleUp]; ok {
		if cfg.MaxScaleUp, err = parsePositiveInt(configKeyMaxScaleUp, v); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyMaxScaleDown]; ok {
		if cfg.MaxScaleDown, err = parsePositiveInt(configKeyMaxScaleDown, v); err != nil {
			return cfg, err
		}
	}
	if v, ok := raw[configKeyDryRun]; ok {
		if cfg.DryRun, err = strconv.ParseBool(v); err != nil {
			return cfg, fmt.Errorf("invalid value for %q: %q: accepted values are true or false", configKeyDryRun, v)
		}
	}
	return cfg, nil
}

func isAcceptedKey(k string) bool {
	for _, a := range acceptedKeys {
		if k == a {
			return true
		}
	}
	return false
}

// parseFloatIn parses a finite number in (lo, hi], or [lo, hi] when
// loInclusive is set.
func parseFloatIn(key, v string, lo, hi float64, loInclusive bool) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	bad := err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f > hi || f < lo || (!loInclusive && f == lo)
	if bad {
		open := "("
		if loInclusive {
			open = "["
		}
		return 0, fmt.Errorf("invalid value for %q: %q: accepted is a number in %s%g, %g]", key, v, open, lo, hi)
	}
	return f, nil
}

func parsePositiveDuration(key, v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid value for %q: %q: accepted is a positive duration such as \"30s\" or \"2m\"", key, v)
	}
	return d, nil
}

func parsePositiveInt(key, v string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("invalid value for %q: %q: accepted is a whole number of nodes, 1 or more", key, v)
	}
	return n, nil
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
