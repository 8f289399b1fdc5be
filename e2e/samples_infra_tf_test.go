//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/fleet"
)

// No Terraform binary is available here, so these tests read the Terraform
// configuration of agent-config/infra/ with HashiCorp's HCL parser (the one
// Terraform uses), evaluate the parts they compare with a small evaluation
// context (variable defaults, locals, a few of Terraform's functions, and
// stand-in values for what only AWS knows), and hold it against the JSON
// samples, the plugin's code and the provider's schema.

// tfConfig is the parsed Terraform configuration of one directory.
type tfConfig struct {
	dir    string
	blocks []*hclsyntax.Block // top-level blocks of every .tf file
	vars   map[string]*hclsyntax.Block
	locals map[string]hclsyntax.Expression
	// known stands in for what AWS would tell Terraform (data sources and
	// resource attributes), keyed by the root name of the reference.
	known map[string]cty.Value
	// setVars gives values to variables, over their defaults.
	setVars map[string]cty.Value
}

// loadTF parses every .tf file of agent-config/<rel> and fails the test on
// any HCL diagnostic.
func loadTF(t *testing.T, rel string) *tfConfig {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "agent-config", rel)
	files, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .tf file in %s (%v)", dir, err)
	}
	c := &tfConfig{dir: dir, vars: map[string]*hclsyntax.Block{}, locals: map[string]hclsyntax.Expression{},
		known: map[string]cty.Value{}, setVars: map[string]cty.Value{}}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, diags := hclsyntax.ParseConfig(src, filepath.Base(f), hcl.InitialPos)
		if diags.HasErrors() {
			t.Fatalf("%s does not parse: %s", f, diags.Error())
		}
		body := file.Body.(*hclsyntax.Body)
		if len(body.Attributes) > 0 {
			for name := range body.Attributes {
				t.Errorf("%s: top-level attribute %q (Terraform accepts blocks only)", filepath.Base(f), name)
			}
		}
		for _, b := range body.Blocks {
			c.blocks = append(c.blocks, b)
			switch b.Type {
			case "variable":
				if _, dup := c.vars[b.Labels[0]]; dup {
					t.Errorf("variable %q declared twice", b.Labels[0])
				}
				c.vars[b.Labels[0]] = b
			case "locals":
				for name, a := range b.Body.Attributes {
					if _, dup := c.locals[name]; dup {
						t.Errorf("local %q declared twice", name)
					}
					c.locals[name] = a.Expr
				}
			}
		}
	}
	return c
}

// block returns the top-level block of the given type and labels.
func (c *tfConfig) block(t *testing.T, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	for _, b := range c.blocks {
		if b.Type == typ && slices.Equal(b.Labels, labels) {
			return b
		}
	}
	t.Fatalf("the Terraform configuration has no %s %q", typ, labels)
	return nil
}

// functions returns the Terraform functions the configuration uses.
func (c *tfConfig) functions() map[string]function.Function {
	return map[string]function.Function{
		"setproduct": stdlib.SetProductFunc,
		"jsonencode": stdlib.JSONEncodeFunc,
		"distinct":   stdlib.DistinctFunc,
		"split":      stdlib.SplitFunc,
		"contains":   stdlib.ContainsFunc,
		"length":     stdlib.LengthFunc,
		"base64encode": function.New(&function.Spec{
			Params: []function.Parameter{{Name: "str", Type: cty.String}},
			Type:   function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return cty.StringVal(base64.StdEncoding.EncodeToString([]byte(args[0].AsString()))), nil
			},
		}),
		"templatefile": function.New(&function.Spec{
			Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "vars", Type: cty.DynamicPseudoType}},
			Type:   function.StaticReturnType(cty.String),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				return renderTFTemplate(args[0].AsString(), args[1].AsValueMap())
			},
		}),
	}
}

// renderTFTemplate renders a Terraform template file with the given variables
// (templatefile's semantics: only those variables, no functions).
func renderTFTemplate(file string, vars map[string]cty.Value) (cty.Value, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return cty.NilVal, err
	}
	expr, diags := hclsyntax.ParseTemplate(src, filepath.Base(file), hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	v, diags := expr.Value(&hcl.EvalContext{Variables: vars})
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	return v, nil
}

// varValue is a variable's value: set by the test, else its default, else
// unknown.
func (c *tfConfig) varValue(t *testing.T, name string) cty.Value {
	t.Helper()
	if v, ok := c.setVars[name]; ok {
		return v
	}
	b := c.vars[name]
	if b == nil {
		t.Fatalf("variable %q is not declared", name)
	}
	a, ok := b.Body.Attributes["default"]
	if !ok {
		return cty.DynamicVal
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("default of variable %q: %s", name, diags.Error())
	}
	return v
}

// ctx builds the evaluation context: var, local (evaluated in dependency
// order), path, the stand-ins in known, and extra (each, iterators).
func (c *tfConfig) ctx(t *testing.T, extra map[string]cty.Value) *hcl.EvalContext {
	t.Helper()
	vars := map[string]cty.Value{}
	for name := range c.vars {
		vars[name] = c.varValue(t, name)
	}
	ec := &hcl.EvalContext{Functions: c.functions(), Variables: map[string]cty.Value{
		"var":  cty.ObjectVal(vars),
		"path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(c.dir)}),
	}}
	for k, v := range c.known {
		ec.Variables[k] = v
	}
	for k, v := range extra {
		ec.Variables[k] = v
	}
	// Every other root a local refers to (a resource) is unknown.
	for _, e := range c.locals {
		for _, tr := range hclsyntax.Variables(e) {
			if _, ok := ec.Variables[tr.RootName()]; !ok && tr.RootName() != "local" {
				ec.Variables[tr.RootName()] = cty.DynamicVal
			}
		}
	}
	locals := map[string]cty.Value{}
	for range len(c.locals) + 1 {
		ec.Variables["local"] = cty.ObjectVal(locals)
		progress := false
		for name, e := range c.locals {
			if _, done := locals[name]; done {
				continue
			}
			ready := true
			for _, tr := range hclsyntax.Variables(e) {
				if tr.RootName() == "local" {
					dep := tr[1].(hcl.TraverseAttr).Name
					if _, ok := locals[dep]; !ok {
						ready = false
					}
				}
			}
			if !ready {
				continue
			}
			v, diags := e.Value(ec)
			if diags.HasErrors() {
				t.Fatalf("local %q: %s", name, diags.Error())
			}
			locals[name], progress = v, true
		}
		if !progress {
			break
		}
	}
	if len(locals) != len(c.locals) {
		t.Fatalf("locals refer to each other in a cycle or to undeclared locals: evaluated %d of %d", len(locals), len(c.locals))
	}
	ec.Variables["local"] = cty.ObjectVal(locals)
	return ec
}

