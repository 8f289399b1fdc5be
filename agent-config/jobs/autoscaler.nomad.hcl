# The Nomad Autoscaler agent (v0.5.0) as a Nomad job, with this project's
# three plugins fetched as an artifact, scaling the Spot Fleet of the "spot"
# node class (the policy below is ../policies/spot-pool.hcl, templated).
#
# Everything that differs per site is a variable (HCL2, Nomad >= 1.6); the
# defaults are placeholders for a production cluster with Vault. Set them in
# a variable file and run:
#
#   nomad job run -var-file=autoscaler.vars.hcl autoscaler.nomad.hcl
#
# No credential is in this file, in its variables or in the rendered agent
# configuration (which sits in the task's local/ directory, readable through
# `nomad alloc fs`). Credentials are rendered by templates into the task's
# secrets/ directory, which no API serves:
#
#   use_vault = true  (default): from Vault. The task gets a Vault token with
#     var.vault_policies, which must allow reading
#       - var.vault_awx_secret   (KV v2, field "token"): the AWX token;
#       - var.vault_aws_secret   (the AWS secrets engine, a role of type
#         iam_user or assumed_role) unless aws_instance_role = true;
#       - var.vault_nomad_secret (the Nomad secrets engine) when nomad_acl =
#         true: a token for a Nomad ACL policy with what the plugins need.
#   use_vault = false: from the Nomad Variable nomad/jobs/autoscaler, which
#     this job's tasks read without any ACL policy (write it with an ACL token
#     that may write variables there). Items: awx_token (when awx_url is set),
#     aws_access_key_id and aws_secret_access_key (unless aws_instance_role),
#     nomad_token (when nomad_acl). For example, with a file holding
#     items { awx_token = "..." aws_access_key_id = "..." ... }:
#       nomad var put -in hcl nomad/jobs/autoscaler @autoscaler-secrets.nv.hcl
#     This is also how the local cloud of the tests runs this job: it has no
#     Vault (e2e/samples_job_test.go).
#
# TLS to Nomad: set nomad_ca_cert, nomad_client_cert with nomad_client_key,
# and nomad_tls_server_name (all empty: plain HTTP). Each of the first three
# is the content of a file rendered into secrets/ (the agent's nomad block
# names the files): a certificate may be its PEM text (public), but the key
# must be a template that reads it from Vault or the Nomad Variable. Nomad
# keeps a job's variables with the job, readable by whoever may read it, so
# a key in a variable would leak (a value holding "PRIVATE KEY" is refused).
# With Vault PKI, the same `secret` call in all three (identical calls are
# one request, so one certificate; the role name and common name are yours):
#   nomad_ca_cert     = "{{ with secret \"pki/issue/nomad-autoscaler\" \"common_name=autoscaler.global.nomad\" \"ttl=720h\" }}{{ .Data.issuing_ca }}{{ end }}"
#   nomad_client_cert = "{{ with secret \"pki/issue/nomad-autoscaler\" \"common_name=autoscaler.global.nomad\" \"ttl=720h\" }}{{ .Data.certificate }}{{ end }}"
#   nomad_client_key  = "{{ with secret \"pki/issue/nomad-autoscaler\" \"common_name=autoscaler.global.nomad\" \"ttl=720h\" }}{{ .Data.private_key }}{{ end }}"
# (the task's Vault policies must allow updating that path). Files on the
# node (such as Nomad's own TLS material) are out of reach: templates cannot
# read the node's files (the client's template file sandbox). Without
# Vault, put the key into the Nomad Variable as the item nomad_client_key
# (the certificates too, or give those as PEM text):
#   nomad_client_key  = "{{ with nomadVar \"nomad/jobs/autoscaler\" }}{{ .nomad_client_key }}{{ end }}"
# A rendered file that changes (a renewed certificate) makes the agent
# reload (SIGHUP): it reads the files again for its and its plugins' Nomad
# clients. Prefer certificates of weeks: each reload restarts the plugins.
#
# Variables are read by HCL2 at registration: the vault block and the
# templates that are not needed are left out with `dynamic` blocks, so the
# job registered without Vault has no vault block at all.

variable "region" {
  description = "Nomad region of the job."
  type        = string
  default     = "global"
}

