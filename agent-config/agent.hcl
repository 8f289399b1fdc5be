# Nomad Autoscaler agent (v0.5.0) configuration for a Spot Fleet of Nomad clients.
# Copy the three binaries built by `make build` into plugin_dir.

plugin_dir = "/opt/nomad-autoscaler/plugins"

nomad {
  address = "http://127.0.0.1:4646"
  # token = "..."  # or NOMAD_TOKEN in the agent's environment; never logged
}

policy {
  dir                         = "/etc/nomad-autoscaler/policies"
  default_evaluation_interval = "10s"
  default_cooldown            = "2m"
}

# Real node CPU from Nomad (host and workload CPU, allocated CPU, memory).
apm "apm-node" {
  driver = "apm-node"
  config = {
    sample_interval = "10s"
    node_warmup     = "60s"
  }
}

# Holds the pool's average CPU at a target (75% by default).
strategy "strategy-cpu-target" {
  driver = "strategy-cpu-target"
}

# Scales the Spot Fleet request, draining nodes before terminating them.
target "spotfleet" {
  driver = "target-spotfleet"
  config = {
    aws_region = "eu-west-1"
    # Credentials: the default chain (environment, shared files, instance
    # profile) unless one of these is set:
    # aws_credential_provider = "ec2_role"
    # aws_access_key_id     = "..."
    # aws_secret_access_key = "..."

    # Spot interruption handling (docs/interruptions.md): the SQS queue that
    # EventBridge fills with the account's EC2 events (agent-config/infra/).
    # One queue serves every fleet, so it is set here, not per policy; unset
    # turns interruption handling off.
    interruption_queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/nomad-spot-interruptions"
  }
}