// eval evaluates an expression; roots neither known nor given are unknown.
func (c *tfConfig) eval(t *testing.T, e hclsyntax.Expression, extra map[string]cty.Value) cty.Value {
	t.Helper()
	ec := c.ctx(t, extra)
	for _, tr := range hclsyntax.Variables(e) {
		if _, ok := ec.Variables[tr.RootName()]; !ok {
			ec.Variables[tr.RootName()] = cty.DynamicVal
		}
	}
	v, diags := e.Value(ec)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", e.Range(), diags.Error())
	}
	return v
}

// attr evaluates a block's attribute; it fails when the attribute is missing.
func (c *tfConfig) attr(t *testing.T, b *hclsyntax.Block, name string, extra map[string]cty.Value) cty.Value {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s %q has no attribute %s", b.Type, b.Labels, name)
	}
	return c.eval(t, a.Expr, extra)
}

// tfGoValue turns a known cty value into plain Go values (as encoding/json
// would decode them), for comparison with the JSON samples.
func tfGoValue(t *testing.T, v cty.Value) any {
	t.Helper()
	if !v.IsWhollyKnown() {
		t.Fatalf("value %#v is not known here", v)
	}
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func tfGoString(t *testing.T, v cty.Value) string {
	t.Helper()
	s, ok := tfGoValue(t, v).(string)
	if !ok {
		t.Fatalf("%#v is not a string", v)
	}
	return s
}

func tfGoStrings(t *testing.T, v cty.Value) []string {
	t.Helper()
	var out []string
	for _, e := range tfGoValue(t, v).([]any) {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// hclNested returns the nested blocks of a type.
func hclNested(b *hclsyntax.Block, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, n := range b.Body.Blocks {
		if n.Type == typ {
			out = append(out, n)
		}
	}
	return out
}

// spotFleetSchema is aws_spot_fleet_request's argument set in the
// hashicorp/aws provider v5 (internal/service/ec2/ec2_spot_fleet_request.go),
// with the blocks this configuration uses, and the values the provider
// accepts where they differ from the EC2 API's spelling.
var spotFleetSchema = map[string][]string{
	"": {"allocation_strategy", "context", "excess_capacity_termination_policy", "fleet_type", "iam_fleet_role",
		"instance_interruption_behaviour", "instance_pools_to_use_count", "launch_specification", "launch_template_config",
		"load_balancers", "on_demand_allocation_strategy", "on_demand_max_total_price", "on_demand_target_capacity",
		"replace_unhealthy_instances", "spot_maintenance_strategies", "spot_price", "tags", "target_capacity",
		"target_capacity_unit_type", "target_group_arns", "terminate_instances_on_delete",
		"terminate_instances_with_expiration", "valid_from", "valid_until", "wait_for_fulfillment",
		// meta-arguments
		"count", "for_each", "depends_on", "provider", "lifecycle", "timeouts"},
	"launch_template_config":        {"launch_template_specification", "overrides"},
	"launch_template_specification": {"id", "name", "version"},
	"overrides":                     {"availability_zone", "instance_requirements", "instance_type", "priority", "spot_price", "subnet_id", "weighted_capacity"},
}

// checkTFSchema reports every argument or block of b (and of its nested and
// dynamic blocks) that the schema does not have.
func checkTFSchema(t *testing.T, b *hclsyntax.Block, schema map[string][]string, level string) {
	t.Helper()
	allowed := schema[level]
	for name, a := range b.Body.Attributes {
		if !slices.Contains(allowed, name) {
			t.Errorf("%s: aws_spot_fleet_request has no argument %q (in %s)", a.SrcRange, name, level)
		}
	}
	for _, n := range b.Body.Blocks {
		name := n.Type
		if name == "dynamic" {
			name = n.Labels[0]
			if !slices.Contains(allowed, name) {
				t.Errorf("%s: aws_spot_fleet_request has no block %q (in %s)", n.DefRange(), name, level)
				continue
			}
			for _, content := range hclNested(n, "content") {
				checkTFSchema(t, content, schema, name)
			}
			continue
		}
		if !slices.Contains(allowed, name) {
			t.Errorf("%s: aws_spot_fleet_request has no block %q (in %s)", n.DefRange(), name, level)
			continue
		}
		if _, ok := schema[name]; ok {
			checkTFSchema(t, n, schema, name)
		}
	}
}

// checkReferences reports every reference to a variable, local, data source
// or resource that the configuration does not declare.
func (c *tfConfig) checkReferences(t *testing.T) {
	t.Helper()
	declared := map[string]bool{}
	for _, b := range c.blocks {
		switch b.Type {
		case "resource":
			declared[b.Labels[0]+"."+b.Labels[1]] = true
		case "data":
			declared["data."+b.Labels[0]+"."+b.Labels[1]] = true
		}
	}
	var walk func(body *hclsyntax.Body, iterators []string, inVariable bool)
	walk = func(body *hclsyntax.Body, iterators []string, inVariable bool) {
		for name, a := range body.Attributes {
			if inVariable && name == "type" { // a type constraint, not references
				continue
			}
			for _, tr := range hclsyntax.Variables(a.Expr) {
				root := tr.RootName()
				attrAt := func(i int) string {
					if len(tr) > i {
						if ta, ok := tr[i].(hcl.TraverseAttr); ok {
							return ta.Name
						}
					}
					return ""
				}
				var ok bool
				switch root {
				case "var":
					_, ok = c.vars[attrAt(1)]
				case "local":
					_, ok = c.locals[attrAt(1)]
				case "data":
					ok = declared["data."+attrAt(1)+"."+attrAt(2)]
				case "path", "each", "count", "self", "terraform":
					ok = true
				default:
					ok = slices.Contains(iterators, root) || declared[root+"."+attrAt(1)]
				}
				if !ok {
					t.Errorf("%s: reference to undeclared %s", tr.SourceRange(), strings.TrimSuffix(root+"."+attrAt(1)+"."+attrAt(2), "."))
				}
			}
		}
		for _, b := range body.Blocks {
			if b.Type == "lifecycle" { // names the resource's own arguments
				continue
			}
			its := iterators
			if b.Type == "dynamic" {
				its = append(slices.Clone(iterators), b.Labels[0])
			}
			walk(b.Body, its, false)
		}
	}
	for _, b := range c.blocks {
		walk(b.Body, nil, b.Type == "variable")
	}
}

// infraSamples holds the JSON samples the Terraform configuration mirrors.
type infraSamples struct {
	fleet struct {
		IamFleetRole                    string
		Type                            string
		TargetCapacity                  int
		AllocationStrategy              string
		ExcessCapacityTerminationPolicy string
		InstanceInterruptionBehavior    string
		LaunchTemplateConfigs           []struct {
			LaunchTemplateSpecification struct{ LaunchTemplateName, Version string }
			Overrides                   []struct {
				InstanceType     string
				SubnetId         string
				WeightedCapacity float64
			}
		}
		TagSpecifications []struct {
			ResourceType string
			Tags         []struct{ Key, Value string }
		}
	}
	rules struct{ Rules []infraRule }
	queue struct {
		QueueName  string
		Attributes map[string]string
		Tags       map[string]string `json:"tags"`
	}
	queuePolicy, agentPolicy infraPolicy
	region, account          string
}

func readInfraSamples(t *testing.T) *infraSamples {
	t.Helper()
	s := &infraSamples{}
	decodeStrict(t, "infra/spot-fleet-request.json", &s.fleet)
	decodeStrict(t, "infra/eventbridge-rules.json", &s.rules)
	decodeStrict(t, "infra/sqs-queue.json", &s.queue)
	decodeStrict(t, "infra/sqs-queue-policy.json", &s.queuePolicy)
	decodeStrict(t, "infra/iam-policy.json", &s.agentPolicy)
	m := regexp.MustCompile(`^arn:aws:sqs:([a-z0-9-]+):([0-9]{12}):`).FindStringSubmatch(s.rules.Rules[0].Targets[0].Arn)
	if m == nil {
		t.Fatalf("eventbridge-rules.json: target %q is not an SQS ARN", s.rules.Rules[0].Targets[0].Arn)
	}
	s.region, s.account = m[1], m[2]
	return s
}

// sampleFleetID is the fleet id the samples use (policies/spot-pool.hcl).
const sampleFleetID = "sfr-0123456789abcdef0"

// loadInfraTF loads agent-config/infra/*.tf with the samples' account,
// region and subnets standing in for what AWS and the operator would give.
func loadInfraTF(t *testing.T, s *infraSamples) *tfConfig {
	t.Helper()
	c := loadTF(t, "infra")
	queueARN := "arn:aws:sqs:" + s.region + ":" + s.account + ":" + s.queue.QueueName
	c.known["data"] = cty.ObjectVal(map[string]cty.Value{
		"aws_partition":       cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"partition": cty.StringVal("aws")})}),
		"aws_caller_identity": cty.ObjectVal(map[string]cty.Value{"current": cty.ObjectVal(map[string]cty.Value{"account_id": cty.StringVal(s.account)})}),
	})
	c.known["aws_sqs_queue"] = cty.ObjectVal(map[string]cty.Value{"interruptions": cty.ObjectVal(map[string]cty.Value{
		"arn": cty.StringVal(queueARN),
		"url": cty.StringVal("https://sqs." + s.region + ".amazonaws.com/" + s.account + "/" + s.queue.QueueName),
		"id":  cty.StringVal("https://sqs." + s.region + ".amazonaws.com/" + s.account + "/" + s.queue.QueueName),
	})})
	c.known["aws_spot_fleet_request"] = cty.ObjectVal(map[string]cty.Value{"pool": cty.ObjectVal(map[string]cty.Value{
		"id": cty.StringVal(sampleFleetID),
	})})
	var subnets []cty.Value
	seen := map[string]bool{}
	for _, ltc := range s.fleet.LaunchTemplateConfigs {
		for _, o := range ltc.Overrides {
			if !seen[o.SubnetId] {
				seen[o.SubnetId] = true
				subnets = append(subnets, cty.StringVal(o.SubnetId))
			}
		}
	}
	c.setVars["region"] = cty.StringVal(s.region)
	c.setVars["subnet_ids"] = cty.ListVal(subnets)
	c.setVars["ami_id"] = cty.StringVal("ami-0123456789abcdef0")
	c.setVars["security_group_ids"] = cty.ListVal([]cty.Value{cty.StringVal("sg-0123456789abcdef0")})
	return c
}

