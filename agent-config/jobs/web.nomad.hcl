# A sample service on the spot pool. Its own horizontal scaling (the scaling
# block) uses the stock Nomad target; the cluster policy in
# ../policies/spot-pool.hcl then adds or removes nodes as its CPU use changes.
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
    count = 3

    # Spot nodes are drained before they go; let allocations move quickly.
    migrate {
      max_parallel     = 2
      health_check     = "checks"
      min_healthy_time = "10s"
      healthy_deadline = "5m"
    }

    scaling {
      enabled = true
      min     = 2
      max     = 40

      policy {
        cooldown = "1m"

        check "cpu" {
          source = "nomad-apm"
          query  = "avg_cpu-allocated"

          strategy "target-value" {
            target = 70
          }
        }
      }
    }

    network {
      port "http" {}
    }

    task "server" {
      driver = "docker"

      config {
        image = "nginx:1.27"
        ports = ["http"]
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
