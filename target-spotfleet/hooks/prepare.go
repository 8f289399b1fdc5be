package hooks

import (
	"strings"
	"time"
)

// Environment variables every exec command gets.
const (
	envInstanceID   = "SPOTFLEET_INSTANCE_ID"
	envInstanceType = "SPOTFLEET_INSTANCE_TYPE"
	envZone         = "SPOTFLEET_AVAILABILITY_ZONE"
	envPrivateIP    = "SPOTFLEET_PRIVATE_IP"
	envPrivateDNS   = "SPOTFLEET_PRIVATE_DNS_NAME"
	envFleetID      = "SPOTFLEET_FLEET_ID"
	envNodeID       = "SPOTFLEET_NODE_ID"
	envNodeName     = "SPOTFLEET_NODE_NAME"
)

// prepared is a hook with its templates rendered for one instance.
type prepared struct {
	limit     string            // awx, awx_callback
	extraVars map[string]string // awx: fixed and the hook's
	meta      map[string]string // nomad
	argv      []string          // exec
	env       []string          // exec: KEY=value added to the passed variables
	// instanceID is the instance's id: the awx hook's job names it in its
	// extra_vars.
	instanceID string
	// launchTime is the instance's launch time (zero: unknown).
	launchTime time.Time
	nodeID     string
	red        redactor
	h          *Hook
}

// prepare renders every template of the hook. Rendering an empty value is
// an error that says which expression was empty.
func (r *Runner) prepare(h *Hook, f facts) (*prepared, error) {
	key := func(setting string) string { return policyKeyPrefix + h.Name + "_" + setting }
	p := &prepared{h: h, nodeID: f.inst.NodeID, red: r.redactor(), instanceID: f.inst.ID, launchTime: f.inst.LaunchTime}
	var err error
	switch h.Type {
	case TypeAWX, TypeAWXCallback:
		if p.limit, err = renderLimit(key(settingLimit), h.limit(), f); err != nil {
			return nil, err
		}
		if h.Type == TypeAWX {
			in := f.inst
			p.extraVars = map[string]string{
				"instance_id":           in.ID,
				"instance_type":         in.Type,
				"availability_zone":     in.Zone,
				"spot_fleet_request_id": in.FleetID,
				"nomad_node_id":         in.NodeID,
				"nomad_node_name":       in.NodeName,
				"private_ip":            in.PrivateIP,
				"private_dns_name":      in.PrivateDNS,
			}
			vars, err := renderMap(key(settingExtraVars), h.ExtraVars, f)
			if err != nil {
				return nil, err
			}
			for k, v := range vars {
				if _, fixed := p.extraVars[k]; !fixed {
					p.extraVars[k] = v
				}
			}
		}
	case TypeNomad:
		if p.meta, err = renderMap(key(settingMeta), h.Meta, f); err != nil {
			return nil, err
		}
	case TypeExec:
		for _, w := range h.Command {
			v, err := renderValue(key(settingCommand), w, f)
			if err != nil {
				return nil, err
			}
			p.argv = append(p.argv, v)
		}
		in := f.inst
		p.env = []string{
			envInstanceID + "=" + in.ID,
			envInstanceType + "=" + in.Type,
			envZone + "=" + in.Zone,
			envPrivateIP + "=" + in.PrivateIP,
			envPrivateDNS + "=" + in.PrivateDNS,
			envFleetID + "=" + in.FleetID,
			envNodeID + "=" + in.NodeID,
			envNodeName + "=" + in.NodeName,
		}
		env, err := renderMap(key(settingEnv), h.Env, f)
		if err != nil {
			return nil, err
		}
		for _, k := range sortedKeys(env) {
			p.env = append(p.env, k+"="+env[k])
		}
	}
	return p, nil
}

// logFields are the fields of the "hook started" line that depend on the
// type.
func (p *prepared) logFields() []any {
	switch p.h.Type {
	case TypeAWX:
		return []any{"job_template", p.h.JobTemplate, "limit", p.limit}
	case TypeAWXCallback:
		return []any{"job_template", p.h.JobTemplate, "host", p.limit}
	case TypeNomad:
		return []any{"meta", strings.Join(sortedKeys(p.meta), ",")}
	case TypeExec:
		return []any{"command", p.red.apply(strings.Join(p.argv, " "))}
	}
	return nil
}
