// Command apm-node is a Nomad Autoscaler APM plugin that reports the CPU and
// memory actually used by a pool of Nomad client nodes, sampled into a time
// series.
package main

import (
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/plugins"

	"github.com/nomad-spotfleet/nomad-spotfleet/apm-node/plugin"
)

func main() {
	plugins.Serve(factory)
}

// factory returns a new instance of the apm-node plugin.
func factory(log hclog.Logger) interface{} {
	return plugin.NewPlugin(log)
}
