package plugin

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad-autoscaler/sdk/helper/scaleutils/nodeselector"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// Policy-level configuration keys (the target block of a scaling policy).
// Names shared with the stock aws-asg plugin keep their meaning.
const (
	configKeyFleetID          = "spot_fleet_request_id"
	configKeyNodeIDAttribute  = "node_id_attribute"
	configKeyDryRun           = "dry-run"
	configKeyMinFamilies      = "min_instance_families"
	configKeyLaunchTimeout    = "launch_timeout"
	configKeyJoinTimeout      = "node_join_timeout"
	configKeyRestartCooldown  = "restart_cooldown"
	configKeyDrainDeadline    = sdk.TargetConfigKeyDrainDeadline
	configKeyIgnoreSystemJobs = sdk.TargetConfigKeyIgnoreSystemJobs
	configKeyNodePurge        = sdk.TargetConfigKeyNodePurge
	configKeySelectorStrategy = sdk.TargetConfigNodeSelectorStrategy
	defaultDrainDeadline      = 15 * time.Minute
	defaultMinFamilies        = 2
	defaultLaunchTimeout      = 5 * time.Minute
	defaultJoinTimeout        = 10 * time.Minute
	// defaultRestartCooldown is the agent's own default cooldown.
	defaultRestartCooldown     = 5 * time.Minute
	defaultNodeSelectorDefault = sdk.TargetNodeSelectorStrategyLeastBusy
)

var selectorStrategies = []string{
	sdk.TargetNodeSelectorStrategyLeastBusy,
	sdk.TargetNodeSelectorStrategyEmpty,
	sdk.TargetNodeSelectorStrategyEmptyIgnoreSystemJobs,
	sdk.TargetNodeSelectorStrategyNewestCreateIndex,
	sdk.TargetNodeSelectorStrategyOldestCreateIndex,
}

// policyConfig is a policy's target block, validated.
type policyConfig struct {
	FleetID          string
	Pool             nomadnode.Pool
	IDLookup         nomadnode.IDLookup
	DrainDeadline    time.Duration
	IgnoreSystemJobs bool
	Purge            bool
	Selector         string
	DryRun           bool
	MinFamilies      int
	LaunchTimeout    time.Duration
	JoinTimeout      time.Duration
	// RestartCooldown is how long after a scaling action made by an earlier
	// plugin process (before an agent restart) the fleet reports not ready.
	RestartCooldown time.Duration
	// raw is the map the SDK's node selectors read.
	raw map[string]string
}

// parsePolicyConfig validates a policy's target config once, reporting every
// problem with the key, the value and what is accepted.
func parsePolicyConfig(cfg map[string]string) (*policyConfig, error) {
	p := &policyConfig{
		FleetID:         strings.TrimSpace(cfg[configKeyFleetID]),
		DrainDeadline:   defaultDrainDeadline,
		Selector:        defaultNodeSelectorDefault,
		MinFamilies:     defaultMinFamilies,
		LaunchTimeout:   defaultLaunchTimeout,
		JoinTimeout:     defaultJoinTimeout,
		RestartCooldown: defaultRestartCooldown,
		raw:             cfg,
	}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	switch {
	case p.FleetID == "":
		bad("%s is required: set it to the id of the Spot Fleet request to scale (sfr-...)", configKeyFleetID)
	case !strings.HasPrefix(p.FleetID, "sfr-"):
		bad("invalid %s %q: a Spot Fleet request id starts with \"sfr-\"", configKeyFleetID, p.FleetID)
	}

	pool, err := nomadnode.NewPool(cfg)
	if err != nil {
		bad("%v", err)
	}
	p.Pool = pool

	if p.IDLookup, err = nomadnode.ParseIDLookup(cfg[configKeyNodeIDAttribute]); err != nil {
		bad("invalid %s: %v", configKeyNodeIDAttribute, err)
	}

	duration := func(key string, dst *time.Duration) {
		v, ok := cfg[key]
		if !ok {
			return
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			bad("invalid %s %q: want a positive duration such as \"5m\" or \"90s\"", key, v)
			return
		}
		*dst = d
	}
	duration(configKeyDrainDeadline, &p.DrainDeadline)
	duration(configKeyLaunchTimeout, &p.LaunchTimeout)
	duration(configKeyJoinTimeout, &p.JoinTimeout)
	if v, ok := cfg[configKeyRestartCooldown]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 {
			bad("invalid %s %q: want a duration such as \"5m\", or \"0s\" to turn it off", configKeyRestartCooldown, v)
		} else {
			p.RestartCooldown = d
		}
	}

	boolean := func(key string, dst *bool) {
		v, ok := cfg[key]
		if !ok {
			return
		}
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			bad("invalid %s %q: want true or false", key, v)
			return
		}
		*dst = b
	}
	boolean(configKeyIgnoreSystemJobs, &p.IgnoreSystemJobs)
	boolean(configKeyNodePurge, &p.Purge)
	boolean(configKeyDryRun, &p.DryRun)

	if v, ok := cfg[configKeySelectorStrategy]; ok {
		if _, err := nodeselector.NewSelector(map[string]string{configKeySelectorStrategy: v}, nil, nil); err != nil {
			bad("invalid %s %q: accepted values are %s", configKeySelectorStrategy, v, strings.Join(selectorStrategies, ", "))
		} else {
			p.Selector = v
		}
	}

	if v, ok := cfg[configKeyMinFamilies]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			bad("invalid %s %q: want a whole number of at least 1 (1 turns the diversification check off)", configKeyMinFamilies, v)
		} else {
			p.MinFamilies = n
		}
	}

	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid target config: %s", strings.Join(errs, "; "))
	}
	return p, nil
}
