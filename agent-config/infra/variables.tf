# What to set for your account. Only ami_id, subnet_ids and
# security_group_ids have no default.

variable "region" {
  description = "AWS region of the fleet, the queue and the rules (the agent's aws_region)."
  type        = string
  default     = "eu-west-1"
}

variable "ami_id" {
  description = "AMI of the Nomad clients: Nomad installed and configured to join the cluster, nomad.service disabled (user-data.sh starts it)."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the fleet, one per availability zone; every instance type is offered in every subnet."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids: give at least two subnets in different availability zones, so that the fleet can draw on several spot pools."
  }
}

variable "security_group_ids" {
  description = "Security groups of the Nomad clients (Nomad RPC and Serf to the servers, the jobs' ports)."
  type        = list(string)
}

variable "instance_profile_name" {
  description = "Instance profile of the Nomad clients, if they need one (null: none)."
  type        = string
  default     = null
}

variable "instance_types" {
  description = "Instance types of the fleet, from at least two families (c5 and m5 ...), all with the same CPU and memory: the fleet counts every instance as 1."
  type        = list(string)
  default     = ["c5.large", "c5a.large", "m5.large", "m5a.large", "c6i.large", "m6i.large"]

  validation {
    condition     = length(distinct([for t in var.instance_types : split(".", t)[0]])) >= 2
    error_message = "instance_types: give types from at least two instance families (for example c5.large and m5.large); target-spotfleet reports a fleet of one family as not diversified."
  }
}

variable "allocation_strategy" {
  description = "Spot Fleet allocation strategy: priceCapacityOptimized (recommended) or capacityOptimized."
  type        = string
  default     = "priceCapacityOptimized"

  validation {
    condition     = contains(["priceCapacityOptimized", "capacityOptimized"], var.allocation_strategy)
    error_message = "allocation_strategy: accepted values are priceCapacityOptimized and capacityOptimized (lowestPrice and diversified ignore the spot pools' capacity)."
  }
}

variable "initial_capacity" {
  description = "Target capacity when the fleet is created. From then on target-spotfleet owns it (Terraform ignores its changes); keep it within the policy's min and max."
  type        = number
  default     = 1
}

variable "launch_template_name" {
  description = "Name of the launch template of the Nomad clients."
  type        = string
  default     = "nomad-spot-client"
}

variable "node_class" {
  description = "Nomad node_class of the spot clients: the policy's node_class and apm-node's query use it."
  type        = string
  default     = "spot"
}

variable "admission_meta_key" {
  description = "Client meta key of the admission gate (docs/hooks.md): the same as the policy's and apm-node's admission_meta_key."
  type        = string
  default     = "spotfleet_admission"
}

variable "node_dir" {
  description = "Directory on each node that the sample configure hook passes to AWX (client meta node_dir)."
  type        = string
  default     = "/var/lib/spotfleet-node"
}

variable "pool_tag" {
  description = "Tag on the fleet request and on its instances; the agent's IAM policy lets it scale, tag and terminate only what carries it."
  type        = object({ key = string, value = string })
  default     = { key = "nomad-pool", value = "spot" }
}

variable "interruption_queue_name" {
  description = "Name of the SQS queue that receives the EC2 events."
  type        = string
  default     = "nomad-spot-interruptions"
}

variable "autoscaler_role_name" {
  description = "IAM role of the autoscaler agent (for example its instance profile's role); when set, the agent's policy is attached to it."
  type        = string
  default     = null
}
