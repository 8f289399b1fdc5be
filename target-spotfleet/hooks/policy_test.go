package hooks

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// awxAgent is an Agent with AWX configured (ParseAgent never dials).
func awxAgent(t *testing.T) *Agent {
	t.Helper()
	a, err := ParseAgent(map[string]string{"awx_url": "https://awx.example.com", "awx_token": "tok-literal-123"})
	require.NoError(t, err)
	return a
}

func TestParsePolicyReadsEveryKindOfHook(t *testing.T) {
	cfg := map[string]string{
		"launch_hooks":                "configure, enroll,join , register",
		"terminate_hooks":             "forget",
		"hook_configure_type":         "awx",
		"hook_configure_job_template": "configure nodes",
		"hook_configure_limit":        "{{ private_dns_name }}",
		"hook_configure_extra_vars":   "role=web, rack={{node.meta.rack}}",
		"hook_configure_timeout":      "45m",
		"hook_configure_on_failure":   "keep",
		"hook_enroll_type":            "awx_callback",
		"hook_enroll_job_template":    "8",
		"hook_join_type":              "nomad",
		"hook_join_meta":              "spotfleet_admission=admitted, configured_by={{hook.configure.job_id}}",
		"hook_register_type":          "exec",
		"hook_register_command":       `/usr/local/bin/register --ip '{{private_ip}}' "two words" back\ slash`,
		"hook_register_env":           "REGISTRY=https://registry.example.com/v1?x=1, NODE={{node_name}}",
		"hook_forget_type":            "awx",
		"hook_forget_job_template":    "9",
		"hook_forget_extra_vars":      "reason=scale-in",
		// Not ours: ignored.
		"aws_region":         "us-east-1",
		"node_class":         "spot",
		"node_drain_timeout": "5m",
	}

	spec, err := ParsePolicy(cfg, awxAgent(t))

	require.NoError(t, err)
	require.Equal(t, "launch: configure(awx), enroll(awx_callback), join(nomad), register(exec); terminate: forget(awx)", spec.String())
	require.False(t, spec.Empty())
	require.Equal(t, &Hook{
		Name: "configure", Type: TypeAWX, Timeout: 45 * time.Minute, OnFailure: FailKeep,
		JobTemplate: "configure nodes", Limit: "{{ private_dns_name }}",
		ExtraVars: map[string]string{"role": "web", "rack": "{{node.meta.rack}}"},
	}, spec.Launch[0])
	require.Equal(t, &Hook{
		Name: "enroll", Type: TypeAWXCallback, Timeout: 30 * time.Minute, OnFailure: FailTerminate,
		JobTemplate: "8", Limit: "{{private_ip}}",
	}, spec.Launch[1])
	require.Equal(t, &Hook{
		Name: "join", Type: TypeNomad, Timeout: 10 * time.Minute, OnFailure: FailTerminate,
		Meta: map[string]string{"spotfleet_admission": "admitted", "configured_by": "{{hook.configure.job_id}}"},
	}, spec.Launch[2])
	require.Equal(t, &Hook{
		Name: "register", Type: TypeExec, Timeout: 10 * time.Minute, OnFailure: FailTerminate,
		Command: []string{"/usr/local/bin/register", "--ip", "{{private_ip}}", "two words", "back slash"},
		Env:     map[string]string{"REGISTRY": "https://registry.example.com/v1?x=1", "NODE": "{{node_name}}"},
	}, spec.Launch[3])
	require.Equal(t, &Hook{
		Name: "forget", Type: TypeAWX, Timeout: 30 * time.Minute, OnFailure: "",
		JobTemplate: "9", Limit: "{{private_ip}}", ExtraVars: map[string]string{"reason": "scale-in"},
	}, spec.Terminate[0])
}

func TestParsePolicyWithoutHooksIsEmpty(t *testing.T) {
	spec, err := ParsePolicy(map[string]string{"aws_region": "us-east-1", "launch_hooks": " "}, nil)
	require.NoError(t, err)
	require.True(t, spec.Empty())
	require.Equal(t, "no hooks", spec.String())

	spec, err = ParsePolicy(map[string]string{"terminate_hooks": "bye", "hook_bye_type": "exec", "hook_bye_command": "/bin/true"}, nil)
	require.NoError(t, err)
	require.Equal(t, "launch: none; terminate: bye(exec)", spec.String())
}

