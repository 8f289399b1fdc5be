package hooks

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTemplatesRenderEveryExpression(t *testing.T) {
	f := facts{inst: testInstance(), rec: Record{Steps: map[string]Step{"configure": {State: StateOK, JobID: 1001}}}}
	cases := map[string]string{
		"{{instance_id}}":                   "i-0abc123",
		"{{ instance_type }}":               "c5.large",
		"{{availability_zone}}":             "us-east-1a",
		"host-{{private_ip}}:22":            "host-10.0.0.5:22",
		"{{private_dns_name}}":              "ip-10-0-0-5.ec2.internal",
		"{{fleet_id}}/{{node_id}}":          "sfr-1234/node-1",
		"{{node_name}}":                     "client-1",
		"rack {{  node.meta.rack  }}":       "rack r1",
		"job {{hook.configure.job_id}}":     "job 1001",
		"no expression, {single} braces }}": "no expression, {single} braces }}",
	}
	for in, want := range cases {
		got, err := renderValue("hook_x_limit", in, f)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
}

func TestTemplateErrors(t *testing.T) {
	parseCases := map[string]string{
		"{{ip}}":                    "{{ip}} is not a known expression: want one of instance_id",
		"{{private_ip":              `"{{private_ip" opens {{ without closing it with }}`,
		"{{node.meta.}}":            `{{node.meta.}} names node meta key "", want letters, digits, '_', '.' or '-'`,
		"{{hook.Configure.job_id}}": `{{hook.Configure.job_id}} names hook "Configure", which is not a hook name`,
		"{{hook.configure.id}}":     "{{hook.configure.id}} is not a known expression",
	}
	for in, want := range parseCases {
		_, err := parseTemplate(in)
		require.ErrorContains(t, err, want, in)
	}

	inst := testInstance()
	inst.PrivateIP, inst.NodeID = "", ""
	f := facts{inst: inst, rec: Record{Steps: map[string]Step{
		"configure": {State: StateFailed, JobID: 1001},
		"mark":      {State: StateOK},
	}}}
	renderCases := map[string]string{
		"{{private_ip}}":            "hook_x_limit: {{private_ip}} is empty: the instance has no private IP address",
		"{{node_id}}":               "{{node_id}} is empty: the instance has no Nomad node",
		"{{node.meta.zone}}":        "{{node.meta.zone}} is empty: the node has no meta key zone",
		"{{hook.configure.job_id}}": "{{hook.configure.job_id}} is empty: hook configure is failed, not ok",
		"{{hook.mark.job_id}}":      "{{hook.mark.job_id}} is empty: hook mark recorded no AWX job",
		"{{hook.later.job_id}}":     "{{hook.later.job_id}} is empty: hook later has not run",
	}
	for in, want := range renderCases {
		_, err := renderValue("hook_x_limit", in, f)
		require.ErrorContains(t, err, want, in)
	}
}
