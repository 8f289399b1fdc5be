// Command target-spotfleet is a Nomad Autoscaler target plugin that scales an
// EC2 Spot Fleet request of Nomad client nodes, draining nodes before their
// instances are terminated.
package main

import (
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/plugins"

	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/plugin"
)

func main() {
	plugins.Serve(func(log hclog.Logger) interface{} { return plugin.New(log) })
}
