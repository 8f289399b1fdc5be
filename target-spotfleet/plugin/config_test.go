package plugin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParsePolicyConfig(t *testing.T) {
	base := map[string]string{configKeyFleetID: "sfr-123", "node_class": "spot"}
	with := func(kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<unset>" {
				delete(out, kv[i])
			} else {
				out[kv[i]] = kv[i+1]
			}
		}
		return out
	}
	cases := []struct {
		name    string
		cfg     map[string]string
		wantErr []string
		check   func(t *testing.T, p *policyConfig)
	}{
		{name: "defaults", cfg: base, check: func(t *testing.T, p *policyConfig) {
			require.Equal(t, 15*time.Minute, p.DrainDeadline)
			require.Equal(t, "least_busy", p.Selector)
			require.Equal(t, "unique.platform.aws.instance-id", p.IDLookup.String())
			require.Equal(t, 2, p.MinFamilies)
			require.Equal(t, 5*time.Minute, p.RestartCooldown)
			require.False(t, p.DryRun)
		}},
		{name: "all keys", cfg: with(configKeyDrainDeadline, "2m", configKeyIgnoreSystemJobs, "true", configKeyNodePurge, "true",
			configKeySelectorStrategy, "empty", configKeyNodeIDAttribute, "meta.ec2_instance_id", configKeyDryRun, "true",
			configKeyMinFamilies, "3", configKeyLaunchTimeout, "90s", configKeyJoinTimeout, "4m", "datacenter", "dc2"),
			check: func(t *testing.T, p *policyConfig) {
				require.Equal(t, 2*time.Minute, p.DrainDeadline)
				require.True(t, p.IgnoreSystemJobs)
				require.True(t, p.Purge)
				require.Equal(t, "empty", p.Selector)
				require.Equal(t, "meta.ec2_instance_id", p.IDLookup.String())
				require.True(t, p.DryRun)
				require.Equal(t, 3, p.MinFamilies)
				require.Equal(t, 90*time.Second, p.LaunchTimeout)
				require.Equal(t, 4*time.Minute, p.JoinTimeout)
			}},
		{name: "missing fleet id", cfg: with(configKeyFleetID, "<unset>"), wantErr: []string{"spot_fleet_request_id is required"}},
		{name: "malformed fleet id", cfg: with(configKeyFleetID, "fleet-1"), wantErr: []string{`invalid spot_fleet_request_id "fleet-1"`, `starts with "sfr-"`}},
		{name: "no pool", cfg: with("node_class", "<unset>"), wantErr: []string{"node_class", "datacenter", "node_pool"}},
		{name: "bad duration", cfg: with(configKeyDrainDeadline, "10 minutes"), wantErr: []string{`invalid node_drain_deadline "10 minutes"`, "positive duration"}},
		{name: "negative duration", cfg: with(configKeyLaunchTimeout, "-1m"), wantErr: []string{`invalid launch_timeout "-1m"`}},
		{name: "bad bool", cfg: with(configKeyNodePurge, "yes please"), wantErr: []string{`invalid node_purge "yes please"`, "true or false"}},
		{name: "bad selector", cfg: with(configKeySelectorStrategy, "random"), wantErr: []string{`invalid node_selector_strategy "random"`, "least_busy"}},
		{name: "negative restart cooldown", cfg: with(configKeyRestartCooldown, "-5m"), wantErr: []string{`invalid restart_cooldown "-5m"`}},
		{name: "bad families", cfg: with(configKeyMinFamilies, "0"), wantErr: []string{`invalid min_instance_families "0"`}},
		{name: "empty meta key", cfg: with(configKeyNodeIDAttribute, "meta."), wantErr: []string{"invalid node_id_attribute"}},
		{name: "every problem is reported at once", cfg: with(configKeyFleetID, "<unset>", configKeyDrainDeadline, "x"),
			wantErr: []string{"spot_fleet_request_id is required", "invalid node_drain_deadline"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePolicyConfig(tc.cfg)
			if len(tc.wantErr) > 0 {
				require.Error(t, err)
				for _, w := range tc.wantErr {
					require.Contains(t, err.Error(), w)
				}
				return
			}
			require.NoError(t, err)
			tc.check(t, p)
		})
	}
}

func TestSetConfigRejectsBadAWSSettingsWithoutLeakingSecrets(t *testing.T) {
	cases := []struct {
		name    string
		cfg     map[string]string
		wantErr string
	}{
		{name: "half static credentials", cfg: map[string]string{"aws_access_key_id": "AKIDSECRETVALUE"}, wantErr: "must be set together"},
		{name: "unknown provider", cfg: map[string]string{"aws_credential_provider": "vault"}, wantErr: `invalid aws_credential_provider "vault"`},
		{name: "bad endpoint", cfg: map[string]string{"aws_endpoint": "localhost:5000"}, wantErr: `invalid aws_endpoint "localhost:5000"`},
		{name: "valid", cfg: map[string]string{"aws_access_key_id": "AKIDSECRETVALUE", "aws_secret_access_key": "s3cr3t-value", "aws_endpoint": "http://127.0.0.1:5000", "nomad_address": "http://127.0.0.1:4646"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := New(nopLogger())
			err := p.SetConfig(tc.cfg)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), "AKIDSECRETVALUE")
			require.NotContains(t, err.Error(), "s3cr3t-value")
		})
	}
}