variable "datacenters" {
  description = "Datacenters the agent may run in."
  type        = list(string)
  default     = ["dc1"]
}

variable "pool_node_class" {
  description = "Node class of the Spot Fleet's Nomad clients: the pool this agent scales. The agent never runs on it."
  type        = string
  default     = "spot"
}

variable "node_class" {
  description = "Node class of the stable (on-demand) nodes the agent runs on; empty: any node outside the pool."
  type        = string
  default     = ""
}

variable "driver" {
  description = "Task driver: exec (isolated; the default) or raw_exec where exec is not available."
  type        = string
  default     = "exec"

  validation {
    condition     = contains(["exec", "raw_exec"], var.driver)
    error_message = "The driver must be exec or raw_exec."
  }
}

variable "agent_command" {
  description = "Path of the nomad-autoscaler binary on the node, used when agent_artifact_url is empty."
  type        = string
  default     = "/usr/local/bin/nomad-autoscaler"
}

variable "agent_artifact_url" {
  description = "URL of an archive holding the nomad-autoscaler binary at its top (such as the official release zip); empty: use agent_command."
  type        = string
  default     = ""
}

variable "agent_artifact_checksum" {
  description = "Checksum of agent_artifact_url, as go-getter takes it (sha256:<hex>)."
  type        = string
  default     = ""
}

variable "plugins_artifact_url" {
  description = "URL of the plugins archive: a tar.gz of apm-node, strategy-cpu-target and target-spotfleet (the plugins/ folder after `make build`) at its top."
  type        = string
  default     = "https://artifacts.example.internal/nomad-spotfleet/plugins.tar.gz"
}

variable "plugins_artifact_checksum" {
  description = "Checksum of the plugins archive (sha256:<hex>, from `sha256sum plugins.tar.gz`). Required: the agent runs what it fetches."
  type        = string
  # A placeholder: replace it, or the download fails its check.
  default = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

  validation {
    condition     = regex_replace(var.plugins_artifact_checksum, "^(md5|sha1|sha256|sha512):[0-9a-fA-F]+$", "") == ""
    error_message = "The plugins_artifact_checksum must be <type>:<hex digest>, such as sha256:<64 hex digits>."
  }
}

variable "log_level" {
  description = "The agent's log level."
  type        = string
  default     = "INFO"
}

variable "nomad_address" {
  description = "Nomad API address for the agent; empty: http://<node IP>:4646."
  type        = string
  default     = ""
}

variable "nomad_acl" {
  description = "Nomad ACLs are on: render a Nomad token (NOMAD_TOKEN) for the agent and its plugins."
  type        = bool
  default     = true
}

variable "nomad_ca_cert" {
  description = "TLS to Nomad: the CA certificate that signed the Nomad agents' certificates, as PEM text or a template that renders it (see the top of the file); rendered to secrets/nomad-ca.pem, the agent's ca_cert. Empty: the system's CAs."
  type        = string
  default     = ""

  validation {
    condition     = replace(var.nomad_ca_cert, "PRIVATE KEY", "") == var.nomad_ca_cert
    error_message = "The nomad_ca_cert holds a private key; it takes the CA certificate only (PEM text or a template)."
  }
}

variable "nomad_client_cert" {
  description = "TLS to Nomad: the agent's client certificate (for Nomad's verify_https_client), as PEM text or a template that renders it; rendered to secrets/nomad-client.pem, the agent's client_cert. Needs nomad_client_key."
  type        = string
  default     = ""

  validation {
    condition     = replace(var.nomad_client_cert, "PRIVATE KEY", "") == var.nomad_client_cert
    error_message = "The nomad_client_cert holds a private key: Nomad stores job variables with the job, readable by whoever may read it. Give the certificate here and the key through nomad_client_key, as a template reading it from Vault or the Nomad Variable."
  }
}

variable "nomad_client_key" {
  description = "TLS to Nomad: a template that renders the client certificate's private key from Vault or the Nomad Variable (never the key itself); rendered to secrets/nomad-client-key.pem, the agent's client_key. Needs nomad_client_cert."
  type        = string
  default     = ""

  validation {
    condition     = replace(var.nomad_client_key, "PRIVATE KEY", "") == var.nomad_client_key
    error_message = "The nomad_client_key holds a private key itself: Nomad stores job variables with the job, readable by whoever may read it. Give a template that reads the key from Vault or the Nomad Variable, such as {{ with nomadVar \"nomad/jobs/autoscaler\" }}{{ .nomad_client_key }}{{ end }}."
  }
}

