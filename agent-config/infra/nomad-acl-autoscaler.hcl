# Nomad ACL policy of the autoscaler agent's token (agent v0.5.0 with
# apm-node, strategy-cpu-target and target-spotfleet), for Nomad 1.6:
#   nomad acl policy apply -description "nomad-autoscaler" nomad-autoscaler nomad-acl-autoscaler.hcl
#   nomad acl token create -name nomad-autoscaler -policy nomad-autoscaler
# and give the token's secret to the agent (nomad { token = ... } or
# NOMAD_TOKEN). Every rule below is one the agent or a plugin calls; the e2e
# test TestNomadACLPolicyAllowsWhatThePluginsCall proves each call with a
# token of this policy, and that calls outside it are refused.

# Jobs of the namespace whose scaling policies the agent runs (its
# nomad { namespace }, "default" unless set). Repeat the block per namespace
# for several.
namespace "default" {
  capabilities = [
    # The agent's Nomad policy source: the scaling blocks of the jobs.
    "list-scaling-policies",
    "read-scaling-policy",
    # The agent's Nomad target for task-group policies: the group's count,
    # and changing it.
    "read-job-scaling",
    "scale-job",
    # nomad-apm (if a policy uses it) reads the job and its allocations;
    # the rule for every namespace below does not apply to a namespace that
    # has its own rule, so it is repeated here.
    "read-job",
  ]
}

# Allocations of every namespace: apm-node lists the live allocations and
# reads their resource usage (workload_cpu, allocated_cpu); target-spotfleet
# and the SDK's node selectors (empty, least_busy) read the allocations of
# a node before draining it. Nomad leaves out the allocations of namespaces
# the token cannot read, so without this a busy node would look empty.
namespace "*" {
  capabilities = ["read-job"]
}

# Nodes: list and read them (apm-node, target-spotfleet), their host stats
# (apm-node); drain, eligibility, purge and dynamic node metadata (the
# admission gate) are node writes (target-spotfleet).
node {
  policy = "write"
}