// TestInfraTerraformParses parses every Terraform file and the Nomad ACL
// policy with HCL, checks that every reference is declared and that the
// Spot Fleet request uses only the provider's arguments.
func TestInfraTerraformParses(t *testing.T) {
	c := loadTF(t, "infra")
	c.checkReferences(t)
	for _, b := range c.blocks {
		if !slices.Contains([]string{"terraform", "provider", "variable", "locals", "resource", "data", "output"}, b.Type) {
			t.Errorf("%s: unexpected top-level block %q", b.DefRange(), b.Type)
		}
	}
	checkTFSchema(t, c.block(t, "resource", "aws_spot_fleet_request", "pool"), spotFleetSchema, "")

	// The provider is hashicorp/aws v5.
	tfBlock := c.block(t, "terraform")
	var aws cty.Value
	for _, rp := range hclNested(tfBlock, "required_providers") {
		aws = c.attr(t, rp, "aws", nil)
	}
	if aws == cty.NilVal || tfGoString(t, aws.GetAttr("source")) != "hashicorp/aws" || tfGoString(t, aws.GetAttr("version")) != "~> 5.0" {
		t.Errorf("versions.tf: want required_providers aws = { source = \"hashicorp/aws\", version = \"~> 5.0\" }, got %#v", aws)
	}

	// Every variable has a description and a type.
	for name, b := range c.vars {
		for _, a := range []string{"description", "type"} {
			if _, ok := b.Body.Attributes[a]; !ok {
				t.Errorf("variable %q has no %s", name, a)
			}
		}
	}

	// The outputs the agent configuration needs.
	for name, ref := range map[string]string{
		"spot_fleet_request_id":  "aws_spot_fleet_request.pool.id",
		"interruption_queue_url": "aws_sqs_queue.interruptions.url",
	} {
		b := c.block(t, "output", name)
		a, ok := b.Body.Attributes["value"]
		if !ok {
			t.Errorf("output %q has no value", name)
			continue
		}
		src := strings.TrimSpace(string(a.Expr.Range().SliceBytes(infraRead(t, filepath.Join(c.dir, a.Expr.Range().Filename)))))
		if src != ref {
			t.Errorf("output %q is %s, want %s", name, src, ref)
		}
	}

	// Formatted as `terraform fmt` would (Terraform formats with hclwrite).
	acl := filepath.Join(c.dir, "nomad-acl-autoscaler.hcl")
	tfFiles, _ := filepath.Glob(filepath.Join(c.dir, "*.tf"))
	for _, f := range append(tfFiles, acl) {
		src := infraRead(t, f)
		if formatted := hclwrite.Format(src); string(formatted) != string(src) {
			t.Errorf("%s is not formatted as terraform fmt would (hclwrite.Format)", filepath.Base(f))
		}
	}

	// The Nomad ACL policy is HCL too (TestNomadACLPolicyAllowsWhatThePluginsCall
	// has Nomad itself parse and enforce it).
	src := readSample(t, "infra/nomad-acl-autoscaler.hcl")
	if _, diags := hclsyntax.ParseConfig([]byte(src), "nomad-acl-autoscaler.hcl", hcl.InitialPos); diags.HasErrors() {
		t.Errorf("nomad-acl-autoscaler.hcl does not parse: %s", diags.Error())
	}
}

func infraRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInfraTerraformFleetMatchesJSON compares the Terraform fleet with
// spot-fleet-request.json and with what the plugin requires of a fleet.
func TestInfraTerraformFleetMatchesJSON(t *testing.T) {
	s := readInfraSamples(t)
	c := loadInfraTF(t, s)
	sfr := c.block(t, "resource", "aws_spot_fleet_request", "pool")
	j := s.fleet

	if got := tfGoString(t, c.attr(t, sfr, "fleet_type", nil)); got != "maintain" || j.Type != "maintain" {
		t.Errorf("fleet type: Terraform %q, JSON %q; want maintain in both", got, j.Type)
	}
	// The provider accepts "Default" and "NoTermination" (its spelling of the
	// API's noTermination).
	if got := tfGoString(t, c.attr(t, sfr, "excess_capacity_termination_policy", nil)); got != "NoTermination" || j.ExcessCapacityTerminationPolicy != "noTermination" {
		t.Errorf("excess capacity termination policy: Terraform %q (want NoTermination), JSON %q (want noTermination)", got, j.ExcessCapacityTerminationPolicy)
	}
	if got := tfGoString(t, c.attr(t, sfr, "terminate_instances_on_delete", nil)); got != "false" {
		t.Errorf("terminate_instances_on_delete is %q; want \"false\": a destroyed or replaced request must not terminate nodes without a drain", got)
	}
	if got := tfGoString(t, c.attr(t, sfr, "allocation_strategy", nil)); got != j.AllocationStrategy ||
		!slices.Contains([]string{"priceCapacityOptimized", "capacityOptimized"}, got) {
		t.Errorf("allocation strategy: Terraform %q, JSON %q; want the same, priceCapacityOptimized or capacityOptimized", got, j.AllocationStrategy)
	}
	if got := tfGoString(t, c.attr(t, sfr, "instance_interruption_behaviour", nil)); got != j.InstanceInterruptionBehavior || got != "terminate" {
		t.Errorf("interruption behaviour: Terraform %q, JSON %q; want terminate", got, j.InstanceInterruptionBehavior)
	}
	if got := c.attr(t, sfr, "target_capacity", nil); !got.Equals(cty.NumberIntVal(int64(j.TargetCapacity))).True() {
		t.Errorf("target capacity: Terraform %#v, JSON %d", got, j.TargetCapacity)
	}
	if len(hclNested(sfr, "spot_maintenance_strategies")) > 0 {
		t.Error("aws_spot_fleet_request sets spot_maintenance_strategies: Capacity Rebalancing must stay off (docs/interruptions.md)")
	}
	// The plugin owns the target capacity.
	var ignored []string
	for _, lc := range hclNested(sfr, "lifecycle") {
		if a, ok := lc.Body.Attributes["ignore_changes"]; ok {
			for _, tr := range hclsyntax.Variables(a.Expr) {
				ignored = append(ignored, tr.RootName())
			}
		}
	}
	if !slices.Contains(ignored, "target_capacity") {
		t.Errorf("aws_spot_fleet_request: lifecycle ignore_changes is %v; want target_capacity, which target-spotfleet owns", ignored)
	}

	// The fleet's role.
	role := c.block(t, "resource", "aws_iam_role", "spot_fleet")
	if want := "arn:aws:iam::" + s.account + ":role/" + tfGoString(t, c.attr(t, role, "name", nil)); j.IamFleetRole != want {
		t.Errorf("IamFleetRole of the JSON is %s, the Terraform role is %s", j.IamFleetRole, want)
	}
	assume := tfGoString(t, c.attr(t, c.block(t, "data", "aws_iam_policy_document", "spot_fleet_assume").Body.Blocks[0].Body.Blocks[0], "identifiers", nil).Index(cty.NumberIntVal(0)))
	if assume != "spotfleet.amazonaws.com" {
		t.Errorf("the fleet role trusts %s, want spotfleet.amazonaws.com", assume)
	}
	if got := tfGoString(t, c.attr(t, c.block(t, "resource", "aws_iam_role_policy_attachment", "spot_fleet"), "policy_arn", nil)); got != "arn:aws:iam::aws:policy/service-role/AmazonEC2SpotFleetTaggingRole" {
		t.Errorf("the fleet role's policy is %s, want AWS's AmazonEC2SpotFleetTaggingRole", got)
	}

	// Launch template configs and overrides: every type in every subnet, in
	// Terraform as in the JSON, weight 1.
	ltcs := hclNested(sfr, "launch_template_config")
	if len(ltcs) != 1 || len(j.LaunchTemplateConfigs) != 1 {
		t.Fatalf("want one launch template config in both, got Terraform %d, JSON %d", len(ltcs), len(j.LaunchTemplateConfigs))
	}
	spec := hclNested(ltcs[0], "launch_template_specification")[0]
	if got := tfGoString(t, c.attr(t, spec, "version", nil)); got != "$Latest" || j.LaunchTemplateConfigs[0].LaunchTemplateSpecification.Version != "$Latest" {
		t.Errorf("launch template version: Terraform %q, JSON %q; want $Latest (a new version must not replace the request)", got, j.LaunchTemplateConfigs[0].LaunchTemplateSpecification.Version)
	}
	lt := c.block(t, "resource", "aws_launch_template", "nomad_client")
	if got := tfGoString(t, c.attr(t, lt, "name", nil)); got != j.LaunchTemplateConfigs[0].LaunchTemplateSpecification.LaunchTemplateName {
		t.Errorf("launch template: Terraform %q, JSON %q", got, j.LaunchTemplateConfigs[0].LaunchTemplateSpecification.LaunchTemplateName)
	}
	var dyn *hclsyntax.Block
	for _, d := range hclNested(ltcs[0], "dynamic") {
		if d.Labels[0] == "overrides" {
			dyn = d
		}
	}
	if dyn == nil {
		t.Fatal("launch_template_config has no dynamic \"overrides\" block")
	}
	var tfPairs, jsonPairs, types []string
	items := c.attr(t, dyn, "for_each", nil)
	content := hclNested(dyn, "content")[0]
	for it := items.ElementIterator(); it.Next(); {
		k, v := it.Element()
		iter := map[string]cty.Value{"overrides": cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}
		typ := tfGoString(t, c.attr(t, content, "instance_type", iter))
		tfPairs = append(tfPairs, fmt.Sprintf("%s/%s/%v", typ, tfGoString(t, c.attr(t, content, "subnet_id", iter)), tfGoValue(t, c.attr(t, content, "weighted_capacity", iter))))
		types = append(types, typ)
	}
	for _, o := range j.LaunchTemplateConfigs[0].Overrides {
		jsonPairs = append(jsonPairs, fmt.Sprintf("%s/%s/%v", o.InstanceType, o.SubnetId, o.WeightedCapacity))
	}
	sort.Strings(tfPairs)
	sort.Strings(jsonPairs)
	if !reflect.DeepEqual(tfPairs, jsonPairs) {
		t.Errorf("overrides differ:\nTerraform %v\nJSON      %v", tfPairs, jsonPairs)
	}
	if fams := fleet.Families(types); len(fams) < 2 {
		t.Errorf("the fleet's instance types %v are of %d family; target-spotfleet wants at least two", types, len(fams))
	}
	subnets := map[string]bool{}
	for _, o := range j.LaunchTemplateConfigs[0].Overrides {
		subnets[o.SubnetId] = true
	}
	if len(subnets) < 2 {
		t.Errorf("the JSON fleet uses %d subnet; want several availability zones", len(subnets))
	}

	// The pool tag: on the request (both), on the instances (launch template),
	// and in the IAM conditions.
	poolTag := tfGoValue(t, c.eval(t, c.locals["pool_tags"], nil))
	jsonTags := map[string]any{}
	for _, ts := range j.TagSpecifications {
		if ts.ResourceType != "spot-fleet-request" {
			t.Errorf("JSON tag specification for %q; the request's tags are what IAM checks", ts.ResourceType)
		}
		for _, tag := range ts.Tags {
			jsonTags[tag.Key] = tag.Value
		}
	}
	if got := tfGoValue(t, c.attr(t, sfr, "tags", nil)); !reflect.DeepEqual(got, jsonTags) || !reflect.DeepEqual(got, poolTag) {
		t.Errorf("request tags: Terraform %v, JSON %v, pool tag %v", got, jsonTags, poolTag)
	}
	instanceTagged := false
	for _, ts := range hclNested(lt, "tag_specifications") {
		if tfGoString(t, c.attr(t, ts, "resource_type", nil)) == "instance" && reflect.DeepEqual(tfGoValue(t, c.attr(t, ts, "tags", nil)), poolTag) {
			instanceTagged = true
		}
	}
	if !instanceTagged {
		t.Errorf("the launch template does not tag its instances with %v", poolTag)
	}

	// The launch template's user data: user-data.sh rendered with the
	// variables, a valid bash script that closes the admission gate.
	ud, err := base64.StdEncoding.DecodeString(tfGoString(t, c.attr(t, lt, "user_data", nil)))
	if err != nil {
		t.Fatalf("user_data is not base64: %v", err)
	}
	script := string(ud)
	key := tfGoString(t, c.varValue(t, "admission_meta_key"))
	for _, want := range []string{
		`node_class = "` + tfGoString(t, c.varValue(t, "node_class")) + `"`,
		key + ` = "pending"`,
		`NODE_DIR="` + tfGoString(t, c.varValue(t, "node_dir")) + `"`,
		"systemctl enable --now nomad",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("the rendered user data does not contain %s", want)
		}
	}
	m := regexp.MustCompile(`(?m)^\s*admission_meta_key\s*=\s*"([^"]+)"`).FindStringSubmatch(readSample(t, "agent.hcl"))
	if m == nil || m[1] != key {
		t.Errorf("agent.hcl's admission_meta_key is %v, the user data's %q", m, key)
	}
	bashCheck := exec.Command("bash", "-n")
	bashCheck.Stdin = strings.NewReader(script)
	if out, err := bashCheck.CombinedOutput(); err != nil {
		t.Errorf("the rendered user data is not valid bash: %v\n%s", err, out)
	}
	// The client configuration it writes is one Nomad accepts, with the
	// gate's meta in it.
	heredoc := regexp.MustCompile(`(?s)cat >/etc/nomad.d/spot-client.hcl <<EOF\n(.*?)\nEOF\n`).FindStringSubmatch(script)
	if heredoc == nil {
		t.Fatal("the rendered user data writes no /etc/nomad.d/spot-client.hcl")
	}
	clientHCL := strings.ReplaceAll(heredoc[1], "$NODE_DIR", tfGoString(t, c.varValue(t, "node_dir")))
	dir := t.TempDir()
	files := map[string]string{"spot-client.hcl": clientHCL, "data-dir.hcl": fmt.Sprintf("data_dir = %q\n", filepath.Join(dir, "data"))}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	validate := exec.Command(filepath.Join(root, "bin", "nomad"), "config", "validate", filepath.Join(dir, "spot-client.hcl"), filepath.Join(dir, "data-dir.hcl"))
	if out, err := validate.CombinedOutput(); err != nil {
		t.Errorf("Nomad refuses the client configuration the user data writes: %v\n%s\n%s", err, out, clientHCL)
	}

	// README.md renders it without Terraform by replacing the three
	// placeholders as text; that must give the same script.
	raw := readSample(t, "infra/user-data.sh")
	for _, name := range []string{"node_class", "admission_meta_key", "node_dir"} {
		raw = strings.ReplaceAll(raw, "${"+name+"}", tfGoString(t, c.varValue(t, name)))
	}
	if raw != script {
		t.Error("user-data.sh holds template syntax other than its three placeholders: a text replacement does not give what Terraform renders")
	}
}