variable "nomad_tls_server_name" {
  description = "TLS to Nomad: the name to verify the Nomad agent's certificate against, such as client.global.nomad for the node's own client agent (the default address) or server.global.nomad for a server, when the address is an IP. Empty: the address's host."
  type        = string
  default     = ""
}

variable "use_vault" {
  description = "Credentials from Vault (true) or from the Nomad Variable nomad/jobs/autoscaler (false)."
  type        = bool
  default     = true
}

variable "vault_policies" {
  description = "Vault policies of the task's Vault token (use_vault)."
  type        = list(string)
  default     = ["nomad-autoscaler"]
}

variable "vault_awx_secret" {
  description = "Vault KV v2 path of the AWX token (field token), used when use_vault and awx_url are set."
  type        = string
  default     = "secret/data/nomad-autoscaler/awx"
}

variable "vault_aws_secret" {
  description = "Vault AWS secrets engine credentials path, used when use_vault is set and aws_instance_role is not."
  type        = string
  default     = "aws/creds/nomad-autoscaler"
}

variable "vault_nomad_secret" {
  description = "Vault Nomad secrets engine credentials path, used when use_vault and nomad_acl are set."
  type        = string
  default     = "nomad/creds/nomad-autoscaler"
}

variable "aws_region" {
  description = "AWS region of the Spot Fleet and the interruption queue."
  type        = string
  default     = "eu-west-1"
}

variable "aws_instance_role" {
  description = "Use the node's EC2 instance profile for AWS (aws_credential_provider = ec2_role) instead of rendered keys."
  type        = bool
  default     = false
}

variable "aws_endpoint" {
  description = "AWS API endpoint override; empty: AWS. Only for emulators (the local cloud's moto)."
  type        = string
  default     = ""
}

variable "interruption_queue_url" {
  description = "SQS queue of the EventBridge interruption rules (../infra/); empty turns interruption handling off."
  type        = string
  default     = "https://sqs.eu-west-1.amazonaws.com/123456789012/nomad-spot-interruptions"
}

variable "awx_url" {
  description = "Base URL of AWX for the provisioning hooks; empty: no AWX (and no AWX token)."
  type        = string
  default     = "https://awx.example.com"
}

variable "apm_sample_interval" {
  description = "apm-node sample_interval."
  type        = string
  default     = "10s"
}

variable "apm_node_warmup" {
  description = "apm-node node_warmup."
  type        = string
  default     = "60s"
}

# The cluster policy (../policies/spot-pool.hcl; the defaults are its values).

variable "spot_fleet_request_id" {
  description = "The Spot Fleet request (sfr-...) to scale."
  type        = string
  default     = "sfr-0123456789abcdef0"
}

variable "pool_min" {
  type    = number
  default = 1
}

variable "pool_max" {
  type    = number
  default = 20
}

variable "target_cpu" {
  description = "Average pool CPU (percent) that strategy-cpu-target holds."
  type        = number
  default     = 75
}

variable "cpu_metric" {
  description = "apm-node metric of the check: host_cpu, workload_cpu or allocated_cpu."
  type        = string
  default     = "host_cpu"
}

variable "evaluation_interval" {
  type    = string
  default = "10s"
}

variable "cooldown" {
  description = "The policy's cooldown, cooldown_on_scale_up and the target's restart_cooldown."
  type        = string
  default     = "2m"
}

variable "query_window" {
  type    = string
  default = "5m"
}

variable "node_id_attribute" {
  description = "Node attribute or meta key holding the EC2 instance id."
  type        = string
  default     = "unique.platform.aws.instance-id"
}

variable "node_warmup" {
  description = "The target's node_warmup: apm_node_warmup plus apm_sample_interval."
  type        = string
  default     = "70s"
}

variable "policy_target_extra" {
  description = "More lines for the policy's target block: the provisioning hooks (see below)."
  type        = string
  default     = ""
}

