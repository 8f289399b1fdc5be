package plugin

import (
	"fmt"
	"strconv"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// config is the plugin's own configuration, parsed and validated once.
type config struct {
	sampleInterval  time.Duration
	sampleRetention time.Duration
	nodeWarmup      time.Duration
	concurrency     int
	requestTimeout  time.Duration
	// gate is the admission gate: pool nodes it does not admit take no
	// work, so they are left out.
	gate nomadnode.Gate
}

// configKeys are the plugin's own keys in the agent's config block, in the
// order docs/reference/apm-node.md lists them. parseConfig reads only these
// (a key missing here is never read), and the reference test checks the
// documentation against this list.
var configKeys = []string{
	configKeySampleInterval, configKeySampleRetention, configKeyNodeWarmup,
	configKeyConcurrency, configKeyRequestTimeout, configKeyAdmissionMetaKey,
}

// parseConfig reads the plugin's keys from the agent's config block; keys it
// does not own (nomad_* and the like) are ignored. Errors name the key, the
// bad value and what is accepted.
func parseConfig(agentConfig map[string]string) (config, error) {
	raw := make(map[string]string, len(configKeys))
	for _, k := range configKeys {
		if v, ok := agentConfig[k]; ok {
			raw[k] = v
		}
	}
	cfg := config{
		sampleInterval:  defaultSampleInterval,
		sampleRetention: defaultSampleRetention,
		nodeWarmup:      defaultNodeWarmup,
		concurrency:     defaultConcurrency,
		requestTimeout:  defaultRequestTimeout,
		gate:            nomadnode.Gate{Key: nomadnode.DefaultGateKey},
	}

	for _, d := range []struct {
		key  string
		dst  *time.Duration
		zero bool // whether 0 is accepted
	}{
		{configKeySampleInterval, &cfg.sampleInterval, false},
		{configKeySampleRetention, &cfg.sampleRetention, false},
		{configKeyNodeWarmup, &cfg.nodeWarmup, true},
		{configKeyRequestTimeout, &cfg.requestTimeout, false},
	} {
		v, ok := raw[d.key]
		if !ok {
			continue
		}
		parsed, err := time.ParseDuration(v)
		if err != nil || parsed < 0 || (parsed == 0 && !d.zero) {
			accepted := "a positive duration such as 10s or 2m"
			if d.zero {
				accepted = "a duration of 0s or more, such as 90s"
			}
			return config{}, fmt.Errorf("invalid %s %q: want %s", d.key, v, accepted)
		}
		*d.dst = parsed
	}

	if v, ok := raw[configKeyConcurrency]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1024 {
			return config{}, fmt.Errorf("invalid %s %q: want a whole number from 1 to 1024", configKeyConcurrency, v)
		}
		cfg.concurrency = n
	}

	if v, ok := raw[configKeyAdmissionMetaKey]; ok {
		gate, err := nomadnode.ParseGate(v)
		if err != nil {
			return config{}, fmt.Errorf("invalid %s: %w", configKeyAdmissionMetaKey, err)
		}
		cfg.gate = gate
	}

	if cfg.sampleRetention < cfg.sampleInterval {
		return config{}, fmt.Errorf("invalid %s %q: it must be at least %s (%s)",
			configKeySampleRetention, cfg.sampleRetention, configKeySampleInterval, cfg.sampleInterval)
	}
	return cfg, nil
}