// iamStatement is an IAM statement in a comparable form.
type iamStatement struct {
	Sid, Effect string
	Actions     []string
	Resources   []string
	Conditions  []string // "test variable values"
	Principals  []string // "type identifiers"
}

func (p infraStatement) comparable(t *testing.T) iamStatement {
	t.Helper()
	out := iamStatement{Sid: p.Sid, Effect: p.Effect, Actions: strs(t, p.Action), Resources: strs(t, p.Resource)}
	for test, vars := range p.Condition {
		for variable, values := range vars {
			vs := strs(t, values)
			sort.Strings(vs)
			out.Conditions = append(out.Conditions, test+" "+variable+" "+strings.Join(vs, ","))
		}
	}
	for typ, ids := range p.Principal {
		vs := strs(t, ids)
		sort.Strings(vs)
		out.Principals = append(out.Principals, typ+" "+strings.Join(vs, ","))
	}
	sort.Strings(out.Actions)
	sort.Strings(out.Conditions)
	return out
}

// tfStatements evaluates the statements of an aws_iam_policy_document.
func (c *tfConfig) tfStatements(t *testing.T, doc *hclsyntax.Block) []iamStatement {
	t.Helper()
	var out []iamStatement
	for _, st := range hclNested(doc, "statement") {
		p := iamStatement{Sid: tfGoString(t, c.attr(t, st, "sid", nil)), Effect: tfGoString(t, c.attr(t, st, "effect", nil)),
			Actions: tfGoStrings(t, c.attr(t, st, "actions", nil))}
		if _, ok := st.Body.Attributes["resources"]; ok {
			p.Resources = tfGoStrings(t, c.attr(t, st, "resources", nil))
		}
		for _, cond := range hclNested(st, "condition") {
			var values []string
			if v := c.attr(t, cond, "values", nil); v.IsWhollyKnown() {
				values = tfGoStrings(t, v)
			} else {
				values = []string{"(unknown)"}
			}
			sort.Strings(values)
			p.Conditions = append(p.Conditions, tfGoString(t, c.attr(t, cond, "test", nil))+" "+tfGoString(t, c.attr(t, cond, "variable", nil))+" "+strings.Join(values, ","))
		}
		for _, pr := range hclNested(st, "principals") {
			ids := tfGoStrings(t, c.attr(t, pr, "identifiers", nil))
			sort.Strings(ids)
			p.Principals = append(p.Principals, tfGoString(t, c.attr(t, pr, "type", nil))+" "+strings.Join(ids, ","))
		}
		sort.Strings(p.Actions)
		sort.Strings(p.Conditions)
		out = append(out, p)
	}
	return out
}