locals {
  # Readable by this job's tasks without an ACL policy (the job's own path).
  nomad_var = "nomad/jobs/autoscaler"

  # Any TLS setting makes the default address https.
  nomad_tls     = var.nomad_ca_cert != "" || var.nomad_client_cert != "" || var.nomad_client_key != "" || var.nomad_tls_server_name != ""
  nomad_address = var.nomad_address != "" ? var.nomad_address : "${local.nomad_tls ? "https" : "http"}://{{ env \"attr.unique.network.ip-address\" }}:4646"

  # Refused at registration (a variable's validation sees only itself): a
  # client certificate without its key or a key without its certificate.
  nomad_tls_pair = (var.nomad_client_cert == "") == (var.nomad_client_key == "") ? "" : parseint("nomad_client_cert and nomad_client_key go together: set both or neither", 10)

  # Lines of an environment file: NAME=<value from Vault or the variable>.
  #
  # From Vault, one read of the AWS secrets engine renders the three lines:
  # one lease, so the key id, the secret and the session token always
  # belong together. The role's credential_type matters: the credentials of
  # an assumed_role (or federation_token) role are STS credentials, whose
  # lease cannot be renewed: they expire with their TTL (1h by default) and
  # the template then restarts the task for new ones, every hour, and each
  # restart refills apm-node's window and re-applies restart_cooldown.
  # Prefer an iam_user role with a long TTL (its lease is renewed, the key
  # stays until the role's max_ttl), or aws_instance_role = true (no key).
  aws_env = var.use_vault ? join("", [
    "{{ with secret \"${var.vault_aws_secret}\" }}",
    "AWS_ACCESS_KEY_ID={{ .Data.access_key }}\n",
    "AWS_SECRET_ACCESS_KEY={{ .Data.secret_key }}",
    "{{ with .Data.security_token }}\nAWS_SESSION_TOKEN={{ . }}{{ end }}",
    "{{ end }}",
    ]) : join("\n", [
    "AWS_ACCESS_KEY_ID={{ with nomadVar \"${local.nomad_var}\" }}{{ .aws_access_key_id }}{{ end }}",
    "AWS_SECRET_ACCESS_KEY={{ with nomadVar \"${local.nomad_var}\" }}{{ .aws_secret_access_key }}{{ end }}",
  ])
  nomad_env = var.use_vault ? "NOMAD_TOKEN={{ with secret \"${var.vault_nomad_secret}\" }}{{ .Data.secret_id }}{{ end }}" : "NOMAD_TOKEN={{ with nomadVar \"${local.nomad_var}\" }}{{ .nomad_token }}{{ end }}"
  env_lines = concat(var.aws_instance_role ? [] : [local.aws_env], var.nomad_acl ? [local.nomad_env] : [])

  awx_token = var.use_vault ? "{{ with secret \"${var.vault_awx_secret}\" }}{{ .Data.data.token }}{{ end }}" : "{{ with nomadVar \"${local.nomad_var}\" }}{{ .awx_token }}{{ end }}"

  # The credential templates, into the secrets directory.
  secret_templates = concat(
    length(local.env_lines) == 0 ? [] : [{
      # AWS keys and the Nomad token as the agent's environment: the plugins
      # inherit it (the AWS default credential chain, NOMAD_TOKEN). Read at
      # start only, so a new lease restarts the task.
      destination   = "secrets/agent.env"
      data          = "${join("\n", local.env_lines)}\n"
      env           = true
      change_mode   = "restart"
      change_signal = ""
    }],
    var.awx_url == "" ? [] : [{
      # target-spotfleet reads the file again for every AWX request, so a
      # rotated token needs no restart.
      destination   = "secrets/awx-token"
      data          = "${local.awx_token}\n"
      env           = false
      change_mode   = "noop"
      change_signal = ""
    }],
    # TLS to Nomad: the files of the agent's nomad block. The agent reads
    # them when it builds its Nomad client, at start and on SIGHUP (which
    # also reconfigures the plugins, whose Nomad clients use them too).
    [for f in [
      { name = "nomad-ca.pem", data = var.nomad_ca_cert },
      { name = "nomad-client.pem", data = var.nomad_client_cert },
      { name = "nomad-client-key.pem", data = var.nomad_client_key },
      ] : {
      destination   = "secrets/${f.name}"
      data          = "${f.data}\n"
      env           = false
      change_mode   = "signal"
      change_signal = "SIGHUP"
    } if f.data != ""],
  )
}

