# Nomad Autoscaler agent (v0.5.0) configuration for a Spot Fleet of Nomad clients.
# Copy the three binaries built by `make build` into plugin_dir. The agent's
# HTTP API (health, metrics) listens on 127.0.0.1:8080, its default.

# Where the agent finds apm-node, strategy-cpu-target and target-spotfleet.
plugin_dir = "/opt/nomad-autoscaler/plugins"

# The Nomad API. Plugins inherit the address and token (nomad_* keys), and
# the agent also reads the jobs' scaling blocks from it (../jobs/web.nomad.hcl).
nomad {
  address = "http://127.0.0.1:4646"
  # token = "..."  # or NOMAD_TOKEN in the agent's environment; never logged
}

policy {
  # The cluster policy files (../policies/spot-pool.hcl).
  dir                         = "/etc/nomad-autoscaler/policies"
  # For policies that set none, such as a job's scaling block.
  default_evaluation_interval = "10s"
  default_cooldown            = "2m"
}

# Real node CPU from Nomad (host and workload CPU, allocated CPU, memory).
apm "apm-node" {
  driver = "apm-node"
  config = {
    # How often each node's CPU is sampled.
    sample_interval    = "10s"
    # A node is left out of the figures for this long after it is admitted
    # (its start-up load is not the pool's); the policy's node_warmup is
    # this plus sample_interval.
    node_warmup        = "60s"
    # The admission gate's client meta key (the default): nodes that wait for
    # their launch hooks are left out of the average. Same key as the policy's
    # admission_meta_key (docs/hooks.md).
    admission_meta_key = "spotfleet_admission"
  }
}

# Holds an average CPU at a target (75% by default): the pool's in the
# cluster policy, a task group's in a job's scaling block. It takes no
# settings here; each check's strategy block has them.
strategy "strategy-cpu-target" {
  driver = "strategy-cpu-target"
}

# Scales the Spot Fleet request, draining nodes before terminating them.
target "spotfleet" {
  driver = "target-spotfleet"
  config = {
    # The region of the Spot Fleet request and of the interruption queue.
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

    # AWX for the policies' awx and awx_callback hooks (docs/hooks.md). Set
    # here, never in a policy: a policy is readable by whoever reads jobs.
    # Replace the URL with your AWX's. The token (an OAuth2 personal access
    # token, scope write, of a user with Execute on the job templates) comes
    # from a file of one line, or from an environment variable of the agent:
    # set one of the two. The file (or variable) is read at start, where a
    # missing or empty one stops the agent, and again for every AWX request,
    # so a rotated token is picked up without a restart.
    awx_url        = "https://awx.example.com"
    awx_token_file = "/etc/nomad-autoscaler/awx-token"
    # awx_token_env = "AWX_TOKEN"
    # When AWX's TLS certificate is signed by a private CA:
    # awx_ca_file = "/etc/nomad-autoscaler/awx-ca.pem"
  }
}
