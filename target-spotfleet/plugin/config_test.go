package plugin

import (
	"fmt"
	"strings"
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
		{name: "malformed fleet id", cfg: with(configKeyFleetID, "fleet-1"), wantErr: []string{`invalid spot_fleet_request_id "fleet-1"`, `"sfr-" followed by`}},
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

// policyWith returns a valid policy target config changed by kv (key, value
// pairs; the value "<unset>" deletes the key).
func policyWith(kv ...string) map[string]string {
	out := map[string]string{configKeyFleetID: "sfr-0123456789abcdef0", "node_class": "spot"}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "<unset>" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// policyCase is one row of the refusal tables below.
type policyCase struct {
	name string
	cfg  map[string]string
	// wantErr are substrings of the error; empty means the config is valid.
	wantErr []string
	// check, when set, inspects a valid config.
	check func(t *testing.T, p *policyConfig)
}

func runPolicyCases(t *testing.T, cases []policyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePolicyConfig(tc.cfg)
			if len(tc.wantErr) == 0 {
				require.NoError(t, err)
				if tc.check != nil {
					tc.check(t, p)
				}
				return
			}
			require.Error(t, err)
			require.Nil(t, p)
			for _, w := range tc.wantErr {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestParsePolicyConfigRefusesUnknownKeys(t *testing.T) {
	accepted := "accepted keys are " + strings.Join([]string{
		"spot_fleet_request_id", "node_class", "datacenter", "node_pool", "node_id_attribute",
		"node_drain_deadline", "node_drain_ignore_system_jobs", "node_purge", "node_selector_strategy",
		"min_instance_families", "launch_timeout", "node_join_timeout", "restart_cooldown",
		"interruption_drain_deadline", "rebalance_action", "admission_meta_key", "node_warmup", "launch_hooks", "terminate_hooks", "dry-run",
	}, ", ")
	runPolicyCases(t, []policyCase{
		{name: "typo of node_drain_deadline", cfg: policyWith("node_drain_dealine", "2m"),
			wantErr: []string{`unknown key "node_drain_dealine" (did you mean "node_drain_deadline"?)`, accepted}},
		{name: "wrong case", cfg: policyWith("Node_Purge", "true"),
			wantErr: []string{`unknown key "Node_Purge" (did you mean "node_purge"?)`, accepted}},
		{name: "dry_run for dry-run", cfg: policyWith("dry_run", "true"),
			wantErr: []string{`unknown key "dry_run" (did you mean "dry-run"?)`}},
		{name: "no near key", cfg: policyWith("max_price", "0.1"),
			wantErr: []string{`unknown key "max_price": accepted keys are`}},
		{name: "several unknown keys, sorted, in one problem", cfg: policyWith("zz_extra", "1", "launch_timout", "1m"),
			wantErr: []string{`unknown keys "launch_timout" (did you mean "launch_timeout"?), "zz_extra": ` + accepted}},
		{name: "agent-level key in a policy", cfg: policyWith("aws_region", "eu-west-1"),
			wantErr: []string{`unknown key "aws_region"`}},
		{name: "SDK filter option this plugin does not honour", cfg: policyWith("node_filter_ignore_drain", "true"),
			wantErr: []string{`unknown key "node_filter_ignore_drain"`}},
	})
	// The message lists only the keys operators write.
	_, err := parsePolicyConfig(policyWith("x", "1"))
	require.Error(t, err)
	for _, k := range []string{"_nomad_autoscaler_grpc_timeout", "Namespace", "Job", "Group", "Task"} {
		require.NotContains(t, err.Error(), k)
	}
}

func TestParsePolicyConfigAcceptsAgentKeys(t *testing.T) {
	runPolicyCases(t, []policyCase{
		// What agent v0.5.0 passes for agent-config/policies/spot-pool.hcl.
		{name: "file policy as the agent passes it", cfg: map[string]string{
			"spot_fleet_request_id":          "sfr-0123456789abcdef0",
			"node_class":                     "spot",
			"node_id_attribute":              "unique.platform.aws.instance-id",
			"node_drain_deadline":            "10m",
			"node_drain_ignore_system_jobs":  "false",
			"node_selector_strategy":         "least_busy",
			"node_purge":                     "true",
			"restart_cooldown":               "2m",
			"interruption_drain_deadline":    "90s",
			"rebalance_action":               "ignore",
			"_nomad_autoscaler_grpc_timeout": "7.5s",
		}, check: func(t *testing.T, p *policyConfig) {
			require.Equal(t, 10*time.Minute, p.DrainDeadline)
			require.True(t, p.Purge)
			require.Equal(t, 90*time.Second, p.InterruptionDrain)
			require.Equal(t, rebalanceIgnore, p.RebalanceAction)
		}},
		{name: "job policy keys from Nomad", cfg: policyWith("Namespace", "default", "Job", "web", "Group", "app",
			"_nomad_autoscaler_grpc_timeout", "7.5s")},
		{name: "task policy key from Nomad", cfg: policyWith("Namespace", "default", "Job", "web", "Group", "app", "Task", "srv")},
		{name: "every pool key", cfg: policyWith("datacenter", "dc1", "node_pool", "spot")},
	})
}

func TestParsePolicyConfigBoundsDurations(t *testing.T) {
	runPolicyCases(t, []policyCase{
		{name: "drain deadline above 24h", cfg: policyWith(configKeyDrainDeadline, "25h"),
			wantErr: []string{`invalid node_drain_deadline "25h": want a positive duration of at most 24h`}},
		{name: "drain deadline that overflows", cfg: policyWith(configKeyDrainDeadline, "9999999999h"),
			wantErr: []string{`invalid node_drain_deadline "9999999999h"`, "at most 24h"}},
		{name: "drain deadline at 24h", cfg: policyWith(configKeyDrainDeadline, "24h"),
			check: func(t *testing.T, p *policyConfig) { require.Equal(t, 24*time.Hour, p.DrainDeadline) }},
		{name: "launch timeout above 1h", cfg: policyWith(configKeyLaunchTimeout, "61m"),
			wantErr: []string{`invalid launch_timeout "61m": want a positive duration of at most 1h,`}},
		{name: "launch timeout at 1h", cfg: policyWith(configKeyLaunchTimeout, "1h"),
			check: func(t *testing.T, p *policyConfig) { require.Equal(t, time.Hour, p.LaunchTimeout) }},
		{name: "join timeout above 24h", cfg: policyWith(configKeyJoinTimeout, "48h"),
			wantErr: []string{`invalid node_join_timeout "48h": want a positive duration of at most 24h`}},
		{name: "join timeout at 24h", cfg: policyWith(configKeyJoinTimeout, "24h")},
		{name: "restart cooldown above 24h", cfg: policyWith(configKeyRestartCooldown, "100h"),
			wantErr: []string{`invalid restart_cooldown "100h": want a duration of at most 24h`, `"0s" to turn it off`}},
		{name: "restart cooldown at 24h", cfg: policyWith(configKeyRestartCooldown, "24h")},
		{name: "restart cooldown off", cfg: policyWith(configKeyRestartCooldown, "0s"),
			check: func(t *testing.T, p *policyConfig) { require.Zero(t, p.RestartCooldown) }},
		{name: "zero drain deadline", cfg: policyWith(configKeyDrainDeadline, "0s"),
			wantErr: []string{`invalid node_drain_deadline "0s": want a positive duration`}},
	})
}

func TestParsePolicyConfigChecksFleetID(t *testing.T) {
	shape := `"sfr-" followed by letters and digits, in groups joined by single hyphens, at most 64 characters`
	refused := func(id string) policyCase {
		return policyCase{name: fmt.Sprintf("refuses %q", id), cfg: policyWith(configKeyFleetID, id),
			wantErr: []string{fmt.Sprintf("invalid spot_fleet_request_id %q: want a Spot Fleet request id: ", strings.TrimSpace(id)), shape}}
	}
	accepted := func(id string) policyCase {
		return policyCase{name: fmt.Sprintf("accepts %q", id), cfg: policyWith(configKeyFleetID, id),
			check: func(t *testing.T, p *policyConfig) { require.Equal(t, strings.TrimSpace(id), p.FleetID) }}
	}
	runPolicyCases(t, []policyCase{
		accepted("sfr-0123456789abcdef0"),                    // README and sample policies
		accepted("sfr-d003e16a994203380"),                    // moto 5.2.1: sfr- and 17 hex digits
		accepted("sfr-00000000000000001"),                    // the in-memory fake
		accepted("sfr-73fbd2ce-aa30-494c-8788-1cee4b0e1d2c"), // AWS: sfr- and a UUID
		accepted("sfr-73fbd2ce-aa30-494c-8788-1cee4EXAMPLE"), // AWS documentation
		accepted(" sfr-0123456789abcdef0 "),
		refused("sfr-"),
		refused("sfr"),
		refused("fleet-1"),
		refused("SFR-0123456789abcdef0"),
		refused("sfr--0123"),
		refused("sfr-0123-"),
		refused("sfr-0123 4567"),
		refused("sfr-0123_4567"),
		refused("sfr-0123.4567"),
		refused("sfr-0123/4567"),
		refused(`"sfr-0123456789abcdef0"`),
		refused("sfr-0123\n4567"),
		refused("sfr-é0123"),
		refused("sfr-" + strings.Repeat("a", 61)),
		accepted("sfr-" + strings.Repeat("a", 60)),
	})
}

func TestParsePolicyConfigBoundsCounts(t *testing.T) {
	runPolicyCases(t, []policyCase{
		{name: "overflow", cfg: policyWith(configKeyMinFamilies, "99999999999999999999"),
			wantErr: []string{`invalid min_instance_families "99999999999999999999": want a whole number from 1 to 100`}},
		{name: "absurd", cfg: policyWith(configKeyMinFamilies, "101"),
			wantErr: []string{`invalid min_instance_families "101": want a whole number from 1 to 100`}},
		{name: "zero", cfg: policyWith(configKeyMinFamilies, "0"),
			wantErr: []string{`invalid min_instance_families "0": want a whole number from 1 to 100`}},
		{name: "negative", cfg: policyWith(configKeyMinFamilies, "-2"),
			wantErr: []string{`invalid min_instance_families "-2": want a whole number from 1 to 100`}},
		{name: "fraction", cfg: policyWith(configKeyMinFamilies, "2.5"),
			wantErr: []string{`invalid min_instance_families "2.5": want a whole number from 1 to 100`}},
		{name: "upper bound", cfg: policyWith(configKeyMinFamilies, "100"),
			check: func(t *testing.T, p *policyConfig) { require.Equal(t, 100, p.MinFamilies) }},
		{name: "check off", cfg: policyWith(configKeyMinFamilies, "1"),
			check: func(t *testing.T, p *policyConfig) { require.Equal(t, 1, p.MinFamilies) }},
	})
}

func TestParsePolicyConfigReportsEveryProblem(t *testing.T) {
	cfg := policyWith(configKeyFleetID, "sfr-", "node_class", "<unset>", "node_drain_dealine", "1m",
		configKeyLaunchTimeout, "2h", configKeyMinFamilies, "99999999999999999999", configKeyNodePurge, "maybe",
		configKeySelectorStrategy, "random", configKeyRestartCooldown, "-1s", configKeyNodeIDAttribute, "meta.")
	_, err := parsePolicyConfig(cfg)
	require.Error(t, err)
	msg := strings.TrimPrefix(err.Error(), "invalid target config: ")
	problems := strings.Split(msg, "; ")
	want := []string{
		`unknown key "node_drain_dealine"`,
		`invalid spot_fleet_request_id "sfr-"`,
		"no node pool selected",
		"invalid node_id_attribute",
		`invalid launch_timeout "2h"`,
		`invalid restart_cooldown "-1s"`,
		`invalid node_purge "maybe"`,
		`invalid node_selector_strategy "random"`,
		`invalid min_instance_families "99999999999999999999"`,
	}
	require.Len(t, problems, len(want), "problems: %q", problems)
	for i, w := range want {
		require.Contains(t, problems[i], w)
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
		{name: "session token alone", cfg: map[string]string{"aws_session_token": "t0ken-SECRET"}, wantErr: "aws_session_token is set without"},
		{name: "static keys with ec2_role", cfg: map[string]string{"aws_access_key_id": "AKIDSECRETVALUE", "aws_secret_access_key": "s3cr3t-value",
			"aws_session_token": "t0ken-SECRET", "aws_credential_provider": "ec2_role"}, wantErr: `aws_credential_provider "ec2_role" conflicts`},
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
			require.NotContains(t, err.Error(), "t0ken-SECRET")
		})
	}
}
