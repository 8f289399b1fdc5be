// Package plugin implements the target-spotfleet Nomad Autoscaler target: it
// reports the size and readiness of an EC2 Spot Fleet request of Nomad client
// nodes and scales it, draining nodes before terminating exactly their
// instances.
package plugin

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/plugins/base"
	"github.com/hashicorp/nomad-autoscaler/plugins/target"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad-autoscaler/sdk/helper/nomad"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/awsconf"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/interruption"
)

// PluginName is the plugin's name; the agent requires it to equal the binary's name.
const PluginName = "target-spotfleet"

var pluginInfo = &base.PluginInfo{Name: PluginName, PluginType: sdk.PluginTypeTarget}

// Assert the contract at compile time.
var _ target.Target = (*TargetPlugin)(nil)

// TargetPlugin is the Spot Fleet implementation of target.Target.
type TargetPlugin struct {
	logger hclog.Logger

	fleet  *fleet.Client
	nodes  nomadnode.API
	mapper *nomadnode.Mapper
	// nomadAPI feeds the SDK's node selectors (least_busy and empty read
	// allocations); it may be nil in tests that use create-index selectors.
	nomadAPI *api.Client

	// now and the waits below are replaced by tests.
	now func() time.Time
	// pollInterval is the first pause of the scale-out wait; it doubles.
	pollInterval time.Duration
	// launchConfirm bounds how long a scale-out waits to see the new
	// instances launched (at most launch_timeout); capacity that takes
	// longer is reported by the status as a shortage once launch_timeout
	// has passed, so the policy is never held for all of it.
	launchConfirm time.Duration
	// drainPoll is how often a drain's progress is read.
	drainPoll nomadnode.Backoff
	// capacityRetry is how long a capacity change after a drain is retried
	// (with backoff) before the drained nodes are left for reconciliation.
	capacityRetry time.Duration

	// tendInterval is how often departures are followed up; surplusSettle
	// how long a surplus lasts before it is removed; startupGrace how long
	// after SetConfig events for instances of no known fleet are retried
	// rather than dropped (the agent evaluates each policy soon after it
	// starts).
	tendInterval  time.Duration
	surplusSettle time.Duration
	startupGrace  time.Duration

	// bg counts the background goroutines (watcher, follow-up, surplus
	// removals); stopBackground ends the watcher and the follow-up.
	bg sync.WaitGroup
	// removals counts the surplus removals; StopBackground does not wait
	// for them (a drain may take its whole deadline).
	removals       sync.WaitGroup
	stopBackground context.CancelFunc
	watcher        *interruption.Watcher
	// bgCtx is the context of the background work (nil before it starts).
	bgCtx context.Context
	// pipelines counts the launch pipelines and terminate hooks running
	// in the background.
	pipelines sync.WaitGroup

	// hookAgent holds the agent-level hook settings (AWX URL and token);
	// runner runs the hooks; secrets are the agent config's secret values,
	// redacted from hook output.
	hookAgent *hooks.Agent
	runner    *hooks.Runner
	secrets   []string
	// provisionFast and provisionSlow pace the provisioning scan (see
	// defaultProvisionFast); hookPoll is how often hooks poll AWX and
	// Nomad; admitWait bounds the wait for an admission to show.
	provisionFast time.Duration
	provisionSlow time.Duration
	hookPoll      time.Duration
	admitWait     time.Duration

	mu     sync.Mutex
	fleets map[string]*fleetState
	// owners maps instances seen in managed fleets to their fleet;
	// refreshed says when each fleet's list was last read for routing.
	owners       map[string]ownerEntry
	refreshed    map[string]time.Time
	configuredAt time.Time
}

// New returns an unconfigured plugin; the agent calls SetConfig next.
func New(logger hclog.Logger) *TargetPlugin {
	return &TargetPlugin{
		logger:        logger,
		mapper:        nomadnode.NewMapper(),
		now:           time.Now,
		pollInterval:  time.Second,
		launchConfirm: 30 * time.Second,
		drainPoll:     nomadnode.Backoff{Base: time.Second, Max: 10 * time.Second},
		capacityRetry: 2 * time.Minute,
		tendInterval:  time.Second,
		surplusSettle: defaultSurplusSettle,
		startupGrace:  2 * time.Minute,
		provisionFast: defaultProvisionFast,
		provisionSlow: defaultProvisionSlow,
		admitWait:     defaultAdmitWait,
		fleets:        map[string]*fleetState{},
	}
}

// newWithClients builds a configured plugin around the given clients (tests).
func newWithClients(logger hclog.Logger, f *fleet.Client, nodes nomadnode.API, nomadAPI *api.Client) *TargetPlugin {
	t := New(logger)
	t.fleet, t.nodes, t.nomadAPI = f, nodes, nomadAPI
	return t
}

// PluginInfo implements base.Base.
func (t *TargetPlugin) PluginInfo() (*base.PluginInfo, error) { return pluginInfo, nil }

