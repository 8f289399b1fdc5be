//go:build e2e

package e2e

// Adversarial review of issue 10 (agent-config as users run it): tests that
// show defects of the Terraform sample. They need no local cloud.

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// refsOf returns the "type.name" prefixes of every reference in the block's
// attributes and nested blocks (depends_on included).
func refsOf(b *hclsyntax.Block) []string {
	var out []string
	var walk func(body *hclsyntax.Body)
	walk = func(body *hclsyntax.Body) {
		for _, a := range body.Attributes {
			for _, tr := range a.Expr.Variables() {
				parts := []string{tr.RootName()}
				if len(tr) > 1 {
					if attr, ok := tr[1].(hcl.TraverseAttr); ok {
						parts = append(parts, attr.Name)
					}
				}
				out = append(out, strings.Join(parts, "."))
			}
		}
		for _, nb := range body.Blocks {
			walk(nb.Body)
		}
	}
	walk(b.Body)
	return out
}

// TestReview10FleetWaitsForItsRolePolicy: the Spot Fleet request is created
// from the role's ARN alone, so Terraform may create it while
// aws_iam_role_policy_attachment.spot_fleet is still being attached (the
// provider's own example for aws_spot_fleet_request has depends_on on the
// policy attachment for this reason): the fleet's first launches then run
// with a role that may not yet tag or launch.
func TestReview10FleetWaitsForItsRolePolicy(t *testing.T) {
	c := loadTF(t, "infra")
	sfr := c.block(t, "resource", "aws_spot_fleet_request", "pool")
	refs := refsOf(sfr)
	if !slices.Contains(refs, "aws_iam_role_policy_attachment.spot_fleet") {
		t.Errorf("aws_spot_fleet_request.pool does not depend on aws_iam_role_policy_attachment.spot_fleet (refs: %v): "+
			"Terraform may request the fleet before its role can launch and tag instances", slices.Compact(slices.Sorted(slices.Values(refs))))
	}
}

// TestReview10TerraformKeepsThePluginsFleetTags: target-spotfleet keeps its
// state in tags of the fleet request (nomad-autoscaler:last-event,
// :replacements, :farewell:<id>; docs/architecture.md "Where the state
// lives"), while Terraform manages that request's tags authoritatively
// (tags = local.pool_tags). The next `terraform apply` after the agent has
// run plans to remove every tag the plugin wrote, erasing the replacement
// ledger, the terminate hooks' records and the restart cooldown. The
// provider's ignore_tags (key_prefixes) or a lifecycle ignore_changes on
// the request's tags must keep Terraform away from them.
func TestReview10TerraformKeepsThePluginsFleetTags(t *testing.T) {
	c := loadTF(t, "infra")
	const prefix = "nomad-autoscaler:"
	ignored := false
	for _, b := range c.blocks {
		if b.Type != "provider" || len(b.Labels) == 0 || b.Labels[0] != "aws" {
			continue
		}
		for _, it := range hclNested(b, "ignore_tags") {
			if a, ok := it.Body.Attributes["key_prefixes"]; ok {
				v := c.eval(t, a.Expr, nil)
				for _, p := range tfGoStrings(t, v) {
					if strings.HasPrefix(prefix, p) {
						ignored = true
					}
				}
			}
		}
	}
	sfr := c.block(t, "resource", "aws_spot_fleet_request", "pool")
	for _, lc := range hclNested(sfr, "lifecycle") {
		if a, ok := lc.Body.Attributes["ignore_changes"]; ok {
			for _, tr := range a.Expr.Variables() {
				if tr.RootName() == "tags" || tr.RootName() == "tags_all" {
					ignored = true
				}
			}
			src := string(a.Expr.Range().SliceBytes(infraRead(t, c.dir+"/fleet.tf")))
			if strings.Contains(src, "tags") {
				ignored = true
			}
		}
	}
	if !ignored {
		t.Errorf("Terraform manages aws_spot_fleet_request.pool's tags (tags = local.pool_tags) and ignores none of the plugin's %q* tags: "+
			"a later `terraform apply` deletes the plugin's state on the fleet request (last-event, replacements ledger, farewell records); "+
			"add `ignore_tags { key_prefixes = [%q] }` to provider \"aws\" in versions.tf", prefix, prefix)
	}
}
