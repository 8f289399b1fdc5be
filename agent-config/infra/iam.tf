# The autoscaler agent's AWS permissions: exactly the EC2 and SQS actions
# target-spotfleet calls (internal/fleet's EC2API, the interruption watcher's
# SQSAPI), each on the narrowest resource AWS allows. The same statements as
# iam-policy.json, which names the fleet by its tag where this file knows
# its ARN.

locals {
  ec2_arn_prefix = "arn:${data.aws_partition.current.partition}:ec2:${var.region}:${data.aws_caller_identity.current.account_id}"
}

data "aws_iam_policy_document" "autoscaler" {
  # Describe calls support no resource-level permissions: "*" is the only
  # resource AWS accepts for them.
  statement {
    sid    = "ReadFleet"
    effect = "Allow"
    actions = [
      "ec2:DescribeSpotFleetRequests",
      "ec2:DescribeSpotFleetInstances",
      "ec2:DescribeInstances",
      "ec2:DescribeTags",
      "ec2:DescribeLaunchTemplateVersions",
    ]
    resources = ["*"]
  }

  # Changing the target capacity: this fleet only.
  statement {
    sid       = "ScaleFleet"
    effect    = "Allow"
    actions   = ["ec2:ModifySpotFleetRequest"]
    resources = [local.fleet_arn]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.pool_tag.key}"
      values   = [var.pool_tag.value]
    }
  }

  # Terminating the instances it drained: the pool's instances only.
  statement {
    sid       = "TerminatePoolInstances"
    effect    = "Allow"
    actions   = ["ec2:TerminateInstances"]
    resources = ["${local.ec2_arn_prefix}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.pool_tag.key}"
      values   = [var.pool_tag.value]
    }
  }

  # The plugin's bookkeeping tags (nomad-autoscaler:scale-in, :interrupted,
  # :farewell:<id> ...) on the pool's instances and on the request. Only
  # keys of its own prefix, and never a call without keys (DeleteTags
  # without keys deletes every tag), so it cannot move an instance into or
  # out of the pool by its pool tag.
  statement {
    sid     = "MarkPoolResources"
    effect  = "Allow"
    actions = ["ec2:CreateTags", "ec2:DeleteTags"]
    resources = [
      "${local.ec2_arn_prefix}:instance/*",
      local.fleet_arn,
    ]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/${var.pool_tag.key}"
      values   = [var.pool_tag.value]
    }
    condition {
      test     = "ForAllValues:StringLike"
      variable = "aws:TagKeys"
      values   = ["nomad-autoscaler:*"]
    }
    condition {
      test     = "Null"
      variable = "aws:TagKeys"
      values   = ["false"]
    }
  }

  # The interruption watcher: receive, delete, and extend the visibility of
  # the queue's messages.
  statement {
    sid    = "ReceiveInterruptions"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
    ]
    resources = [aws_sqs_queue.interruptions.arn]
  }
}

resource "aws_iam_policy" "autoscaler" {
  name        = "${var.launch_template_name}-autoscaler"
  description = "target-spotfleet: scale the Spot Fleet ${var.launch_template_name} and read its interruption queue"
  policy      = data.aws_iam_policy_document.autoscaler.json
  tags        = local.pool_tags
}

resource "aws_iam_role_policy_attachment" "autoscaler" {
  count      = var.autoscaler_role_name == null ? 0 : 1
  role       = var.autoscaler_role_name
  policy_arn = aws_iam_policy.autoscaler.arn
}