func TestIsPolicyKey(t *testing.T) {
	for key, want := range map[string]bool{
		"launch_hooks": true, "terminate_hooks": true, "hook_join_type": true, "hook_": true,
		"aws_region": false, "hooks": false, "launch_hook": false, "node_class": false,
	} {
		require.Equal(t, want, IsPolicyKey(key), key)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	long := strings.Repeat("a", 32)
	cases := []struct {
		name    string
		cfg     map[string]string
		agent   bool
		wantErr string
	}{
		{
			name:    "setting of another type",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_command": "/bin/true"},
			wantErr: "hook_join_command is not a setting of a nomad hook: want hook_join_<setting> with <setting> one of type, timeout, on_failure, meta",
		},
		{
			name:    "unknown setting",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_colour": "blue"},
			wantErr: "hook_join_colour is not a setting of a nomad hook",
		},
		{
			name:    "unknown setting of a hook whose type is wrong",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "ansible", "hook_join_colour": "blue"},
			wantErr: `hook_join_type is "ansible", want one of awx, awx_callback, nomad, exec; hook_join_colour is not a hook setting: want hook_join_<setting> with <setting> one of type, timeout, on_failure, job_template, limit, extra_vars, meta, command, env`,
		},
		{
			name:    "key of a hook no list names",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_x_type": "exec"},
			wantErr: "hook_x_type names hook x, which neither launch_hooks nor terminate_hooks lists",
		},
		{
			name:    "key without a setting",
			cfg:     map[string]string{"hook_join": "nomad"},
			wantErr: "hook_join is not a hook setting: want hook_<name>_<setting>, such as hook_configure_type",
		},
		{
			name:    "listed hook without a type",
			cfg:     map[string]string{"launch_hooks": "join"},
			wantErr: "hook join is listed in launch_hooks but hook_join_type is not set: want one of awx, awx_callback, nomad, exec",
		},
		{
			name:    "name with an underscore",
			cfg:     map[string]string{"launch_hooks": "con_figure"},
			wantErr: `launch_hooks is "con_figure", which lists "con_figure": want a lowercase letter followed by up to 31 lowercase letters or digits (no '_' or '-')`,
		},
		{
			name:    "name too long",
			cfg:     map[string]string{"terminate_hooks": long + "b"},
			wantErr: "which lists \"" + long + "b\": want a lowercase letter",
		},
		{
			name:    "capital letters",
			cfg:     map[string]string{"launch_hooks": "Join"},
			wantErr: `which lists "Join": want a lowercase letter`,
		},
		{
			name:    "name twice in one list",
			cfg:     map[string]string{"launch_hooks": "join, join", "hook_join_type": "nomad"},
			wantErr: `launch_hooks is "join, join", which lists join twice: want each hook once`,
		},
		{
			name: "name in both lists",
			cfg: map[string]string{"launch_hooks": "join", "terminate_hooks": "join", "hook_join_type": "exec",
				"hook_join_command": "/bin/true"},
			wantErr: "launch_hooks and terminate_hooks both list hook join: a hook runs either at launch or at termination",
		},
		{
			name:    "empty entry",
			cfg:     map[string]string{"launch_hooks": "join,,x", "hook_join_type": "nomad", "hook_x_type": "nomad"},
			wantErr: `launch_hooks is "join,,x", whose entry 2 is empty: want hook names separated by commas`,
		},
		{
			name:    "more than six hooks",
			cfg:     sevenHooks(),
			wantErr: `launch_hooks is "a1, a2, a3, a4, a5, a6, a7", which lists 7 hooks: want at most 6`,
		},
		{
			name:    "bad timeout",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_timeout": "soon"},
			wantErr: `hook_join_timeout is "soon", which is not a duration: want a Go duration from 1s to 24h, such as 20m`,
		},
		{
			name:    "zero timeout",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_timeout": "0s"},
			wantErr: `hook_join_timeout is "0s", want a duration more than 0 and at most 24h`,
		},
		{
			name:    "timeout over a day",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_timeout": "25h"},
			wantErr: `hook_join_timeout is "25h", want a duration more than 0 and at most 24h`,
		},
		{
			name:    "bad failure policy",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_on_failure": "retry"},
			wantErr: `hook_join_on_failure is "retry", want terminate (drain, terminate and replace the instance; the default) or keep`,
		},
		{
			name: "failure policy of a terminate hook",
			cfg: map[string]string{"terminate_hooks": "bye", "hook_bye_type": "exec", "hook_bye_command": "/bin/true",
				"hook_bye_on_failure": "keep"},
			wantErr: "hook_bye_on_failure is set, but bye is a terminate hook: a terminate hook's failure is reported, it never stops the removal of the instance; remove the setting",
		},
		{
			name:    "awx hook without an agent",
			cfg:     map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "7"},
			wantErr: "hook configure is of type awx, but AWX is not configured in the agent: set awx_url and one of awx_token_file, awx_token_env (or awx_token) in the agent's target plugin config",
		},
		{
			name:    "awx_callback hook without an agent",
			cfg:     map[string]string{"launch_hooks": "enroll", "hook_enroll_type": "awx_callback", "hook_enroll_job_template": "7"},
			wantErr: "hook enroll is of type awx_callback, but AWX is not configured in the agent",
		},
		{
			name:    "awx hook without a template",
			cfg:     map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx"},
			agent:   true,
			wantErr: "hook configure is of type awx but hook_configure_job_template is not set: want the numeric id or the name of an AWX job template",
		},
		{
			name:    "template id zero",
			cfg:     map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "0"},
			agent:   true,
			wantErr: `hook_configure_job_template is "0", want the numeric id (1 or more) or the name of an AWX job template`,
		},
		{
			name: "empty limit",
			cfg: map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "7",
				"hook_configure_limit": " "},
			agent:   true,
			wantErr: "hook_configure_limit is empty: want the AWX host the job is limited to, as a template such as {{private_ip}} (an empty limit would run the job against the whole inventory)",
		},
		{
			name: "unknown expression",
			cfg: map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "7",
				"hook_configure_limit": "{{ ip }}"},
			agent:   true,
			wantErr: `hook_configure_limit is "{{ ip }}": {{ip}} is not a known expression: want one of instance_id, instance_type, availability_zone, private_ip, private_dns_name, fleet_id, node_id, node_name, node.meta.<key> or hook.<name>.job_id`,
		},
		{
			name:    "unclosed expression",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_meta": "a={{node_id"},
			wantErr: `hook_join_meta is "{{node_id": "{{node_id" opens {{ without closing it with }}`,
		},
		{
			name: "extra var redefining a fixed one",
			cfg: map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "7",
				"hook_configure_extra_vars": "role=web, private_ip=1.2.3.4"},
			agent:   true,
			wantErr: `hook_configure_extra_vars is "role=web, private_ip=1.2.3.4", whose key private_ip would redefine one of the fixed extra_vars every launch carries (instance_id, instance_type, availability_zone, spot_fleet_request_id, nomad_node_id, nomad_node_name, private_ip, private_dns_name)`,
		},
		{
			name: "extra var with a bad name",
			cfg: map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "7",
				"hook_configure_extra_vars": "9lives=1"},
			agent:   true,
			wantErr: `whose key "9lives" is not a variable name (letters, digits and '_', not starting with a digit)`,
		},
		{
			name: "extra var that is not a pair",
			cfg: map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "7",
				"hook_configure_extra_vars": "role"},
			agent:   true,
			wantErr: `hook_configure_extra_vars is "role", whose entry "role" is not key=value with a non-empty key and value`,
		},
		{
			name:    "meta key twice",
			cfg:     map[string]string{"launch_hooks": "join", "hook_join_type": "nomad", "hook_join_meta": "a=1,a=2"},
			wantErr: `hook_join_meta is "a=1,a=2", which sets a twice: want each key once`,
		},
		{
			name:    "exec without a command",
			cfg:     map[string]string{"launch_hooks": "run", "hook_run_type": "exec"},
			wantErr: "hook run is of type exec but hook_run_command is not set: want a command line",
		},
		{
			name:    "exec command with an unclosed quote",
			cfg:     map[string]string{"launch_hooks": "run", "hook_run_type": "exec", "hook_run_command": `/bin/echo 'hi`},
			wantErr: `hook_run_command is "/bin/echo 'hi", which has a single quote at character 11 that is never closed`,
		},
		{
			name:    "exec command with a pipe",
			cfg:     map[string]string{"launch_hooks": "run", "hook_run_type": "exec", "hook_run_command": `/bin/echo hi | tee x`},
			wantErr: `which has an unquoted '|' at character 14: no shell runs the command`,
		},
		{
			name: "exec env redefining a fixed variable",
			cfg: map[string]string{"launch_hooks": "run", "hook_run_type": "exec", "hook_run_command": "/bin/true",
				"hook_run_env": "SPOTFLEET_NODE_ID=x"},
			wantErr: "whose key SPOTFLEET_NODE_ID would redefine one of the SPOTFLEET_* variables every command gets",
		},
		{
			name: "job id of a later hook",
			cfg: map[string]string{
				"launch_hooks":     "report, configure",
				"hook_report_type": "exec", "hook_report_command": "/bin/echo {{hook.configure.job_id}}",
				"hook_configure_type": "awx", "hook_configure_job_template": "7",
			},
			agent:   true,
			wantErr: "hook_report_command uses {{hook.configure.job_id}}, but configure does not run before report (launch_hooks runs in order): want an earlier launch hook of type awx or awx_callback",
		},
		{
			name: "job id of a hook that has no job",
			cfg: map[string]string{
				"launch_hooks":   "join, run",
				"hook_join_type": "nomad",
				"hook_run_type":  "exec", "hook_run_command": "/bin/echo", "hook_run_env": "JOB={{hook.join.job_id}}",
			},
			wantErr: "hook_run_env uses {{hook.join.job_id}}, but join is a nomad hook, which has no AWX job",
		},
		{
			name:    "job id of an unknown hook",
			cfg:     map[string]string{"launch_hooks": "run", "hook_run_type": "exec", "hook_run_command": "/bin/echo {{ hook.nope.job_id }}"},
			wantErr: "hook_run_command uses {{hook.nope.job_id}}, but no hook is named nope",
		},
		{
			name:    "record that would not fit in a tag",
			cfg:     longNames(),
			wantErr: "whose progress record could reach 377 characters, more than the 256 an EC2 tag value holds: use shorter hook names (at most 71 characters for these 6 names together)",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var agent *Agent
			if tc.agent {
				agent = awxAgent(t)
			}
			spec, err := ParsePolicy(tc.cfg, agent)
			require.Nil(t, spec)
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func sevenHooks() map[string]string {
	cfg := map[string]string{"launch_hooks": "a1, a2, a3, a4, a5, a6, a7"}
	for _, n := range []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7"} {
		cfg["hook_"+n+"_type"] = "nomad"
	}
	return cfg
}

