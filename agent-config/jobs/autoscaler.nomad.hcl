# The Nomad Autoscaler agent as a Nomad job, with this project's plugins.
# The plugins are fetched as an artifact you publish (build them with
# `make build`, tar the plugins/ folder); the agent binary comes from its
# official release or from `make tools` (bin/nomad-autoscaler).
job "autoscaler" {
  datacenters = ["dc1"]
  type        = "service"

  # Run it on stable (on-demand) nodes, never on the spot pool it scales.
  constraint {
    attribute = "${node.class}"
    operator  = "!="
    value     = "spot"
  }

  group "autoscaler" {
    count = 1

    task "autoscaler" {
      driver = "exec"

      artifact {
        source      = "https://artifacts.example.internal/nomad-spotfleet/plugins.tar.gz"
        destination = "local/plugins"
      }

      config {
        command = "/usr/local/bin/nomad-autoscaler"
        args    = ["agent", "-config", "${NOMAD_TASK_DIR}/config.hcl"]
      }

      template {
        destination = "${NOMAD_TASK_DIR}/config.hcl"
        data        = <<EOH
plugin_dir = "{{ env "NOMAD_TASK_DIR" }}/plugins"

nomad {
  address = "http://{{ env "attr.unique.network.ip-address" }}:4646"
}

policy {
  dir = "{{ env "NOMAD_TASK_DIR" }}/policies"
}

apm "apm-node" {
  driver = "apm-node"
}

strategy "strategy-cpu-target" {
  driver = "strategy-cpu-target"
}

target "spotfleet" {
  driver = "target-spotfleet"
  config = {
    aws_region              = "eu-west-1"
    aws_credential_provider = "ec2_role"
    # AWX for the provisioning hooks (docs/hooks.md); the token is rendered
    # by the template below. Remove these two lines and that template if the
    # policy has no awx hooks.
    awx_url                 = "https://awx.example.com"
    awx_token_file          = "{{ env "NOMAD_SECRETS_DIR" }}/awx-token"
  }
}
EOH
      }

      # The AWX token, from the Nomad Variable nomad/jobs/autoscaler (readable
      # by this job's tasks without an ACL policy), into the secrets directory.
      # Store it first, for example with a variable specification file:
      #   nomad var put -in hcl nomad/jobs/autoscaler @awx-token.nv.hcl
      # where awx-token.nv.hcl holds items { awx_token = "..." }.
      template {
        destination = "${NOMAD_SECRETS_DIR}/awx-token"
        data        = <<EOH
{{ with nomadVar "nomad/jobs/autoscaler" }}{{ .awx_token }}{{ end }}
EOH
      }

      # Hook settings use {{...}} as Nomad's templates do: before adding any
      # (../policies/spot-pool.hcl) to this policy, give this template other
      # delimiters (left_delimiter = "[[", right_delimiter = "]]").
      template {
        destination = "${NOMAD_TASK_DIR}/policies/spot-pool.hcl"
        data        = <<EOH
scaling "spot_pool" {
  enabled = true
  min     = 1
  max     = 20

  policy {
    evaluation_interval  = "10s"
    cooldown             = "2m"
    cooldown_on_scale_up = "2m"

    check "cpu" {
      source       = "apm-node"
      query        = "host_cpu node_class=spot"
      query_window = "5m"

      strategy "strategy-cpu-target" {
        target = "75"
      }
    }

    target "spotfleet" {
      spot_fleet_request_id = "sfr-0123456789abcdef0"
      node_class            = "spot"
      node_drain_deadline   = "10m"
      node_purge            = "true"
      # Admission gate and provisioning hooks: see ../policies/spot-pool.hcl
      # and docs/hooks.md.
    }
  }
}
EOH
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
