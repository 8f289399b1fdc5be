# A Terraform configuration for target-spotfleet's AWS side (README.md):
#   fleet.tf          the launch template, the Spot Fleet request and its IAM role
#   interruptions.tf  the SQS queue, its policy and the EventBridge rules
#   iam.tf            the autoscaler agent's least-privilege policy
#   variables.tf      what to set; outputs.tf: what to copy into the agent config
# Every resource lives in one region: EC2 events are regional, so the fleet,
# the rules and the queue share it.

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region

  # target-spotfleet keeps its state in tags on the fleet request (the
  # replacement ledger, the last scaling event, terminate-hook records:
  # docs/architecture.md). Without this, the next apply of anything would
  # plan to remove them, as they are not in the request's tags below.
  ignore_tags {
    key_prefixes = ["nomad-autoscaler:"]
  }
}

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
