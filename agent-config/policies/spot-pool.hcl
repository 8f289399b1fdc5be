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
    }
  }
}
