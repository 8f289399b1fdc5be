# A sample web service on the spot pool, with horizontal scaling of its task
# group by this project's strategy-cpu-target (the scaling block below). The
# cluster policy (../policies/spot-pool.hcl) then adds or removes spot nodes
# as the pool's CPU follows.
#
#   nomad job run web.nomad.hcl
#
# HCL2 variables carry the parts that depend on the task driver, so that the
# same file runs where Docker is (the defaults: nginx) and where it is not:
#
#   nomad job run -var driver=raw_exec \
#     -var 'command=["/usr/local/bin/my-server", "--port", "8080"]' web.nomad.hcl
#
# (the project's end-to-end test does the latter on its local Nomad, whose
# clients have raw_exec only, through the register API's variables).

variable "driver" {
  description = "Task driver: docker (runs var.image) or raw_exec (runs var.command on the node)."
  type        = string
  default     = "docker"

  validation {
    condition     = contains(["docker", "raw_exec"], var.driver)
    error_message = "The driver variable must be \"docker\" or \"raw_exec\"."
  }
}

variable "image" {
  description = "Docker image of the service (driver docker)."
  type        = string
  default     = "nginx:1.27"
}

variable "command" {
  description = "Program and arguments of the service, required with driver raw_exec: the first element is the program; it listens on NOMAD_PORT_http."
  type        = list(string)
  default     = []
}

job "web" {
  datacenters = ["dc1"]
  type        = "service"

  constraint {
    attribute = "${node.class}"
    value     = "spot"
  }

  # The admission gate (docs/hooks.md): only nodes whose launch hooks have all
  # succeeded. A new spot node registers with meta spotfleet_admission =
  # "pending" and target-spotfleet sets "admitted"; a node without the key
  # takes none of this job's work either (fail closed). Every job of the pool
  # needs this constraint; system jobs without it run on waiting nodes too.
  constraint {
    attribute = "${meta.spotfleet_admission}"
    operator  = "=="
    value     = "admitted"
  }

  group "web" {
    # The first count; from then on the scaling block changes it. A later
    # `nomad job run` of this file sets it back to 2 unless run with
    # -preserve-counts (keep the count the autoscaler set).
    count = 2

    # Spot nodes are drained before they go; let allocations move quickly.
    migrate {
      max_parallel     = 2
      health_check     = "checks"
      min_healthy_time = "10s"
      healthy_deadline = "5m"
    }

    # Rolling updates of the job. A new version, and a scale-out too, starts
    # a deployment (at least min_healthy_time long); a scaling action that
    # comes while one runs is skipped by the Nomad target ("due to active
    # deployment") and tried again at the next evaluation.
    update {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "10s"
      healthy_deadline = "3m"
      auto_revert      = true
    }

    # Task-group scaling: the stock nomad-apm measures the group's
    # allocations, strategy-cpu-target picks the count, the stock Nomad
    # target sets it. Evaluation interval and cooldown are the agent's
    # defaults (policy.default_evaluation_interval and default_cooldown in
    # ../agent.hcl: 10s and 2m) unless set here.
    #
    # What strategy-cpu-target sees for a task group (it was written for the
    # node pool, where apm-node returns a time series):
    #  - nomad-apm answers a task-group query with ONE datapoint, taken now,
    #    whatever the query_window: the "recent mean" (scale-out) and the
    #    "window peak" (scale-in) are both that one value, so scale_out_window
    #    and max_data_age change nothing, and the cooldown is what damps a
    #    short spike or dip.
    #  - scale_in_min_coverage must be 0 here. A single point spans 0 s, less
    #    than any share of query_window, so with the default (0.8) the
    #    strategy holds forever ("no scale-in: the datapoints span 0s ...")
    #    and the group never scales in.
    #  - The query must be avg_cpu-allocated: the CPU the group's tasks use
    #    as a percentage of the CPU they reserve (resources.cpu). target is a
    #    percentage in (0, 100]; avg_cpu is a percentage of one core, not of
    #    the reservation. The figure goes above 100 when tasks use more than
    #    they reserve (Docker and raw_exec do not cap CPU by default): the
    #    strategy keeps such values and scales out in one larger step,
    #    ceil(count x figure / target).
    #  - Scale-in goes to ceil(count x figure / target) at once (no step
    #    limit) unless max_scale_down is set; min below still applies.
    scaling {
      enabled = true
      min     = 2
      max     = 20

      policy {
        check "cpu" {
          source = "nomad-apm"
          query  = "avg_cpu-allocated"

          strategy "strategy-cpu-target" {
            # Each allocation at 75% of the CPU it reserves, on average.
            target                = 75
            # Dead band: scale out above 78.75%, in below 71.25%.
            tolerance             = 0.05
            # See above: one datapoint per evaluation.
            scale_in_min_coverage = 0
          }
        }
      }
    }

    network {
      port "http" {
        # The port the service listens on in its container: nginx's 80 under
        # Docker; -1 (the port Nomad picked on the host) under raw_exec.
        to = var.driver == "docker" ? 80 : -1
      }
    }

    task "server" {
      driver = var.driver

      # Exactly one of the two config blocks below is used, by var.driver.
      dynamic "config" {
        for_each = var.driver == "docker" ? [var.image] : []
        content {
          image = config.value
          ports = ["http"]
        }
      }

      # raw_exec runs the command as the client's user, on the node, without
      # isolation; the client must enable the driver (plugin "raw_exec").
      # The port is in NOMAD_PORT_http.
      dynamic "config" {
        for_each = var.driver == "raw_exec" ? [var.command] : []
        content {
          command = config.value[0]
          args    = slice(config.value, 1, length(config.value))
        }
      }

      # resources.cpu is the reservation the scaling check measures against.
      resources {
        cpu    = 200
        memory = 128
      }
    }
  }
}
