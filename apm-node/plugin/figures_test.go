package plugin

import (
	"testing"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFiguresRefuseToGuess(t *testing.T) {
	node := func(cpu int64, reservedCPU uint64, mem int64, reservedMem uint64) *api.NodeListStub {
		return &api.NodeListStub{
			NodeResources: &api.NodeResources{Cpu: api.NodeCpuResources{CpuShares: cpu}, Memory: api.NodeMemoryResources{MemoryMB: mem}},
			ReservedResources: &api.NodeReservedResources{
				Cpu: api.NodeReservedCpuResources{CpuShares: reservedCPU}, Memory: api.NodeReservedMemoryResources{MemoryMB: reservedMem},
			},
		}
	}
	cases := []struct {
		name    string
		figure  func() (float64, error)
		want    float64
		wantErr string
	}{
		{name: "host cpu of one idle core", figure: func() (float64, error) {
			return hostCPUPercent(&api.HostStats{CPU: []*api.HostCPUStats{{Idle: 100}}})
		}, want: 0},
		{name: "host cpu without cores", figure: func() (float64, error) {
			return hostCPUPercent(&api.HostStats{})
		}, wantErr: "no CPU figures"},
		{name: "host cpu with a nil core", figure: func() (float64, error) {
			return hostCPUPercent(&api.HostStats{CPU: []*api.HostCPUStats{nil}})
		}, wantErr: "empty CPU entry"},
		{name: "host memory without totals", figure: func() (float64, error) {
			return hostMemoryPercent(&api.HostStats{Memory: &api.HostMemoryStats{}})
		}, wantErr: "no memory figures"},
		{name: "schedulable cpu subtracts the reserve", figure: func() (float64, error) {
			return schedulableCPU(node(4000, 500, 0, 0))
		}, want: 3500},
		{name: "schedulable cpu without a reserve", figure: func() (float64, error) {
			n := node(4000, 0, 0, 0)
			n.ReservedResources = nil
			return schedulableCPU(n)
		}, want: 4000},
		{name: "reserve as large as the node", figure: func() (float64, error) {
			return schedulableCPU(node(1000, 1000, 0, 0))
		}, wantErr: "no schedulable CPU"},
		{name: "schedulable memory", figure: func() (float64, error) {
			return schedulableMemoryMB(node(0, 0, 2048, 1024))
		}, want: 1024},
		{name: "used cpu falls back to the tasks", figure: func() (float64, error) {
			return usedCPU(&api.AllocResourceUsage{Tasks: map[string]*api.TaskResourceUsage{
				"a": {ResourceUsage: &api.ResourceUsage{CpuStats: &api.CpuStats{TotalTicks: 300}}},
				"b": {ResourceUsage: &api.ResourceUsage{CpuStats: &api.CpuStats{TotalTicks: 200}}},
			}})
		}, want: 500},
		{name: "used cpu without figures", figure: func() (float64, error) {
			return usedCPU(&api.AllocResourceUsage{})
		}, wantErr: "no CPU figures"},
		{name: "used memory is RSS where measured", figure: func() (float64, error) {
			return usedMemoryMB(&api.AllocResourceUsage{ResourceUsage: &api.ResourceUsage{MemoryStats: &api.MemoryStats{
				RSS: 100 << 20, Usage: 300 << 20, Measured: []string{"RSS", "Cache", "Usage"},
			}}})
		}, want: 100},
		{name: "used memory is usage under cgroup v2", figure: func() (float64, error) {
			return usedMemoryMB(&api.AllocResourceUsage{ResourceUsage: &api.ResourceUsage{MemoryStats: &api.MemoryStats{
				Usage: 300 << 20, Measured: []string{"Cache", "Swap", "Usage"},
			}}})
		}, want: 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.figure()
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.InDelta(t, tc.want, got, 1e-9)
		})
	}
}
