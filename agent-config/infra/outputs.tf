# What the agent's configuration needs (README.md shows where each goes).

output "spot_fleet_request_id" {
  description = "The cluster policy's spot_fleet_request_id (target \"spotfleet\" block of the policy)."
  value       = aws_spot_fleet_request.pool.id
}

output "interruption_queue_url" {
  description = "The agent's interruption_queue_url (target \"spotfleet\" plugin config)."
  value       = aws_sqs_queue.interruptions.url
}

output "aws_region" {
  description = "The agent's aws_region (target \"spotfleet\" plugin config)."
  value       = var.region
}

output "node_class" {
  description = "The policy's node_class and apm-node's query (node_class=...)."
  value       = var.node_class
}

output "interruption_queue_arn" {
  value = aws_sqs_queue.interruptions.arn
}

output "launch_template_id" {
  value = aws_launch_template.nomad_client.id
}

output "autoscaler_policy_arn" {
  description = "The agent's IAM policy, attached to autoscaler_role_name when that is set."
  value       = aws_iam_policy.autoscaler.arn
}

output "autoscaler_policy_json" {
  description = "The agent's IAM policy document, for a role managed elsewhere."
  value       = data.aws_iam_policy_document.autoscaler.json
}
