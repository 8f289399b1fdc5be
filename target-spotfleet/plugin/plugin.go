// Package plugin implements the target-spotfleet Nomad Autoscaler target: it
// reports the size and readiness of an EC2 Spot Fleet request of Nomad client
// nodes and scales it, draining nodes before terminating exactly their
// instances.
package plugin

import (
	"context"
	"fmt"
	"strconv"
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
)

// PluginName is the plugin's name; the agent requires it to equal the binary's name.
const PluginName = "target-spotfleet"

var pluginInfo = &base.PluginInfo{Name: PluginName, PluginType: sdk.PluginTypeTarget}

// Assert the contract at compile time.
var _ target.Target = (*TargetPlugin)(nil)

// TargetPlugin is the Spot Fleet implementation of target.Target.
type TargetPlugin struct {
	logger hclog.Logger

	fleet *fleet.Client
	nodes nomadnode.API
	// nomadAPI feeds the SDK's node selectors (least_busy and empty read
	// allocations); it may be nil in tests that use create-index selectors.
	nomadAPI *api.Client

	// now and pollInterval are replaced by tests.
	now          func() time.Time
	pollInterval time.Duration

	mu       sync.Mutex
	inFlight map[string]bool // instance ids this process is scaling in now
	fleetMu  map[string]*sync.Mutex
	// ownEvents holds the time of the last scaling action this process made
	// on each fleet; older events were made before an agent restart.
	ownEvents map[string]time.Time
}

// New returns an unconfigured plugin; the agent calls SetConfig next.
func New(logger hclog.Logger) *TargetPlugin {
	return &TargetPlugin{
		logger:       logger,
		now:          time.Now,
		pollInterval: 2 * time.Second,
		inFlight:     map[string]bool{},
		fleetMu:      map[string]*sync.Mutex{},
		ownEvents:    map[string]time.Time{},
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
	t.fleet = fleet.NewClient(settings.EC2(cfg))
	t.nodes = nomadClient
	t.nomadAPI = nomadClient.Raw()
	t.logger.Info("configured", "aws", settings.String())
	return nil
}

// lockFleet serialises Status and Scale of one fleet.
func (t *TargetPlugin) lockFleet(id string) func() {
	t.mu.Lock()
	m, ok := t.fleetMu[id]
	if !ok {
		m = &sync.Mutex{}
		t.fleetMu[id] = m
	}
	t.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (t *TargetPlugin) setInFlight(ids []string, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		if on {
			t.inFlight[id] = true
		} else {
			delete(t.inFlight, id)
		}
	}
}

// isOwnEvent reports whether this process made the fleet's last scaling event.
func (t *TargetPlugin) isOwnEvent(fleetID string, at time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	own, ok := t.ownEvents[fleetID]
	return ok && !at.After(own)
}

func (t *TargetPlugin) isInFlight(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight[id]
}

// Scale implements target.Controller.
func (t *TargetPlugin) Scale(action sdk.ScalingAction, config map[string]string) error {
	if t.fleet == nil {
		return fmt.Errorf("%s: SetConfig was not called", PluginName)
	}
	cfg, err := parsePolicyConfig(config)
	if err != nil {
		return err
	}
	log := t.logger.With("spot_fleet_request_id", cfg.FleetID)
	if action.Count == sdk.StrategyActionMetaValueDryRunCount {
		log.Info("dry-run: no scaling", "reason", action.Reason)
		return nil
	}
	if action.Count < 0 {
		return fmt.Errorf("invalid desired count %d: want 0 or more", action.Count)
	}

	unlock := t.lockFleet(cfg.FleetID)
	defer unlock()

	// The action may drain nodes for up to the drain deadline and then wait
	// for instances; bound the whole of it.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DrainDeadline+cfg.LaunchTimeout+5*time.Minute)
	defer cancel()

	w, err := t.observe(ctx, cfg)
	if err != nil {
		return err
	}
	if err := w.check(cfg); err != nil {
		return err
	}
	if !w.req.Modifiable() {
		return sdk.NewTargetScalingNoOpError("spot fleet request %s is %s, not active: not scaling now", cfg.FleetID, w.req.State)
	}
	if err := t.reconcile(ctx, log, cfg, w); err != nil {
		return err
	}

	from, to := int64(w.req.TargetCapacity), action.Count
	switch {
	case to > from:
		return t.scaleOut(ctx, log, cfg, w, action)
	case to < from:
		return t.scaleIn(ctx, log, cfg, w, action)
	default:
		log.Info("no scaling needed", "target_capacity", from, "desired", to, "reason", action.Reason)
		return nil
	}
}

// Status implements target.Controller.
func (t *TargetPlugin) Status(config map[string]string) (*sdk.TargetStatus, error) {
	if t.fleet == nil {
		return nil, fmt.Errorf("%s: SetConfig was not called", PluginName)
	}
	cfg, err := parsePolicyConfig(config)
	if err != nil {
		return nil, err
	}
	unlock := t.lockFleet(cfg.FleetID)
	defer unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return t.status(ctx, t.logger.With("spot_fleet_request_id", cfg.FleetID), cfg)
}

func formatEventTime(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }
