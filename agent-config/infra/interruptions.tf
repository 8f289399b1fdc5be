# Spot interruption intake for target-spotfleet (see docs/interruptions.md):
# an SQS queue, the queue policy that lets EventBridge write to it, three
# EventBridge rules for the EC2 events the plugin acts on, and the IAM
# permissions the autoscaler agent needs on the queue.
#
# Drop this file into a Terraform configuration whose hashicorp/aws provider
# (v5; checked with v5.100) is set to the fleet's region: EC2 events are
# regional, so the rules, the queue and the fleet share one region. One queue
# per account and region serves every fleet; poll it from one autoscaler
# agent only.
# Then set the agent's interruption_queue_url to the output of the same name.

variable "interruption_queue_name" {
  description = "Name of the SQS queue that receives the EC2 events."
  type        = string
  default     = "nomad-spot-interruptions"
}

variable "autoscaler_role_name" {
  description = "IAM role of the autoscaler agent; when set, its queue permissions are attached to it as an inline policy."
  type        = string
  default     = null
}

locals {
  # detail-types and states as target-spotfleet parses them; instances that
  # become pending or running need nothing, so the state rule leaves them out.
  interruption_rules = {
    "interruption-warning" = {
      description = "Spot interruption warnings (2 minutes before the reclaim) for target-spotfleet"
      pattern = {
        source        = ["aws.ec2"]
        "detail-type" = ["EC2 Spot Instance Interruption Warning"]
      }
    }
    "rebalance-recommendation" = {
      description = "Rebalance recommendations (elevated interruption risk) for target-spotfleet"
      pattern = {
        source        = ["aws.ec2"]
        "detail-type" = ["EC2 Instance Rebalance Recommendation"]
      }
    }
    "instance-state-change" = {
      description = "Instances that stop or terminate, warned or not, for target-spotfleet"
      pattern = {
        source        = ["aws.ec2"]
        "detail-type" = ["EC2 Instance State-change Notification"]
        detail        = { state = ["stopping", "stopped", "shutting-down", "terminated"] }
      }
    }
  }
}

resource "aws_sqs_queue" "interruptions" {
  name = var.interruption_queue_name
  # A warning is worthless after its two minutes; an hour covers an agent
  # restart and outlasts the plugin's 10-minute retry of unknown instances.
  message_retention_seconds = 3600
  # The plugin asks for 60 s on every receive and long-polls 20 s itself;
  # the queue's defaults say the same for any other reader.
  visibility_timeout_seconds = 60
  receive_wait_time_seconds  = 20
  # SQS-managed keys: EventBridge and the agent need no KMS permission.
  sqs_managed_sse_enabled = true
  tags = {
    "nomad-pool" = "spot"
  }
}

resource "aws_cloudwatch_event_rule" "interruptions" {
  for_each      = local.interruption_rules
  name          = "nomad-spot-${each.key}"
  description   = each.value.description
  event_pattern = jsonencode(each.value.pattern)
}

resource "aws_cloudwatch_event_target" "interruptions" {
  for_each  = aws_cloudwatch_event_rule.interruptions
  rule      = each.value.name
  target_id = var.interruption_queue_name
  arn       = aws_sqs_queue.interruptions.arn
}

data "aws_iam_policy_document" "interruption_queue" {
  statement {
    sid       = "EventBridgeSendsEC2Events"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.interruptions.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [for rule in aws_cloudwatch_event_rule.interruptions : rule.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "interruptions" {
  queue_url = aws_sqs_queue.interruptions.id
  policy    = data.aws_iam_policy_document.interruption_queue.json
}

# What the agent needs on the queue (the same statements as in iam-policy.json).
data "aws_iam_policy_document" "autoscaler_interruptions" {
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
  # Not called by the plugin; lets an operator with the agent's role read
  # the queue's depth. Remove it for the strictest policy.
  statement {
    sid       = "OptionalInspectInterruptionQueue"
    effect    = "Allow"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.interruptions.arn]
  }
}

resource "aws_iam_role_policy" "autoscaler_interruptions" {
  count  = var.autoscaler_role_name == null ? 0 : 1
  name   = "nomad-spot-interruptions"
  role   = var.autoscaler_role_name
  policy = data.aws_iam_policy_document.autoscaler_interruptions.json
}

output "interruption_queue_url" {
  description = "Set the agent's interruption_queue_url (target \"spotfleet\" config) to this."
  value       = aws_sqs_queue.interruptions.url
}

output "interruption_queue_arn" {
  value = aws_sqs_queue.interruptions.arn
}

output "autoscaler_interruptions_policy_json" {
  description = "The agent's queue permissions, for a role managed elsewhere."
  value       = data.aws_iam_policy_document.autoscaler_interruptions.json
}
