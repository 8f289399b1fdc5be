# The Spot Fleet of Nomad clients that target-spotfleet scales: a maintain
# request over every instance type in every subnet, launched from one launch
# template whose user data closes the admission gate before Nomad starts.
# The same request as spot-fleet-request.json.

locals {
  pool_tags = { (var.pool_tag.key) = var.pool_tag.value }

  # Every instance type in every subnet (availability zone): each pair is a
  # spot pool the allocation strategy can choose from. Weight 1 each: the
  # fleet's capacity is a node count, as the policy's min and max are.
  fleet_overrides = [
    for pair in setproduct(var.instance_types, var.subnet_ids) : {
      instance_type = pair[0]
      subnet_id     = pair[1]
    }
  ]

  fleet_arn = "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}:spot-fleet-request/${aws_spot_fleet_request.pool.id}"
}

resource "aws_launch_template" "nomad_client" {
  name                   = var.launch_template_name
  description            = "Nomad clients of the spot pool (target-spotfleet)"
  image_id               = var.ami_id
  vpc_security_group_ids = var.security_group_ids
  # No instance_type: the fleet's overrides give it.

  user_data = base64encode(templatefile("${path.module}/user-data.sh", {
    node_class         = var.node_class
    admission_meta_key = var.admission_meta_key
    node_dir           = var.node_dir
  }))

  dynamic "iam_instance_profile" {
    for_each = var.instance_profile_name == null ? [] : [var.instance_profile_name]
    content {
      name = iam_instance_profile.value
    }
  }

  # IMDSv2 only; Nomad's AWS fingerprinter (unique.platform.aws.instance-id,
  # which maps nodes to instances) reads it with a session token.
  metadata_options {
    http_endpoint = "enabled"
    http_tokens   = "required"
  }

  # The pool tag on every instance: the agent's IAM conditions rely on it.
  tag_specifications {
    resource_type = "instance"
    tags          = local.pool_tags
  }

  tags = local.pool_tags
}

# The role Spot Fleet uses to launch, tag and terminate instances for the
# request (AWS's managed AmazonEC2SpotFleetTaggingRole policy).
data "aws_iam_policy_document" "spot_fleet_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["spotfleet.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "spot_fleet" {
  name               = "${var.launch_template_name}-spot-fleet"
  assume_role_policy = data.aws_iam_policy_document.spot_fleet_assume.json
}

resource "aws_iam_role_policy_attachment" "spot_fleet" {
  role       = aws_iam_role.spot_fleet.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonEC2SpotFleetTaggingRole"
}

resource "aws_spot_fleet_request" "pool" {
  iam_fleet_role = aws_iam_role.spot_fleet.arn
  # The role must hold its policy before the fleet launches and tags
  # instances: the provider retries only an invalid role, not a role
  # without permissions.
  depends_on = [aws_iam_role_policy_attachment.spot_fleet]

  # maintain: AWS replaces interrupted instances; target-spotfleet checks
  # that it does and acts when it does not.
  fleet_type          = "maintain"
  target_capacity     = var.initial_capacity
  allocation_strategy = var.allocation_strategy
  # Lowering the target capacity never terminates anything by itself: the
  # plugin drains the nodes it chose, lowers the capacity, then terminates
  # exactly those instances. (The provider spells the API's noTermination
  # with a capital N.)
  excess_capacity_termination_policy = "NoTermination"
  # terraform destroy, or a change that replaces the request (new overrides,
  # a new role), cancels the request but leaves its instances running as
  # Nomad nodes, so that nothing is terminated without a drain. Drain and
  # terminate them yourself afterwards (README.md).
  terminate_instances_on_delete   = "false"
  instance_interruption_behaviour = "terminate"
  # Capacity Rebalancing (spot_maintenance_strategies) stays off: the plugin
  # handles rebalance recommendations itself (docs/interruptions.md).

  launch_template_config {
    launch_template_specification {
      id = aws_launch_template.nomad_client.id
      # $Latest: a new template version (new user data, new AMI) applies to
      # the next launches without replacing the request.
      version = "$Latest"
    }

    dynamic "overrides" {
      for_each = local.fleet_overrides
      content {
        instance_type     = overrides.value.instance_type
        subnet_id         = overrides.value.subnet_id
        weighted_capacity = 1
      }
    }
  }

  # On the request itself: ModifySpotFleetRequest and the plugin's tags on
  # the request are allowed on a request with this tag only (iam.tf).
  tags = local.pool_tags

  lifecycle {
    # target-spotfleet owns the target capacity; Terraform must not set it
    # back on the next apply.
    ignore_changes = [target_capacity]
  }
}