// iamResourcesCover says whether every resource of got matches a pattern of want
// (IAM's * wildcard) and every pattern of want matches a resource of got:
// Terraform may name the exact fleet where the JSON names it by tag.
func iamResourcesCover(got, want []string) bool {
	match := func(pattern, s string) bool {
		ok, _ := path.Match(strings.ReplaceAll(pattern, "/", "\x00"), strings.ReplaceAll(s, "/", "\x00"))
		return ok
	}
	for _, g := range got {
		if !slices.ContainsFunc(want, func(w string) bool { return match(w, g) }) {
			return false
		}
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return match(w, g) }) {
			return false
		}
	}
	return true
}

// TestInfraTerraformInterruptionsMatchJSON compares the Terraform rules,
// queue and queue policy with their JSON samples.
func TestInfraTerraformInterruptionsMatchJSON(t *testing.T) {
	s := readInfraSamples(t)
	c := loadInfraTF(t, s)

	// Rules: the same names, descriptions and event patterns.
	rule := c.block(t, "resource", "aws_cloudwatch_event_rule", "interruptions")
	rules := c.attr(t, rule, "for_each", nil)
	tfRules := map[string][2]any{}
	for it := rules.ElementIterator(); it.Next(); {
		k, v := it.Element()
		each := map[string]cty.Value{"each": cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}
		var pattern any
		if err := json.Unmarshal([]byte(tfGoString(t, c.attr(t, rule, "event_pattern", each))), &pattern); err != nil {
			t.Fatalf("event_pattern of %s: %v", k.AsString(), err)
		}
		tfRules[tfGoString(t, c.attr(t, rule, "name", each))] = [2]any{tfGoString(t, c.attr(t, rule, "description", each)), pattern}
	}
	jsonRules := map[string][2]any{}
	for _, r := range s.rules.Rules {
		jsonRules[r.Name] = [2]any{r.Description, any(r.EventPattern)}
		if r.Targets[0].Id != tfGoString(t, c.attr(t, c.block(t, "resource", "aws_cloudwatch_event_target", "interruptions"), "target_id", nil)) {
			t.Errorf("rule %s: target id %q differs from Terraform's", r.Name, r.Targets[0].Id)
		}
	}
	if !reflect.DeepEqual(tfRules, jsonRules) {
		t.Errorf("EventBridge rules differ:\nTerraform %v\nJSON      %v", tfRules, jsonRules)
	}
	for _, name := range []string{"is_enabled", "state"} {
		if a, ok := rule.Body.Attributes[name]; ok {
			if v := tfGoValue(t, c.eval(t, a.Expr, nil)); v != true && v != "ENABLED" {
				t.Errorf("aws_cloudwatch_event_rule: %s = %v; the JSON rules are ENABLED", name, v)
			}
		}
	}

	// Queue.
	q := c.block(t, "resource", "aws_sqs_queue", "interruptions")
	for tfName, jsonName := range map[string]string{
		"name":                       "QueueName",
		"message_retention_seconds":  "MessageRetentionPeriod",
		"visibility_timeout_seconds": "VisibilityTimeout",
		"receive_wait_time_seconds":  "ReceiveMessageWaitTimeSeconds",
		"sqs_managed_sse_enabled":    "SqsManagedSseEnabled",
	} {
		want := s.queue.Attributes[jsonName]
		if jsonName == "QueueName" {
			want = s.queue.QueueName
		}
		if got := fmt.Sprint(tfGoValue(t, c.attr(t, q, tfName, nil))); got != want {
			t.Errorf("queue: Terraform %s = %s, JSON %s = %s", tfName, got, jsonName, want)
		}
	}
	tags := map[string]any{}
	for k, v := range s.queue.Tags {
		tags[k] = v
	}
	if got := tfGoValue(t, c.attr(t, q, "tags", nil)); !reflect.DeepEqual(got, tags) {
		t.Errorf("queue tags: Terraform %v, JSON %v", got, tags)
	}

	// Queue policy: the same statement; its source ARNs are the rules'.
	doc := c.block(t, "data", "aws_iam_policy_document", "interruption_queue")
	if got := tfGoString(t, c.attr(t, doc, "policy_id", nil)); got != s.queuePolicy.Id {
		t.Errorf("queue policy id: Terraform %q, JSON %q", got, s.queuePolicy.Id)
	}
	tf := c.tfStatements(t, doc)
	if len(tf) != len(s.queuePolicy.Statement) {
		t.Fatalf("queue policy: Terraform has %d statements, JSON %d", len(tf), len(s.queuePolicy.Statement))
	}
	for i, st := range s.queuePolicy.Statement {
		want := st.comparable(t)
		got := tf[i]
		// The rule ARNs are known to AWS only; the expression must take them
		// from the rules.
		want.Conditions = []string{"ArnEquals aws:SourceArn (unknown)"}
		refs := ""
		for _, cond := range hclNested(hclNested(doc, "statement")[i], "condition") {
			for _, tr := range hclsyntax.Variables(cond.Body.Attributes["values"].Expr) {
				refs += tr.RootName() + "." + tr[1].(hcl.TraverseAttr).Name
			}
		}
		if refs != "aws_cloudwatch_event_rule.interruptions" {
			t.Errorf("queue policy: aws:SourceArn comes from %q, want the ARNs of aws_cloudwatch_event_rule.interruptions", refs)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("queue policy statement %d:\nTerraform %+v\nJSON      %+v", i, got, want)
		}
	}
	if got := string(c.block(t, "resource", "aws_sqs_queue_policy", "interruptions").Body.Attributes["policy"].Expr.Range().SliceBytes(infraRead(t, filepath.Join(c.dir, "interruptions.tf")))); got != "data.aws_iam_policy_document.interruption_queue.json" {
		t.Errorf("aws_sqs_queue_policy takes its policy from %s", got)
	}
}

