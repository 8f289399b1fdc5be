package plugin

import (
	"errors"
	"slices"

	"github.com/hashicorp/nomad/api"
)

// This file turns Nomad API objects into per-node percentages. Each function
// refuses to guess: missing data is an error, never a 0.

// hostCPUPercent is the host's CPU utilisation: the busy share (100 - idle)
// of each core, averaged over the cores.
func hostCPUPercent(s *api.HostStats) (float64, error) {
	if s == nil || len(s.CPU) == 0 {
		return 0, errors.New("host stats carry no CPU figures")
	}
	var sum float64
	for _, c := range s.CPU {
		if c == nil {
			return 0, errors.New("host stats carry an empty CPU entry")
		}
		sum += min(100, max(0, 100-c.Idle))
	}
	return sum / float64(len(s.CPU)), nil
}

// hostMemoryPercent is the share of the host's memory in use.
func hostMemoryPercent(s *api.HostStats) (float64, error) {
	if s == nil || s.Memory == nil || s.Memory.Total == 0 {
		return 0, errors.New("host stats carry no memory figures")
	}
	return 100 * float64(s.Memory.Used) / float64(s.Memory.Total), nil
}

// schedulableCPU is the CPU (MHz) the scheduler may place work on: the
// node's CPU minus what its client reserves.
func schedulableCPU(n *api.NodeListStub) (float64, error) {
	if n.NodeResources == nil {
		return 0, errors.New("node resources missing from the node list")
	}
	cpu := float64(n.NodeResources.Cpu.CpuShares)
	if n.ReservedResources != nil {
		cpu -= float64(n.ReservedResources.Cpu.CpuShares)
	}
	if cpu <= 0 {
		return 0, errors.New("node has no schedulable CPU")
	}
	return cpu, nil
}

// schedulableMemoryMB is the memory (MB) the scheduler may place work on.
func schedulableMemoryMB(n *api.NodeListStub) (float64, error) {
	if n.NodeResources == nil {
		return 0, errors.New("node resources missing from the node list")
	}
	mem := float64(n.NodeResources.Memory.MemoryMB)
	if n.ReservedResources != nil {
		mem -= float64(n.ReservedResources.Memory.MemoryMB)
	}
	if mem <= 0 {
		return 0, errors.New("node has no schedulable memory")
	}
	return mem, nil
}

// allocatedCPU is the CPU (MHz) the scheduler gave the allocation's tasks.
func allocatedCPU(a *api.AllocationListStub) float64 {
	if a.AllocatedResources == nil {
		return 0
	}
	var cpu int64
	for _, t := range a.AllocatedResources.Tasks {
		if t != nil {
			cpu += t.Cpu.CpuShares
		}
	}
	return float64(cpu)
}

// allocatedMemoryMB is the memory (MB) the scheduler gave the allocation's
// tasks.
func allocatedMemoryMB(a *api.AllocationListStub) float64 {
	if a.AllocatedResources == nil {
		return 0
	}
	var mem int64
	for _, t := range a.AllocatedResources.Tasks {
		if t != nil {
			mem += t.Memory.MemoryMB
		}
	}
	return float64(mem)
}

// usedCPU is the CPU (MHz) the allocation's tasks use now: Nomad's
// TotalTicks, which is the tasks' CPU percentage scaled to the client's
// total compute.
func usedCPU(u *api.AllocResourceUsage) (float64, error) {
	if u == nil {
		return 0, errors.New("allocation stats are empty")
	}
	if u.ResourceUsage != nil && u.ResourceUsage.CpuStats != nil {
		return u.ResourceUsage.CpuStats.TotalTicks, nil
	}
	if len(u.Tasks) == 0 {
		return 0, errors.New("allocation stats carry no CPU figures")
	}
	var sum float64
	for _, t := range u.Tasks {
		if t != nil && t.ResourceUsage != nil && t.ResourceUsage.CpuStats != nil {
			sum += t.ResourceUsage.CpuStats.TotalTicks
		}
	}
	return sum, nil
}

// usedMemoryMB is the memory (MB) the allocation's tasks use now: their RSS
// where the driver measures it, otherwise their cgroup usage.
func usedMemoryMB(u *api.AllocResourceUsage) (float64, error) {
	if u == nil || u.ResourceUsage == nil || u.ResourceUsage.MemoryStats == nil {
		return 0, errors.New("allocation stats carry no memory figures")
	}
	m := u.ResourceUsage.MemoryStats
	bytes := m.Usage
	if slices.Contains(m.Measured, "RSS") || m.Usage == 0 {
		bytes = m.RSS
	}
	return float64(bytes) / (1 << 20), nil
}