func longNames() map[string]string {
	var names []string
	cfg := map[string]string{}
	for _, c := range "abcdef" {
		n := strings.Repeat(string(c), 32)
		names = append(names, n)
		cfg["hook_"+n+"_type"] = "nomad"
	}
	cfg["launch_hooks"] = strings.Join(names, ",")
	return cfg
}

func TestParsePolicyRefusesSecretsWithoutRepeatingThem(t *testing.T) {
	cfg := map[string]string{
		"launch_hooks":           "configure",
		"hook_configure_type":    "exec",
		"hook_configure_command": "/bin/true",
		"hook_configure_token":   "s3cr3t-token-value",
		"hook_db_password":       "s3cr3t-password-value",
		"hook_api_key":           "s3cr3t-key-value",
		"hook_x_Secret":          "s3cr3t-secret-value",
	}

	_, err := ParsePolicy(cfg, nil)

	require.Error(t, err)
	for _, key := range []string{"hook_configure_token", "hook_db_password", "hook_api_key", "hook_x_Secret"} {
		require.ErrorContains(t, err, key+": secrets are never read from a policy (a policy is stored in Nomad and readable by whoever reads jobs): set awx_token_file or awx_token_env in the agent's target plugin config")
	}
	require.NotContains(t, err.Error(), "s3cr3t")
	require.NotContains(t, err.Error(), "names hook db", "a refused key is not reported again")
}