// codeAWSActions returns the AWS actions (EC2, SQS, any service) that the
// code compiled into the three plugin binaries can call: every aws-sdk-go-v2
// operation takes a *<Operation>Input of its service package, so each
// <Operation>Input the code names (in a call, a literal or an interface it
// calls through) is an action. The SDK's own credential providers are not
// this code and are left out.
func codeAWSActions(t *testing.T) map[string][]string {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", `{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{end}}{{end}}`,
		"./target-spotfleet", "./apm-node", "./strategy-cpu-target")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	// An AWS service client package: github.com/aws/aws-sdk-go-v2/service/<name>,
	// whose name is the IAM prefix of its actions (ec2, sqs, sts ...).
	serviceOf := func(importPath string) string {
		name, ok := strings.CutPrefix(importPath, "github.com/aws/aws-sdk-go-v2/service/")
		if !ok || strings.Contains(name, "/") {
			return ""
		}
		return name
	}
	found := map[string][]string{} // action -> where
	fset := token.NewFileSet()
	files := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		for _, name := range fields[1:] {
			file := filepath.Join(fields[0], name)
			f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files++
			aliases := map[string]string{}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if svc := serviceOf(p); svc != "" {
					alias := path.Base(p)
					if imp.Name != nil {
						alias = imp.Name.Name
					}
					aliases[alias] = svc
				}
			}
			if len(aliases) == 0 {
				continue
			}
			ast.Inspect(f, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				id, ok := sel.X.(*ast.Ident)
				if !ok || aliases[id.Name] == "" {
					return true
				}
				if op, ok := strings.CutSuffix(sel.Sel.Name, "Input"); ok && op != "" {
					action := aliases[id.Name] + ":" + op
					rel, _ := filepath.Rel(root, fset.Position(sel.Pos()).Filename)
					found[action] = append(found[action], rel)
				}
				return true
			})
		}
	}
	if files < 10 {
		t.Fatalf("go list named only %d source files of the plugins", files)
	}
	return found
}

