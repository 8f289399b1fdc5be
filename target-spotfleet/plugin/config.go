package plugin

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad-autoscaler/plugins/shared"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad-autoscaler/sdk/helper/scaleutils/nodeselector"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
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
	configKeyNodeClass        = sdk.TargetConfigKeyClass
	configKeyDatacenter       = sdk.TargetConfigKeyDatacenter
	configKeyNodePool         = sdk.TargetConfigKeyNodePool
	// configKeyInterruptionDrain is the drain deadline of a node whose
	// instance received a spot interruption warning.
	configKeyInterruptionDrain = "interruption_drain_deadline"
	// configKeyRebalanceAction says what a rebalance recommendation does.
	configKeyRebalanceAction = "rebalance_action"
	// configKeyAdmissionKey is the client meta key of the admission gate
	// (see nomadnode.Gate); launch_hooks, terminate_hooks and hook_* keys
	// are the hooks package's (hooks.IsPolicyKey).
	configKeyAdmissionKey = "admission_meta_key"
	// configKeyNodeWarmup: a node admitted less than this ago serves but is
	// left out of the count (apm-node leaves it out of its figure for its
	// node_warmup, from the same admission time, and samples every
	// sample_interval): set it to apm-node's node_warmup plus its
	// sample_interval.
	configKeyNodeWarmup  = "node_warmup"
	defaultNodeWarmup    = 70 * time.Second
	maxNodeWarmup        = time.Hour
	defaultDrainDeadline = 15 * time.Minute
	defaultMinFamilies   = 2
	defaultLaunchTimeout = 5 * time.Minute
	defaultJoinTimeout   = 10 * time.Minute
	// defaultRestartCooldown is the agent's own default cooldown.
	defaultRestartCooldown     = 5 * time.Minute
	defaultNodeSelectorDefault = sdk.TargetNodeSelectorStrategyLeastBusy
	// defaultInterruptionDrain leaves 30 s of the two-minute notice for the
	// allocations' kill_timeout and for the node to be told.
	defaultInterruptionDrain = 90 * time.Second
	defaultRebalanceAction   = rebalanceIgnore
)

// Accepted values of rebalance_action.
const (
	rebalanceIgnore = "ignore"
	rebalanceCordon = "cordon"
	rebalanceDrain  = "drain"
)

// spotNotice is how long EC2 gives a spot instance between its interruption
// warning and its reclaim.
const spotNotice = 2 * time.Minute

// Upper bounds of the policy's durations. A value above its bound is almost
// always a unit typo ("10h" for "10m") and would hold up the policy for that
// long, so it is refused rather than obeyed.
const (
	// maxDrainDeadline: a Scale call holds the fleet (and the policy) for
	// up to the drain deadline plus launch_timeout, so one scale-in should
	// not outlast a day; a day still covers long batch allocations, and
	// Nomad stops whatever is left at the deadline.
	maxDrainDeadline = 24 * time.Hour
	// maxLaunchTimeout: a Spot instance that EC2 can place runs within
	// minutes; waiting more than an hour only hides that capacity is
	// unavailable (the request stays raised, EC2 keeps trying anyway).
	maxLaunchTimeout = time.Hour
	// maxJoinTimeout: boot, Nomad join and post-configuration (AWX
	// playbooks) can take long, but a node that has not joined within a day
	// never will.
	maxJoinTimeout = 24 * time.Hour
	// maxRestartCooldown: it mirrors the policy's cooldown; a cooldown of
	// more than a day would freeze scaling after every agent restart.
	maxRestartCooldown = 24 * time.Hour

	// maxMinFamilies bounds min_instance_families, the number of distinct
	// families (c5, m5, ...) one fleet's launch specifications or overrides
	// must span. Diversification needs a handful; 100 is far above any
	// real fleet, so a higher value is a typo or an overflow, never intent.
	maxMinFamilies = 100

	// maxFleetIDLength bounds spot_fleet_request_id. Real ids are 40
	// characters (sfr- and a UUID), moto's 21.
	maxFleetIDLength = 64
)

// fleetIDPattern is what a Spot Fleet request id looks like: "sfr-" followed
// by groups of letters and digits joined by single hyphens. It accepts the
// ids AWS issues (sfr- and a UUID: sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c;
// the documentation writes sfr-73fbd2ce-aa30-494c-8788-1cee4EXAMPLE), the
// ids moto 5.2.1 issues (moto/ec2/utils.py random_spot_fleet_request_id:
// "sfr-" and 17 lowercase hex digits, like sfr-0123456789abcdef0 in the
// README) and the in-memory fake's. It refuses what no id contains: an empty
// body, white space, quotes, underscores, dots, slashes, doubled or trailing
// hyphens.
var fleetIDPattern = regexp.MustCompile(`^sfr-[0-9A-Za-z]+(-[0-9A-Za-z]+)*$`)

// policyKeys are the keys a policy's target block may hold; parsePolicyConfig
// refuses any other key, so that a typo (node_drain_dealine) is an error
// rather than a silent default. To accept a new key, add one line here.
//
// Keys marked agent are added by the agent (v0.5.0) or by Nomad, not written
// by operators; they are accepted but not listed in error messages. Found in
// the module github.com/hashicorp/nomad-autoscaler@v0.5.0:
//   - policy/policy.go, Processor.ApplyPolicyDefaults: sets
//     Target.Config[shared.PluginConfigKeyGRPCTimeout]
//     ("_nomad_autoscaler_grpc_timeout", defined in plugins/shared/util.go,
//     75% of the evaluation interval) for every policy, from files
//     (policy/file/source.go) and from Nomad (policy/nomad/source.go
//     canonicalizePolicy); plugins/target/client.go reads it as the Status
//     call's gRPC deadline and still passes the whole map to the plugin.
//   - policy/nomad/parser.go, parseTarget: for policies stored in Nomad (job
//     scaling blocks) it copies api.ScalingPolicy.Target into the config.
//     Nomad fills that map with "Namespace", "Job" and "Group"
//     (sdk.TargetConfigKeyNamespace, ...Job, ...TaskGroup; Nomad v1.6.3
//     nomad/structs/structs.go ScalingPolicy.TargetTaskGroup) and, for
//     task-level (vertical, Enterprise) policies, "Task"
//     (ScalingPolicy.TargetTask). Values in the policy's target block win
//     over these.
//
// Nothing else is added: a file policy's target "name" { ... } block decodes
// into sdk.ScalingPolicyTarget with the label as Name and only the block's
// attributes in Config (hcl ",remain"; sdk/policy.go, policy/file/parse.go).
// The agent itself reads "dry-run" (policy/handler.go runTargetScale, only
// the exact value "true"), and the SDK's cluster helpers read node_class,
// datacenter, node_pool, node_drain_deadline, node_drain_ignore_system_jobs,
// node_purge and node_selector_strategy (sdk/target.go); this plugin honours
// all of them. The SDK's experimental node_filter_ignore_* options
// (sdk/helper/scaleutils/node_identifier.go) are read only by
// scaleutils.ClusterScaleUtils, which this plugin does not use, so they are
// refused rather than ignored.
var policyKeys = []struct {
	name  string
	agent bool
}{
	{name: configKeyFleetID},
	{name: configKeyNodeClass},
	{name: configKeyDatacenter},
	{name: configKeyNodePool},
	{name: configKeyNodeIDAttribute},
	{name: configKeyDrainDeadline},
	{name: configKeyIgnoreSystemJobs},
	{name: configKeyNodePurge},
	{name: configKeySelectorStrategy},
	{name: configKeyMinFamilies},
	{name: configKeyLaunchTimeout},
	{name: configKeyJoinTimeout},
	{name: configKeyRestartCooldown},
	{name: configKeyInterruptionDrain},
	{name: configKeyRebalanceAction},
	{name: configKeyAdmissionKey},
	{name: configKeyNodeWarmup},
	{name: "launch_hooks"},
	{name: "terminate_hooks"},
	{name: configKeyDryRun},
	{name: shared.PluginConfigKeyGRPCTimeout, agent: true},
	{name: sdk.TargetConfigKeyNamespace, agent: true},
	{name: sdk.TargetConfigKeyJob, agent: true},
	{name: sdk.TargetConfigKeyTaskGroup, agent: true},
	{name: "Task", agent: true},
}

// operatorKeys lists the keys of policyKeys an operator writes, in order.
func operatorKeys() []string {
	var out []string
	for _, k := range policyKeys {
		if !k.agent {
			out = append(out, k.name)
		}
	}
	return out
}

// unknownKeys returns the keys of cfg that policyKeys does not list, sorted.
func unknownKeys(cfg map[string]string) []string {
	known := make(map[string]bool, len(policyKeys))
	for _, k := range policyKeys {
		known[k.name] = true
	}
	var out []string
	for k := range cfg {
		if !known[k] && !hooks.IsPolicyKey(k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// closestKey returns the operator key nearest to k when it is near enough to
// be a typo of it (at most two edits, case ignored), else "".
func closestKey(k string) string {
	best, bestDist := "", 3
	for _, cand := range operatorKeys() {
		if d := editDistance(strings.ToLower(k), cand); d < bestDist {
			best, bestDist = cand, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// shortDuration formats d without trailing zero units: 24h, 1h30m, 5m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

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
	// InterruptionDrain is the drain deadline after a spot interruption
	// warning (shortened further when the warning arrives late).
	InterruptionDrain time.Duration
	// RebalanceAction is what a rebalance recommendation does: ignore,
	// cordon or drain.
	RebalanceAction string
	// Gate is the admission gate of the fleet's nodes.
	Gate nomadnode.Gate
	// NodeWarmup is how long after its admission a node is left out of the
	// count (see configKeyNodeWarmup).
	NodeWarmup time.Duration
	// Hooks are the launch and terminate hooks (never nil; maybe empty).
	Hooks *hooks.Spec
}

// parsePolicyConfig is parsePolicyConfigWith without agent-level hook
// settings (no AWX).
func parsePolicyConfig(cfg map[string]string) (*policyConfig, error) {
	return parsePolicyConfigWith(cfg, nil)
}

// parsePolicyConfigWith validates a policy's target config once, reporting
// every problem at once (joined with "; "), each with the key, the value and
// what is accepted. Keys that policyKeys does not list (nor the hooks
// package) are refused. agent holds the agent-level hook settings (AWX).
func parsePolicyConfigWith(cfg map[string]string, agent *hooks.Agent) (*policyConfig, error) {
	p := &policyConfig{
		FleetID:         strings.TrimSpace(cfg[configKeyFleetID]),
		DrainDeadline:   defaultDrainDeadline,
		Selector:        defaultNodeSelectorDefault,
		MinFamilies:     defaultMinFamilies,
		LaunchTimeout:   defaultLaunchTimeout,
		JoinTimeout:     defaultJoinTimeout,
		RestartCooldown: defaultRestartCooldown,

		InterruptionDrain: defaultInterruptionDrain,
		RebalanceAction:   defaultRebalanceAction,
		NodeWarmup:        defaultNodeWarmup,
	}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if unknown := unknownKeys(cfg); len(unknown) > 0 {
		names := make([]string, len(unknown))
		for i, k := range unknown {
			names[i] = strconv.Quote(k)
			if c := closestKey(k); c != "" {
				names[i] += fmt.Sprintf(" (did you mean %q?)", c)
			}
		}
		noun := "key"
		if len(unknown) > 1 {
			noun = "keys"
		}
		bad("unknown %s %s: accepted keys are %s, and hook_<name>_<setting> for each hook that launch_hooks or terminate_hooks names", noun, strings.Join(names, ", "), strings.Join(operatorKeys(), ", "))
	}

	switch {
	case p.FleetID == "":
		bad("%s is required: set it to the id of the Spot Fleet request to scale (sfr-...)", configKeyFleetID)
	case len(p.FleetID) > maxFleetIDLength || !fleetIDPattern.MatchString(p.FleetID):
		bad("invalid %s %q: want a Spot Fleet request id: \"sfr-\" followed by letters and digits, in groups joined by single hyphens, at most %d characters in all (for example sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c or sfr-0123456789abcdef0)",
			configKeyFleetID, p.FleetID, maxFleetIDLength)
	}

	pool, err := nomadnode.NewPool(cfg)
	if err != nil {
		bad("%v", err)
	}
	p.Pool = pool

	if p.IDLookup, err = nomadnode.ParseIDLookup(cfg[configKeyNodeIDAttribute]); err != nil {
		bad("invalid %s: %v", configKeyNodeIDAttribute, err)
	}

	duration := func(key string, dst *time.Duration, maxD time.Duration) {
		v, ok := cfg[key]
		if !ok {
			return
		}
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 || d > maxD {
			bad("invalid %s %q: want a positive duration of at most %s, such as \"5m\" or \"90s\"", key, v, shortDuration(maxD))
			return
		}
		*dst = d
	}
	duration(configKeyDrainDeadline, &p.DrainDeadline, maxDrainDeadline)
	duration(configKeyLaunchTimeout, &p.LaunchTimeout, maxLaunchTimeout)
	duration(configKeyJoinTimeout, &p.JoinTimeout, maxJoinTimeout)
	if v, ok := cfg[configKeyRestartCooldown]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 || d > maxRestartCooldown {
			bad("invalid %s %q: want a duration of at most %s such as \"5m\", or \"0s\" to turn it off",
				configKeyRestartCooldown, v, shortDuration(maxRestartCooldown))
		} else {
			p.RestartCooldown = d
		}
	}

	if v, ok := cfg[configKeyInterruptionDrain]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 || d >= spotNotice {
			bad("invalid %s %q: want a positive duration shorter than the %s spot interruption notice, such as \"90s\" (the default)",
				configKeyInterruptionDrain, v, shortDuration(spotNotice))
		} else {
			p.InterruptionDrain = d
		}
	}
	if v, ok := cfg[configKeyRebalanceAction]; ok {
		switch a := strings.TrimSpace(v); a {
		case rebalanceIgnore, rebalanceCordon, rebalanceDrain:
			p.RebalanceAction = a
		default:
			bad("invalid %s %q: accepted values are %s (default), %s and %s", configKeyRebalanceAction, v, rebalanceIgnore, rebalanceCordon, rebalanceDrain)
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
		if err != nil || n < 1 || n > maxMinFamilies {
			bad("invalid %s %q: want a whole number from 1 to %d (1 turns the diversification check off)", configKeyMinFamilies, v, maxMinFamilies)
		} else {
			p.MinFamilies = n
		}
	}

	if v, ok := cfg[configKeyNodeWarmup]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < 0 || d > maxNodeWarmup {
			bad("invalid %s %q: want a duration of at most %s such as \"70s\" (apm-node's node_warmup plus its sample_interval), or \"0s\" to count admitted nodes at once",
				configKeyNodeWarmup, v, shortDuration(maxNodeWarmup))
		} else {
			p.NodeWarmup = d
		}
	}
	if p.Gate, err = nomadnode.ParseGate(cfg[configKeyAdmissionKey]); err != nil {
		bad("invalid %s: %v", configKeyAdmissionKey, err)
	}
	if p.Hooks, err = hooks.ParsePolicy(cfg, agent); err != nil {
		bad("%v", err)
	} else {
		for _, problem := range hookConflicts(p) {
			bad("%s", problem)
		}
	}

	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid target config: %s", strings.Join(errs, "; "))
	}
	return p, nil
}

// hookConflicts returns what the hooks may not do to this plugin: set the
// meta keys the plugin owns (the gate, its admission time, the key the
// instance id is read from), which would admit a node before its other hooks
// ran; or read node meta in a terminate hook (a terminate hook resumed after
// a restart no longer has the node's meta).
func hookConflicts(p *policyConfig) []string {
	owned := map[string]string{
		p.Gate.MetaKey():       configKeyAdmissionKey,
		p.Gate.AdmittedAtKey(): configKeyAdmissionKey + " (its admission time)",
	}
	if k, ok := strings.CutPrefix(p.IDLookup.String(), "meta."); ok {
		owned[k] = configKeyNodeIDAttribute
	}
	var out []string
	for _, h := range p.Hooks.Launch {
		keys := make([]string, 0, len(h.Meta))
		for k := range h.Meta {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if by, ok := owned[k]; ok {
				out = append(out, fmt.Sprintf("invalid hook_%s_meta: key %q is the plugin's own (%s): a hook that set it would admit the node, or change its instance id, before the other hooks ran; choose another key", h.Name, k, by))
			}
		}
	}
	for _, h := range p.Hooks.Terminate {
		texts := append([]string{h.Limit}, h.Command...)
		for _, v := range h.ExtraVars {
			texts = append(texts, v)
		}
		for _, v := range h.Env {
			texts = append(texts, v)
		}
		for _, v := range h.Meta {
			texts = append(texts, v)
		}
		for _, v := range texts {
			if strings.Contains(v, "node.meta.") {
				out = append(out, fmt.Sprintf("invalid terminate hook %s: it reads node meta ({{node.meta.<key>}}), which a terminate hook resumed after a restart no longer has; use the instance's id, address or node id", h.Name))
				break
			}
		}
	}
	return out
}