job "autoscaler" {
  region      = var.region
  datacenters = var.datacenters
  type        = "service"

  # Run it on stable (on-demand) nodes, never on the spot pool it scales.
  constraint {
    attribute = "${node.class}"
    operator  = "!="
    value     = var.pool_node_class
  }

  dynamic "constraint" {
    for_each = var.node_class == "" ? [] : [var.node_class]
    content {
      attribute = "${node.class}"
      value     = constraint.value
    }
  }

  group "autoscaler" {
    # One agent per pool: two would scale the same fleet twice.
    count = 1

    # Nor during a network partition: by default the servers replace the
    # allocation of a node that misses its heartbeats while the agent may
    # still run there, cut off from Nomad but not from AWS. With this, that
    # node's client stops the agent after 1m without the servers, and the
    # servers place the replacement only once that time (and kill_timeout)
    # has passed. The price: if every server is down for 1m, the agent stops
    # too (it can do nothing without Nomad). This is the Nomad 1.6 field;
    # from Nomad 1.8 write disconnect { stop_on_client_after = "1m" }
    # instead (the field is deprecated there, ignored from 1.10).
    stop_after_client_disconnect = "1m"

    network {
      port "http" {}
    }

    service {
      provider = "nomad"
      name     = "nomad-autoscaler"
      port     = "http"

      check {
        type     = "http"
        path     = "/v1/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    task "autoscaler" {
      driver       = var.driver
      kill_timeout = "20s"

      # Nomad templates only; the task itself does not get VAULT_TOKEN.
      # `policies` is the legacy workflow (Nomad's servers create the task's
      # token with their own Vault token). With Nomad >= 1.7 workload
      # identity, the task logs in to Vault with its identity instead: set
      # `role` (a role of Vault's JWT auth method for Nomad) in place of
      # `policies`, whose policies then allow the paths below.
      dynamic "vault" {
        for_each = var.use_vault ? [1] : []
        content {
          policies    = var.vault_policies
          env         = false
          change_mode = "restart"
        }
      }

      artifact {
        source      = var.plugins_artifact_url
        destination = "local/plugins"
        options {
          checksum = var.plugins_artifact_checksum
        }
      }

      dynamic "artifact" {
        for_each = var.agent_artifact_url == "" ? [] : [var.agent_artifact_url]
        content {
          source      = artifact.value
          destination = "local/bin"
          options {
            checksum = var.agent_artifact_checksum
          }
        }
      }

      config {
        command = var.agent_artifact_url == "" ? var.agent_command : "local/bin/nomad-autoscaler"
        args    = ["agent", "-config", "${NOMAD_TASK_DIR}/config.hcl"]
      }

      # The agent configuration (../agent.hcl with this job's paths). No
      # secret here: those come from the templates below. A change makes the
      # agent reload it (SIGHUP restarts the plugins with the new config).
      template {
        destination   = "local/config.hcl"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<EOH
log_level  = "${var.log_level}"
plugin_dir = "{{ env "NOMAD_TASK_DIR" }}/plugins"

nomad {
  address = "${local.nomad_address}"
  region  = "${var.region}"
  # The token: NOMAD_TOKEN from secrets/agent.env when nomad_acl is set.
%{if var.nomad_ca_cert != ""~}
  ca_cert         = "{{ env "NOMAD_SECRETS_DIR" }}/nomad-ca.pem"
%{endif~}
%{if var.nomad_client_cert != ""~}
  client_cert     = "{{ env "NOMAD_SECRETS_DIR" }}/nomad-client.pem"
  client_key      = "{{ env "NOMAD_SECRETS_DIR" }}/nomad-client-key.pem"
%{endif~}
%{if var.nomad_tls_server_name != ""~}
  tls_server_name = "${var.nomad_tls_server_name}"
%{endif~}
}

http {
  bind_address = "{{ env "NOMAD_IP_http" }}"
  bind_port    = {{ env "NOMAD_PORT_http" }}
}

policy {
  dir                         = "{{ env "NOMAD_TASK_DIR" }}/policies"
  default_evaluation_interval = "${var.evaluation_interval}"
  default_cooldown            = "${var.cooldown}"
}

apm "apm-node" {
  driver = "apm-node"
  config = {
    sample_interval    = "${var.apm_sample_interval}"
    node_warmup        = "${var.apm_node_warmup}"
    admission_meta_key = "spotfleet_admission"
  }
}

strategy "strategy-cpu-target" {
  driver = "strategy-cpu-target"
}

target "spotfleet" {
  driver = "target-spotfleet"
  config = {
    aws_region = "${var.aws_region}"
%{if var.aws_instance_role~}
    aws_credential_provider = "ec2_role"
%{else~}
    # AWS keys: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
    # AWS_SESSION_TOKEN) from secrets/agent.env, the default chain.
%{endif~}
%{if var.aws_endpoint != ""~}
    aws_endpoint = "${var.aws_endpoint}"
%{endif~}
%{if var.interruption_queue_url != ""~}
    interruption_queue_url = "${var.interruption_queue_url}"
%{endif~}
%{if var.awx_url != ""~}
    awx_url        = "${var.awx_url}"
    awx_token_file = "{{ env "NOMAD_SECRETS_DIR" }}/awx-token"
%{endif~}
  }
}
EOH
      }

      dynamic "template" {
        for_each = local.secret_templates
        content {
          destination   = template.value.destination
          data          = template.value.data
          env           = template.value.env
          change_mode   = template.value.change_mode
          change_signal = template.value.change_signal
        }
      }

      # The cluster policy: ../policies/spot-pool.hcl with this job's
      # variables, its provisioning hooks left out: they need the AWX job
      # templates, and the awx hooks awx_url (e2e/samples_job_test.go checks
      # that everything else agrees). The hooks go into the target block
      # through policy_target_extra: copy the launch_hooks, terminate_hooks
      # and hook_* lines of ../policies/spot-pool.hcl (docs/hooks.md), for
      # example in the variable file:
      #
      #   policy_target_extra = <<EOT
      #   launch_hooks                = "configure"
      #   hook_configure_type         = "awx"
      #   hook_configure_job_template = "spot-node-configure"
      #   hook_configure_limit        = "{{private_ip}}"
      #   EOT
      #
      # Hook settings use {{...}}, as Nomad's templates do: this template
      # uses [[ and ]] as its delimiters, so they reach the policy unchanged.
      # A change makes the agent reload its policies (SIGHUP).
      template {
        destination     = "local/policies/spot-pool.hcl"
        change_mode     = "signal"
        change_signal   = "SIGHUP"
        left_delimiter  = "[["
        right_delimiter = "]]"
        data            = <<EOH
scaling "spot_pool" {
  enabled = true
  min     = ${var.pool_min}
  max     = ${var.pool_max}

  policy {
    evaluation_interval  = "${var.evaluation_interval}"
    cooldown             = "${var.cooldown}"
    cooldown_on_scale_up = "${var.cooldown}"

    check "cpu" {
      source       = "apm-node"
      query        = "${var.cpu_metric} node_class=${var.pool_node_class}"
      query_window = "${var.query_window}"

      group        = "pool"

      strategy "strategy-cpu-target" {
        target = "${var.target_cpu}"
      }
    }

    check "unplaced" {
      source       = "apm-node"
      query        = "unplaced_nodes node_class=${var.pool_node_class}"
      query_window = "1m"
      group        = "pool"

      strategy "strategy-cpu-target" {
        signal = "unplaced"
      }
    }

    target "spotfleet" {
      spot_fleet_request_id         = "${var.spot_fleet_request_id}"
      node_class                    = "${var.pool_node_class}"
      node_id_attribute             = "${var.node_id_attribute}"
      node_drain_deadline           = "10m"
      node_drain_ignore_system_jobs = "false"
      node_selector_strategy        = "least_busy"
      node_purge                    = "true"
      restart_cooldown              = "${var.cooldown}"
      interruption_drain_deadline   = "90s"
      rebalance_action              = "ignore"
      admission_meta_key            = "spotfleet_admission"
      node_warmup                   = "${var.node_warmup}"
%{if var.policy_target_extra != ""~}
${var.policy_target_extra}
%{endif~}
    }
  }
}
EOH
      }

      resources {
        cpu    = 200
        memory = 256
      }

      logs {
        max_files     = 3
        max_file_size = 10
      }
    }
  }
}