// TestInfraIAMPoliciesMatchCode compares the agent's IAM policy in Terraform
// with iam-policy.json, and both with the EC2 and SQS actions the plugins'
// code can call: a new call without its permission, or a permission no code
// needs, fails here.
func TestInfraIAMPoliciesMatchCode(t *testing.T) {
	s := readInfraSamples(t)
	c := loadInfraTF(t, s)
	tf := c.tfStatements(t, c.block(t, "data", "aws_iam_policy_document", "autoscaler"))
	if len(tf) != len(s.agentPolicy.Statement) {
		t.Fatalf("agent policy: Terraform has %d statements, iam-policy.json %d", len(tf), len(s.agentPolicy.Statement))
	}
	granted := map[string]bool{}
	for i, st := range s.agentPolicy.Statement {
		want, got := st.comparable(t), tf[i]
		if !iamResourcesCover(got.Resources, want.Resources) {
			t.Errorf("statement %s: Terraform resources %v do not match iam-policy.json's %v", want.Sid, got.Resources, want.Resources)
		}
		got.Resources, want.Resources = nil, nil
		if !reflect.DeepEqual(got, want) {
			t.Errorf("agent policy statement %d:\nTerraform %+v\nJSON      %+v", i, got, want)
		}
		if want.Effect != "Allow" {
			t.Errorf("statement %s: effect %s", want.Sid, want.Effect)
		}
		for _, a := range want.Actions {
			granted[a] = true
		}
	}

	called := codeAWSActions(t)
	for action, where := range called {
		if !granted[action] {
			t.Errorf("the plugins call %s (%s) but the agent's IAM policy does not allow it", action, strings.Join(slices.Compact(where), ", "))
		}
	}
	for action := range granted {
		if _, ok := called[action]; !ok {
			t.Errorf("the agent's IAM policy allows %s, which no plugin code calls", action)
		}
	}
	// The interface the fleet client is built on agrees with the scan.
	api := reflect.TypeFor[fleet.EC2API]()
	for i := range api.NumMethod() {
		if _, ok := called["ec2:"+api.Method(i).Name]; !ok {
			t.Errorf("fleet.EC2API has %s, which the scan of the code did not find", api.Method(i).Name)
		}
	}

	// Tags: the plugin writes only keys of the prefix the policy allows.
	var prefix string
	for _, st := range s.agentPolicy.Statement {
		if p, ok := st.Condition["ForAllValues:StringLike"]["aws:TagKeys"]; ok {
			prefix = strings.TrimSuffix(strs(t, p)[0], "*")
		}
	}
	if prefix == "" {
		t.Fatal("iam-policy.json limits no tag keys")
	}
	keys := pluginTagKeys(t)
	if len(keys) < 5 {
		t.Fatalf("found only %d tag keys in target-spotfleet/plugin: %v", len(keys), keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			t.Errorf("target-spotfleet tags instances with %q, outside the %q*  the IAM policy allows", k, prefix)
		}
	}
}

// pluginTagKeys returns the string constants named tag* or *TagPrefix in
// target-spotfleet/plugin: the EC2 tag keys the plugin writes.
func pluginTagKeys(t *testing.T) []string {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "target-spotfleet", "plugin", "*.go"))
	fset := token.NewFileSet()
	var keys []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) || !(regexp.MustCompile(`^tag[A-Z]`).MatchString(name.Name) || strings.HasSuffix(name.Name, "TagPrefix")) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						keys = append(keys, v)
					}
				}
			}
		}
	}
	return keys
}

// TestInfraFleetJSONIsAnEC2Request decodes spot-fleet-request.json into the
// SDK's SpotFleetRequestConfigData (generated from EC2's API model), refusing
// any key the API does not have, and checks its enumerated values against
// the model's.
func TestInfraFleetJSONIsAnEC2Request(t *testing.T) {
	var cfg ec2types.SpotFleetRequestConfigData
	decodeStrict(t, "infra/spot-fleet-request.json", &cfg)
	check := func(what, got string, values []string) {
		t.Helper()
		switch {
		case slices.Contains(values, got):
		case len(values) > 20:
			t.Errorf("spot-fleet-request.json: %s %q is none of EC2's %d values", what, got, len(values))
		default:
			t.Errorf("spot-fleet-request.json: %s %q is not one of EC2's %v", what, got, values)
		}
	}
	check("Type", string(cfg.Type), sdkEnumStrings(cfg.Type.Values()))
	check("AllocationStrategy", string(cfg.AllocationStrategy), sdkEnumStrings(cfg.AllocationStrategy.Values()))
	check("ExcessCapacityTerminationPolicy", string(cfg.ExcessCapacityTerminationPolicy), sdkEnumStrings(cfg.ExcessCapacityTerminationPolicy.Values()))
	check("InstanceInterruptionBehavior", string(cfg.InstanceInterruptionBehavior), sdkEnumStrings(cfg.InstanceInterruptionBehavior.Values()))
	for _, ts := range cfg.TagSpecifications {
		check("TagSpecifications.ResourceType", string(ts.ResourceType), sdkEnumStrings(ts.ResourceType.Values()))
	}
	var types []string
	for _, ltc := range cfg.LaunchTemplateConfigs {
		for _, o := range ltc.Overrides {
			check("InstanceType", string(o.InstanceType), sdkEnumStrings(o.InstanceType.Values()))
			types = append(types, string(o.InstanceType))
		}
	}
	if len(fleet.Families(types)) < 2 {
		t.Errorf("spot-fleet-request.json: instance types %v are not of two families", types)
	}
}

// sdkEnumStrings turns an SDK enum's Values() into strings.
func sdkEnumStrings[E ~string](values []E) []string {
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = string(v)
	}
	return out
}
