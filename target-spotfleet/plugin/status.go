package plugin

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	"github.com/hashicorp/nomad/api"
)

// Meta keys the plugin adds to its status, beside the SDK's last-event key.
const (
	metaState         = "spot_fleet.state"
	metaRunning       = "spot_fleet.running_instances"
	metaReadyNodes    = "spot_fleet.ready_nodes"
	metaFamilies      = "spot_fleet.instance_families"
	metaNotReadyCause = "spot_fleet.not_ready_because"
)

func (t *TargetPlugin) status(ctx context.Context, log hclog.Logger, cfg *policyConfig) (*sdk.TargetStatus, error) {
	w, err := t.observe(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := w.check(cfg); err != nil {
		return nil, err
	}
	if w.req.Modifiable() {
		if err := t.reconcile(ctx, log, cfg, w); err != nil {
			return nil, err
		}
	}
	reasons := w.notReadyReasons(cfg, t.now())
	if why := t.restartCooldown(cfg, w, t.now()); why != "" {
		reasons = append(reasons, why)
	}
	st := &sdk.TargetStatus{
		Ready: len(reasons) == 0,
		Count: int64(w.req.TargetCapacity),
		Meta: map[string]string{
			metaState:      string(w.req.State),
			metaRunning:    strconv.Itoa(len(w.instances)),
			metaReadyNodes: strconv.Itoa(w.readyNodes()),
			metaFamilies:   strings.Join(w.families, ","),
		},
	}
	if !w.lastEvent.IsZero() {
		st.Meta[sdk.TargetStatusMetaKeyLastEvent] = formatEventTime(w.lastEvent)
	}
	if len(reasons) > 0 {
		st.Meta[metaNotReadyCause] = strings.Join(reasons, "; ")
		log.Info("fleet not ready for scaling", "target_capacity", w.req.TargetCapacity,
			"running", len(w.instances), "ready_nodes", w.readyNodes(), "because", st.Meta[metaNotReadyCause])
	} else {
		log.Debug("fleet ready", "target_capacity", w.req.TargetCapacity, "running", len(w.instances), "ready_nodes", w.readyNodes())
	}
	return st, nil
}

// restartCooldown keeps the fleet not ready for restart_cooldown after a
// scaling action that an earlier plugin process made. The agent (v0.5.0) reads
// nomad_autoscaler.last_event after a restart but leaves that cooldown at its
// first evaluation (policy/handler.go sets the cooldown state without its end
// time), so without this guard a restarted agent would scale again at once.
func (t *TargetPlugin) restartCooldown(cfg *policyConfig, w *world, now time.Time) string {
	if cfg.RestartCooldown <= 0 || w.lastEvent.IsZero() || t.isOwnEvent(cfg.FleetID, w.lastEvent) {
		return ""
	}
	if age := now.Sub(w.lastEvent); age < cfg.RestartCooldown {
		return fmt.Sprintf("last scaling action %s ago was made before the agent restarted; waiting out %s=%s",
			age.Round(time.Second), configKeyRestartCooldown, cfg.RestartCooldown)
	}
	return ""
}

// notReadyReasons lists why the fleet must not be scaled now: it is being
// modified, a scale-in or node join is in progress, or launched capacity has
// not arrived yet (within the launch and join timeouts, after which the plugin
// stops waiting so that a lasting shortage does not freeze the policy).
func (w *world) notReadyReasons(cfg *policyConfig, now time.Time) []string {
	var out []string
	if !w.req.Modifiable() {
		out = append(out, fmt.Sprintf("fleet request is %s", w.req.State))
	}
	ids := make([]string, 0, len(w.nodes))
	for id := range w.nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		n := w.nodes[id]
		switch {
		case n.Drain:
			out = append(out, fmt.Sprintf("node %s (%s) is draining", n.ID, id))
		case n.Status == api.NodeStatusInit:
			out = append(out, fmt.Sprintf("node %s (%s) is initializing", n.ID, id))
		}
	}
	if len(w.instances) < w.req.TargetCapacity && now.Sub(w.lastEvent) < cfg.LaunchTimeout {
		out = append(out, fmt.Sprintf("%d of %d instances running", len(w.instances), w.req.TargetCapacity))
	}
	for _, in := range w.instances {
		if _, ok := w.nodes[in.ID]; !ok && now.Sub(in.LaunchTime) < cfg.JoinTimeout {
			out = append(out, fmt.Sprintf("instance %s has not joined Nomad yet", in.ID))
		}
	}
	return out
}