// SetConfig implements base.Base. It validates the agent-level settings and
// builds the AWS and Nomad clients without touching the network, because an
// error here stops the agent.
func (t *TargetPlugin) SetConfig(config map[string]string) error {
	settings, err := awsconf.Parse(config)
	if err != nil {
		return fmt.Errorf("%s: %w", PluginName, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := settings.Config(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", PluginName, err)
	}
	nomadClient, err := nomadnode.NewClient(nomad.ConfigFromNamespacedMap(config))
	if err != nil {
		return fmt.Errorf("%s: %w", PluginName, err)
	}
	hookAgent, err := hooks.ParseAgent(config)
	if err != nil {
		return fmt.Errorf("%s: %w", PluginName, err)
	}
	queueURL := strings.TrimSpace(config[configKeyQueueURL])
	if queueURL != "" {
		if err := interruption.ValidQueueURL(queueURL); err != nil {
			return fmt.Errorf("%s: invalid %s: %w", PluginName, configKeyQueueURL, err)
		}
	}
	t.fleet = fleet.NewClient(settings.EC2(cfg))
	t.nodes = nomadClient
	t.nomadAPI = nomadClient.Raw()
	t.mu.Lock()
	t.configuredAt = t.now()
	t.hookAgent, t.runner = hookAgent, nil
	t.secrets = append(secretValues(config), hookAgent.Secrets()...)
	t.mu.Unlock()
	awx := "AWX hooks off (no awx_url)"
	if hookAgent.AWXConfigured() {
		awx = hookAgent.String()
	}
	if queueURL == "" {
		t.startBackground(nil)
		t.logger.Info("configured; spot interruption handling is off (no interruption_queue_url)", "aws", settings.String(), "awx", awx)
		return nil
	}
	w, err := interruption.NewWatcher(settings.SQS(cfg), t, interruption.Config{QueueURL: queueURL, Logger: t.logger.Named("interruption")})
	if err != nil {
		return fmt.Errorf("%s: %w", PluginName, err)
	}
	t.startBackground(w)
	t.logger.Info("configured; watching for spot interruptions", "aws", settings.String(), "queue_url", queueURL, "awx", awx)
	return nil
}

// configKeyQueueURL is the agent-level key of the SQS queue that EventBridge
// feeds with the account's EC2 events. It is agent-level because one queue
// serves every fleet: SQS hands each message to one receiver, so pollers of
// several policies would take each other's messages. Each event is routed to
// the fleet of its instance and handled with that fleet's policy settings.
const configKeyQueueURL = "interruption_queue_url"

// startBackground starts the watcher (when w is not nil) and the departures'
// follow-up, stopping those of an earlier SetConfig first.
func (t *TargetPlugin) startBackground(w *interruption.Watcher) {
	t.StopBackground()
	ctx, cancel := context.WithCancel(context.Background())
	t.mu.Lock()
	t.stopBackground, t.watcher, t.bgCtx = cancel, w, ctx
	t.mu.Unlock()
	if w != nil {
		t.bg.Add(1)
		go func() {
			defer t.bg.Done()
			w.Run(ctx)
		}()
	}
	t.bg.Add(1)
	go func() {
		defer t.bg.Done()
		t.runTend(ctx)
	}()
}

// StopBackground stops the interruption watcher and the follow-up and waits
// for them to return (not for a surplus removal, which ends on its own).
func (t *TargetPlugin) StopBackground() {
	t.mu.Lock()
	stop := t.stopBackground
	t.stopBackground = nil
	t.mu.Unlock()
	if stop != nil {
		stop()
		t.bg.Wait()
		t.pipelines.Wait()
	}
}

// secretValues returns the values of the agent config's secret keys (AWS
// keys, tokens, passwords), for redaction from hook output.
func secretValues(config map[string]string) []string {
	var out []string
	for k, v := range config {
		lk := strings.ToLower(k)
		if strings.HasSuffix(lk, "_file") || strings.HasSuffix(lk, "_env") || len(v) < 6 {
			continue
		}
		if strings.Contains(lk, "secret") || strings.Contains(lk, "token") || strings.Contains(lk, "password") {
			out = append(out, v)
		}
	}
	return out
}

// Scale implements target.Controller. action.Count is the number of ready
// nodes wanted; see scale for how the target follows.
func (t *TargetPlugin) Scale(action sdk.ScalingAction, config map[string]string) error {
	if t.fleet == nil {
		return fmt.Errorf("%s: SetConfig was not called", PluginName)
	}
	cfg, err := parsePolicyConfigWith(config, t.hookAgent)
	if err != nil {
		return err
	}
	log := t.logger.With("spot_fleet_request_id", cfg.FleetID)
	if action.Count == sdk.StrategyActionMetaValueDryRunCount {
		log.Info("dry-run: no scaling", "reason", action.Reason)
		return nil
	}
	if action.Count < 0 || action.Count > maxTargetCapacity {
		return fmt.Errorf("invalid desired count %d: want 0 to %d", action.Count, maxTargetCapacity)
	}

	fs := t.state(cfg.FleetID)
	fs.setConfig(cfg)
	fs.op.Lock()
	defer fs.op.Unlock()
	fs.begin(fmt.Sprintf("scaling to %d", action.Count), t.now())
	defer fs.end()

	// The action may drain nodes for up to the drain deadline, retry the
	// capacity change and then wait for instances; bound the whole of it.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainDeadline+cfg.LaunchTimeout+t.capacityRetry+5*time.Minute)
	defer cancel()
	return t.scale(ctx, log, cfg, fs, action)
}

// Status implements target.Controller. It answers at once while a Scale of
// the same fleet runs (not ready, "scale action in progress").
func (t *TargetPlugin) Status(config map[string]string) (*sdk.TargetStatus, error) {
	if t.fleet == nil {
		return nil, fmt.Errorf("%s: SetConfig was not called", PluginName)
	}
	cfg, err := parsePolicyConfigWith(config, t.hookAgent)
	if err != nil {
		return nil, err
	}
	fs := t.state(cfg.FleetID)
	fs.setConfig(cfg)
	if !fs.op.TryLock() {
		return fs.busyStatus(t.now()), nil
	}
	defer fs.op.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return t.status(ctx, t.logger.With("spot_fleet_request_id", cfg.FleetID), cfg, fs)
}

func formatEventTime(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }
