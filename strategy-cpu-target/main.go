package main

import (
	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/plugins"

	cputarget "github.com/nomad-spotfleet/nomad-spotfleet/strategy-cpu-target/plugin"
)

func main() {
	plugins.Serve(factory)
}

// factory returns a new instance of the cpu-target strategy plugin.
func factory(log hclog.Logger) interface{} {
	return cputarget.NewCPUTargetPlugin(log)
}