func TestParsePolicyReportsEveryProblemAtOnce(t *testing.T) {
	cfg := map[string]string{
		"launch_hooks":           "configure, join",
		"hook_configure_type":    "awx",
		"hook_configure_timeout": "forever",
		"hook_join_type":         "nomad",
		"hook_join_limit":        "x",
		"hook_other_type":        "exec",
	}

	_, err := ParsePolicy(cfg, nil)

	require.Error(t, err)
	msg := err.Error()
	require.True(t, strings.HasPrefix(msg, "hooks of the policy: "), msg)
	for _, want := range []string{
		"hook_other_type names hook other, which neither launch_hooks nor terminate_hooks lists",
		`hook_configure_timeout is "forever", which is not a duration`,
		"hook configure is of type awx, but AWX is not configured in the agent",
		"hook configure is of type awx but hook_configure_job_template is not set",
		"hook_join_limit is not a setting of a nomad hook",
	} {
		require.Contains(t, msg, want)
	}
	require.Equal(t, 4, strings.Count(msg, "; "), msg)
}

func TestParsePolicyRefusesAWXHooksWhenTheAgentHasNoAWX(t *testing.T) {
	agent, err := ParseAgent(map[string]string{"aws_region": "us-east-1"})
	require.NoError(t, err)
	_, err = ParsePolicy(map[string]string{"launch_hooks": "configure", "hook_configure_type": "awx", "hook_configure_job_template": "7"}, agent)
	require.ErrorContains(t, err, "hook configure is of type awx, but AWX is not configured in the agent: set awx_url")
}
