# Cluster scaling policy: keep the "spot" node class at ~75% average CPU,
# between 1 and 20 nodes, on one diversified Spot Fleet request.
scaling "spot_pool" {
  enabled = true
  min     = 1
  max     = 20

  policy {
    evaluation_interval  = "10s"
    cooldown             = "2m"
    # Longer than boot-to-ready (launch, Nomad join, AWX post-configuration)
    # plus the strategy's scale_out_window, so booting nodes are not counted twice.
    cooldown_on_scale_up = "2m"

    check "cpu" {
      source       = "apm-node"
      # host_cpu is what AWS target tracking averaged; workload_cpu (CPU used by
      # allocations over schedulable CPU) ignores agents and system daemons.
      query        = "host_cpu node_class=spot"
      query_window = "5m"

      strategy "strategy-cpu-target" {
        target = "75"
      }
    }

    target "spotfleet" {
      spot_fleet_request_id         = "sfr-0123456789abcdef0"
      node_class                    = "spot"
      node_id_attribute             = "unique.platform.aws.instance-id"
      node_drain_deadline           = "10m"
      node_drain_ignore_system_jobs = "false"
      node_selector_strategy        = "least_busy"
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

      # Provisioning hooks (docs/hooks.md). The awx hooks need awx_url and a
      # token in the agent's target block (../agent.hcl): an awx hook without
      # them makes the agent refuse the whole policy. Uncomment these lines
      # once AWX has the two job templates; the policy is then checked as a
      # whole, every problem reported at once.
      #
      # 1. configure: AWX runs ../playbooks/monitoring.yml against the new
      #    host (limited to its private IP; the template prompts for Limit and
      #    Variables on launch). node_dir comes from the node's client meta,
      #    which the user-data sets.
      # 2. label: once the node is ready, the AWX job's id goes into the
      #    node's dynamic metadata (meta.awx_job_id), for whoever debugs it.
      # On scale-in, interruption or a failed launch hook:
      # 3. forget: AWX runs ../playbooks/forget.yml for the host that goes.
      #    Like every terminate hook it reads neither node meta nor a launch
      #    hook's job id (the policy is refused otherwise), and its limit (the
      #    default, {{private_ip}}) names the instance, as every limit must.
      #
      # launch_hooks                = "configure, label"
      # hook_configure_type         = "awx"
      # hook_configure_job_template = "spot-node-configure"
      # hook_configure_limit        = "{{private_ip}}"
      # hook_configure_extra_vars   = "node_dir={{node.meta.node_dir}}"
      # hook_configure_timeout      = "20m"
      # hook_configure_on_failure   = "terminate"
      # hook_label_type             = "nomad"
      # hook_label_meta             = "awx_job_id={{hook.configure.job_id}}"
      # hook_label_timeout          = "5m"
      # terminate_hooks             = "forget"
      # hook_forget_type            = "awx"
      # hook_forget_job_template    = "spot-node-forget"
      # hook_forget_timeout         = "10m"
    }
  }
}
