# Cluster scaling policy: keep the "spot" node class at ~75% average CPU,
# between 1 and 20 nodes, on one diversified Spot Fleet request. Put it in
# the agent's policy dir (policy.dir in ../agent.hcl).
scaling "spot_pool" {
  enabled = true
  # Never fewer than 1 node, never more than 20 (the agent caps every
  # decision to these).
  min     = 1
  max     = 20

  policy {
    # How often the agent evaluates the check below.
    evaluation_interval  = "10s"
    # After a scale-in, no other action for this long.
    cooldown             = "2m"
    # Longer than boot-to-ready (launch, Nomad join, AWX post-configuration)
    # plus the strategy's scale_out_window, so booting nodes are not counted twice.
    cooldown_on_scale_up = "2m"

    check "cpu" {
      source       = "apm-node"
      # host_cpu is what AWS target tracking averaged; workload_cpu (CPU used by
      # allocations over schedulable CPU) ignores agents and system daemons.
      query        = "host_cpu node_class=spot"
      # The strategy scales in only as far as the peak of this window allows.
      query_window = "5m"

      # Both checks share a group: within a group the agent ignores a check
      # that answers "none" (nothing waits), so the CPU check's scale-in still
      # happens; without it "none" would beat every scale-in (docs/unplaced.md).
      group        = "pool"

      strategy "strategy-cpu-target" {
        # The average CPU, in percent, to hold; the other keys (tolerance,
        # scale_out_window, max_scale_up, ...) keep their defaults.
        target = "75"
      }
    }

    # Work Nomad could not place (blocked evaluations), as the nodes to add to
    # the fleet's count to place it (target-spotfleet counts the nodes already
    # coming): scales out whatever the CPU reads, never scales in. The agent
    # takes the largest scale-out of the group's checks.
    check "unplaced" {
      source       = "apm-node"
      query        = "unplaced_nodes node_class=spot"
      query_window = "1m"
      group        = "pool"

      strategy "strategy-cpu-target" {
        signal = "unplaced"
      }
    }

    target "spotfleet" {
      # The Spot Fleet request (type maintain) that holds the pool.
      spot_fleet_request_id         = "sfr-0123456789abcdef0"
      # The pool's nodes: the client's node_class, as the user-data sets it.
      node_class                    = "spot"
      # Where a node's instance id is (Nomad's AWS fingerprint).
      node_id_attribute             = "unique.platform.aws.instance-id"
      # Scale-in drains a node for at most this long before terminating it.
      node_drain_deadline           = "10m"
      # Drain system jobs too (they stop last).
      node_drain_ignore_system_jobs = "false"
      # Which nodes go on scale-in: those running the least work.
      node_selector_strategy        = "least_busy"
      # Purge terminated nodes from Nomad once they are down.
      node_purge                    = "true"
      # The policy's cooldown, kept across agent restarts (see the README).
      restart_cooldown              = "2m"
      # Drain deadline after a spot interruption warning (under the 2m notice).
      interruption_drain_deadline   = "90s"
      # On a rebalance recommendation: ignore (default), cordon or drain.
      rebalance_action              = "ignore"

      # Admission gate (docs/hooks.md): new nodes register with the client
      # meta spotfleet_admission = "pending" (the launch template's user-data,
      # ../infra/user-data.sh), the pool's jobs constrain on "admitted"
      # (../jobs/web.nomad.hcl), and the plugin sets "admitted" once every
      # launch hook has succeeded (at once when there is none).
      admission_meta_key            = "spotfleet_admission"

      # An admitted node warms up before it counts: apm-node leaves it out
      # of its figure for its node_warmup (../agent.hcl: 60s), so the target
      # leaves it out of the count for that plus apm-node's sample_interval
      # (10s); otherwise the strategy would multiply a node nobody measured.
      node_warmup                   = "70s"

      # Provisioning hooks (docs/hooks.md), run for every new node before it
      # is admitted. The awx hooks need awx_url and a token in the agent's
      # target block (../agent.hcl): an awx hook without them makes the agent
      # refuse the whole policy (every problem reported at once). AWX needs
      # the two job templates named below, each prompting on launch for
      # Limit and Variables.
      #
      # 1. configure: AWX runs ../playbooks/monitoring.yml against the new
      #    host, limited to its private IP. node_dir comes from the node's
      #    client meta, which the launch template's user-data sets. A failed
      #    or timed-out job terminates the instance; the fleet replaces it.
      launch_hooks                = "configure, label"
      hook_configure_type         = "awx"
      hook_configure_job_template = "spot-node-configure"
      hook_configure_limit        = "{{private_ip}}"
      hook_configure_extra_vars   = "node_dir={{node.meta.node_dir}}"
      hook_configure_timeout      = "20m"
      hook_configure_on_failure   = "terminate"
      # 2. label: once the node is ready, the AWX job's id goes into the
      #    node's dynamic metadata (meta.awx_job_id), for whoever debugs it.
      hook_label_type             = "nomad"
      hook_label_meta             = "awx_job_id={{hook.configure.job_id}}"
      hook_label_timeout          = "5m"
      # On scale-in, interruption or a failed launch hook:
      # 3. forget: AWX runs ../playbooks/forget.yml for the host that goes.
      #    Like every terminate hook it reads neither node meta nor a launch
      #    hook's job id (the policy is refused otherwise), and its limit (the
      #    default, {{private_ip}}) names the instance, as every limit must.
      terminate_hooks             = "forget"
      hook_forget_type            = "awx"
      hook_forget_job_template    = "spot-node-forget"
      hook_forget_timeout         = "10m"
    }
  }
}
