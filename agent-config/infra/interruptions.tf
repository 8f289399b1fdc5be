# Spot interruption intake for target-spotfleet (see docs/interruptions.md):
# an SQS queue, the queue policy that lets EventBridge write to it, and three
# EventBridge rules for the EC2 events the plugin acts on. The same as
# sqs-queue.json, sqs-queue-policy.json and eventbridge-rules.json; the
# agent's permissions on the queue are in iam.tf.
#
# EC2 events are regional, so the rules, the queue and the fleet share one
# region. One queue per account and region serves every fleet; poll it from
# one autoscaler agent only. Set the agent's interruption_queue_url to the
# output of the same name.

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
  tags                    = local.pool_tags
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
  policy_id = var.interruption_queue_name

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
