#!/bin/bash
# User data of the launch template "nomad-spot-client" (fleet.tf,
# spot-fleet-request.json): the part of a spot node's Nomad client
# configuration that target-spotfleet's admission gate and hooks need
# (docs/hooks.md). It assumes an AMI with Nomad installed and configured to
# join the cluster (servers, datacenter, TLS in /etc/nomad.d/), and with
# nomad.service DISABLED: a client that started before this script ran would
# register without the gate and take work at once.
#
# This file is a Terraform template: fleet.tf renders it with templatefile()
# and fills in its three placeholders, node_class, admission_meta_key and
# node_dir (each written as a dollar sign and the name in braces). It holds
# no other template syntax and the shell below never writes its own
# variables in that form, so replacing the three placeholders as text (with
# sed, as README.md shows) gives the same script without Terraform.
set -euo pipefail

# Where monitoring.yml (the policy's configure hook) writes its marker; the
# policy passes it to AWX as the extra variable node_dir ({{node.meta.node_dir}}).
NODE_DIR="${node_dir}"
mkdir -p /etc/nomad.d "$NODE_DIR"

cat >/etc/nomad.d/spot-client.hcl <<EOF
client {
  enabled    = true
  # The pool: the cluster policy's node_class and apm-node's query.
  node_class = "${node_class}"

  meta {
    # The admission gate: the pool's jobs constrain on the meta key
    # ${admission_meta_key} being "admitted", so nothing of theirs is placed
    # here until target-spotfleet has run the launch hooks and set "admitted"
    # through dynamic node metadata. The node registers with this value, so
    # there is no moment at which it is open to work.
    ${admission_meta_key} = "pending"
    node_dir = "$NODE_DIR"
  }
}
EOF

systemctl enable --now nomad

# Only for a hook of type awx_callback: ask AWX to run the job template
# against this host (its "Provisioning Callback" must be on). AWX finds the
# host in the template's inventory by the address this request comes from;
# --retry-all-errors (curl 7.71 and later) also retries AWX's 400 "No matching
# host could be found" while a dynamic inventory has not listed the instance
# yet. The host config key is not a strong secret (anyone who can read this
# user data can start that one template), but keep it out of logs.
#
# AWX_URL=https://awx.example.com
# AWX_TEMPLATE_ID=42
# AWX_HOST_CONFIG_KEY=replace-with-the-templates-host-config-key
# curl -fsS --retry 20 --retry-delay 15 --retry-all-errors \
#   --data "host_config_key=$AWX_HOST_CONFIG_KEY" \
#   "$AWX_URL/api/v2/job_templates/$AWX_TEMPLATE_ID/callback/"
